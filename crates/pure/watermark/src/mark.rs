//! Embedding and detection over tensors (pure).
//!
//! Embedding: element `e` of an eligible tensor, with carrier sign `c_e` and segment `s_e`
//! (see `carrier`), moves one step up when `c_e == codeword[s_e]`, down otherwise
//! (direction = carrier × codeword bit). Everything is a function of (key, tensor,
//! element, codeword), so any element range is marked on its own, identically.
//!
//! Detection: for each element where both the original `w` and the suspect `v` are finite and
//! non-zero, the term `c_e · (v/α − w) · |w|` (carrier `c_e = ±1`, global scale `α`) is added
//! to its segment: the matched filter for a signal of size ∝ |w| in noise of constant size
//! (additive noise, integer quantisation), and no worse when the noise grows with |w| (FP8). A segment's statistic is `t = Σ / √(Σ²)` (self-normalised, about N(0,1) when the
//! segment carries nothing); `|t| >= threshold` gives the detected bit `t > 0`, otherwise the
//! segment is erased. Zeros in the suspect (pruning) carry nothing and are skipped.

use super::carrier::{group_span, Carrier, GROUP};
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

/// Little-endian float elements of a tensor: its dtype and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// Dtype (BF16, F16, F32 or F64).
    pub dtype: Dtype,
    /// Whole elements.
    pub bytes: &'a [u8],
}

impl<'a> Values<'a> {
    /// Elements of `dtype` in `bytes`.
    pub fn new(dtype: Dtype, bytes: &'a [u8]) -> Self {
        Self { dtype, bytes }
    }

