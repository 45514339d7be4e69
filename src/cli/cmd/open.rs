//! `weightvault open`: writes a revision's files (or one tensor, or one file or a byte range
//! of it) back, recorded in the ledger before and after, and prints where they went.

use crate::actions::open::{OpenTarget, StreamTarget};
use crate::cli::ui::{human, Bars};
use crate::cli::{operator, Globals};
use crate::store::RevisionRef;
use anyhow::Result;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// Which part of the revision: all of it, one tensor, or one file (or a range of it).
pub(in crate::cli) struct Part<'a> {
    pub(in crate::cli) tensor: Option<&'a str>,
    pub(in crate::cli) file: Option<&'a str>,
    pub(in crate::cli) range: Option<(Option<u64>, Option<u64>)>,
}

/// Runs `open`.
pub(in crate::cli) fn run(
    g: &Globals,
    revision: &RevisionRef,
    out: &Path,
    part: Part<'_>,
) -> Result<()> {
    crate::interrupt::install()?;
    let to_stdout = out == Path::new("-");
    anyhow::ensure!(
        !to_stdout || part.tensor.is_some() || part.file.is_some(),
        "--out - (standard output) takes one tensor or one file: give --tensor NAME or --file PATH, or a directory for the whole revision"
    );
    anyhow::ensure!(
        to_stdout || part.file.is_none(),
        "--file writes to standard output: give --out -"
    );
    anyhow::ensure!(
        !to_stdout || !std::io::stdout().is_terminal(),
        "refusing to write plaintext weights to a terminal: redirect standard output to a file or a pipe"
    );
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    let rev = v.open_revision(revision, &kw)?;
    if to_stdout {
        let what = match (part.tensor, part.file) {
            (Some(name), _) => StreamTarget::Tensor(name),
            (None, Some(path)) => StreamTarget::File {
                path,
                range: part.range.unwrap_or((None, None)),
            },
            (None, None) => unreachable!("checked above"),
        };
        let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let opened = v.open_to_stream_recorded(&rev, what, &mut stdout, &operator::identity())?;
        drop(stdout);
        // The report goes to standard error: standard output holds the bytes.
        if g.json {
            eprintln!(
                "{}",
                serde_json::json!({
                    "revision": rev.label,
                    "out": "-",
                    "bytes": opened.bytes,
                    "ledger_start": opened.start,
                    "ledger_end": opened.end,
                })
            );
        } else if !g.quiet {
            eprintln!(
                "{}: wrote {} to standard output (ledger entries {}, {})",
                rev.label,
                human(opened.bytes),
                opened.start,
                opened.end
            );
        }
        return Ok(());
    }
    let t = Instant::now();
    let opened = {
        let bars = Bars::new(g.quiet || part.tensor.is_some());
        let what = match part.tensor {
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
        let opened = v.open_recorded(&rev, what, out, &operator::identity());
        bars.bar.finish_and_clear();
        opened?
    };
    let tensor = part.tensor;
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
