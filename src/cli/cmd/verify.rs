//! `weightvault verify`: authenticates every chunk of a revision and its manifest.

use crate::cli::ui::{gib_per_s, human, Bars};
use crate::cli::Globals;
use crate::store::RevisionRef;
use anyhow::Result;
use std::time::Instant;

/// Runs `verify`.
pub(in crate::cli) fn run(g: &Globals, revision: &RevisionRef) -> Result<()> {
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    let rev = v.open_revision(revision, &kw)?;
    let bars = Bars::new(g.quiet);
    bars.bar.set_length(rev.total_bytes());
    bars.bar.set_message(format!("verifying {}", rev.label));
    let t = Instant::now();
    rev.verify(crate::store::threads(v.config().seal.threads), &bars.bar)?;
    bars.bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    g.report(
        serde_json::json!({
            "revision": rev.label,
            "authentic": true,
            "files": rev.files.len(),
            "bytes": rev.total_bytes(),
            "seconds": secs,
        }),
        || {
            format!(
                "{}: manifest and {} files authentic, {} checked in {secs:.2}s ({})",
                rev.label,
                rev.files.len(),
                human(rev.total_bytes()),
                gib_per_s(rev.total_bytes(), t)
            )
        },
    )?;
    Ok(())
}
