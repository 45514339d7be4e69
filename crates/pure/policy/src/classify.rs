//! Export classification facts checked against each other and against the inventory: the
//! seal-time refusals and the release-time classification check share these. Pure.
//!
//! Facts (15 CFR 774 supp. 1; 734.7): an ECCN is a digit (CCL category 0-9), a letter
//! (product group A-E) and three digits, e.g. `4E091`, `5D002`, `0A501`, optionally followed
//! by its paragraph (`3A090.a`, `5A992.c`); items not on the list are `EAR99`. Closed weights
//! trained with at least 1e26 operations are 4E091; published (open) weights are not subject
//! to the EAR at all.

use super::data::{ModelEntry, CONTROL_THRESHOLD_OPS};
use crate::TrainingFacts;

/// An ECCN not written as the Commerce Control List writes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ECCN {0:?} is not written as the Commerce Control List writes them: a category digit, a product group A-E and three digits (4E091, 5D002, 0A501, optionally a paragraph such as 3A090.a), or EAR99")]
pub struct EccnError(pub String);

/// Checks an ECCN is written as the Commerce Control List writes them.
pub fn check_eccn(s: &str) -> Result<(), EccnError> {
    if s == "EAR99" {
        return Ok(());
    }
    let hint = || EccnError(s.to_string());
    let (base, para) = s.split_once('.').unwrap_or((s, ""));
    let b = base.as_bytes();
    let ok = b.len() == 5
        && b[0].is_ascii_digit()
        && (b'A'..=b'E').contains(&b[1])
        && b[2..].iter().all(u8::is_ascii_digit);
    let para_ok = s.contains('.').then(|| {
        !para.is_empty()
            && para.split('.').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
    });
    if ok && para_ok.unwrap_or(true) {
        Ok(())
    } else {
        Err(hint())
    }
}

/// Whether an ECCN is the frontier-model one (`4E091`, with or without a paragraph).
fn is_4e091(eccn: &str) -> bool {
    eccn == "4E091" || eccn.starts_with("4E091.")
}

/// Facts given at seal that contradict each other, each in words.
pub fn contradictions(f: &TrainingFacts) -> Vec<String> {
    let mut why = Vec::new();
    let eccn = f.eccn.as_deref();
    if let Some(e) = eccn.filter(|e| f.open_weights && *e != "EAR99") {
        why.push(format!(
            "--open-weights with ECCN {e}: published weights are not subject to the EAR (15 CFR 734.7), so they carry no controlled ECCN"
        ));
    }
    if let (Some(e), Some(ops)) = (eccn, f.training_ops) {
        if is_4e091(e) && ops < CONTROL_THRESHOLD_OPS {
            why.push(format!(
                "ECCN {e} with {ops:e} training operations: 4E091 covers closed weights trained with at least 1e26"
            ));
        }
    }
    if let Some(ops) = f.training_ops {
        if !f.open_weights && ops >= CONTROL_THRESHOLD_OPS && !eccn.is_some_and(is_4e091) {
            why.push(format!(
                "closed weights trained with {ops:e} operations (at least 1e26) are ECCN 4E091, but {}",
                match eccn {
                    Some(e) => format!("--eccn says {e}"),
                    None => "no --eccn was given".to_string(),
                }
            ));
        }
    }
    why
}

/// Where sealed facts disagree with the model's inventory entry (a fact not given at seal
/// is not compared).
pub fn inventory_disagreements(f: &TrainingFacts, m: &ModelEntry) -> Vec<String> {
    let mut why = Vec::new();
    if f.open_weights != m.open_weights {
        why.push(format!(
            "open weights {} at seal, {} in the inventory",
            f.open_weights, m.open_weights
        ));
    }
    if let Some(ops) = f.training_ops {
        if ops != m.training_ops {
            why.push(format!(
                "{ops:e} training operations at seal, {:e} in the inventory",
                m.training_ops
            ));
        }
    }
    if let Some(e) = &f.eccn {
        if *e != m.eccn {
            why.push(format!("ECCN {e} at seal, {} in the inventory", m.eccn));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eccn_syntax() {
        for ok in [
            "4E091",
            "EAR99",
            "5D002",
            "0A501",
            "9A515",
            "3A090.a",
            "5A992.c",
            "4A994.b.1",
        ] {
            assert!(check_eccn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "bogus", "", "4e091", "4F091", "4E09", "4E0911", "E4091", "EAR-99", "ear99", "4E091.",
            "4E091..a", "4E091.A", " 4E091",
        ] {
            assert!(check_eccn(bad).is_err(), "{bad:?}");
        }
    }

    fn facts(eccn: Option<&str>, ops: Option<f64>, open: bool) -> TrainingFacts {
        TrainingFacts {
            eccn: eccn.map(str::to_string),
            training_ops: ops,
            open_weights: open,
        }
    }

    #[test]
    fn contradictions_between_flags() {
        let rows: &[(TrainingFacts, &str)] = &[
            (
                facts(Some("4E091"), None, true),
                "--open-weights with ECCN 4E091",
            ),
            (
                facts(Some("5D002"), None, true),
                "--open-weights with ECCN 5D002",
            ),
            (
                facts(Some("4E091"), Some(1e20), false),
                "4E091 covers closed weights",
            ),
            (facts(Some("EAR99"), Some(3e26), false), "--eccn says EAR99"),
            (facts(None, Some(1e26), false), "no --eccn was given"),
        ];
        for (f, want) in rows {
            let c = contradictions(f);
            assert!(c.iter().any(|w| w.contains(want)), "{f:?}: {c:?}");
        }
        for f in [
            facts(Some("4E091"), Some(1e26), false),
            facts(Some("4E091"), None, false),
            facts(Some("EAR99"), Some(1e20), true),
            facts(None, Some(3e26), true),
            facts(None, None, false),
            facts(Some("EAR99"), Some(4e24), false),
        ] {
            assert!(contradictions(&f).is_empty(), "{f:?}");
        }
    }
}
