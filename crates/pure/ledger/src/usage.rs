//! What each licence has been used for, counted from the ledger, so that a restart does not
//! reset it: the release service decides with it, and `policy check` shows it.

use crate::record::{Record, RecordError};
use crate::words::{Kind, Outcome, RecordAuthority};
use std::collections::{BTreeMap, HashMap};
use weightvault_core::facts::Usage;

/// Releases and bytes per licence.
#[derive(Debug, Default)]
pub struct Allocations {
    /// Per licence id, and per daily quota counter ([`quota_counters`]): allowed release
    /// decisions, and the bytes they released (each decision record carries the size of what
    /// it allows to be streamed).
    pub used: BTreeMap<String, Usage>,
    /// Bytes actually streamed per licence id (`stream-end` records; resumed and repeated
    /// ranges count again).
    pub streamed: BTreeMap<String, u64>,
    /// Licence and size of each allowed decision, by ledger index.
    of: HashMap<u64, (String, u64)>,
    /// Every counter (licence and daily quotas) and size of each allowed decision.
    quota_of: HashMap<u64, (Vec<String>, u64)>,
}

/// The daily quota counters an allowed release decision counts against: its requester's and
/// its organisation's, on the UTC day of its time (`quota:requester:ID:DAY`,
/// `quota:organisation:ID:DAY`, the keys the release decision reads).
pub fn quota_counters(r: &Record) -> Vec<String> {
    let Some(day) = r.time.get(..10).filter(|d| is_day(d)) else {
        return vec![];
    };
    let mut out = vec![format!("quota:requester:{}:{day}", r.requester)];
    if let Some(o) = &r.organisation {
        out.push(format!("quota:organisation:{o}:{day}"));
    }
    out
}

/// What one allowed release decision counts against: one release and its bytes on each
/// counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// The licence it was allowed under, if any (stream ends that follow it count their bytes
    /// towards this licence too).
    pub licence: Option<String>,
    /// Its daily quota counters ([`quota_counters`]).
    pub quotas: Vec<String>,
    /// The bytes it lets out.
    pub bytes: u64,
}

/// What `r` counts against, if it is an allowed release decision: the one rule every state
/// (in memory, or a database's counters) counts by.
pub fn counts_of(r: &Record) -> Option<Counts> {
    if r.kind != Kind::ReleaseDecision || r.outcome != Outcome::Allowed {
        return None;
    }
    Some(Counts {
        licence: r
            .authority
            .as_ref()
            .and_then(RecordAuthority::licence)
            .map(str::to_string),
        quotas: quota_counters(r),
        bytes: r.bytes.unwrap_or(0),
    })
}

/// `YYYY-MM-DD` in shape (the first ten characters of an RFC 3339 time).
fn is_day(d: &str) -> bool {
    d.bytes().enumerate().all(|(i, b)| {
        if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }
    })
}

impl Allocations {
    /// Counts the entry at ledger index `index` from its bytes (a ledger visitor; the reader
    /// names the entry in any error).
    pub fn add_entry(&mut self, index: u64, entry: &[u8]) -> Result<(), RecordError> {
        self.add(index, &Record::parse(entry)?);
        Ok(())
    }

    /// Usage per licence, not counting the decision at `index` itself (to decide a live
    /// release again without its own allocation against it).
    pub fn used_by_others(&self, index: u64) -> BTreeMap<String, Usage> {
        let mut used = self.used.clone();
        if let Some((counters, size)) = self.quota_of.get(&index) {
            for c in counters {
                if let Some(u) = used.get_mut(c) {
                    u.releases = u.releases.saturating_sub(1);
                    u.bytes = u.bytes.saturating_sub(*size);
                }
            }
        }
        used
    }

    /// Forgets the daily quota counters of the UTC days before `day` (`YYYY-MM-DD`): no
    /// decision from now on reads them, and they would otherwise grow with every day and
    /// requester (the release state copies the counters on each decision).
    pub fn forget_days_before(&mut self, day: &str) {
        let old =
            |k: &str| k.starts_with("quota:") && k.get(k.len().saturating_sub(10)..) < Some(day);
        self.used.retain(|k, _| !old(k));
        self.quota_of.retain(|_, (counters, _)| {
            counters.retain(|k| !old(k));
            !counters.is_empty()
        });
    }

    /// Counts one record appended at ledger index `index`.
    pub fn add(&mut self, index: u64, r: &Record) {
        if let Some(c) = counts_of(r) {
            if let Some(id) = &c.licence {
                self.of.insert(index, (id.clone(), c.bytes));
            }
            let counters: Vec<String> = c.licence.into_iter().chain(c.quotas).collect();
            for k in &counters {
                let u = self.used.entry(k.clone()).or_default();
                u.releases += 1;
                u.bytes = u.bytes.saturating_add(c.bytes);
            }
            self.quota_of.insert(index, (counters, c.bytes));
        } else if r.kind == Kind::StreamEnd {
            if let Some((id, _)) = r.follows.and_then(|f| self.of.get(&f)) {
                *self.streamed.entry(id.clone()).or_default() += r.bytes.unwrap_or(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(time: &str, requester: &str, licence: Option<&str>) -> Record {
        let mut r = Record::action(
            time,
            "release-decision",
            requester,
            "m",
            None,
            vec![],
            "allowed",
        );
        r.organisation = Some("o".into());
        r.authority = licence.map(|l| RecordAuthority::Licence(l.into()));
        r.bytes = Some(10);
        r
    }

    #[test]
    fn decisions_count_towards_licence_and_days_and_old_days_are_forgotten() {
        let mut a = Allocations::default();
        a.add(0, &allowed("2026-12-06T23:59:59Z", "r", Some("L")));
        a.add(1, &allowed("2026-12-07T00:00:00Z", "r", None));
        a.add(2, &allowed("2026-12-07T10:00:00Z", "q", Some("L")));
        a.add(3, &allowed("t", "r", Some("L")));
        let keys: Vec<&str> = a.used.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "L",
                "quota:organisation:o:2026-12-06",
                "quota:organisation:o:2026-12-07",
                "quota:requester:q:2026-12-07",
                "quota:requester:r:2026-12-06",
                "quota:requester:r:2026-12-07",
            ]
        );
        assert_eq!(a.used["L"].releases, 3);
        assert_eq!(a.used["quota:organisation:o:2026-12-07"].bytes, 20);
        assert_eq!(
            a.used_by_others(2)["quota:organisation:o:2026-12-07"].releases,
            1
        );
        a.forget_days_before("2026-12-07");
        let keys: Vec<&str> = a.used.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "L",
                "quota:organisation:o:2026-12-07",
                "quota:requester:q:2026-12-07",
                "quota:requester:r:2026-12-07",
            ]
        );
        // A licence's decisions still count without their old days.
        assert_eq!(a.used_by_others(0)["L"].releases, 2);
        assert_eq!(
            a.used_by_others(1)["quota:requester:r:2026-12-07"].releases,
            0
        );
    }
}
