//! Taking a revision out of the vault, recorded first.

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
        let (label, dir) = self.named_revision(r, "remove")?;
        let mut files = Vec::new();
        rotation::walk_sealed(&dir, &mut files)?;
        files.sort();
        let bytes = files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let names: Vec<String> = files.iter().map(|p| self.relative(p)).collect();
        let recorded = record(&label, &names).map_err(StoreError::Unrecorded)?;
        let scratch = output::Scratch::beside(&dir, "removed", false)?;
        let moved = scratch.path().join("revision");
        std::fs::rename(&dir, &moved).map_err(|e| StoreError::io("removing", &dir, e))?;
        sync_dir(&self.model_dir(&r.model))?;
        drop(scratch);
        Ok(RemoveReport {
            label,
            files: files.len(),
            bytes,
            recorded,
        })
    }

    /// `model@rev` and its directory, for a command (`verb`) that must be given the revision
    /// by name (no default to the only one).
    pub(crate) fn named_revision(
        &self,
        r: &RevisionRef,
        verb: &str,
    ) -> Result<(String, PathBuf), StoreError> {
        let Some(rev) = &r.revision else {
            return Err(StoreError::BadInput(format!(
                "name the revision to {verb}: {}@REV",
                r.model
            )));
        };
        check_name("model name", &r.model)?;
        check_name("revision", rev)?;
        let label = format!("{}@{rev}", r.model);
        let dir = self.model_dir(&r.model).join(rev);
        if !dir.join(MANIFEST_FILE).is_file() {
            return Err(StoreError::NotFound(format!(
                "no revision {label} in this vault"
            )));
        }
        Ok((label, dir))
    }
}
