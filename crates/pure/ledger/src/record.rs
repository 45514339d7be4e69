//! What the ledger records, and its canonical bytes (`docs/LEDGER.md`).

use crate::words::{self, KeyEvent, Kind, Outcome, RecordAuthority, RequesterKind};
use serde::{Deserialize, Serialize};

/// One ledger entry. Serialised canonically as compact JSON with the fields in this order;
/// absent values are `null`, never omitted. No secret (key, PIN, token) ever enters a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// What it records.
    pub kind: Kind,
    /// RFC 3339 UTC time.
    pub time: String,
    /// Requester id (certificate identity, or the operator's user name).
    pub requester: String,
    /// Person, workload or operator.
    pub requester_kind: RequesterKind,
    /// Organisation id.
    pub organisation: Option<String>,
    /// Nationalities (persons).
    pub nationalities: Vec<String>,
    /// Host id.
    pub host_id: Option<String>,
    /// Attested country.
    pub host_country: Option<String>,
    /// Attested region.
    pub host_region: Option<String>,
    /// Attester id.
    pub attester: Option<String>,
    /// Source address.
    pub source: Option<String>,
    /// Model.
    pub model: String,
    /// Revision.
    pub revision: Option<String>,
    /// Shards (paths) concerned; for a `policy-reload` its withdrawals
    /// ([`Record::withdrawals`]), for key events the KEK versions ([`Record::key_events`]).
    pub shards: Vec<String>,
    /// How it came out.
    pub outcome: Outcome,
    /// Failing checks (names), for denials.
    pub failed_checks: Vec<String>,
    /// Licence or licence exception relied on.
    pub authority: Option<RecordAuthority>,
    /// Watermark codeword id (watermarking issue).
    pub codeword: Option<String>,
    /// Bytes released so far (stream-end records).
    pub bytes: Option<u64>,
    /// Index of the entry this one follows up (stream-end and open-end records).
    pub follows: Option<u64>,
    /// Why, in words, where the outcome needs it (a failed open's error, the signal that
    /// interrupted it, a forced seal's disagreements). Absent, not `null`, when there is none,
    /// so records written before this field existed keep their canonical bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Record {
    /// A record of an operator's or the service's own action (no host, no requester facts):
    /// `operator-open`, `shred`, `policy-reload`, at `time` (RFC 3339).
    pub fn action(
        time: &str,
        kind: impl Into<Kind>,
        requester: &str,
        model: &str,
        revision: Option<&str>,
        shards: Vec<String>,
        outcome: impl Into<Outcome>,
    ) -> Self {
        Record {
            kind: kind.into(),
            time: time.into(),
            requester: requester.into(),
            requester_kind: RequesterKind::Operator,
            organisation: None,
            nationalities: vec![],
            host_id: None,
            host_country: None,
            host_region: None,
            attester: None,
            source: None,
            model: model.into(),
            revision: revision.map(str::to_string),
            shards,
            outcome: outcome.into(),
            failed_checks: vec![],
            authority: None,
            codeword: None,
            bytes: None,
            follows: None,
            reason: None,
        }
    }

    /// The end of an operator open that began at ledger entry `start` (`open-end`):
    /// `completed` (files and bytes), `failed` or `interrupted` with the reason.
    pub fn open_end(
        start: u64,
        started: &Record,
        time: &str,
        outcome: OpenOutcome,
        bytes: Option<u64>,
        reason: Option<String>,
    ) -> Self {
        Record {
            kind: Kind::OpenEnd,
            time: time.into(),
            outcome: outcome.into(),
            bytes,
            follows: Some(start),
            reason,
            ..started.clone()
        }
    }

    /// A key event of an operator (`kek-rotate`, `kek-retire`, `rewrap`), of the whole vault
    /// (`model` empty) or of one model or revision: the events go in `shards` in their written
    /// forms.
    pub fn key_event(
        time: &str,
        kind: Kind,
        requester: &str,
        (model, revision): (&str, Option<&str>),
        events: &[KeyEvent],
        outcome: Outcome,
    ) -> Self {
        Record::action(
            time,
            kind,
            requester,
            model,
            revision,
            events.iter().map(KeyEvent::to_wire).collect(),
            outcome,
        )
    }

    /// A `policy-reload` of the service: `applied` with the ledger indices of the decisions
    /// it withdrew, or `rejected` with why (the old policy stays in force).
    pub fn policy_reload(time: &str, withdrawn: &[u64], rejected: Option<String>) -> Self {
        let mut r = Record::action(
            time,
            Kind::PolicyReload,
            "weightvault-serve",
            "",
            None,
            withdrawn
                .iter()
                .map(|&i| words::withdrawal_to_wire(i))
                .collect(),
            if rejected.is_some() {
                Outcome::Rejected
            } else {
                Outcome::Applied
            },
        );
        r.reason = rejected;
        r
    }

    /// The records of a `policy-reload` that withdrew `withdrawn`, in the order they are
    /// appended: a `withdrawal` record for each [`WITHDRAWALS_PER_RECORD`] withdrawals beyond
    /// the last such part, then the `policy-reload` itself with the rest, so that no record is
    /// longer than a ledger entry may be. Each record after the first must follow the one
    /// before it: its `follows` is set by the appender, once the previous record's index is
    /// known ([`Record::chained_to`]). Reading back walks from the `policy-reload` along
    /// `follows` ([`Record::withdrawals`] of each).
    pub fn policy_reload_parts(
        time: &str,
        withdrawn: &[u64],
        rejected: Option<String>,
    ) -> Vec<Self> {
        let mut chunks: Vec<&[u64]> = withdrawn.chunks(WITHDRAWALS_PER_RECORD).collect();
        let last = chunks.pop().unwrap_or(&[]);
        let mut out: Vec<Record> = chunks
            .into_iter()
            .map(|c| {
                Record::action(
                    time,
                    Kind::Withdrawal,
                    "weightvault-serve",
                    "",
                    None,
                    c.iter().map(|&i| words::withdrawal_to_wire(i)).collect(),
                    Outcome::Applied,
                )
            })
            .collect();
        out.push(Record::policy_reload(time, last, rejected));
        out
    }

    /// This record as the next of a chain whose previous record is at ledger index `prev`.
    pub fn chained_to(mut self, prev: Option<u64>) -> Self {
        self.follows = prev;
        self
    }

    /// The release decisions a `policy-reload` (or one of its `withdrawal` parts) lists as
    /// withdrawn (their ledger indices); none for any other kind of record.
    pub fn withdrawals(&self) -> Vec<u64> {
        if !matches!(self.kind, Kind::PolicyReload | Kind::Withdrawal) {
            return vec![];
        }
        self.shards
            .iter()
            .filter_map(|s| words::parse_withdrawal(s))
            .collect()
    }

    /// Why a `policy-reload` was rejected: its reason (records before typed records put it in
    /// `failed_checks`).
    pub fn rejection(&self) -> Option<String> {
        (self.kind == Kind::PolicyReload && self.outcome == Outcome::Rejected).then(|| {
            self.reason
                .clone()
                .unwrap_or_else(|| self.failed_checks.join("; "))
        })
    }

    /// The key events of a `kek-rotate`, `kek-retire` or `rewrap`; none for any other kind.
    pub fn key_events(&self) -> Vec<KeyEvent> {
        if !matches!(self.kind, Kind::KekRotate | Kind::KekRetire | Kind::Rewrap) {
            return vec![];
        }
        self.shards
            .iter()
            .filter_map(|s| KeyEvent::parse(s))
            .collect()
    }

    /// Canonical bytes: compact JSON, fields in declaration order.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialise")
    }

    /// The entry a ledger appends: the canonical bytes, if they are at most
    /// [`MAX_ENTRY_LEN`] long. Every ledger (local or in a database) refuses a longer record
    /// before it has an index, whether or not tiles are published yet, so that any ledger can
    /// be published as tiles later; a writer whose record can list thousands of things splits
    /// it (as [`Record::policy_reload_parts`] does).
    pub fn entry(&self) -> Result<Vec<u8>, TooLong> {
        let bytes = self.canonical();
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(TooLong {
                kind: self.kind.to_string(),
                len: bytes.len(),
            });
        }
        Ok(bytes)
    }

    /// Parses canonical bytes, requiring that they re-serialise identically.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: Record = serde_json::from_slice(bytes).map_err(RecordError::NotARecord)?;
        if r.canonical() != bytes {
            return Err(RecordError::NotCanonical);
        }
        Ok(r)
    }
}

