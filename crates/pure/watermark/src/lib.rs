//! Per-recipient watermarks (pure): which tensors carry one, the keyed carrier of every
//! weight, and the one-step move of a weight in the direction carrier × codeword bit.
//!
//! See `docs/WATERMARK.md` for the whole scheme and what is shown and measured.
//!
//! The step: BF16 weights move by one ULP in value (to the next representable number up or
//! down); F16, F32 and F64 weights move by `2^-rel_bits` of their magnitude (default 2^-8,
//! about the size of one BF16 ULP), rounded to the format. Zeros, NaN and infinities never move;
//! a move that would reach zero, cross to the other sign, overflow to infinity, or round back to
//! the same value leaves the weight as it is. FP8 tensors are left untouched: one FP8 ULP (2^-3
//! relative for E4M3) is far above the budget of "no more than casting to BF16".

pub mod carrier;
pub mod mark;
pub mod tardos;
pub mod trace;

use safetensors::Dtype;

/// Default relative step for F16/F32/F64: 2^-8 of the magnitude.
pub const DEFAULT_REL_BITS: u32 = 8;

/// Smallest number of elements a watermarked tensor has.
pub const MIN_ELEMENTS: u64 = 4096;

/// Whether a tensor carries the watermark: a float matrix (>= 2 dimensions) of at least
/// [`MIN_ELEMENTS`] elements in BF16, F16, F32 or F64. Integer, bool and FP8 tensors, and
/// vectors (norms, biases) are left untouched.
pub fn eligible(dtype: Dtype, shape: &[usize]) -> bool {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    matches!(dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32 | Dtype::F64)
        && shape.len() >= 2
        && n >= MIN_ELEMENTS
}

/// `2^-k` exactly, without a call to `exp2` (k < 1023).
fn pow2_neg(k: u32) -> f64 {
    f64::from_bits((1023 - u64::from(k.min(1022))) << 52)
}

/// One BF16 ULP in value, up or down. Untouched: ±0, NaN, ±Inf, and a move that would give
/// zero or infinity.
pub fn step_bf16(bits: u16, up: bool) -> u16 {
    let mag = bits & 0x7fff;
    if mag == 0 || mag >= 0x7f80 {
        return bits; // zero, infinity or NaN
    }
    let negative = bits & 0x8000 != 0;
    // Away from zero when moving up a positive or down a negative number.
    let away = up != negative;
    let m = if away { mag + 1 } else { mag - 1 };
    if m == 0 || m >= 0x7f80 {
        return bits;
    }
    (bits & 0x8000) | m
}

/// `x` moved by `2^-rel_bits` of its magnitude, up or down, computed exactly in f64 and
/// rounded once to f32. Untouched when it would not move, or would overflow.
pub fn step_f32(bits: u32, up: bool, rel_bits: u32) -> u32 {
    let x = f32::from_bits(bits);
    if !x.is_finite() || x == 0.0 {
        return bits;
    }
    let x64 = f64::from(x);
    let d = x64.abs() * pow2_neg(rel_bits);
    let y = (if up { x64 + d } else { x64 - d }) as f32;
    if !y.is_finite() || y == 0.0 || y.is_sign_negative() != x.is_sign_negative() {
        return bits;
    }
    y.to_bits()
}

/// As [`step_f32`] for F16 (computed in f64, rounded once to f16).
pub fn step_f16(bits: u16, up: bool, rel_bits: u32) -> u16 {
    let x = half::f16::from_bits(bits);
    if !x.is_finite() || x == half::f16::ZERO || x == half::f16::NEG_ZERO {
        return bits;
    }
    let x64 = x.to_f64();
    let d = x64.abs() * pow2_neg(rel_bits);
    let y = half::f16::from_f64(if up { x64 + d } else { x64 - d });
    if !y.is_finite() || y.to_f64() == 0.0 || y.is_sign_negative() != x.is_sign_negative() {
        return bits;
    }
    y.to_bits()
}

/// As [`step_f32`] for F64 (rounded once to f64).
pub fn step_f64(bits: u64, up: bool, rel_bits: u32) -> u64 {
    let x = f64::from_bits(bits);
    if !x.is_finite() || x == 0.0 {
        return bits;
    }
    let d = x.abs() * pow2_neg(rel_bits);
    let y = if up { x + d } else { x - d };
    if !y.is_finite() || y == 0.0 || y.is_sign_negative() != x.is_sign_negative() {
        return bits;
    }
    y.to_bits()
}

