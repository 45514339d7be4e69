//! An operator's actions on a vault, with the ledger records they leave: sealing, opening,
//! removing and shredding a revision, rotating, retiring and rewrapping under KEK versions,
//! sweeping what interrupted commands left (`gc`), finding the releases a leaked copy may
//! come from (`trace`), and asking the running service to reload its policy.
//!
//! Each action takes typed values, including who the operator is (the CLI passes the real
//! uid's user, `cli::operator`), builds its ledger records here and returns a report; none
//! prints or decides an exit status, so the CLI, a Python binding or the service call the
//! same functions. What cannot be undone is recorded first and refused when it cannot be
//! (fail closed). The words of each error are those the `weightvault` command prints.

pub mod gc;
pub mod kek;
pub mod open;
pub mod reload;
pub mod remove;
pub mod seal;
pub mod shred;
pub mod trace;

use crate::ledger::record::Record;
use crate::ledger::words::{Kind, Outcome};

/// A record of `operator`'s action `kind` now (see [`Record::action`]).
fn operator_record(
    kind: Kind,
    operator: &str,
    model: &str,
    revision: Option<&str>,
    shards: Vec<String>,
    outcome: Outcome,
) -> Record {
    Record::action(
        &crate::store::now_rfc3339(),
        kind,
        operator,
        model,
        revision,
        shards,
        outcome,
    )
}

/// An error and its causes on one line, outermost first; a cause is left out when the words
/// before it already say it. `weightvault` prints errors so, and a failed open's ledger record
/// gives its reason so.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !msg.contains(&c_text) {
            msg.push_str(": ");
            msg.push_str(&c_text);
        }
        cause = c.source();
    }
    msg
}

/// An error and every cause, joined by `": "` (as `{:#}` shows an `anyhow::Error`).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::{error_line, with_causes};

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn one_line_and_every_cause() {
        let chain = |msgs: &[&'static str]| {
            msgs.iter()
                .rev()
                .fold(None, |cause, m| Some(Box::new(E(m, cause))))
                .unwrap()
        };
        let rows: &[(&[&str], &str, &str)] = &[
            (&["a"], "a", "a"),
            (&["a", "b"], "a: b", "a: b"),
            // A cause the words before already say is left out of the one line.
            (&["a: b", "b"], "a: b", "a: b: b"),
            (
                &["writing x", "disk full", "os error 28"],
                "writing x: disk full: os error 28",
                "writing x: disk full: os error 28",
            ),
        ];
        for (msgs, line, all) in rows {
            let e = chain(msgs);
            assert_eq!(error_line(&*e), *line, "{msgs:?}");
            assert_eq!(with_causes(&*e), *all, "{msgs:?}");
        }
    }
}
