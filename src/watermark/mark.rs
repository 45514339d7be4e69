//! Embedding and detection over tensors (pure).
//!
//! Embedding: element `e` of an eligible tensor, with carrier word `w_e`, belongs to segment
//! `s = segment(w_e, S)` and moves one step up when `positive(w_e) == codeword[s]`, down
//! otherwise (direction = carrier × codeword bit). Everything is a function of (key, tensor,
//! element, codeword), so any element range is marked on its own, identically.
//!
//! Detection: for each element where both the original `w` and the suspect `v` are finite and
//! non-zero, the term `c_e · (v/α − w) · |w|` (carrier `c_e = ±1`, global scale `α`) is added
//! to its segment: the matched filter for a signal of size ∝ |w| in noise of constant size
//! (additive noise, integer quantisation), and no worse when the noise grows with |w| (FP8). A segment's statistic is `t = Σ / √(Σ²)` (self-normalised, about N(0,1) when the
//! segment carries nothing); `|t| >= threshold` gives the detected bit `t > 0`, otherwise the
//! segment is erased. Zeros in the suspect (pruning) carry nothing and are skipped.

use super::carrier::{positive, segment, Carrier};
use safetensors::Dtype;

/// Bytes per element of a float dtype the watermark handles.
pub fn elem_size(d: Dtype) -> Option<usize> {
    match d {
        Dtype::BF16 | Dtype::F16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

/// Decodes element `k` of little-endian `bytes` of `dtype` to f64.
pub fn value(d: Dtype, bytes: &[u8], k: usize) -> f64 {
    match d {
        Dtype::BF16 => half::bf16::from_le_bytes([bytes[2 * k], bytes[2 * k + 1]]).to_f64(),
        Dtype::F16 => half::f16::from_le_bytes([bytes[2 * k], bytes[2 * k + 1]]).to_f64(),
        Dtype::F32 => f64::from(f32::from_le_bytes(
            bytes[4 * k..4 * k + 4].try_into().expect("4"),
        )),
        Dtype::F64 => f64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().expect("8")),
        _ => f64::NAN,
    }
}

/// Marks elements `first ..` of one tensor held in `bytes` (whole elements of `dtype`).
pub fn embed(
    dtype: Dtype,
    carrier: &Carrier,
    first: u64,
    bytes: &mut [u8],
    segments: u32,
    codeword: &[bool],
    rel_bits: u32,
) {
    let Some(size) = elem_size(dtype) else { return };
    const BATCH: usize = 16 * 1024;
    let mut words = vec![0u32; BATCH];
    for (b, block) in bytes.chunks_mut(BATCH * size).enumerate() {
        let n = block.len() / size;
        let w = &mut words[..n];
        carrier.words(first + (b * BATCH) as u64, w);
        super::step_elements(dtype, block, rel_bits, |k| {
            positive(w[k]) == codeword[segment(w[k], segments) as usize]
        });
    }
}

/// Per-segment evidence accumulated from a suspect.
#[derive(Debug, Clone)]
pub struct Detector {
    segments: u32,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    count: Vec<u64>,
}

impl Detector {
    /// An empty detector for `segments` segments.
    pub fn new(segments: u32) -> Self {
        let n = segments as usize;
        Self {
            segments,
            sum: vec![0.0; n],
            sumsq: vec![0.0; n],
            count: vec![0; n],
        }
    }

    /// Adds elements `first ..` of one tensor: `original` (the vault's, unmarked) and
    /// `suspect` values (same count), the suspect divided by `scale` first.
    pub fn add(
        &mut self,
        carrier: &Carrier,
        first: u64,
        original: impl Fn(usize) -> f64,
        suspect: impl Fn(usize) -> f64,
        n: usize,
        scale: f64,
    ) {
        const BATCH: usize = 16 * 1024;
        let mut words = vec![0u32; BATCH];
        let mut k0 = 0;
        while k0 < n {
            let m = BATCH.min(n - k0);
            carrier.words(first + k0 as u64, &mut words[..m]);
            for (j, w) in words[..m].iter().enumerate() {
                let (o, v) = (original(k0 + j), suspect(k0 + j));
                if o == 0.0 || v == 0.0 || !o.is_finite() || !v.is_finite() {
                    continue;
                }
                let c = if positive(*w) { 1.0 } else { -1.0 };
                let t = c * (v / scale - o) * o.abs();
                let s = segment(*w, self.segments) as usize;
                self.sum[s] += t;
                self.sumsq[s] += t * t;
                self.count[s] += 1;
            }
            k0 += m;
        }
    }

    /// Each segment's statistic (0 where nothing was seen).
    pub fn statistics(&self) -> Vec<f64> {
        self.sum
            .iter()
            .zip(&self.sumsq)
            .map(|(s, q)| if *q > 0.0 { s / q.sqrt() } else { 0.0 })
            .collect()
    }

    /// Detected symbols: `Some(bit)` where `|t| >= threshold`, else erased.
    pub fn symbols(&self, threshold: f64) -> Vec<Option<bool>> {
        self.statistics()
            .into_iter()
            .map(|t| (t.abs() >= threshold).then_some(t > 0.0))
            .collect()
    }

    /// Elements that contributed.
    pub fn elements(&self) -> u64 {
        self.count.iter().sum()
    }
}

/// The least-squares scale `α` with `suspect ≈ α · original`, over the elements the suspect
/// did not zero (pruning).
pub fn estimate_scale(
    original: impl Fn(usize) -> f64,
    suspect: impl Fn(usize) -> f64,
    n: usize,
) -> f64 {
    let (mut xy, mut xx) = (0.0, 0.0);
    for k in 0..n {
        let (o, v) = (original(k), suspect(k));
        if o.is_finite() && v.is_finite() && v != 0.0 {
            xy += o * v;
            xx += o * o;
        }
    }
    if xx > 0.0 && xy != 0.0 {
        xy / xx
    } else {
        1.0
    }
}
