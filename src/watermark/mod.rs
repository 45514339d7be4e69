//! Per-recipient watermarks (pure): which tensors carry one, the keyed carrier of every
//! weight, and the one-step move of a weight in the direction carrier × codeword bit.
//!
//! Status (issue 6, in progress): the step, eligibility, the carrier stream and the Tardos code
//! with its score and innocent-tail bound are built and tested; embedding in the release
//! stream, detection, `trace` and the attack suite are not yet.
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
pub fn step_elements(
    dtype: Dtype,
    bytes: &mut [u8],
    rel_bits: u32,
    mut up: impl FnMut(usize) -> bool,
) {
    match dtype {
        Dtype::BF16 => {
            for (k, e) in bytes.chunks_exact_mut(2).enumerate() {
                let b = u16::from_le_bytes([e[0], e[1]]);
                e.copy_from_slice(&step_bf16(b, up(k)).to_le_bytes());
            }
        }
        Dtype::F16 => {
            for (k, e) in bytes.chunks_exact_mut(2).enumerate() {
                let b = u16::from_le_bytes([e[0], e[1]]);
                e.copy_from_slice(&step_f16(b, up(k), rel_bits).to_le_bytes());
            }
        }
        Dtype::F32 => {
            for (k, e) in bytes.chunks_exact_mut(4).enumerate() {
                let b = u32::from_le_bytes(e.try_into().expect("4"));
                e.copy_from_slice(&step_f32(b, up(k), rel_bits).to_le_bytes());
            }
        }
        Dtype::F64 => {
            for (k, e) in bytes.chunks_exact_mut(8).enumerate() {
                let b = u64::from_le_bytes(e.try_into().expect("8"));
                e.copy_from_slice(&step_f64(b, up(k), rel_bits).to_le_bytes());
            }
        }
        _ => {}
    }
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
