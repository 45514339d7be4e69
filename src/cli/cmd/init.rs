//! `weightvault init`: makes the vault (or keeps what exists) and says what was done.

use crate::cli::Globals;
use crate::store::Vault;
use anyhow::Result;
use std::path::PathBuf;

/// Runs `init`.
pub(in crate::cli) fn run(g: &Globals, hsm_module: Option<PathBuf>) -> Result<()> {
    let (v, done) = Vault::init(&g.dir, hsm_module.as_deref())?;
    g.report(serde_json::json!({"vault": v.dir(), "done": done}), || {
        let mut t: String = done.iter().map(|d| format!("{d}\n")).collect();
        t.push_str(&format!("vault ready at {}", v.dir().display()));
        t
    })?;
    Ok(())
}
