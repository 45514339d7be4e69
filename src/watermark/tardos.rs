//! The fingerprinting code: Tardos's code with Škorić's symmetric score.
//!
//! Segment `j` has a bias `p_j = sin²(r_j)`, `r_j` uniform in `[r_t, π/2 - r_t]` with
//! `r_t = asin(√t)` (the arcsine law cut off at `t`), from the keystream
//! "weightvault watermark tardos bias v1". A release's codeword has bit `j` set with
//! probability `p_j`, from the keystream "weightvault watermark tardos codeword v1" || codeword
//! id: so a codeword id (16 bytes, in the ledger) is all that is stored per recipient.
//!
//! A suspect gives, per segment, a detected symbol: 1, 0, or nothing (erased). A recipient's
//! score is `Σ g(y_j, x_j, p_j)` over detected segments with `g(1,1) = √((1-p)/p)`,
//! `g(1,0) = -√(p/(1-p))`, `g(0,0) = √(p/(1-p))`, `g(0,1) = -√((1-p)/p)`. For an innocent
//! recipient the bits are independent of the suspect, each term has mean 0 and variance 1, and
//! [`Code::innocent_tail`] bounds `P(score >= s)` exactly by Chernoff's method: the minimum over
//! λ > 0 of `exp(-λ s) Π_j E[exp(λ g_j)]`, each expectation a two-point sum.

use super::carrier::Carrier;
use crate::keys::SymmetricKey;

/// Default cutoff `t` of the bias distribution.
pub const DEFAULT_CUTOFF: f64 = 1.0 / 300.0;

/// The code of one watermark key and segment count.
#[derive(Debug, Clone)]
pub struct Code {
    biases: Vec<f64>,
}

fn uniform(words: &[u32]) -> impl Iterator<Item = f64> + '_ {
    // 32 random bits, centred in their interval: strictly inside (0, 1).
    words
        .iter()
        .map(|w| (f64::from(*w) + 0.5) / 4_294_967_296.0)
}

impl Code {
    /// The biases of `segments` segments.
    pub fn new(wm_key: &SymmetricKey, segments: u32, cutoff: f64) -> Self {
        assert!(cutoff > 0.0 && cutoff < 0.5, "cutoff in (0, 1/2)");
        let mut w = vec![0u32; segments as usize];
        Carrier::stream(wm_key, b"weightvault watermark tardos bias v1").words(0, &mut w);
        let rt = cutoff.sqrt().asin();
        let biases = uniform(&w)
            .map(|u| {
                let r = rt + u * (std::f64::consts::FRAC_PI_2 - 2.0 * rt);
                r.sin().powi(2)
            })
            .collect();
        Self { biases }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.biases.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.biases.is_empty()
    }

    /// The biases.
    pub fn biases(&self) -> &[f64] {
        &self.biases
    }

    /// The codeword of codeword id `id`.
    pub fn codeword(&self, wm_key: &SymmetricKey, id: &[u8; 16]) -> Vec<bool> {
        let mut info = b"weightvault watermark tardos codeword v1".to_vec();
        info.extend_from_slice(id);
        let mut w = vec![0u32; self.biases.len()];
        Carrier::stream(wm_key, &info).words(0, &mut w);
        uniform(&w).zip(&self.biases).map(|(u, p)| u < *p).collect()
    }

    /// The symmetric score of codeword `x` against detected symbols `y` (`None`: erased).
    pub fn score(&self, y: &[Option<bool>], x: &[bool]) -> f64 {
        y.iter()
            .zip(x)
            .zip(&self.biases)
            .filter_map(|((y, x), p)| y.map(|y| g(y, *x, *p)))
            .sum()
    }

    /// A rigorous upper bound on the probability that an innocent recipient (whose codeword is
    /// independent of `y`) scores `s` or more.
    pub fn innocent_tail(&self, y: &[Option<bool>], s: f64) -> f64 {
        if s <= 0.0 {
            return 1.0;
        }
        let terms: Vec<(f64, f64, f64)> = y
            .iter()
            .zip(&self.biases)
            .filter_map(|(y, p)| y.map(|y| (*p, g(y, true, *p), g(y, false, *p))))
            .collect();
        // ln E[exp(λ S)] - λ s is convex in λ: minimise it by golden-section search on a
        // bracket found by doubling.
        let f = |l: f64| -> f64 {
            terms
                .iter()
                .map(|(p, a, b)| (p * (l * a).exp() + (1.0 - p) * (l * b).exp()).ln())
                .sum::<f64>()
                - l * s
        };
        let mut hi = 1e-3;
        while f(hi * 2.0) < f(hi) && hi < 1e6 {
            hi *= 2.0;
        }
        let (mut a, mut b) = (0.0, hi * 2.0);
        let phi = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..100 {
            let c = b - phi * (b - a);
            let d = a + phi * (b - a);
            if f(c) < f(d) {
                b = d;
            } else {
                a = c;
            }
        }
        f((a + b) / 2.0).min(0.0).exp()
    }
}

