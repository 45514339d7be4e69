//! Destination tiers for 4E091 model weights, with the dated changes that made them, the
//! destinations another is treated as (Hong Kong as China), the authority whose Country Group
//! D:5 the tiers follow when the EAR and the ITAR differ, and which reading of the AI Diffusion
//! rule is applied on a date (`policies/tiers.toml`). Pure: parsed from text.

use crate::data::{check_country, date, CountryError, Ctx, PolicyError};
use serde::Deserialize;
use std::collections::BTreeSet;
use time::Date;
use toml::Spanned;

/// Destination tier of a country under the AI diffusion framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub enum Tier {
    /// Tier 1: licence exception available.
    #[serde(rename = "1")]
    One,
    /// Tier 2: licence required.
    #[serde(rename = "2")]
    Two,
    /// Tier 3: presumption of denial.
    #[serde(rename = "3")]
    Three,
}

impl Tier {
    /// 1, 2 or 3.
    pub fn number(self) -> i64 {
        match self {
            Tier::One => 1,
            Tier::Two => 2,
            Tier::Three => 3,
        }
    }
}

/// Whose rule a dated change comes from: the Commerce Department's EAR (Country Group D:5 in
/// 15 CFR 740 Supp. 1) or the State Department's ITAR (22 CFR 126.1). They list the same
/// arms-embargoed countries but change them on different days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// 15 CFR (BIS).
    Ear,
    /// 22 CFR (DDTC).
    Itar,
}

/// How 4E091 licensing is applied: as the AI Diffusion rule is written (the conservative
/// reading), or as BIS enforces it (on 2025-05-13 BIS said it would not enforce the rule, which
/// was never formally rescinded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// Licences are required as the rule is written.
    AsWritten,
    /// Only what BIS enforces: no 4E091 licence for Tier 2 (Tier 3 stays a presumption of
    /// denial: a policy choice).
    AsEnforced,
}

impl Reading {
    /// `as written` or `as enforced`.
    pub fn words(self) -> &'static str {
        match self {
            Reading::AsWritten => "as written",
            Reading::AsEnforced => "as enforced",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    tier1_exception: String,
    #[serde(default = "ear")]
    d5_follows: Authority,
    #[serde(default, rename = "change")]
    changes: Vec<ChangeFile>,
    #[serde(default, rename = "same_as")]
    same_as: Vec<SameAsFile>,
    #[serde(default, rename = "reading")]
    readings: Vec<ReadingFile>,
}

fn ear() -> Authority {
    Authority::Ear
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    effective: Spanned<toml::value::Datetime>,
    tier: Spanned<u8>,
    #[serde(default)]
    add: Vec<Spanned<String>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    source: String,
    #[serde(default = "ear")]
    authority: Authority,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SameAsFile {
    country: Spanned<String>,
    #[serde(rename = "as")]
    as_country: Spanned<String>,
    effective: Spanned<toml::value::Datetime>,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadingFile {
    effective: Spanned<toml::value::Datetime>,
    ai_diffusion: Reading,
    source: String,
}

/// One dated change to a tier list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    /// First day it applies.
    pub effective: Date,
    /// Tier 1 or 3 (Tier 2 is everyone else).
    pub tier: Tier,
    /// Countries added.
    pub add: BTreeSet<String>,
    /// Countries removed.
    pub remove: BTreeSet<String>,
    /// Where it comes from.
    pub source: String,
    /// Whose rule it is (a change of the authority the tiers do not follow is kept, not
    /// applied).
    pub authority: Authority,
}

/// A destination treated as another from a date (Hong Kong as China).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SameAs {
    /// The destination.
    pub country: String,
    /// The destination it is treated as.
    pub as_country: String,
    /// First day.
    pub effective: Date,
    /// Citation.
    pub source: String,
}

/// The reading of the AI Diffusion rule from a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingChange {
    /// First day.
    pub effective: Date,
    /// The reading.
    pub reading: Reading,
    /// Why, with its citation.
    pub source: String,
}

/// The country tiers with their history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryTiers {
    /// Name of the licence exception Tier 1 destinations rely on.
    pub tier1_exception: String,
    /// Whose D:5 changes apply when the EAR's and the ITAR's differ.
    pub d5_follows: Authority,
    /// Changes, sorted by date (stable).
    pub changes: Vec<TierChange>,
    /// Destinations treated as others.
    pub same_as: Vec<SameAs>,
    /// Readings of the AI Diffusion rule, sorted by date.
    pub readings: Vec<ReadingChange>,
}

