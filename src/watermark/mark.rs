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

/// The least-squares scale `α` with `suspect ≈ α · original`, fitted over the elements the
/// suspect did not zero (pruning), across any number of tensors.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScaleFit {
    xy: f64,
    xx: f64,
}

impl ScaleFit {
    /// Adds one pair of values.
    pub fn add(&mut self, o: f64, v: f64) {
        if o.is_finite() && v.is_finite() && v != 0.0 {
            self.xy += o * v;
            self.xx += o * o;
        }
    }

    /// The fitted scale (1 when nothing fits).
    pub fn scale(&self) -> f64 {
        if self.xx > 0.0 && self.xy != 0.0 {
            self.xy / self.xx
        } else {
            1.0
        }
    }
}

/// [`ScaleFit`] over one tensor's `n` elements.
pub fn estimate_scale(
    original: impl Fn(usize) -> f64,
    suspect: impl Fn(usize) -> f64,
    n: usize,
) -> f64 {
    let mut f = ScaleFit::default();
    (0..n).for_each(|k| f.add(original(k), suspect(k)));
    f.scale()
}

/// Segments for a model with `eligible` watermarked weights: one per 8,192 weights, between
/// 64 and 65,536. At 8,192 weights a segment still reads clearly after int4 group-128
/// quantisation (the hardest single-copy attack of the synthetic suite); more segments make a
/// longer code (more colluders resisted), fewer make each segment more robust.
pub fn segments_for(eligible: u64) -> u32 {
    (eligible / 8192).clamp(64, 65_536) as u32
}

/// One eligible tensor of a file: where its bytes are in the file's data region.
#[derive(Debug, Clone)]
pub struct MarkedTensor {
    /// Tensor name (keys the carrier).
    pub name: String,
    /// Dtype.
    pub dtype: Dtype,
    /// `[start, end)` of its bytes in the data region (after the safetensors header).
    pub range: (u64, u64),
}

/// The eligible tensors of a safetensors header, in data order.
pub fn marked_tensors(meta: &safetensors::tensor::Metadata) -> Vec<MarkedTensor> {
    let mut v: Vec<MarkedTensor> = meta
        .tensors()
        .into_iter()
        .filter(|(_, t)| super::eligible(t.dtype, &t.shape))
        .map(|(name, t)| MarkedTensor {
            name,
            dtype: t.dtype,
            range: (t.data_offsets.0 as u64, t.data_offsets.1 as u64),
        })
        .collect();
    v.sort_by_key(|t| t.range.0);
    v
}

/// Everything needed to mark one file of one release, range by range.
pub struct FileMarks<'a> {
    tensors: Vec<(MarkedTensor, Carrier)>,
    segments: u32,
    codeword: &'a [bool],
    rel_bits: u32,
}

impl<'a> FileMarks<'a> {
    /// Marks for the eligible `tensors` of a file.
    pub fn new(
        wm_key: &crate::keys::SymmetricKey,
        tensors: Vec<MarkedTensor>,
        segments: u32,
        codeword: &'a [bool],
        rel_bits: u32,
    ) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|t| {
                let c = Carrier::new(wm_key, &t.name);
                (t, c)
            })
            .collect();
        Self {
            tensors,
            segments,
            codeword,
            rel_bits,
        }
    }

    /// Marks `buf`, the data-region bytes `[at, at + buf.len())`. An element cut by either end
    /// of the range is marked whole: `read(offset, len)` gives the data-region bytes beyond
    /// the range that it needs (a few bytes at most per end).
    pub fn apply<E>(
        &self,
        at: u64,
        buf: &mut [u8],
        read: impl Fn(u64, u64) -> Result<Vec<u8>, E>,
    ) -> Result<(), E> {
        let end = at + buf.len() as u64;
        for (t, c) in &self.tensors {
            let (s, e) = t.range;
            if e <= at || s >= end {
                continue;
            }
            let size = elem_size(t.dtype).expect("eligible dtype") as u64;
            let (lo, hi) = (at.max(s), end.min(e));
            let first = (lo - s) / size;
            let last = (hi - s).div_ceil(size);
            let (bs, be) = (s + first * size, s + last * size);
            if bs == lo && be == hi {
                let part = &mut buf[(lo - at) as usize..(hi - at) as usize];
                embed(
                    t.dtype,
                    c,
                    first,
                    part,
                    self.segments,
                    self.codeword,
                    self.rel_bits,
                );
                continue;
            }
            // Whole elements around the cut ones.
            let mut tmp = Vec::with_capacity((be - bs) as usize);
            if bs < lo {
                tmp.extend_from_slice(&read(bs, lo - bs)?);
            }
            tmp.extend_from_slice(&buf[(lo - at) as usize..(hi - at) as usize]);
            if hi < be {
                tmp.extend_from_slice(&read(hi, be - hi)?);
            }
            embed(
                t.dtype,
                c,
                first,
                &mut tmp,
                self.segments,
                self.codeword,
                self.rel_bits,
            );
            buf[(lo - at) as usize..(hi - at) as usize]
                .copy_from_slice(&tmp[(lo - bs) as usize..(hi - bs) as usize]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any split of a file's data region into ranges, with tensors at any (even unaligned)
        /// offsets, marks exactly as marking each tensor whole.
        #[test]
        fn any_range_split_marks_like_whole_tensors(
            gap in 0u64..7,
            n1 in 1u64..300,
            n2 in 1u64..300,
            cuts in prop::collection::vec(1u64..4000, 0..12),
            seed in any::<u64>(),
        ) {
            let key = crate::keys::SymmetricKey::from_bytes([9; 32]);
            let code = super::super::tardos::Code::new(&key, 64, 0.01);
            let cw = code.codeword(&key, &seed.to_le_bytes().repeat(2).try_into().unwrap());
            // A 3-byte thing, then a BF16 tensor at an odd offset, a gap, an F32 tensor.
            let t1 = MarkedTensor { name: "a".into(), dtype: Dtype::BF16, range: (3, 3 + 2 * n1) };
            let s2 = 3 + 2 * n1 + gap;
            let t2 = MarkedTensor { name: "b".into(), dtype: Dtype::F32, range: (s2, s2 + 4 * n2) };
            let total = (s2 + 4 * n2 + 5) as usize;
            let data: Vec<u8> = (0..total).map(|i| ((i as u64).wrapping_mul(seed | 1) >> 3) as u8).collect();
            let mut whole = data.clone();
            for t in [&t1, &t2] {
                let c = Carrier::new(&key, &t.name);
                let r = t.range.0 as usize..t.range.1 as usize;
                embed(t.dtype, &c, 0, &mut whole[r], 64, &cw, 8);
            }
            let fm = FileMarks::new(&key, vec![t1, t2], 64, &cw, 8);
            let mut points: Vec<u64> = cuts.into_iter().map(|c| c % total as u64).collect();
            points.extend([0, total as u64]);
            points.sort();
            points.dedup();
            let mut parts = data.clone();
            for w in points.windows(2) {
                let (a, b) = (w[0] as usize, w[1] as usize);
                let mut chunk = data[a..b].to_vec();
                fm.apply(a as u64, &mut chunk, |o, l| Ok::<_, ()>(data[o as usize..(o + l) as usize].to_vec())).unwrap();
                parts[a..b].copy_from_slice(&chunk);
            }
            prop_assert_eq!(parts, whole);
        }
    }
}
