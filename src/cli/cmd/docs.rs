//! `weightvault completions SHELL` and `weightvault man`: shell completions and manual pages,
//! generated from the same clap definitions as `--help` (`clap_complete`, `clap_mangen`).

use crate::cli::{write_out, Cli, Globals};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

/// Prints the completion script for `shell`.
pub(in crate::cli) fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "weightvault", &mut script);
    write_out(format_args!("{}", String::from_utf8_lossy(&script)))?;
    Ok(())
}

/// Prints the top-level page, or writes every page into `out`.
pub(in crate::cli) fn man(g: &Globals, out: Option<&Path>) -> Result<()> {
    let cmd = Cli::command();
    match out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            write_out(format_args!("{}", String::from_utf8_lossy(&page)))?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("weightvault") && n.ends_with(".1"))
                .collect();
            pages.sort();
            g.report(serde_json::json!({"out": dir, "pages": pages}), || {
                format!("wrote {} manual pages into {}", pages.len(), dir.display())
            })?;
        }
    }
    Ok(())
}