/// A destination's tier on a day, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierOf {
    /// The tier.
    pub tier: Tier,
    /// The destination judged: the country itself, or the one it is treated as.
    pub judged_as: String,
    /// The rule that makes it be judged as another destination.
    pub same_as: Option<String>,
    /// The last applied change that named it (its source), if any.
    pub last_change: Option<(Date, String)>,
}

impl CountryTiers {
    pub(crate) fn parse(ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let f: TiersFile = ctx.parse()?;
        let mut changes = Vec::new();
        let country = |s: &Spanned<String>| -> Result<String, PolicyError> {
            check_country(s.get_ref()).map_err(|m| ctx.at(s, m.to_string()))
        };
        for c in f.changes {
            let tier = match *c.tier.get_ref() {
                1 => Tier::One,
                3 => Tier::Three,
                t => {
                    return Err(ctx.at(
                        &c.tier,
                        format!(
                            "tier {t}: only tier 1 and tier 3 are listed (tier 2 is everyone else)"
                        ),
                    ))
                }
            };
            let set = |v: &[Spanned<String>]| -> Result<BTreeSet<String>, PolicyError> {
                v.iter().map(country).collect()
            };
            changes.push(TierChange {
                effective: date(ctx, &c.effective)?,
                tier,
                add: set(&c.add)?,
                remove: set(&c.remove)?,
                source: c.source,
                authority: c.authority,
            });
        }
        changes.sort_by_key(|c| c.effective);
        let mut same_as = Vec::new();
        for s in f.same_as {
            let (c, a) = (country(&s.country)?, country(&s.as_country)?);
            if c == a {
                return Err(ctx.at(&s.as_country, format!("{c} cannot be treated as itself")));
            }
            if same_as.iter().any(|x: &SameAs| x.country == a) {
                return Err(ctx.at(
                    &s.as_country,
                    format!("{a} is itself treated as another destination: name that one"),
                ));
            }
            same_as.push(SameAs {
                country: c,
                as_country: a,
                effective: date(ctx, &s.effective)?,
                source: s.source,
            });
        }
        let mut readings = Vec::new();
        for r in f.readings {
            readings.push(ReadingChange {
                effective: date(ctx, &r.effective)?,
                reading: r.ai_diffusion,
                source: r.source,
            });
        }
        readings.sort_by_key(|r| r.effective);
        Ok(Self {
            tier1_exception: f.tier1_exception,
            d5_follows: f.d5_follows,
            changes,
            same_as,
            readings,
        })
    }

    /// The tier of `country` on `date`, or an error for a code that is not ISO 3166-1.
    pub fn tier(&self, country: &str, date: Date) -> Result<Tier, CountryError> {
        self.tier_of(country, date).map(|t| t.tier)
    }

    /// The tier of `country` on `date` with why: the destination it is treated as, and the
    /// last change that named it. Changes of a Tier 3 list by the authority the tiers do not
    /// follow are skipped.
    pub fn tier_of(&self, country: &str, date: Date) -> Result<TierOf, CountryError> {
        check_country(country)?;
        let alias = self
            .same_as
            .iter()
            .find(|s| s.country == country && s.effective <= date);
        let judged = alias.map_or(country, |s| s.as_country.as_str());
        let mut t1 = false;
        let mut t3 = false;
        let mut last = None;
        for c in self.changes.iter().take_while(|c| c.effective <= date) {
            if c.tier == Tier::Three && c.authority != self.d5_follows {
                continue;
            }
            let flag = if c.tier == Tier::One {
                &mut t1
            } else {
                &mut t3
            };
            if c.add.contains(judged) {
                *flag = true;
                last = Some((c.effective, c.source.clone()));
            }
            if c.remove.contains(judged) {
                *flag = false;
                last = Some((c.effective, c.source.clone()));
            }
        }
        Ok(TierOf {
            tier: if t3 {
                Tier::Three
            } else if t1 {
                Tier::One
            } else {
                Tier::Two
            },
            judged_as: judged.to_string(),
            same_as: alias.map(|s| {
                format!(
                    "{} is treated as {} ({})",
                    s.country, s.as_country, s.source
                )
            }),
            last_change: last,
        })
    }

    /// The reading of the AI Diffusion rule in force on `date` (as written when none is
    /// recorded), with its source.
    pub fn reading(&self, date: Date) -> (Reading, Option<&str>) {
        self.readings
            .iter()
            .take_while(|r| r.effective <= date)
            .last()
            .map_or((Reading::AsWritten, None), |r| (r.reading, Some(&r.source)))
    }
}
