//! `weightvault inspect`: a revision's files and tensors from its clear headers, without the
//! HSM.

use crate::cli::ui::human;
use crate::cli::Globals;
use crate::store::RevisionRef;
use anyhow::Result;

/// Runs `inspect`.
pub(in crate::cli) fn run(g: &Globals, revision: &RevisionRef) -> Result<()> {
    let v = g.open_vault()?;
    let i = v.inspect(revision)?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    let tensors: usize = i.files.iter().map(|f| f.tensors.len()).sum();
    outln!(
        "{}: {} files, {} tensors, sealed at {} (read from clear headers; `verify` authenticates them)",
        i.revision,
        i.files.len(),
        tensors,
        i.sealed_at
    );
    if let Some(t) = &i.shredded {
        outln!("SHREDDED{t}: can never be opened");
    }
    for f in &i.files {
        outln!("{:<48} {:>10}", f.path, human(f.bytes));
        for t in &f.tensors {
            let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
            outln!(
                "  {:<56} {:<5} [{}] {}",
                t.name,
                t.dtype,
                shape.join(", "),
                human(t.bytes)
            );
        }
    }
    Ok(())
}
