//! `weightvault trace`: who received a leaked copy. Reads the suspect (safetensors files),
//! decrypts the original from the vault, matches tensors by name, estimates one global scale,
//! reads every segment's symbol, and scores every release of the model recorded in the ledger
//! with the symmetric Tardos score. A release is accused when the bound on an innocent scoring
//! as high, times the number of releases, is at most epsilon.

use super::carrier::Carrier;
use super::mark::{self, Detector, MarkedTensor};
use super::tardos::{Code, DEFAULT_CUTOFF};
use safetensors::tensor::TensorView;
use weightvault_core::format::FileKind;
use weightvault_core::keys::SymmetricKey;

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

/// A suspect tensor matched to an original one of another name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Renamed {
    /// The original's name.
    pub original: String,
    /// The suspect's name.
    pub suspect: String,
    /// Sample correlation of their values.
    pub correlation: f64,
}

/// Sample correlation above which a suspect tensor of another name is taken for an original
/// one of the same shape. A copy (marked, quantised, pruned, averaged) correlates above 0.9;
/// two different weight matrices near 0 (±0.02 over the sample).
pub const MIN_CORRELATION: f64 = 0.5;

/// Elements sampled (evenly spaced) to correlate two tensors.
const CORRELATION_SAMPLE: usize = 8192;

/// Pearson correlation of evenly spaced samples of two tensors of equal length (non-finite
/// values skipped; 0 when either is constant).
pub fn sample_correlation(a: mark::Values<'_>, b: mark::Values<'_>) -> f64 {
    let n = a.len().min(b.len());
    let step = (n / CORRELATION_SAMPLE).max(1);
    let (mut sx, mut sy, mut sxx, mut syy, mut sxy, mut m) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut x, mut y) = ([0.0], [0.0]);
    for k in (0..n).step_by(step) {
        a.decode(k, &mut x);
        b.decode(k, &mut y);
        let (x, y) = (x[0], y[0]);
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
        m += 1.0;
    }
    if m < 2.0 {
        return 0.0;
    }
    let vx = sxx - sx * sx / m;
    let vy = syy - sy * sy / m;
    if vx <= 0.0 || vy <= 0.0 {
        return 0.0;
    }
    (sxy - sx * sy / m) / (vx * vy).sqrt()
}

/// What `trace` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceReport {
    /// Suspect tensors matched to watermarked tensors of the model.
    pub matched_tensors: usize,
    /// Of those, the ones matched by shape and correlation because their names differ.
    pub renamed: Vec<Renamed>,
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

/// Why a copy cannot be traced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// A file of the original revision has a safetensors header that does not parse.
    #[error("{path}: {why}")]
    Header {
        /// The file, as the revision names it.
        path: String,
        /// What is wrong with its header.
        #[source]
        why: weightvault_core::header_check::HeaderError,
    },
    /// Nothing of the suspect can be compared with the original.
    #[error(
        "no tensor of the suspect matches a watermarked tensor of the model, by name and size \
         or by shape and correlation"
    )]
    NoMatchingTensor,
}

/// The watermarked tensors of every file of a revision (empty for files that are not
/// safetensors), and the revision's segment count, which follows from their weights. The
/// service marks releases and `trace` reads suspects with this one description. `files` gives
/// each file's path, kind and (safetensors) header bytes, in the revision's order.
pub fn revision_tensors<'a>(
    files: impl IntoIterator<Item = (&'a str, FileKind, &'a [u8])>,
) -> Result<(Vec<Vec<MarkedTensor>>, u32), TraceError> {
    let mut out = Vec::new();
    let mut eligible = 0u64;
    for (path, kind, meta) in files {
        if kind != FileKind::Safetensors {
            out.push(Vec::new());
            continue;
        }
        let md = weightvault_core::header_check::parse_safetensors_meta(meta).map_err(|why| {
            TraceError::Header {
                path: path.to_string(),
                why,
            }
        })?;
        let ts = mark::marked_tensors(&md);
        eligible += ts
            .iter()
            .map(|t| (t.range.1 - t.range.0) / mark::elem_size(t.dtype).expect("eligible") as u64)
            .sum::<u64>();
        out.push(ts);
    }
    Ok((out, mark::segments_for(eligible)))
}

/// Folds `items` on every core: blocks of [`FOLD_BLOCK`] items each folded into a fresh
/// accumulator, the blocks' accumulators merged in block order whatever order they finish in, so
/// the result is the same for any number of threads. At most a few accumulators per thread
/// are alive at once.
fn ordered_fold<T: Sync, A: Send>(
    items: &[T],
    init: impl Fn() -> A + Sync,
    fold: impl Fn(&mut A, &T) + Sync,
    merge: impl Fn(&mut A, A) + Sync,
) -> A {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let blocks: Vec<&[T]> = items.chunks(FOLD_BLOCK).collect();
    let next = AtomicUsize::new(0);
    // (next block to merge, finished blocks waiting for their turn, the merged result)
    let state = Mutex::new((0usize, BTreeMap::new(), init()));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(blocks.len().max(1));
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(block) = blocks.get(i) else { break };
                let mut a = init();
                block.iter().for_each(|t| fold(&mut a, t));
                let mut st = state.lock().expect("fold state");
                st.1.insert(i, a);
                loop {
                    let want = st.0;
                    let Some(a) = st.1.remove(&want) else { break };
                    merge(&mut st.2, a);
                    st.0 += 1;
                }
            });
        }
    });
    state.into_inner().expect("fold state").2
}

