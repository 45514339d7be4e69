//! What each licence has been used for, counted from the ledger, so that a restart does not
//! reset it: the release service decides with it, and `policy check` shows it.

use crate::record::{Record, RecordError};
use crate::words::{Kind, Outcome, RecordAuthority};
use std::collections::{BTreeMap, HashMap};
use weightvault_core::facts::Usage;

/// Releases and bytes per licence.
#[derive(Debug, Default)]
pub struct Allocations {
    /// Per licence id: allowed release decisions, and the bytes they released (each decision
    /// record carries the size of what it allows to be streamed).
    pub used: BTreeMap<String, Usage>,
    /// Bytes actually streamed per licence id (`stream-end` records; resumed and repeated
    /// ranges count again).
    pub streamed: BTreeMap<String, u64>,
    /// Licence and size of each allowed decision, by ledger index.
    of: HashMap<u64, (String, u64)>,
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
        if let Some((id, size)) = self.of.get(&index) {
            if let Some(u) = used.get_mut(id) {
                u.releases = u.releases.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(*size);
            }
        }
        used
    }

    /// Counts one record appended at ledger index `index`.
    pub fn add(&mut self, index: u64, r: &Record) {
        match r.kind {
            Kind::ReleaseDecision if r.outcome == Outcome::Allowed => {
                if let Some(id) = r.authority.as_ref().and_then(RecordAuthority::licence) {
                    let size = r.bytes.unwrap_or(0);
                    let u = self.used.entry(id.to_string()).or_default();
                    u.releases += 1;
                    u.bytes = u.bytes.saturating_add(size);
                    self.of.insert(index, (id.to_string(), size));
                }
            }
            Kind::StreamEnd => {
                if let Some((id, _)) = r.follows.and_then(|f| self.of.get(&f)) {
                    *self.streamed.entry(id.clone()).or_default() += r.bytes.unwrap_or(0);
                }
            }
            _ => {}
        }
    }
}
