//! Sealing as an operator does it: the training facts checked against each other and the
//! model inventory first, then the seal, then its ledger record (with any disagreement the
//! seal was forced through). A seal that cannot be recorded is taken out of the vault again,
//! so nothing sealed is missing from the ledger.

use super::operator_record;
use crate::hsm::KeyWrap;
use crate::ledger::spool::Recorded;
use crate::ledger::words::{Kind, Outcome};
use crate::ledger::LedgerError;
use crate::policy::data::PolicyError;
use crate::store::{
    RevisionRef, SealProgress, SealReport, SealRequest, StoreError, TrainingFacts, Vault,
};
use std::path::Path;

/// What is wrong with a seal's facts: contradictions between them, and disagreements with
/// the model's entry in the inventory (`models.toml`) of the policy directory `policies`,
/// when that directory exists. Each is a sentence naming both sides; none means the facts
/// may be sealed.
pub fn seal_disagreements(
    model: &str,
    facts: &TrainingFacts,
    policies: &Path,
) -> Result<Vec<String>, PolicyError> {
    let mut why = crate::policy::classify::contradictions(facts);
    if policies.is_dir() {
        let p = crate::local::PolicyDir::new(policies).load()?;
        if let Some(m) = p.models.get(model) {
            why.extend(
                crate::policy::classify::inventory_disagreements(facts, m)
                    .into_iter()
                    .map(|d| format!("{d} ({})", policies.join("models.toml").display())),
            );
        }
    }
    Ok(why)
}

/// Why a recorded seal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The seal itself (nothing was recorded).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The revision was sealed but its record could not be written; `undone` is the error of
    /// taking it out again, if that failed too.
    #[error(
        "{label} could not be recorded in the ledger ({error}); {}",
        match undone {
            None => "it was taken out of the vault again".to_string(),
            Some(u) => format!("taking it out again failed too: {u}"),
        }
    )]
    NotRecorded {
        /// `model@revision`.
        label: String,
        /// Why the record was not written.
        error: LedgerError,
        /// Why taking the revision out again failed, if it did.
        undone: Option<Box<StoreError>>,
    },
    /// The `seal` record would name more than a ledger entry holds: refused before anything
    /// is written.
    #[error("{} has {files} files: the `seal` record naming them would be {} bytes, longer than a ledger entry may be ({} bytes); nothing was sealed (seal the checkpoint as fewer, larger shards)", src.display(), too_long.len, crate::ledger::record::MAX_ENTRY_LEN)]
    TooManyFiles {
        /// The source.
        src: std::path::PathBuf,
        /// Its files.
        files: usize,
        /// The record's length.
        too_long: crate::ledger::record::TooLong,
    },
}

impl Vault {
    /// Seals `src` as `req` (see [`Vault::seal`]) and records the seal as `operator`'s: a
    /// `seal` record of every file and the bytes sealed. `forced` are the disagreements
    /// ([`seal_disagreements`]) the operator sealed despite; they are recorded as a failed
    /// `classification` check with the reason `forced: ...`. A seal that cannot be recorded
    /// is removed again (unrecorded) and the error says whether that worked.
    pub fn seal_recorded(
        &self,
        src: &Path,
        req: &SealRequest,
        kw: &dyn KeyWrap,
        progress: &dyn SealProgress,
        operator: &str,
        forced: &[String],
    ) -> Result<(SealReport, Recorded), SealError> {
        let record = |files: Vec<String>, bytes: u64| {
            let mut rec = operator_record(
                Kind::Seal,
                operator,
                &req.model,
                Some(&req.revision),
                files,
                Outcome::Sealed,
            );
            rec.bytes = Some(bytes);
            if !forced.is_empty() {
                rec.failed_checks = vec!["classification".into()];
                rec.reason = Some(format!("forced: {}", forced.join("; ")));
            }
            rec
        };
        // The record names every file: one that cannot be an entry is known before a byte is
        // sealed (the longest byte count stands in for the one to come).
        let plan = crate::store::checkpoint::plan(src)?;
        let files = plan.len();
        if let Err(too_long) = record(plan.into_iter().map(|f| f.rel).collect(), u64::MAX).entry() {
            return Err(SealError::TooManyFiles {
                src: src.to_path_buf(),
                files,
                too_long,
            });
        }
        let r = self.seal(src, req, kw, progress)?;
        let rec = record(
            r.manifest.files.iter().map(|f| f.path.clone()).collect(),
            r.bytes,
        );
        match self.record(&rec) {
            Ok(at) => Ok((r, at)),
            Err(error) => {
                let rref = RevisionRef {
                    model: r.manifest.model.clone(),
                    revision: Some(r.manifest.revision.clone()),
                };
                let undone = self
                    .remove(&rref, |_, _| Ok(String::new()))
                    .err()
                    .map(Box::new);
                Err(SealError::NotRecorded {
                    label: format!("{}@{}", r.manifest.model, r.manifest.revision),
                    error,
                    undone,
                })
            }
        }
    }
}