/// The longest ledger entry, in bytes: the longest an entry bundle of C2SP tlog-tiles can
/// hold (a 16-bit length).
pub const MAX_ENTRY_LEN: usize = crate::tiles::MAX_ENTRY_LEN;

/// Withdrawals one record lists, at most: 1,500 of the longest (`withdrawn:` and 20 digits,
/// quoted, comma) are 49,500 bytes, leaving room for the rest of the record.
pub const WITHDRAWALS_PER_RECORD: usize = 1500;

/// A record longer than a ledger entry may be.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a `{kind}` record of {len} bytes is longer than a ledger entry may be ({MAX_ENTRY_LEN} bytes, the most an entry bundle of the published tiles holds): nothing was recorded")]
pub struct TooLong {
    /// The record's kind.
    pub kind: String,
    /// Its canonical length.
    pub len: usize,
}

/// Why bytes are not a ledger record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not JSON of a record (a field missing, unknown or of the wrong type).
    #[error("{0}")]
    NotARecord(#[source] serde_json::Error),
    /// A record, but not in its canonical bytes (field order, spacing, escapes).
    #[error("not in canonical form")]
    NotCanonical,
}

/// How an operator open ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Every file written and named.
    Completed,
    /// An error; nothing was kept.
    Failed,
    /// SIGINT or SIGTERM, or the process died; nothing was kept.
    Interrupted,
}

