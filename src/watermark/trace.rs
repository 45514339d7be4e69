//! `weightvault trace`: who received a leaked copy. Reads the suspect (safetensors files),
//! decrypts the original from the vault, matches tensors by name, estimates one global scale,
//! reads every segment's symbol, and scores every release of the model recorded in the ledger
//! with the symmetric Tardos score. A release is accused when the bound on an innocent scoring
//! as high, times the number of releases, is at most epsilon.

use super::carrier::Carrier;
use super::mark::{self, Detector, MarkedTensor};
use super::tardos::{Code, DEFAULT_CUTOFF};
use crate::keys::SymmetricKey;
use crate::store::{OpenedRevision, StoreError};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// Default epsilon: the accepted chance of accusing anyone innocent, over all releases.
pub const DEFAULT_EPSILON: f64 = 1e-6;
/// |t| below which a segment is read as erased.
pub const SYMBOL_THRESHOLD: f64 = 1.0;

/// A release that can be accused: from a ledger `release-decision` record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    /// Ledger index of the decision.
    pub ledger_index: u64,
    /// Codeword id (hex).
    pub codeword: String,
    /// The record (JSON).
    pub record: serde_json::Value,
}

/// One accused release.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accusation {
    /// The release.
    pub release: Candidate,
    /// Its score.
    pub score: f64,
    /// Upper bound on the probability that an innocent recipient scores this high.
    pub bound: f64,
}

/// What `trace` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceReport {
    /// Suspect tensors matched to watermarked tensors of the model.
    pub matched_tensors: usize,
    /// Weights read.
    pub weights: u64,
    /// Estimated global scale (suspect ≈ scale × original).
    pub scale: f64,
    /// Segments, and those read (not erased).
    pub segments: u32,
    /// Segments with a symbol.
    pub segments_read: usize,
    /// Releases scored.
    pub releases: usize,
    /// Score an innocent reaches with probability at most epsilon / releases.
    pub threshold: f64,
    /// Epsilon.
    pub epsilon: f64,
    /// Accused releases, highest score first.
    pub accused: Vec<Accusation>,
}

/// The watermarked tensors of every file of a revision (empty for files that are not
/// safetensors), and the revision's segment count, which follows from their weights. The
/// service marks releases and `trace` reads suspects with this one description.
pub fn revision_tensors(rev: &OpenedRevision) -> Result<(Vec<Vec<MarkedTensor>>, u32), String> {
    let mut files = Vec::with_capacity(rev.files.len());
    let mut eligible = 0u64;
    for (e, f) in &rev.files {
        if e.kind != crate::format::FileKind::Safetensors {
            files.push(Vec::new());
            continue;
        }
        let md = crate::store::checkpoint::parse_safetensors_meta(&f.header().meta)
            .map_err(|w| format!("{}: {w}", e.path))?;
        let ts = mark::marked_tensors(&md);
        eligible += ts
            .iter()
            .map(|t| (t.range.1 - t.range.0) / mark::elem_size(t.dtype).expect("eligible") as u64)
            .sum::<u64>();
        files.push(ts);
    }
    Ok((files, mark::segments_for(eligible)))
}

/// Suspect safetensors files: a file, or every `.safetensors` file under a directory.
pub fn suspect_files(p: &Path) -> Result<Vec<PathBuf>, String> {
    fn walk(d: &Path, v: &mut Vec<PathBuf>) -> Result<(), String> {
        for e in std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if path.is_dir() {
                walk(&path, v)?;
            } else if path.extension().is_some_and(|x| x == "safetensors") {
                v.push(path);
            }
        }
        Ok(())
    }
    if p.is_file() {
        return Ok(vec![p.into()]);
    }
    let mut v = Vec::new();
    walk(p, &mut v)?;
    if v.is_empty() {
        return Err(format!("{}: no .safetensors file", p.display()));
    }
    v.sort();
    Ok(v)
}

/// Traces `suspect` against the opened original revision and the candidate releases.
pub fn trace(
    wm_key: &SymmetricKey,
    rev: &OpenedRevision,
    suspect: &Path,
    candidates: Vec<Candidate>,
    epsilon: f64,
) -> Result<TraceReport, String> {
    // The original's watermarked tensors, by name.
    let (files, segments) = revision_tensors(rev)?;
    let originals: Vec<(usize, MarkedTensor)> = files
        .into_iter()
        .enumerate()
        .flat_map(|(i, ts)| ts.into_iter().map(move |t| (i, t)))
        .collect();
    // The suspect, held in memory (its files are read once).
    let files = suspect_files(suspect)?;
    let blobs: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    let parsed: Vec<SafeTensors<'_>> = blobs
        .iter()
        .zip(&files)
        .map(|(b, p)| {
            SafeTensors::deserialize(b)
                .map_err(|e| format!("{}: not safetensors: {e}", p.display()))
        })
        .collect::<Result<_, _>>()?;
    let find = |name: &str| parsed.iter().find_map(|s| s.tensor(name).ok());
    // Pair each watermarked original tensor with the suspect's of the same name and shape.
    let mut pairs = Vec::new();
    for (i, t) in &originals {
        let Some(sv) = find(&t.name) else { continue };
        let n =
            ((t.range.1 - t.range.0) / mark::elem_size(t.dtype).expect("eligible") as u64) as usize;
        let numel: usize = sv.shape().iter().product();
        if numel != n || mark::elem_size(sv.dtype()).is_none() {
            continue;
        }
        let orig = rev.files[*i]
            .1
            .read_range(t.range.0, t.range.1)
            .map_err(|e: StoreError| e.to_string())?;
        pairs.push((t.clone(), zeroize::Zeroizing::new(orig), sv));
    }
    if pairs.is_empty() {
        return Err(
            "no tensor of the suspect matches a watermarked tensor of the model by name and size"
                .into(),
        );
    }
    // One global scale.
    let mut fit = mark::ScaleFit::default();
    for (t, o, s) in &pairs {
        let n = o.len() / mark::elem_size(t.dtype).expect("eligible");
        for k in 0..n {
            fit.add(
                mark::value(t.dtype, o, k),
                mark::value(s.dtype(), s.data(), k),
            );
        }
    }
    let scale = fit.scale();
    let mut d = Detector::new(segments);
    for (t, o, s) in &pairs {
        let n = o.len() / mark::elem_size(t.dtype).expect("eligible");
        let c = Carrier::new(wm_key, &t.name);
        d.add(
            &c,
            0,
            |k| mark::value(t.dtype, o, k),
            |k| mark::value(s.dtype(), s.data(), k),
            n,
            scale,
        );
    }
    let y = d.symbols(SYMBOL_THRESHOLD);
    let code = Code::new(wm_key, segments, DEFAULT_CUTOFF);
    let releases = candidates.len();
    let threshold = if releases == 0 {
        f64::INFINITY
    } else {
        code.threshold(&y, epsilon / releases as f64)
    };
    let mut accused: Vec<Accusation> = candidates
        .into_iter()
        .filter_map(|c| {
            let id: [u8; 16] = hex::decode(&c.codeword).ok()?.try_into().ok()?;
            let score = code.score(&y, &code.codeword(wm_key, &id));
            (score >= threshold).then(|| Accusation {
                bound: code.innocent_tail(&y, score),
                score,
                release: c,
            })
        })
        .collect();
    accused.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(TraceReport {
        matched_tensors: pairs.len(),
        weights: d.elements(),
        scale,
        segments,
        segments_read: y.iter().filter(|s| s.is_some()).count(),
        releases,
        threshold,
        epsilon,
        accused,
    })
}
