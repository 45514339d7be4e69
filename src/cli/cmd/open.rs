//! `weightvault open`: writes a revision's files (or one tensor) back, recorded in the
//! ledger before and after, and prints where they went.

use crate::actions::open::OpenTarget;
use crate::cli::ui::{human, Bars};
use crate::cli::{operator, Globals};
use crate::store::RevisionRef;
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// Runs `open`.
pub(in crate::cli) fn run(
    g: &Globals,
    revision: &RevisionRef,
    out: &Path,
    tensor: Option<&str>,
) -> Result<()> {
    crate::interrupt::install()?;
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    let rev = v.open_revision(revision, &kw)?;
    let bars = Bars::new(g.quiet || tensor.is_some());
    let what = match tensor {
        Some(name) => OpenTarget::Tensor(name),
        None => {
            bars.bar.set_length(rev.total_bytes());
            bars.bar.set_message(format!("opening {}", rev.label));
            OpenTarget::Files {
                threads: crate::store::threads(v.config().seal.threads),
                progress: &bars.bar,
            }
        }
    };
    let t = Instant::now();
    let opened = v.open_recorded(&rev, what, out, &operator::identity());
    bars.bar.finish_and_clear();
    let opened = opened?;
    let (n, index, end_index) = (opened.bytes, opened.start, opened.end);
    let secs = t.elapsed().as_secs_f64();
    g.report(
        serde_json::json!({
            "revision": rev.label,
            "out": out,
            "tensor": tensor,
            "files": if tensor.is_some() { 1 } else { rev.files.len() },
            "bytes": n,
            "seconds": secs,
            "ledger_start": index,
            "ledger_end": end_index,
        }),
        || match tensor {
            Some(name) => format!(
                "{}: wrote tensor {name} ({}) to {} (ledger entries {index}, {end_index})",
                rev.label,
                human(n),
                out.display()
            ),
            None => format!(
                "{}: wrote {} files ({}) to {} in {secs:.2}s (ledger entries {index}, {end_index})",
                rev.label,
                rev.files.len(),
                human(n),
                out.display(),
            ),
        },
    )?;
    Ok(())
}
