//! `weightvault seal`: checks the flags and the facts, seals and records the seal, and
//! prints what was sealed.

use crate::actions::seal::seal_disagreements;
use crate::cli::ui::{gib_per_s, human, recorded_json, Bars};
use crate::cli::{operator, policy_dir, Globals, SealArgs};
use crate::store::{SealRequest, TrainingFacts};
use anyhow::{Context, Result};
use std::time::Instant;

/// Runs `seal`.
pub(in crate::cli) fn run(g: &Globals, a: SealArgs) -> Result<()> {
    let SealArgs {
        src,
        model,
        revision,
        eccn,
        training_ops,
        open_weights,
        force,
        policies,
    } = a;
    crate::interrupt::install()?;
    let v = g.open_vault()?;
    if let Some(ops) = training_ops {
        anyhow::ensure!(
            ops.is_finite() && ops >= 0.0,
            "--training-ops must be a non-negative number"
        );
    }
    if let Some(e) = &eccn {
        crate::policy::classify::check_eccn(e)
            .map_err(|w| anyhow::anyhow!("{w}; nothing was sealed"))?;
    }
    let training = TrainingFacts {
        eccn,
        training_ops,
        open_weights,
    };
    let dir = policy_dir(policies);
    let disagreements = seal_disagreements(&model, &training, &dir).with_context(|| {
        format!(
            "reading the model inventory in {} (nothing was sealed; give --policies DIR)",
            dir.display()
        )
    })?;
    anyhow::ensure!(
        force || disagreements.is_empty(),
        "{model}@{revision} was not sealed, nothing was written: {}. Correct the flags (or the inventory), or give --force to seal anyway with the disagreement recorded in the ledger",
        disagreements.join("; ")
    );
    let kw = v.key_wrap()?;
    let bars = Bars::new(g.quiet);
    let t = Instant::now();
    let (r, at) = v.seal_recorded(
        &src,
        &SealRequest {
            model,
            revision,
            training,
        },
        &kw,
        &bars,
        &operator::identity(),
        &disagreements,
    )?;
    for d in &disagreements {
        eprintln!("weightvault: warning: sealed with --force although {d}");
    }
    let shards = r
        .manifest
        .files
        .iter()
        .filter(|f| f.shard_count > 0)
        .count();
    let secs = t.elapsed().as_secs_f64();
    g.report(
        serde_json::json!({
            "model": r.manifest.model,
            "revision": r.manifest.revision,
            "files": r.manifest.files.len(),
            "shards": shards,
            "tensors": r.manifest.files.iter().map(|f| f.tensors).sum::<usize>(),
            "bytes": r.bytes,
            "seconds": secs,
            "location": r.location,
            "recorded": recorded_json(&at),
            "forced": disagreements,
        }),
        || {
            format!(
                "sealed {}@{}: {} files ({} safetensors shards), {} in {secs:.2}s ({}) -> {} ({at})",
                r.manifest.model,
                r.manifest.revision,
                r.manifest.files.len(),
                shards,
                human(r.bytes),
                gib_per_s(r.bytes, t),
                r.location
            )
        },
    )?;
    Ok(())
}
