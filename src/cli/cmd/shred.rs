//! `weightvault shred`: crypto-shreds a revision (recorded first) and prints what was
//! destroyed and what was checked.

use crate::cli::{operator, Globals};
use crate::store::RevisionRef;
use anyhow::Result;

/// Runs `shred`.
pub(in crate::cli) fn run(g: &Globals, revision: &RevisionRef, yes: bool) -> Result<()> {
    anyhow::ensure!(
        yes,
        "shredding destroys {}@{} for good: run again with --yes to confirm",
        revision.model,
        revision.revision.as_deref().unwrap_or("REV")
    );
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    let rep = v.shred_recorded(&kw, revision, &operator::identity())?;
    anyhow::ensure!(
        rep.still_open.is_empty(),
        "some keys on the HSM still unwrap a data key of {}: {}",
        rep.label,
        rep.still_open.join(", ")
    );
    if g.json {
        return Ok(g.report(serde_json::to_value(&rep)?, String::new)?);
    }
    outln!(
        "{}: SHREDDED. The key slots of its {} sealed files are overwritten; every other object was rewrapped to KEK v{} ({} objects) and KEK versions {} destroyed, so copies made earlier cannot be opened either.",
        rep.label,
        rep.files,
        rep.rotated_to,
        rep.rewrapped,
        if rep.retired.is_empty() {
            "(none older)".to_string()
        } else {
            rep.retired.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(", ")
        }
    );
    outln!(
        "Checked: none of the {} secret keys on the HSM unwraps any of its former data keys. Its ciphertext can never be opened again.",
        rep.keys_tried
    );
    Ok(())
}
