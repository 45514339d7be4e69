//! `weightvault remove`: takes a revision out of the vault (recorded first) so that its name
//! can be sealed again.

use crate::cli::ui::human;
use crate::cli::{operator, Globals};
use crate::store::RevisionRef;
use anyhow::Result;

/// Runs `remove`.
pub(in crate::cli) fn run(g: &Globals, revision: &RevisionRef, yes: bool) -> Result<()> {
    anyhow::ensure!(
        yes,
        "removing {}@{} deletes its sealed files: run again with --yes to confirm",
        revision.model,
        revision.revision.as_deref().unwrap_or("REV")
    );
    crate::interrupt::install()?;
    let v = g.open_vault()?;
    let rep = v.remove_recorded(revision, &operator::identity())?;
    g.report(
        serde_json::json!({
            "revision": rep.label,
            "files": rep.files,
            "bytes": rep.bytes,
            "recorded": rep.recorded,
        }),
        || {
            format!(
                "{}: removed ({} sealed files, {}; {}). Its name can be sealed again.",
                rep.label,
                rep.files,
                human(rep.bytes),
                rep.recorded
            )
        },
    )?;
    Ok(())
}
