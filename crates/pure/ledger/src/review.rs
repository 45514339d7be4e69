//! Releases held for a compliance officer, and their decisions, read from ledger records: a
//! `release-decision` record with outcome `held` opens a review (its ledger index is the
//! review's id, its `reason` starts with the review key); a `review` record that `follows` it
//! approves or rejects it. Pure: the service and `weightvault review` count records into a
//! [`Reviews`] as they read the ledger.

use crate::record::Record;
use crate::words::{Kind, Outcome};
use std::collections::BTreeMap;

/// The prefix of a held decision's `reason`: `review key <64 hex>: ` then the held checks'
/// sentences.
pub const KEY_PREFIX: &str = "review key ";

/// A held release and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// Its id: the ledger index of the held decision.
    pub id: u64,
    /// The held decision's record.
    pub held: Record,
    /// The review key an approval must match (from the record's reason).
    pub key: String,
    /// The officer's decision, when made: its ledger index and record.
    pub decision: Option<(u64, Record)>,
}

impl Review {
    /// Approved (and not later rejected).
    pub fn approved(&self) -> bool {
        self.decision
            .as_ref()
            .is_some_and(|(_, r)| r.outcome == Outcome::Approved)
    }
}

/// The review key a held decision's reason carries.
pub fn key_of(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix(KEY_PREFIX)?;
    let key = rest.get(..64)?;
    key.bytes().all(|b| b.is_ascii_hexdigit()).then_some(key)
}

/// What a record does to reviews: the one reading of the ledger's review records that
/// [`Reviews`] (the CLI) and the release service's approvals share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A held decision opens the review whose id is its ledger index, with this review key
    /// (from its reason).
    Opens(&'a str),
    /// A `review` record decides the review it follows.
    Decides {
        /// The review's id (the held decision's ledger index).
        review: u64,
        /// Approved, else rejected.
        approved: bool,
    },
}

/// What `r` does to reviews, if anything.
pub fn step_of(r: &Record) -> Option<Step<'_>> {
    match (&r.kind, &r.outcome) {
        (Kind::ReleaseDecision, Outcome::Held) => {
            r.reason.as_deref().and_then(key_of).map(Step::Opens)
        }
        (Kind::Review, Outcome::Approved | Outcome::Rejected) => Some(Step::Decides {
            review: r.follows?,
            approved: r.outcome == Outcome::Approved,
        }),
        _ => None,
    }
}

/// Whether `r` opens or decides a review ([`step_of`]): what a reader of the approvals needs
/// from the ledger, and nothing else does.
pub fn concerns_reviews(r: &Record) -> bool {
    step_of(r).is_some()
}

/// Every review seen in a ledger.
#[derive(Debug, Default, Clone)]
pub struct Reviews {
    /// By id.
    pub by_id: BTreeMap<u64, Review>,
}

impl Reviews {
    /// Counts the record at ledger index `index`: a held decision opens a review, a `review`
    /// record decides the one it follows (the first decision stands; a later one for the same
    /// review is ignored: `weightvault review` refuses to write it).
    pub fn add(&mut self, index: u64, r: &Record) {
        match step_of(r) {
            Some(Step::Opens(key)) => {
                self.by_id.insert(
                    index,
                    Review {
                        id: index,
                        held: r.clone(),
                        key: key.to_string(),
                        decision: None,
                    },
                );
            }
            Some(Step::Decides { review, .. }) => {
                if let Some(rv) = self.by_id.get_mut(&review) {
                    if rv.decision.is_none() {
                        rv.decision = Some((index, r.clone()));
                    }
                }
            }
            None => {}
        }
    }

    /// Reviews still waiting for a decision.
    pub fn pending(&self) -> impl Iterator<Item = &Review> {
        self.by_id.values().filter(|r| r.decision.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(key: &str) -> Record {
        let mut r = Record::action(
            "2026-06-01T12:00:00Z",
            "release-decision",
            "raj@globex.example",
            "acme-frontier",
            Some("r1"),
            vec![],
            "held",
        );
        r.reason = Some(format!("{KEY_PREFIX}{key}: ownership: 30 %"));
        r
    }

    fn decided(follows: u64, outcome: &str) -> Record {
        let mut r = Record::action(
            "2026-06-01T13:00:00Z",
            "review",
            "officer",
            "acme-frontier",
            Some("r1"),
            vec![],
            outcome,
        );
        r.follows = Some(follows);
        r.reason = Some("checked the register".into());
        r
    }

    #[test]
    fn held_decisions_open_reviews_and_the_first_decision_stands() {
        let k = "ab".repeat(32);
        let mut rv = Reviews::default();
        rv.add(4, &held(&k));
        rv.add(5, &held("not a key"));
        assert_eq!(rv.pending().count(), 1);
        rv.add(6, &decided(4, "approved"));
        rv.add(7, &decided(4, "rejected"));
        rv.add(8, &decided(99, "approved"));
        assert_eq!(rv.pending().count(), 0);
        assert!(rv.by_id[&4].approved());
        assert_eq!(rv.by_id[&4].decision.as_ref().unwrap().0, 6);
        let mut rv2 = Reviews::default();
        rv2.add(4, &held(&k));
        rv2.add(6, &decided(4, "rejected"));
        assert!(!rv2.by_id[&4].approved());
    }

    #[test]
    fn keys_are_64_hex_digits_after_the_prefix() {
        let k = "0f".repeat(32);
        assert_eq!(key_of(&format!("{KEY_PREFIX}{k}: x")), Some(k.as_str()));
        assert_eq!(key_of(&format!("{KEY_PREFIX}{}", &k[..63])), None);
        assert_eq!(key_of(&format!("{KEY_PREFIX}{}zz", &k[..62])), None);
        assert_eq!(key_of("held"), None);
    }
}
