//! `weightvault gc`: removes what interrupted commands left behind and prints each leftover
//! (as text or JSON lines).

use crate::cli::ui::human;
use crate::cli::Globals;
use crate::store::Vault;
use anyhow::Result;
use std::path::PathBuf;

/// Runs `gc`.
pub(in crate::cli) fn run(g: &Globals, dirs: Vec<PathBuf>, dry_run: bool) -> Result<()> {
    let json = g.json;
    let vault = Vault::open(&g.dir).ok();
    let rep = crate::actions::gc::gc(vault.as_ref(), dirs, dry_run)?;
    for l in &rep.found {
        if json {
            outln!("{}", serde_json::to_string(l)?);
        } else {
            outln!(
                "{} {} ({:?}, {})",
                if l.removed { "removed" } else { "would remove" },
                l.path.display(),
                l.kind,
                human(l.bytes)
            );
        }
    }
    if let Some(n) = rep.settled.filter(|n| *n > 0) {
        if json {
            outln!("{}", serde_json::json!({"recorded_interrupted_opens": n}));
        } else {
            outln!("recorded {n} unfinished open(s) in the ledger as interrupted");
        }
    }
    if !json && rep.found.is_empty() {
        outln!("nothing left behind");
    }
    Ok(())
}