/// Tensors per block of [`ordered_fold`].
const FOLD_BLOCK: usize = 4;

/// Traces a suspect copy: `originals` are the revision's watermarked tensors with their
/// original bytes and `segments` its segment count (from [`revision_tensors`]); `suspects` every
/// tensor of the suspect copy, by name; `candidates` the releases that may be accused.
pub fn trace(
    wm_key: &SymmetricKey,
    originals: &[(MarkedTensor, zeroize::Zeroizing<Vec<u8>>)],
    segments: u32,
    suspects: &[(String, TensorView<'_>)],
    candidates: Vec<Candidate>,
    epsilon: f64,
) -> Result<TraceReport, TraceError> {
    let suspects: Vec<&(String, TensorView<'_>)> = suspects
        .iter()
        .filter(|(_, v)| mark::elem_size(v.dtype()).is_some())
        .collect();
    let numel = |v: &TensorView<'_>| v.shape().iter().product::<usize>();
    // Pair each watermarked original tensor with the suspect's of the same name and size ...
    let mut taken = vec![false; suspects.len()];
    let mut pair_of: Vec<Option<usize>> = originals
        .iter()
        .map(|(t, o)| {
            let j = suspects.iter().position(|(n, _)| *n == t.name)?;
            let ok = numel(&suspects[j].1) == mark::Values::new(t.dtype, o).len();
            ok.then(|| {
                taken[j] = true;
                j
            })
        })
        .collect();
    // ... then the rest by shape and correlation (renamed tensors): the pairs of equal shape
    // with the highest sample correlation first, each tensor used once.
    let mut renamed = Vec::new();
    let mut cands = Vec::new();
    for (i, (t, o)) in originals.iter().enumerate() {
        if pair_of[i].is_some() {
            continue;
        }
        let ov = mark::Values::new(t.dtype, o);
        for (j, (_, v)) in suspects.iter().enumerate() {
            if taken[j] || numel(v) != ov.len() || v.shape() != t.shape.as_slice() {
                continue;
            }
            let r = sample_correlation(ov, mark::Values::new(v.dtype(), v.data()));
            if r >= MIN_CORRELATION {
                cands.push((r, i, j));
            }
        }
    }
    cands.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (r, i, j) in cands {
        if pair_of[i].is_none() && !taken[j] {
            pair_of[i] = Some(j);
            taken[j] = true;
            renamed.push(Renamed {
                original: originals[i].0.name.clone(),
                suspect: suspects[j].0.clone(),
                correlation: r,
            });
        }
    }
    renamed.sort_by(|a, b| a.original.cmp(&b.original));
    let pairs: Vec<_> = originals
        .iter()
        .zip(&pair_of)
        .filter_map(|((t, o), j)| j.map(|j| (t.clone(), o, &suspects[j].1)))
        .collect();
    if pairs.is_empty() {
        return Err(TraceError::NoMatchingTensor);
    }
    // One global scale.
    fn values<'a>(
        t: &MarkedTensor,
        o: &'a [u8],
        s: &'a TensorView<'_>,
    ) -> (mark::Values<'a>, mark::Values<'a>) {
        (
            mark::Values::new(t.dtype, o),
            mark::Values::new(s.dtype(), s.data()),
        )
    }
    // Both passes run on every core, tensor blocks merged in order (the result does not depend
    // on the number of threads).
    let fit = ordered_fold(
        &pairs,
        mark::ScaleFit::default,
        |f, (t, o, s)| {
            let (o, s) = values(t, o, s);
            f.add_tensor(o, s);
        },
        |a, b| a.merge(&b),
    );
    let scale = fit.scale();
    let d = ordered_fold(
        &pairs,
        || Detector::new(segments),
        |d, (t, o, s)| {
            let c = Carrier::new(wm_key, &t.name);
            let (o, s) = values(t, o, s);
            d.add(&c, 0, o, s, scale);
        },
        |a, b| a.merge(&b),
    );
    let y = d.symbols(SYMBOL_THRESHOLD);
    let code = Code::new(wm_key, segments, DEFAULT_CUTOFF);
    let releases = candidates.len();
    let threshold = if releases == 0 {
        f64::INFINITY
    } else {
        code.threshold(&y, epsilon / releases as f64)
    };
    let scorer = code.scorer(&y);
    let mut accused: Vec<Accusation> = candidates
        .into_iter()
        .filter_map(|c| {
            let id: [u8; 16] = hex::decode(&c.codeword).ok()?.try_into().ok()?;
            let score = scorer.score(&code.codeword(wm_key, &id));
            if score < threshold {
                return None;
            }
            // The threshold only preselects: each accusation rests on its own bound.
            let bound = code.innocent_tail(&y, score);
            (bound * releases as f64 <= epsilon).then_some(Accusation {
                bound,
                score,
                release: c,
            })
        })
        .collect();
    accused.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(TraceReport {
        matched_tensors: pairs.len(),
        renamed,
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
