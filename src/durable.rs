//! Making changes to the file system durable: the one place the vault's store and the ledger's
//! log both use.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Syncs a directory (after names in it changed), so that a new or renamed entry survives a
/// crash.
pub fn sync_dir(p: &Path) -> std::io::Result<()> {
    File::open(p).and_then(|f| f.sync_all())
}

/// An I/O error with what was being done where: the store's and its scratch directories' one
/// shape for it.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct PathIoError {
    /// What was being done.
    pub action: &'static str,
    /// Where.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}
