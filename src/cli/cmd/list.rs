//! `weightvault list`: the sealed revisions as a table (or JSON), read from clear headers.

use crate::cli::ui::human;
use crate::cli::Globals;
use anyhow::Result;

/// Runs `list`.
pub(in crate::cli) fn run(g: &Globals) -> Result<()> {
    let v = g.open_vault()?;
    let revs = v.list()?;
    if g.json {
        let ms: Vec<_> = revs.iter().map(|r| &r.manifest).collect();
        outln!("{}", serde_json::to_string_pretty(&ms)?);
    } else if revs.is_empty() {
        outln!("no sealed models in {}", v.dir().display());
    } else {
        outln!(
            "{:<24} {:<16} {:>6} {:>7} {:>8} {:>10} {:>10}  {:<8} {:<10} sealed at",
            "MODEL",
            "REVISION",
            "FILES",
            "SHARDS",
            "TENSORS",
            "SIZE",
            "SEALED",
            "ECCN",
            "OPS"
        );
        for r in revs {
            let m = &r.manifest;
            let size: u64 = m.files.iter().map(|f| f.original_len).sum();
            let eccn = match (&m.training.eccn, m.training.open_weights) {
                (_, true) => "open".to_string(),
                (Some(e), _) => e.clone(),
                (None, _) => "-".into(),
            };
            outln!(
                "{:<24} {:<16} {:>6} {:>7} {:>8} {:>10} {:>10}  {:<8} {:<10} {}",
                m.model,
                m.revision,
                m.files.len(),
                m.files.iter().filter(|f| f.shard_count > 0).count(),
                m.files.iter().map(|f| f.tensors).sum::<usize>(),
                human(size),
                human(r.sealed_bytes),
                eccn,
                m.training
                    .training_ops
                    .map(|o| format!("{o:e}"))
                    .unwrap_or("-".into()),
                m.sealed_at
            );
            if let Some(t) = &r.shredded {
                outln!("{:<24} {:<16} SHREDDED{t}: can never be opened", "", "");
            }
        }
    }
    Ok(())
}
