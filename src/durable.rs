//! Making changes to the file system durable: the one place the vault's store and the ledger's
//! log both use.

use std::fs::File;
use std::path::Path;

/// Syncs a directory (after names in it changed), so that a new or renamed entry survives a
/// crash.
pub fn sync_dir(p: &Path) -> std::io::Result<()> {
    File::open(p).and_then(|f| f.sync_all())
}
