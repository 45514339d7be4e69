//! `weightvault trace`: scores a suspect copy against every recorded release of a revision
//! and prints whom it accuses (or the report as JSON).

use crate::cli::Globals;
use crate::store::RevisionRef;
use crate::watermark::trace::trace;
use anyhow::Result;
use std::path::Path;

/// Runs `trace`.
pub(in crate::cli) fn run(
    g: &Globals,
    suspect: &Path,
    model: &RevisionRef,
    epsilon: f64,
) -> Result<()> {
    let v = g.open_vault()?;
    if !v.watermark_key_path().exists() {
        anyhow::bail!("this vault has no watermark key: it never released a watermarked copy");
    }
    let kw = v.key_wrap()?;
    let rev = v.open_revision(model, &kw)?;
    let wm = v.watermark_key(&kw)?;
    let candidates = v.trace_candidates(&rev.manifest.model, &rev.manifest.revision)?;
    let rep = trace(&wm, &rev, suspect, candidates, epsilon).map_err(|e| anyhow::anyhow!(e))?;
    if g.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    outln!(
        "suspect {}: {} tensors matched ({} weights), scale {:.4}, {} of {} segments read",
        suspect.display(),
        rep.matched_tensors,
        rep.weights,
        rep.scale,
        rep.segments_read,
        rep.segments
    );
    for r in &rep.renamed {
        outln!(
            "  {} matched to {} by shape and correlation ({:.3})",
            r.suspect,
            r.original,
            r.correlation
        );
    }
    if rep.threshold.is_finite() {
        outln!(
            "{} releases of {} in the ledger; an innocent reaches score {:.1} with probability <= {:.0e} / {}",
            rep.releases, rev.label, rep.threshold, rep.epsilon, rep.releases
        );
    } else {
        outln!(
            "{} releases of {} in the ledger; the suspect carries no readable watermark",
            rep.releases,
            rev.label
        );
    }
    if rep.accused.is_empty() {
        outln!("no release accused");
    }
    for a in &rep.accused {
        let r = &a.release.record;
        let bound = if a.bound > 0.0 {
            format!("{:.1e}", a.bound)
        } else {
            "< 1e-300".to_string()
        };
        outln!(
            "ACCUSED ledger entry {}: {} ({}) on host {} in {}, at {}, codeword {}: score {:.1}, innocent bound {bound}",
            a.release.ledger_index,
            r["requester"].as_str().unwrap_or("?"),
            r["organisation"].as_str().unwrap_or("-"),
            r["host_id"].as_str().unwrap_or("?"),
            r["host_country"].as_str().unwrap_or("?"),
            r["time"].as_str().unwrap_or("?"),
            a.release.codeword,
            a.score,
        );
        outln!("  {}", a.release.record);
    }
    Ok(())
}
