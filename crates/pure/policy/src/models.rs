//! The model inventory (`policies/models.toml`): each model's export classification, derived
//! from the facts recorded for it. Pure: parsed from text.
//!
//! Facts: closed weights trained with at least 1e26 operations are ECCN 4E091; published
//! (open) weights are not. A model fine-tuned from another counts the operations of its
//! parent (and of the parent's parents) with its own, and a model derived from a controlled
//! closed model stays controlled. BIS can inform a company that a named model needs a licence
//! for any foreign person ("is informed" letters): such requirements are data here.

use crate::data::{date, Ctx, PolicyError};
use crate::people::Regime;
use serde::Deserialize;
use std::collections::BTreeMap;
use time::Date;
use toml::Spanned;

/// Training operations at or above which closed weights are ECCN 4E091.
pub const CONTROL_THRESHOLD_OPS: f64 = 1e26;

/// A licence requirement BIS attached to one model by informing its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsInformed {
    /// The letter.
    pub reference: String,
    /// First day it applies.
    pub from: Date,
    /// Last day, if it ends.
    pub until: Option<Date>,
    /// Organisations or requesters it exempts (ids).
    pub exempt: Vec<String>,
}

impl IsInformed {
    /// In force on `d`.
    pub fn applies_on(&self, d: Date) -> bool {
        self.from <= d && self.until.is_none_or(|u| d <= u)
    }
}

/// A model's classification facts, as the inventory records them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// Model name (as sealed).
    pub name: String,
    /// ECCN as recorded (e.g. `4E091`, `EAR99`).
    pub eccn: String,
    /// Training compute of this model itself (for a derived model, the later training).
    pub training_ops: f64,
    /// Training compute in all: its own and that of every model it derives from.
    pub total_ops: f64,
    /// Published weights.
    pub open_weights: bool,
    /// Owner organisation id.
    pub owner: String,
    /// The regime whose deemed-export rule governs releases of it to persons.
    pub regime: Regime,
    /// The model it was fine-tuned from, if any.
    pub derived_from: Option<String>,
    /// A controlled model it derives from (the nearest), which keeps it controlled.
    pub controlled_ancestor: Option<String>,
    /// Why its classification is uncertain, when it is: releases are held for review.
    pub uncertain: Option<String>,
    /// Licence requirements BIS attached to it.
    pub is_informed: Vec<IsInformed>,
}

impl ModelEntry {
    /// Whether the weights are controlled under 4E091: closed, and trained with >= 1e26
    /// operations in all or derived from a controlled closed model.
    pub fn controlled(&self) -> bool {
        !self.open_weights
            && (self.total_ops >= CONTROL_THRESHOLD_OPS || self.controlled_ancestor.is_some())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default, rename = "model")]
    models: Vec<ModelFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: Spanned<String>,
    eccn: Spanned<String>,
    training_ops: Spanned<f64>,
    open_weights: bool,
    owner: Spanned<String>,
    #[serde(default)]
    regime: Regime,
    #[serde(default)]
    derived_from: Option<Spanned<String>>,
    #[serde(default)]
    classification_uncertain: Option<String>,
    #[serde(default)]
    is_informed: Vec<IsInformedFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IsInformedFile {
    reference: String,
    from: Spanned<toml::value::Datetime>,
    #[serde(default)]
    until: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
}

/// The inventory, with the fields still to be checked against the organisations and
/// requesters (owners, exempted parties).
pub(crate) struct Models {
    pub models: BTreeMap<String, ModelEntry>,
    pub owners: Vec<Spanned<String>>,
    pub exempt: Vec<Spanned<String>>,
}

pub(crate) fn parse_models(ctx: &Ctx<'_>) -> Result<Models, PolicyError> {
    let f: ModelsFile = ctx.parse()?;
    let mut out = BTreeMap::new();
    let mut owners = Vec::new();
    let mut exempt = Vec::new();
    let mut spans = BTreeMap::new();
    for m in f.models {
        let ops = *m.training_ops.get_ref();
        if !(ops.is_finite() && ops >= 0.0) {
            return Err(ctx.at(
                &m.training_ops,
                "training_ops must be a non-negative number",
            ));
        }
        let mut informed = Vec::new();
        for i in m.is_informed {
            let until = i.until.as_ref().map(|u| date(ctx, u)).transpose()?;
            let from = date(ctx, &i.from)?;
            if let (Some(u), Some(us)) = (until, &i.until) {
                if u < from {
                    return Err(ctx.at(us, format!("ends ({u}) before it starts ({from})")));
                }
            }
            informed.push(IsInformed {
                reference: i.reference,
                from,
                until,
                exempt: i.exempt.iter().map(|e| e.get_ref().clone()).collect(),
            });
            exempt.extend(i.exempt);
        }
        let e = ModelEntry {
            name: m.name.get_ref().clone(),
            eccn: m.eccn.get_ref().clone(),
            training_ops: ops,
            total_ops: ops,
            open_weights: m.open_weights,
            owner: m.owner.get_ref().clone(),
            regime: m.regime,
            derived_from: m.derived_from.as_ref().map(|d| d.get_ref().clone()),
            controlled_ancestor: None,
            uncertain: m.classification_uncertain,
            is_informed: informed,
        };
        owners.push(m.owner);
        spans.insert(e.name.clone(), (m.eccn, m.derived_from));
        if out.insert(e.name.clone(), e).is_some() {
            return Err(ctx.at(&m.name, format!("duplicate model '{}'", m.name.get_ref())));
        }
    }
    // Derivations: the parent is in the inventory, the chain ends, the totals add up.
    let names: Vec<String> = out.keys().cloned().collect();
    for name in &names {
        let mut total = out[name].training_ops;
        let mut ancestor = None;
        let mut at = name.clone();
        let mut chain = vec![name.clone()];
        while let Some(parent) = out[&at].derived_from.clone() {
            let span = spans[&at].1.as_ref().expect("derived_from given");
            let Some(p) = out.get(&parent) else {
                return Err(ctx.at(
                    span,
                    format!("{at} derives from '{parent}', which is not in the inventory"),
                ));
            };
            if chain.contains(&parent) {
                chain.push(parent);
                return Err(ctx.at(
                    span,
                    format!("derivation cycle: {}", chain.join(" derives from ")),
                ));
            }
            total += p.training_ops;
            if ancestor.is_none() && !p.open_weights && p.eccn == "4E091" {
                ancestor = Some(parent.clone());
            }
            chain.push(parent.clone());
            at = parent;
        }
        let e = out.get_mut(name).expect("listed");
        e.total_ops = total;
        e.controlled_ancestor = ancestor;
    }
    // The recorded ECCN agrees with the facts.
    for (name, e) in &out {
        let eccn = &spans[name].0;
        if e.controlled() && e.eccn != "4E091" {
            return Err(ctx.at(
                eccn,
                match &e.controlled_ancestor {
                    Some(a) if e.total_ops < CONTROL_THRESHOLD_OPS => format!(
                        "{name} is closed and derived from the controlled model {a}: its ECCN is 4E091, not {}",
                        e.eccn
                    ),
                    _ => format!(
                        "{name} is closed and trained with {:e} operations in all (>= 1e26): its ECCN is 4E091, not {}",
                        e.total_ops, e.eccn
                    ),
                },
            ));
        }
        if !e.controlled() && e.eccn == "4E091" {
            return Err(ctx.at(
                eccn,
                format!("{name} is not a 4E091 model (open weights, or below 1e26 operations in all and not derived from a controlled model)"),
            ));
        }
    }
    Ok(Models {
        models: out,
        owners,
        exempt,
    })
}