    /// Number of elements (0 for a dtype the watermark does not handle).
    pub fn len(&self) -> usize {
        elem_size(self.dtype).map_or(0, |s| self.bytes.len() / s)
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `k0 .. k0 + out.len()` as f64, one tight loop per dtype.
    pub fn decode(&self, k0: usize, out: &mut [f64]) {
        let b = self.bytes;
        match self.dtype {
            Dtype::BF16 => {
                for (o, e) in out.iter_mut().zip(b[2 * k0..].chunks_exact(2)) {
                    *o = f64::from(f32::from_bits(
                        u32::from(u16::from_le_bytes([e[0], e[1]])) << 16,
                    ));
                }
            }
            Dtype::F16 => {
                for (o, e) in out.iter_mut().zip(b[2 * k0..].chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([e[0], e[1]]).to_f64();
                }
            }
            Dtype::F32 => {
                for (o, e) in out.iter_mut().zip(b[4 * k0..].chunks_exact(4)) {
                    *o = f64::from(f32::from_le_bytes(e.try_into().expect("4")));
                }
            }
            Dtype::F64 => {
                for (o, e) in out.iter_mut().zip(b[8 * k0..].chunks_exact(8)) {
                    *o = f64::from_le_bytes(e.try_into().expect("8"));
                }
            }
            _ => out.fill(f64::NAN),
        }
    }

    /// Calls `f(k0, original, suspect)` over batches of both tensors' elements as f64.
    fn batches(self, other: Values<'_>, mut f: impl FnMut(usize, &[f64], &[f64])) {
        const BATCH: usize = 16 * 1024;
        let n = self.len().min(other.len());
        let (mut x, mut y) = (vec![0.0; BATCH], vec![0.0; BATCH]);
        let mut k0 = 0;
        while k0 < n {
            let m = BATCH.min(n - k0);
            self.decode(k0, &mut x[..m]);
            other.decode(k0, &mut y[..m]);
            f(k0, &x[..m], &y[..m]);
            k0 += m;
        }
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
    let mut up = vec![false; BATCH];
    let mut scratch = Vec::with_capacity(BATCH * 4 + 16);
    for (b, block) in bytes.chunks_mut(BATCH * size).enumerate() {
        let up = &mut up[..block.len() / size];
        carrier.directions(
            first + (b * BATCH) as u64,
            segments,
            codeword,
            up,
            &mut scratch,
        );
        super::step_with(dtype, block, rel_bits, up);
    }
}

/// The sum, sum of squares and count of the detection terms of one group: element `j` with
/// original `o[j]`, suspect `v[j]` and carrier sign bit `j` of `signs`. Elements where either
/// value is zero or not finite count nothing. Branch-free.
#[inline(always)]
fn group_terms(o: &[f64; GROUP], v: &[f64; GROUP], signs: u32, inv: f64) -> (f64, f64, u64) {
    let mut t = [0.0f64; GROUP];
    let mut valid = [0u64; GROUP];
    for j in 0..GROUP {
        let (o, v) = (o[j], v[j]);
        let ok = (o != 0.0) & (v != 0.0) & o.is_finite() & v.is_finite();
        let x = (v * inv - o) * o.abs();
        // Negate where the carrier sign is -1 (bit clear); zero where not valid.
        let neg = u64::from(!(signs >> j) & 1) << 63;
        let mask = u64::from(ok).wrapping_neg();
        t[j] = f64::from_bits((x.to_bits() ^ neg) & mask);
        valid[j] = u64::from(ok);
    }
    let (mut sum, mut sumsq) = (0.0, 0.0);
    for x in t {
        sum += x;
        sumsq += x * x;
    }
    (sum, sumsq, valid.iter().sum())
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

    /// Adds elements `first ..` of one tensor: the `original` (the vault's, unmarked) and the
    /// `suspect` (as many elements), the suspect divided by `scale` first.
    pub fn add(
        &mut self,
        carrier: &Carrier,
        first: u64,
        original: Values<'_>,
        suspect: Values<'_>,
        scale: f64,
    ) {
        let mut scratch = Vec::new();
        let inv = 1.0 / scale;
        original.batches(suspect, |k0, o, v| {
            let n = o.len();
            carrier.for_groups(
                first + k0 as u64,
                n,
                self.segments,
                &mut scratch,
                |g0, g| {
                    let (sum, sumsq, count) = if g0 >= 0 && g0 as usize + GROUP <= n {
                        // A whole group: fixed-size arrays, which the compiler vectorises.
                        let k = g0 as usize..g0 as usize + GROUP;
                        let o: &[f64; GROUP] = o[k.clone()].try_into().expect("group");
                        let v: &[f64; GROUP] = v[k].try_into().expect("group");
                        group_terms(o, v, g.signs, inv)
                    } else {
                        // Zeros outside the range count nothing.
                        let std::ops::Range { start: lo, end: hi } = group_span(g0, n);
                        let (mut a, mut b) = ([0.0; GROUP], [0.0; GROUP]);
                        let j0 = (lo as i64 - g0) as usize;
                        a[j0..j0 + hi - lo].copy_from_slice(&o[lo..hi]);
                        b[j0..j0 + hi - lo].copy_from_slice(&v[lo..hi]);
                        group_terms(&a, &b, g.signs, inv)
                    };
                    let s = g.segment as usize;
                    self.sum[s] += sum;
                    self.sumsq[s] += sumsq;
                    self.count[s] += count;
                },
            );
        });
    }

    /// Adds another detector's evidence (same segment count).
    pub fn merge(&mut self, other: &Detector) {
        assert_eq!(self.segments, other.segments);
        for s in 0..self.sum.len() {
            self.sum[s] += other.sum[s];
            self.sumsq[s] += other.sumsq[s];
            self.count[s] += other.count[s];
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

    /// Adds another fit's pairs.
    pub fn merge(&mut self, other: &ScaleFit) {
        self.xy += other.xy;
        self.xx += other.xx;
    }

    /// Adds every pair of elements of one tensor.
    pub fn add_tensor(&mut self, original: Values<'_>, suspect: Values<'_>) {
        original.batches(suspect, |_, o, v| {
            o.iter().zip(v).for_each(|(o, v)| self.add(*o, *v));
        });
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

/// [`ScaleFit`] over one tensor.
pub fn estimate_scale(original: Values<'_>, suspect: Values<'_>) -> f64 {
    let mut f = ScaleFit::default();
    f.add_tensor(original, suspect);
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
    /// Shape.
    pub shape: Vec<usize>,
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
            shape: t.shape.clone(),
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
        wm_key: &weightvault_core::keys::SymmetricKey,
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
            let key = weightvault_core::keys::SymmetricKey::from_bytes([9; 32]);
            let code = super::super::tardos::Code::new(&key, 64, 0.01);
            let cw = code.codeword(&key, &seed.to_le_bytes().repeat(2).try_into().unwrap());
            // A 3-byte thing, then a BF16 tensor at an odd offset, a gap, an F32 tensor.
            let t1 = MarkedTensor { name: "a".into(), dtype: Dtype::BF16, shape: vec![n1 as usize], range: (3, 3 + 2 * n1) };
            let s2 = 3 + 2 * n1 + gap;
            let t2 = MarkedTensor { name: "b".into(), dtype: Dtype::F32, shape: vec![n2 as usize], range: (s2, s2 + 4 * n2) };
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
