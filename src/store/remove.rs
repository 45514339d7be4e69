//! Taking a revision out of the vault, recorded first.

use super::object::ObjectRef;
use super::*;

/// What `remove` did.
#[derive(Debug, Clone)]
pub struct RemoveReport {
    /// `model@rev`.
    pub label: String,
    /// Sealed files deleted.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Where the ledger record went.
    pub recorded: String,
}

impl Vault {
    /// Takes `model@rev` out of the vault: `record(label, files)` first (nothing is removed if
    /// it fails), then the revision is moved into a scratch directory and deleted, so an
    /// interruption leaves either the revision whole or a leftover `gc` removes.
    pub fn remove(
        &self,
        r: &RevisionRef,
        record: impl FnOnce(&str, &[String]) -> Result<String, RecordError>,
    ) -> Result<RemoveReport, StoreError> {
        let (label, rev) = self.named_revision(r, "remove")?;
        let store = self.sealed_store();
        let names: Vec<String> = store
            .objects(&r.model, &rev)?
            .iter()
            .map(ObjectRef::label)
            .collect();
        let recorded = record(&label, &names).map_err(StoreError::Unrecorded)?;
        let (files, bytes) = store.remove_revision(&r.model, &rev)?;
        Ok(RemoveReport {
            label,
            files,
            bytes,
            recorded,
        })
    }

    /// `model@rev` and the revision's name, for a command (`verb`) that must be given the revision
    /// by name (no default to the only one).
    pub(crate) fn named_revision(
        &self,
        r: &RevisionRef,
        verb: &str,
    ) -> Result<(String, String), StoreError> {
        let Some(rev) = &r.revision else {
            return Err(StoreError::BadInput(format!(
                "name the revision to {verb}: {}@REV",
                r.model
            )));
        };
        check_name("model name", &r.model)?;
        check_name("revision", rev)?;
        let label = format!("{}@{rev}", r.model);
        if self.sealed_store().state(&r.model, rev)? != object::RevisionState::Sealed {
            return Err(StoreError::NotFound(format!(
                "no revision {label} in this vault"
            )));
        }
        Ok((label, rev.clone()))
    }
}
