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
use weightvault_core::keys::SymmetricKey;

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
        let k = Cumulant::new(y, &self.biases);
        // K(λ) - λ s is convex in λ: minimise it over λ > 0. Any λ gives a valid bound, so the
        // search's accuracy only affects tightness, never rigour.
        let (_, v) = minimise(|l| k.at(l) - l * s);
        v.min(0.0).exp()
    }

    /// Scores of many codewords against one suspect: each segment's two possible terms are
    /// computed once.
    pub fn scorer(&self, y: &[Option<bool>]) -> Scorer {
        Scorer {
            terms: y
                .iter()
                .zip(&self.biases)
                .map(|(y, p)| y.map_or((0.0, 0.0), |y| (g(y, true, *p), g(y, false, *p))))
                .collect(),
        }
    }

    /// The smallest score whose innocent tail is at most `p`: the minimum over λ > 0 of
    /// `(K(λ) - ln p) / λ` (a score `s` has `K(λ) - λ s <= ln p` for some λ exactly when `s`
    /// is at least that). Only scores above it can be accused; each then gets its own bound.
    pub fn threshold(&self, y: &[Option<bool>], p: f64) -> f64 {
        if y.iter().all(|s| s.is_none()) {
            return f64::INFINITY; // nothing was read: nobody can be accused
        }
        let k = Cumulant::new(y, &self.biases);
        let lnp = p.ln();
        let (_, v) = minimise(|l| (k.at(l) - lnp) / l);
        v
    }
}

/// Scores codewords against one suspect (see [`Code::scorer`]).
#[derive(Debug, Clone)]
pub struct Scorer {
    terms: Vec<(f64, f64)>,
}

impl Scorer {
    /// The symmetric score of codeword `x`.
    pub fn score(&self, x: &[bool]) -> f64 {
        self.terms
            .iter()
            .zip(x)
            .map(|(&(a, b), &x)| if x { a } else { b })
            .sum()
    }
}

/// The cumulant generating function of an innocent's score, `K(λ) = Σ_j ln E[exp(λ g_j)]`,
/// over the read segments: each term `ln(p e^{λa} + (1-p) e^{λb})`, computed without overflow.
struct Cumulant {
    terms: Vec<(f64, f64, f64)>,
}

impl Cumulant {
    fn new(y: &[Option<bool>], biases: &[f64]) -> Self {
        Self {
            terms: y
                .iter()
                .zip(biases)
                .filter_map(|(y, p)| y.map(|y| (*p, g(y, true, *p), g(y, false, *p))))
                .collect(),
        }
    }

    fn at(&self, l: f64) -> f64 {
        self.terms
            .iter()
            .map(|&(p, a, b)| {
                let m = a.max(b);
                l * m + (p * (l * (a - m)).exp() + (1.0 - p) * (l * (b - m)).exp()).ln()
            })
            .sum()
    }
}

/// Minimises a unimodal function of λ over `[1e-9, 1e4]` by golden-section search on ln λ;
/// returns `(λ, f(λ))`.
fn minimise(f: impl Fn(f64) -> f64) -> (f64, f64) {
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (1e-9f64.ln(), 1e4f64.ln());
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (f(c.exp()), f(d.exp()));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = f(c.exp());
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = f(d.exp());
        }
    }
    let l = ((a + b) / 2.0).exp();
    (l, f(l))
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
        // The threshold is where the bound reaches p, and the scorer agrees with score().
        for p in [1e-6, 1e-12, 1e-30] {
            let t = c.threshold(&y, p);
            assert!(c.innocent_tail(&y, t) <= p * 1.000_001, "p={p}");
            assert!(
                c.innocent_tail(&y, t * 0.99) > p,
                "p={p}: threshold not tight"
            );
        }
        let sc = c.scorer(&y);
        for i in 0..20 {
            let x = c.codeword(&k, &id(i));
            assert!((sc.score(&x) - c.score(&y, &x)).abs() < 1e-9);
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
