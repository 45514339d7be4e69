//! The watermark against attacks, on synthetic weights: two random F32 matrices (32 M weights
//! in all), 4,096 segments, 10,000 recipients. For every attack each colluder must be accused
//! with an innocent-tail bound <= 1e-12, and no innocent accused (bound × recipients <= 1e-6).

use safetensors::Dtype;
use std::collections::BTreeSet;
use weightvault::keys::SymmetricKey;
use weightvault::watermark::carrier::Carrier;
use weightvault::watermark::mark::{embed, estimate_scale, Detector, Values};
use weightvault::watermark::tardos::{Code, DEFAULT_CUTOFF};
use weightvault::watermark::DEFAULT_REL_BITS;

const ROWS: usize = 2048;
const COLS: usize = 8192; // 16 M weights per matrix, two matrices
const SEGMENTS: u32 = 4096;
const RECIPIENTS: u32 = 10_000;
const EPSILON: f64 = 1e-6;
const THRESHOLD: f64 = 1.0; // |t| below which a segment is erased
const NAMES: [&str; 2] = ["layers.0.mlp.weight", "layers.1.attn.weight"];

fn id(k: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[12..].copy_from_slice(&k.to_be_bytes());
    b
}

/// Deterministic N(0, 0.02²) weights (xorshift + Box-Muller).
fn matrix(seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..ROWS * COLS)
        .map(|_| {
            let (u, v) = (next().max(1e-300), next());
            (0.02 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A leaked copy: each tensor's values, or `None` where that tensor was not leaked.
type Suspect = Vec<Option<Vec<f32>>>;

struct World {
    key: SymmetricKey,
    code: Code,
    carriers: Vec<Carrier>,
    original: Vec<Vec<f32>>,
}

impl World {
    fn marked(&self, recipient: u32) -> Vec<Vec<f32>> {
        let cw = self.code.codeword(&self.key, &id(recipient));
        self.original
            .iter()
            .zip(&self.carriers)
            .map(|(t, c)| {
                let mut b = to_bytes(t);
                embed(
                    safetensors::Dtype::F32,
                    c,
                    0,
                    &mut b,
                    SEGMENTS,
                    &cw,
                    DEFAULT_REL_BITS,
                );
                from_bytes(&b)
            })
            .collect()
    }

    /// Accused recipients with their bounds, for a suspect (None: a tensor not leaked).
    fn trace(&self, suspect: &[Option<Vec<f32>>]) -> Vec<(u32, f64)> {
        let mut d = Detector::new(SEGMENTS);
        for ((o, s), c) in self.original.iter().zip(suspect).zip(&self.carriers) {
            let Some(s) = s else { continue };
            let (o, s) = (to_bytes(o), to_bytes(s));
            let (o, s) = (Values::new(Dtype::F32, &o), Values::new(Dtype::F32, &s));
            d.add(c, 0, o, s, estimate_scale(o, s));
        }
        let y = d.symbols(THRESHOLD);
        let limit = self.code.threshold(&y, EPSILON / f64::from(RECIPIENTS));
        (0..RECIPIENTS)
            .filter_map(|r| {
                let s = self.code.score(&y, &self.code.codeword(&self.key, &id(r)));
                (s >= limit).then(|| (r, self.code.innocent_tail(&y, s)))
            })
            .collect()
    }
}

fn int8_rows(v: &[f32]) -> Vec<f32> {
    v.chunks(COLS)
        .flat_map(|row| {
            let m = row.iter().fold(0f32, |a, x| a.max(x.abs()));
            let q = m / 127.0;
            row.iter().map(move |x| (x / q).round() * q)
        })
        .collect()
}

fn int4_groups(v: &[f32]) -> Vec<f32> {
    v.chunks(128)
        .flat_map(|g| {
            let lo = g.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = g.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let q = (hi - lo) / 15.0;
            g.iter().map(move |x| lo + ((x - lo) / q).round() * q)
        })
        .collect()
}

/// Round to FP8 E4M3 (3 mantissa bits, normal exponents down to 2^-6, subnormal step 2^-9,
/// largest 448), nearest even.
fn fp8_e4m3(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| {
            let a = x.abs().min(448.0);
            let e = a.log2().floor().max(-6.0);
            let q = (e - 3.0).exp2();
            let r = a / q;
            let mut n = r.round();
            if (r - r.floor() - 0.5).abs() < 1e-9 && n % 2.0 != 0.0 {
                n -= 1.0;
            }
            (n * q).copysign(x)
        })
        .collect()
}

fn prune_half(v: &[f32]) -> Vec<f32> {
    let mut mags: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mid = mags.len() / 2;
    let (_, m, _) = mags.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let cut = *m;
    v.iter()
        .map(|&x| if x.abs() < cut { 0.0 } else { x })
        .collect()
}

fn noise(v: &[f32], rel_std: f32, seed: u64) -> Vec<f32> {
    let n = matrix(seed); // N(0, 0.02²): scale to rel_std of the weights' std (0.02)
    v.iter().zip(n).map(|(x, z)| x + z * rel_std).collect()
}

fn average(copies: &[&Vec<f32>]) -> Vec<f32> {
    let k = copies.len() as f32;
    (0..copies[0].len())
        .map(|i| copies.iter().map(|c| c[i]).sum::<f32>() / k)
        .collect()
}

#[test]
fn every_colluder_is_named_and_no_innocent_under_every_attack() {
    let key = SymmetricKey::from_bytes([0x5a; 32]);
    let world = World {
        code: Code::new(&key, SEGMENTS, DEFAULT_CUTOFF),
        carriers: NAMES.iter().map(|n| Carrier::new(&key, n)).collect(),
        original: vec![matrix(11), matrix(12)],
        key,
    };
    let colluders = [17u32, 4242, 777, 9001];
    let copies: Vec<Vec<Vec<f32>>> = colluders.iter().map(|c| world.marked(*c)).collect();
    let each = |f: &dyn Fn(usize) -> Vec<f32>| -> Suspect { (0..2).map(|t| Some(f(t))).collect() };
    // Segment-wise interleaving: each segment's elements come from one of the four copies.
    let interleaved = each(&|t| {
        let (mut signs, mut segs) = (vec![false; ROWS * COLS], vec![0u32; ROWS * COLS]);
        world.carriers[t].signs_and_segments(0, SEGMENTS, &mut signs, &mut segs, &mut Vec::new());
        segs.iter()
            .enumerate()
            .map(|(i, s)| copies[(s % 4) as usize][t][i])
            .collect()
    });
    let attacks: Vec<(&str, Suspect, &[u32])> = vec![
        ("none", each(&|t| copies[0][t].clone()), &colluders[..1]),
        (
            "gaussian noise 5%",
            each(&|t| noise(&copies[0][t], 0.05, 99 + t as u64)),
            &colluders[..1],
        ),
        (
            "int8 per row",
            each(&|t| int8_rows(&copies[0][t])),
            &colluders[..1],
        ),
        (
            "fp8 e4m3",
            each(&|t| fp8_e4m3(&copies[0][t])),
            &colluders[..1],
        ),
        (
            "int4 group-128",
            each(&|t| int4_groups(&copies[0][t])),
            &colluders[..1],
        ),
        (
            "50% magnitude pruning",
            each(&|t| prune_half(&copies[0][t])),
            &colluders[..1],
        ),
        (
            "global rescaling",
            each(&|t| copies[0][t].iter().map(|x| x * 0.73).collect()),
            &colluders[..1],
        ),
        (
            "average of 2",
            each(&|t| average(&[&copies[0][t], &copies[1][t]])),
            &colluders[..2],
        ),
        (
            "average of 4",
            each(&|t| average(&[&copies[0][t], &copies[1][t], &copies[2][t], &copies[3][t]])),
            &colluders[..],
        ),
        (
            "average of 2 then int8",
            each(&|t| int8_rows(&average(&[&copies[0][t], &copies[1][t]]))),
            &colluders[..2],
        ),
        ("interleaving of 4", interleaved, &colluders[..]),
        (
            "one tensor leaked",
            vec![Some(copies[0][0].clone()), None],
            &colluders[..1],
        ),
    ];
    let mut failures = Vec::new();
    for (name, suspect, guilty) in &attacks {
        let accused = world.trace(suspect);
        let named: BTreeSet<u32> = accused.iter().map(|(r, _)| *r).collect();
        let worst = guilty
            .iter()
            .map(|g| {
                accused
                    .iter()
                    .find(|(r, _)| r == g)
                    .map_or(1.0, |(_, b)| *b)
            })
            .fold(0f64, f64::max);
        eprintln!("{name:24} accused {named:?}, worst colluder bound {worst:.1e}");
        let innocents: Vec<_> = named.iter().filter(|r| !guilty.contains(r)).collect();
        if !innocents.is_empty() || worst > 1e-12 {
            failures.push(format!(
                "{name}: innocents {innocents:?}, worst colluder bound {worst:.1e}"
            ));
        }
    }
    // The original (never released) accuses nobody.
    let clean: Suspect = world.original.iter().cloned().map(Some).collect();
    let accused = world.trace(&clean);
    eprintln!("{:24} accused {:?}", "the original", accused);
    if !accused.is_empty() {
        failures.push(format!("the original accused {accused:?}"));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
