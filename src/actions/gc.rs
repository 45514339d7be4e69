//! What interrupted commands left behind, found and removed: partial outputs, resume state,
//! unfinished seals and removals (see [`crate::store::output::sweep`]), and the operator
//! opens a killed process left unrecorded, which are recorded as interrupted.

use crate::ledger::LedgerError;
use crate::store::output::Leftover;
use crate::store::Vault;
use std::path::PathBuf;

/// What `gc` found and did.
#[derive(Debug, Clone)]
pub struct GcReport {
    /// Every leftover found, removed unless in a dry run.
    pub found: Vec<Leftover>,
    /// Unfinished opens recorded as interrupted; `None` when nothing was recorded (a dry run,
    /// no vault, or a running service holds the ledger: it recorded them when it started).
    pub settled: Option<usize>,
}

/// Why `gc` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// A directory could not be searched.
    #[error("looking for leftovers in {}", dir.display())]
    Sweep {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ledger could not be settled.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Looks for leftovers in `vault` (its models' directories), in every place this user's
/// `open` and `fetch` remembered, and in `dirs` (not below them), each directory once;
/// removes them unless `dry_run`. A scratch directory whose command still runs is left alone.
/// Then, unless `dry_run`, records the vault's unfinished opens.
pub fn gc(vault: Option<&Vault>, dirs: Vec<PathBuf>, dry_run: bool) -> Result<GcReport, GcError> {
    let mut places: Vec<PathBuf> = Vec::new();
    if let Some(v) = vault {
        places.extend(v.scratch_places());
    }
    places.extend(crate::store::output::remembered_places());
    places.extend(dirs);
    let mut seen = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for p in places {
        let key = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.insert(key) {
            continue;
        }
        found.extend(
            crate::store::output::sweep(&p, "", dry_run)
                .map_err(|source| GcError::Sweep { dir: p, source })?,
        );
    }
    // Unfinished opens: whoever takes the ledger records them (not while a service holds
    // it: it recorded them when it started).
    let settled = match (vault, dry_run) {
        (Some(v), false) => v.settle_ledger()?,
        _ => None,
    };
    Ok(GcReport { found, settled })
}