impl Code {
    /// The smallest score whose innocent tail is at most `p` (bisection; the tail falls as the
    /// score grows). Only scores above it need their own bound.
    pub fn threshold(&self, y: &[Option<bool>], p: f64) -> f64 {
        let m = y.iter().filter(|s| s.is_some()).count() as f64;
        if m == 0.0 {
            return f64::INFINITY; // nothing was read: nobody can be accused
        }
        let (mut lo, mut hi) = (0.0, 1.0 + m.sqrt());
        while self.innocent_tail(y, hi) > p {
            hi *= 2.0;
            if hi > 1e12 {
                return f64::INFINITY;
            }
        }
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.innocent_tail(y, mid) > p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// The symmetric Tardos score of one segment.
fn g(y: bool, x: bool, p: f64) -> f64 {
    let r = ((1.0 - p) / p).sqrt();
    match (y, x) {
        (true, true) => r,
        (true, false) => -1.0 / r,
        (false, false) => 1.0 / r,
        (false, true) => -r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: u32) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&k.to_be_bytes());
        b
    }

    #[test]
    fn biases_and_codewords_are_keyed_and_follow_the_law() {
        let k = SymmetricKey::from_bytes([1; 32]);
        let c = Code::new(&k, 20_000, DEFAULT_CUTOFF);
        assert!(c
            .biases()
            .iter()
            .all(|p| *p >= DEFAULT_CUTOFF * 0.999 && *p <= 1.0 - DEFAULT_CUTOFF * 0.999));
        let mean: f64 = c.biases().iter().sum::<f64>() / 20_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let x = c.codeword(&k, &id(7));
        assert_eq!(x, c.codeword(&k, &id(7)), "deterministic");
        assert_ne!(x, c.codeword(&k, &id(8)));
        let ones = x.iter().filter(|b| **b).count() as f64 / 20_000.0;
        assert!((ones - 0.5).abs() < 0.02, "{ones}");
        assert_ne!(
            Code::new(&SymmetricKey::from_bytes([2; 32]), 10, DEFAULT_CUTOFF).biases(),
            &c.biases()[..10]
        );
    }

    #[test]
    fn innocents_score_near_zero_and_the_bound_holds() {
        let k = SymmetricKey::from_bytes([5; 32]);
        let c = Code::new(&k, 2_000, DEFAULT_CUTOFF);
        let pirate = c.codeword(&k, &id(0));
        let y: Vec<Option<bool>> = pirate.iter().map(|b| Some(*b)).collect();
        // The pirate scores far above anything an innocent reaches, with a tiny bound.
        let s = c.score(&y, &pirate);
        assert!(s > 1_000.0, "{s}");
        assert!(c.innocent_tail(&y, s) < 1e-100);
        // 3,000 innocents: mean ~0, variance ~m, and the empirical tail under the bound.
        let scores: Vec<f64> = (1..=3_000)
            .map(|i| c.score(&y, &c.codeword(&k, &id(i))))
            .collect();
        let mean = scores.iter().sum::<f64>() / 3_000.0;
        let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / 3_000.0;
        assert!(mean.abs() < 5.0, "{mean}");
        assert!((var / 2_000.0 - 1.0).abs() < 0.15, "{var}");
        for z in [1.0f64, 2.0, 3.0] {
            let t = z * 2_000f64.sqrt();
            let empirical = scores.iter().filter(|s| **s >= t).count() as f64 / 3_000.0;
            let bound = c.innocent_tail(&y, t);
            assert!(empirical <= bound + 0.01, "z={z}: {empirical} > {bound}");
            assert!(
                bound < (-z * z / 2.0).exp() * 1.5,
                "z={z}: bound {bound} is loose"
            );
        }
        // Erased segments count for nothing.
        let erased = vec![None; 2_000];
        assert_eq!(c.score(&erased, &pirate), 0.0);
        assert!(
            c.innocent_tail(&erased, 1.0) < 1e-100,
            "nobody scores 1 on nothing"
        );
        assert_eq!(c.innocent_tail(&erased, 0.0), 1.0);
    }
}