impl From<OpenOutcome> for Outcome {
    fn from(o: OpenOutcome) -> Self {
        match o {
            OpenOutcome::Completed => Outcome::Completed,
            OpenOutcome::Failed => Outcome::Failed,
            OpenOutcome::Interrupted => Outcome::Interrupted,
        }
    }
}

/// Operator opens whose start is in the ledger without an end, found while reading it.
#[derive(Debug, Default)]
pub struct UnfinishedOpens {
    started: std::collections::BTreeMap<u64, Record>,
}

impl UnfinishedOpens {
    /// Looks at one entry (index, canonical bytes); entries of other kinds are skipped
    /// without parsing.
    pub fn add_entry(&mut self, index: u64, bytes: &[u8]) {
        let open = bytes.starts_with(br#"{"kind":"operator-open""#);
        let end = bytes.starts_with(br#"{"kind":"open-end""#);
        if !open && !end {
            return;
        }
        let Ok(r) = Record::parse(bytes) else { return };
        if open && r.outcome == Outcome::Started {
            self.started.insert(index, r);
        } else if let (true, Some(f)) = (end, r.follows) {
            self.started.remove(&f);
        }
    }

    /// An `interrupted` end for every open still unfinished, at `time`.
    pub fn interrupted_ends(&self, time: &str) -> Vec<Record> {
        self.started
            .iter()
            .map(|(i, r)| {
                Record::open_end(
                    *i,
                    r,
                    time,
                    OpenOutcome::Interrupted,
                    None,
                    Some(
                        "no end was recorded: the process died (SIGKILL or a crash); found by the next command on the vault. An output appears whole or not at all: it exists only if the process died after naming it".into(),
                    ),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(outcome: &str) -> Record {
        Record::action(
            "2026-11-30T12:00:00Z",
            "operator-open",
            "alice",
            "m",
            Some("r"),
            vec!["a".into()],
            outcome,
        )
    }

    #[test]
    fn an_open_without_an_end_is_found_and_one_with_an_end_is_not() {
        let mut u = UnfinishedOpens::default();
        let start = open("started");
        u.add_entry(0, &start.canonical());
        u.add_entry(1, &open("started").canonical());
        let end = Record::open_end(1, &start, "t", OpenOutcome::Completed, Some(9), None);
        u.add_entry(2, &end.canonical());
        // An earlier version's `allowed` open has no end by design: not reported.
        u.add_entry(3, &open("allowed").canonical());
        let ends = u.interrupted_ends("t2");
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].follows, Some(0));
        assert_eq!(ends[0].outcome, "interrupted");
        assert_eq!(ends[0].kind, "open-end");
        assert_eq!(ends[0].requester, "alice");
    }

    #[test]
    fn a_record_without_a_reason_keeps_its_earlier_canonical_bytes() {
        let r = open("allowed");
        let bytes = r.canonical();
        assert!(!String::from_utf8_lossy(&bytes).contains("reason"));
        assert_eq!(Record::parse(&bytes).unwrap(), r);
        let mut with = r.clone();
        with.reason = Some("why".into());
        assert_eq!(Record::parse(&with.canonical()).unwrap(), with);
    }
}
