//! The releases a leaked copy may have come from: every allowed release decision of a
//! revision that the ledger records with a watermark codeword, as candidates for
//! [`crate::watermark::trace::trace`].

use crate::ledger::record::Record;
use crate::ledger::words::{Kind, Outcome};
use crate::ledger::LedgerError;
use crate::store::Vault;
use crate::watermark::trace::Candidate;

impl Vault {
    /// Every allowed `release-decision` of `model@revision` in the vault's ledger that carries
    /// a codeword, oldest first, each with its ledger index and the whole record.
    pub fn trace_candidates(
        &self,
        model: &str,
        revision: &str,
    ) -> Result<Vec<Candidate>, LedgerError> {
        let mut candidates = Vec::new();
        self.visit_ledger(0, &mut |i, e| {
            let r = Record::parse(e).map_err(|w| format!("not a canonical record: {w}"))?;
            if r.kind == Kind::ReleaseDecision
                && r.outcome == Outcome::Allowed
                && r.model == model
                && r.revision.as_deref() == Some(revision)
            {
                if let Some(c) = &r.codeword {
                    candidates.push(Candidate {
                        ledger_index: i,
                        codeword: c.clone(),
                        record: serde_json::from_slice(e).expect("record JSON"),
                    });
                }
            }
            Ok(())
        })?;
        Ok(candidates)
    }
}