/// Steps every element of `bytes` (little-endian, `dtype`), element `k` up when `up(k)`.
/// `bytes` must hold whole elements.
pub fn step_elements(dtype: Dtype, bytes: &mut [u8], rel_bits: u32, up: impl Fn(usize) -> bool) {
    let Some(size) = mark::elem_size(dtype) else {
        return;
    };
    let dirs: Vec<bool> = (0..bytes.len() / size).map(up).collect();
    step_with(dtype, bytes, rel_bits, &dirs);
}

/// Steps element `k` of `bytes` (whole little-endian elements of `dtype`) up when `up[k]`.
///
/// The loops are branch-free so that random directions cost no mispredictions and the
/// compiler can vectorise them: F32 multiplies by `1 ± 2^-rel_bits` in f32 (the exact product
/// rounded once, which is [`step_f32`]'s value bit for bit: see
/// `fast_kernels_equal_the_reference`), F16 does the same in f64, BF16 adds ±1 to the
/// integer magnitude.
pub fn step_with(dtype: Dtype, bytes: &mut [u8], rel_bits: u32, up: &[bool]) {
    let Some(size) = mark::elem_size(dtype) else {
        return;
    };
    let up = &up[..bytes.len() / size];
    match dtype {
        Dtype::BF16 => in_blocks(bytes, up, |b: [u8; 2], u| {
            step_bf16_branchless(u16::from_le_bytes(b), u).to_le_bytes()
        }),
        Dtype::F16 => {
            let m = multipliers(rel_bits);
            for (e, &u) in bytes.chunks_exact_mut(2).zip(up) {
                let b = u16::from_le_bytes([e[0], e[1]]);
                let x = half::f16::from_bits(b);
                let away = u != x.is_sign_negative();
                let y = half::f16::from_f64(x.to_f64() * m[away as usize]);
                let keep = !y.is_finite() || y.to_bits() & 0x7fff == 0;
                e.copy_from_slice(&select16(keep, b, y.to_bits()).to_le_bytes());
            }
        }
        Dtype::F32 if rel_bits <= 23 => {
            let [md, mu] = multipliers(rel_bits);
            let m = [(md as f32).to_bits(), (mu as f32).to_bits()];
            in_blocks(bytes, up, |b: [u8; 4], u| {
                step_f32_mul(u32::from_le_bytes(b), u, m).to_le_bytes()
            });
        }
        Dtype::F32 => {
            for (e, &u) in bytes.chunks_exact_mut(4).zip(up) {
                let b = u32::from_le_bytes(e.try_into().expect("4"));
                e.copy_from_slice(&step_f32(b, u, rel_bits).to_le_bytes());
            }
        }
        Dtype::F64 => {
            for (e, &u) in bytes.chunks_exact_mut(8).zip(up) {
                let b = u64::from_le_bytes(e.try_into().expect("8"));
                e.copy_from_slice(&step_f64(b, u, rel_bits).to_le_bytes());
            }
        }
        _ => {}
    }
}

/// [`step_f32`] as a branch-free multiplication by `1 + 2^-k` (away from zero) or `1 - 2^-k`
/// (toward zero); `m = [(1 - 2^-k).to_bits(), (1 + 2^-k).to_bits()]`.
#[inline(always)]
fn step_f32_mul(b: u32, up: bool, m: [u32; 2]) -> u32 {
    let away = (up as u32) ^ (b >> 31);
    let mb = m[0] ^ (away.wrapping_neg() & (m[0] ^ m[1]));
    let yb = (f32::from_bits(b) * f32::from_bits(mb)).to_bits();
    // Zero, NaN and infinity stay (the product is 0, NaN or infinite); so does a weight whose
    // move would overflow or reach zero.
    let keep = ((yb & 0x7f80_0000 == 0x7f80_0000) | (yb & 0x7fff_ffff == 0)) as u32;
    let mask = keep.wrapping_neg();
    (b & mask) | (yb & !mask)
}

/// Applies `step` to every `N`-byte element of `bytes` with its direction: in blocks of 16
/// elements with a fixed-size inner loop, which the compiler vectorises (branch-free steps
/// only), then the remainder.
#[inline(always)]
fn in_blocks<const N: usize>(
    bytes: &mut [u8],
    up: &[bool],
    step: impl Fn([u8; N], bool) -> [u8; N],
) {
    const L: usize = 16;
    let mut blocks = bytes.chunks_exact_mut(N * L);
    let mut ups = up.chunks_exact(L);
    for (blk, u) in (&mut blocks).zip(&mut ups) {
        let mut x = [[0u8; N]; L];
        for (i, v) in x.iter_mut().enumerate() {
            v.copy_from_slice(&blk[N * i..N * i + N]);
        }
        for (v, &u) in x.iter_mut().zip(u) {
            *v = step(*v, u);
        }
        for (i, v) in x.iter().enumerate() {
            blk[N * i..N * i + N].copy_from_slice(v);
        }
    }
    for (e, &u) in blocks
        .into_remainder()
        .chunks_exact_mut(N)
        .zip(ups.remainder())
    {
        let v: [u8; N] = (&*e).try_into().expect("N bytes");
        e.copy_from_slice(&step(v, u));
    }
}

