//! What the ledger records, and its canonical bytes (`docs/LEDGER.md`).

use serde::{Deserialize, Serialize};

/// One ledger entry. Serialised canonically as compact JSON with the fields in this order;
/// absent values are `null`, never omitted. No secret (key, PIN, token) ever enters a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// `release-decision`, `stream-end` or `operator-open`.
    pub kind: String,
    /// RFC 3339 UTC time.
    pub time: String,
    /// Requester id (certificate identity, or the operator's user name).
    pub requester: String,
    /// `person`, `workload` or `operator`.
    pub requester_kind: String,
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
    /// Shards (paths) concerned.
    pub shards: Vec<String>,
    /// `allowed`, `denied`, `completed`, `cut-short`.
    pub outcome: String,
    /// Failing checks (names), for denials.
    pub failed_checks: Vec<String>,
    /// Licence id or licence exception relied on.
    pub authority: Option<String>,
    /// Watermark codeword id (watermarking issue).
    pub codeword: Option<String>,
    /// Bytes released so far (stream-end records).
    pub bytes: Option<u64>,
    /// Index of the entry this one follows up (stream-end records).
    pub follows: Option<u64>,
}

impl Record {
    /// A record of an operator's or the service's own action (no host, no requester facts):
    /// `operator-open`, `shred`, `policy-reload`. Time is now.
    pub fn action(
        kind: &str,
        requester: &str,
        model: &str,
        revision: Option<&str>,
        shards: Vec<String>,
        outcome: &str,
    ) -> Self {
        Record {
            kind: kind.into(),
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .expect("time formats"),
            requester: requester.into(),
            requester_kind: "operator".into(),
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
        }
    }

    /// The user running this command (for operator records).
    pub fn operator() -> String {
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    }

    /// Canonical bytes: compact JSON, fields in declaration order.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialise")
    }

    /// Parses canonical bytes, requiring that they re-serialise identically.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.canonical() != bytes {
            return Err("not in canonical form".into());
        }
        Ok(r)
    }
}
