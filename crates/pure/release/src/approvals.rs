//! [`ApprovalBook`]: the approvals of held releases a release service applies, counted from
//! ledger records as it sees them (at start, then each one appended or read from a shared
//! database). A `release-decision` record with outcome `held` opens a review (its ledger index
//! is the review's id, its reason carries the review key); the first `review` record that
//! follows it closes it, and, when it approves, lets requests with the same key through for
//! the policy's `[review] approval_hours` from the approval's time.
//!
//! What it keeps is bounded by what can still matter: the key of each review still open, and
//! the approvals made in the last [`MAX_APPROVAL_HOURS`] (older ones cannot be in force under
//! any policy the loader accepts), ordered by time, so that finding those in force costs what
//! they number, not what the ledger holds.

use std::collections::{BTreeMap, HashMap};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use weightvault_ledger::record::Record;
use weightvault_ledger::review::{step_of, Step};
use weightvault_policy::Approval;

pub use weightvault_policy::rules::MAX_APPROVAL_HOURS;

/// An approval made: the review, its key, who approved.
#[derive(Debug, Clone)]
struct Made {
    review: u64,
    key: String,
    by: String,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct ApprovalBook {
    /// Open reviews: id → review key.
    open: HashMap<u64, String>,
    /// Approvals by (time, review id).
    made: BTreeMap<(OffsetDateTime, u64), Made>,
}

impl ApprovalBook {
    /// Counts the record at ledger index `index`. Records of one review come in ledger order
    /// (the review follows the held decision), so the first decision stands: a later one
    /// finds the review closed.
    pub fn add(&mut self, index: u64, r: &Record) {
        match step_of(r) {
            Some(Step::Opens(key)) => {
                self.open.entry(index).or_insert_with(|| key.to_string());
            }
            Some(Step::Decides { review, approved }) => {
                let Some(key) = self.open.remove(&review) else {
                    return;
                };
                if !approved {
                    return;
                }
                // An approval whose time does not parse lets nothing through.
                if let Ok(at) = OffsetDateTime::parse(&r.time, &Rfc3339) {
                    let by = r.requester.clone();
                    self.made.insert((at, review), Made { review, key, by });
                }
            }
            None => {}
        }
    }

    /// The approvals in force at `now` when each lasts `hours`; forgets those older than
    /// [`MAX_APPROVAL_HOURS`].
    pub fn in_force(&mut self, hours: u32, now: OffsetDateTime) -> Vec<Approval> {
        let oldest = now - Duration::hours(i64::from(MAX_APPROVAL_HOURS));
        self.made = self.made.split_off(&(oldest, 0));
        let lasts = Duration::hours(i64::from(hours));
        self.made
            .range((now - lasts, 0)..)
            .map(|((at, _), m)| Approval {
                review: m.review,
                key: m.key.clone(),
                by: m.by.clone(),
                until: *at + lasts,
            })
            .collect()
    }

    /// Reviews still open.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use weightvault_ledger::review::KEY_PREFIX;

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

    fn decided(follows: u64, outcome: &str, at: &str) -> Record {
        let mut r = Record::action(
            at,
            "review",
            "officer",
            "acme-frontier",
            None,
            vec![],
            outcome,
        );
        r.follows = Some(follows);
        r
    }

    #[test]
    fn the_first_decision_stands_and_an_approval_lasts_its_hours() {
        let (k, k2) = ("ab".repeat(32), "cd".repeat(32));
        let mut b = ApprovalBook::default();
        b.add(4, &held(&k));
        b.add(5, &held("not a key"));
        b.add(6, &held(&k2));
        assert_eq!(b.open(), 2);
        b.add(7, &decided(4, "approved", "2026-06-01T13:00:00Z"));
        b.add(8, &decided(4, "rejected", "2026-06-01T13:05:00Z"));
        b.add(9, &decided(6, "rejected", "2026-06-01T13:00:00Z"));
        b.add(10, &decided(6, "approved", "2026-06-01T13:10:00Z"));
        b.add(11, &decided(99, "approved", "2026-06-01T13:00:00Z"));
        assert_eq!(b.open(), 0);
        let at = datetime!(2026-06-01 13:00 UTC);
        let f = b.in_force(24, at + Duration::hours(24));
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].review, f[0].key.as_str(), f[0].by.as_str()),
            (4, k.as_str(), "officer")
        );
        assert_eq!(f[0].until, at + Duration::hours(24));
        assert!(b
            .in_force(24, at + Duration::hours(24) + Duration::SECOND)
            .is_empty());
        // A longer policy lets it through again, until the longest any policy allows.
        assert_eq!(b.in_force(720, at + Duration::hours(700)).len(), 1);
        assert!(b.in_force(720, at + Duration::hours(721)).is_empty());
        assert!(b.made.is_empty(), "forgotten once no policy can apply it");
    }
}