#[inline(always)]
fn select16(keep: bool, old: u16, new: u16) -> u16 {
    let mask = (keep as u16).wrapping_neg();
    (old & mask) | (new & !mask)
}

/// `[1 - 2^-k, 1 + 2^-k]`, both exact in f64 (and in f32 for k <= 23).
fn multipliers(rel_bits: u32) -> [f64; 2] {
    let d = pow2_neg(rel_bits);
    [1.0 - d, 1.0 + d]
}

/// [`step_bf16`] without branches: the magnitude moves by ±1 and the move is kept only when
/// both the old and the new magnitude are finite and non-zero (`1 ..= 0x7f7f`).
#[inline(always)]
fn step_bf16_branchless(bits: u16, up: bool) -> u16 {
    let mag = bits & 0x7fff;
    let away = up ^ (bits >> 15 == 1);
    let m = mag.wrapping_add((away as u16) << 1).wrapping_sub(1);
    let keep = (mag.wrapping_sub(1) >= 0x7f7f) | (m.wrapping_sub(1) >= 0x7f7f);
    select16(keep, bits, (bits & 0x8000) | m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bf(x: f32) -> u16 {
        half::bf16::from_f32(x).to_bits()
    }

    #[test]
    fn bf16_moves_one_ulp_across_binades_and_keeps_specials() {
        // 1.0 = 0x3f80: up is 1 + 2^-7, down is 1 - 2^-8 (the lower binade's ULP).
        assert_eq!(step_bf16(0x3f80, true), 0x3f81);
        assert_eq!(
            half::bf16::from_bits(step_bf16(0x3f80, true)).to_f32(),
            1.0078125
        );
        assert_eq!(
            half::bf16::from_bits(step_bf16(0x3f80, false)).to_f32(),
            0.99609375
        );
        // Negative numbers: up is toward zero.
        assert_eq!(
            half::bf16::from_bits(step_bf16(bf(-1.0), true)).to_f32(),
            -0.99609375
        );
        assert_eq!(
            half::bf16::from_bits(step_bf16(bf(-1.0), false)).to_f32(),
            -1.0078125
        );
        // Specials and edges stay.
        for b in [0x0000u16, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1] {
            assert_eq!(step_bf16(b, true), b);
            assert_eq!(step_bf16(b, false), b);
        }
        assert_eq!(
            step_bf16(0x0001, false),
            0x0001,
            "smallest subnormal would become 0"
        );
        assert_eq!(
            step_bf16(0x0001, true),
            0x0002,
            "subnormals move by one ULP"
        );
        assert_eq!(
            step_bf16(0x7f7f, true),
            0x7f7f,
            "largest finite would overflow"
        );
        assert_eq!(step_bf16(0x7f7f, false), 0x7f7e);
        assert_eq!(step_bf16(0x007f, true), 0x0080, "subnormal to normal");
    }

    #[test]
    fn f32_and_f16_move_by_the_relative_step() {
        let up = f32::from_bits(step_f32(1.0f32.to_bits(), true, 8));
        assert_eq!(up, 1.0 + 1.0 / 256.0);
        let down = f32::from_bits(step_f32((-3.0f32).to_bits(), true, 8));
        assert_eq!(down, -3.0 + 3.0 / 256.0);
        for b in [
            0u32,
            0x8000_0000,
            f32::INFINITY.to_bits(),
            f32::NAN.to_bits(),
        ] {
            assert_eq!(step_f32(b, true, 8), b);
        }
        assert_eq!(step_f32(f32::MAX.to_bits(), true, 8), f32::MAX.to_bits());
        // The smallest subnormal cannot move by 2^-8 of itself: it stays.
        assert_eq!(step_f32(1, true, 8), 1);
        let h = half::f16::from_f32(1.0).to_bits();
        assert_eq!(
            half::f16::from_bits(step_f16(h, false, 8)).to_f32(),
            1.0 - 1.0 / 256.0
        );
        assert_eq!(
            step_f16(half::f16::MAX.to_bits(), true, 8),
            half::f16::MAX.to_bits()
        );
        assert_eq!(
            step_f64(2.0f64.to_bits(), true, 10),
            (2.0f64 + 2.0 / 1024.0).to_bits()
        );
    }

    #[test]
    fn eligibility() {
        assert!(eligible(Dtype::F32, &[64, 64]));
        assert!(eligible(Dtype::BF16, &[2, 2048]));
        assert!(!eligible(Dtype::F32, &[4096]), "vectors (norms, biases)");
        assert!(!eligible(Dtype::F32, &[63, 64]), "too small");
        assert!(!eligible(Dtype::I64, &[512, 512]));
        assert!(!eligible(Dtype::F8_E4M3, &[512, 512]));
        assert!(!eligible(Dtype::BOOL, &[512, 512]));
    }

    /// The vectorised kernels of `step_elements` against the scalar reference steps, over
    /// edge values (zeros, subnormals, binade edges, the largest finite, NaN, infinities) and
    /// random bit patterns, for several step sizes.
    #[test]
    fn fast_kernels_equal_the_reference() {
        let mut f32s: Vec<u32> = vec![
            0,
            0x8000_0000,
            1,
            0x8000_0001,
            0x007f_ffff,
            0x0080_0000,
            0x0080_0001,
            0x3f80_0000,
            0x3f7f_ffff,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0001,
            0x0000_0100,
            0x0080_00ff,
            0x3400_0000,
        ];
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            f32s.push(s as u32);
        }
        let bytes32: Vec<u8> = f32s.iter().flat_map(|b| b.to_le_bytes()).collect();
        let bytes16: Vec<u8> = f32s
            .iter()
            .flat_map(|b| ((b >> 16) as u16).to_le_bytes())
            .collect();
        for rel in [1u32, 7, 8, 10, 23, 24, 30] {
            for pattern in [0u64, u64::MAX, 0x5555_5555_5555_5555, s] {
                let dir = |k: usize| (pattern >> (k % 61)) & 1 == 1;
                let mut fast = bytes32.clone();
                step_elements(Dtype::F32, &mut fast, rel, dir);
                for (k, (b, e)) in f32s.iter().zip(fast.chunks_exact(4)).enumerate() {
                    let got = u32::from_le_bytes(e.try_into().unwrap());
                    assert_eq!(got, step_f32(*b, dir(k), rel), "f32 {b:#x} rel {rel}");
                }
                let mut fast = bytes16.clone();
                step_elements(Dtype::F16, &mut fast, rel, dir);
                for (k, e) in fast.chunks_exact(2).enumerate() {
                    let b = (f32s[k] >> 16) as u16;
                    let got = u16::from_le_bytes([e[0], e[1]]);
                    assert_eq!(got, step_f16(b, dir(k), rel), "f16 {b:#x} rel {rel}");
                }
                let mut fast = bytes16.clone();
                step_elements(Dtype::BF16, &mut fast, rel, dir);
                for (k, e) in fast.chunks_exact(2).enumerate() {
                    let b = (f32s[k] >> 16) as u16;
                    let got = u16::from_le_bytes([e[0], e[1]]);
                    assert_eq!(got, step_bf16(b, dir(k)), "bf16 {b:#x}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn steps_are_monotone_bounded_and_deterministic(b in any::<u32>(), up in any::<bool>(), rel in 6u32..12) {
            let x = f32::from_bits(b);
            let y = f32::from_bits(step_f32(b, up, rel));
            prop_assert_eq!(step_f32(b, up, rel), step_f32(b, up, rel));
            if x.is_nan() {
                prop_assert_eq!(y.to_bits(), b);
            } else if y != x {
                prop_assert_eq!(up, y > x, "direction");
                prop_assert!(((y - x).abs() as f64) <= (x.abs() as f64) * (-(rel as f64)).exp2() * 1.01 + f64::from(f32::from_bits(1)));
                prop_assert_eq!(y.is_sign_negative(), x.is_sign_negative());
            }
            let h = (b >> 16) as u16;
            let xb = half::bf16::from_bits(h).to_f32();
            let yb = half::bf16::from_bits(step_bf16(h, up)).to_f32();
            if !xb.is_nan() && yb != xb {
                prop_assert_eq!(up, yb > xb);
                prop_assert_eq!(yb.is_sign_negative(), xb.is_sign_negative());
                // exactly one representable value apart
                prop_assert_eq!((step_bf16(h, up) as i32 - h as i32).abs(), 1);
            }
        }

        #[test]
        fn elementwise_on_any_split(vals in prop::collection::vec(any::<u32>(), 1..200), cut in any::<prop::sample::Index>(), seed in any::<u64>()) {
            let mut whole: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut parts = whole.clone();
            let dir = |k: usize| (seed >> (k % 64)) & 1 == 1;
            step_elements(Dtype::F32, &mut whole, 8, dir);
            let c = cut.index(vals.len()) * 4;
            let (a, b) = parts.split_at_mut(c);
            step_elements(Dtype::F32, a, 8, dir);
            step_elements(Dtype::F32, b, 8, |k| dir(k + c / 4));
            prop_assert_eq!(whole, parts);
        }
    }
}
