//! Watermark throughput on one core: embedding (carrier keystream + one step per weight) and
//! detection, in GB/s of weights, for F32 and BF16. `cargo bench --bench watermark` (under
//! `cargo test` a small smoke run).

use std::time::Instant;
use weightvault::keys::SymmetricKey;
use weightvault::watermark::carrier::Carrier;
use weightvault::watermark::mark::{embed, Detector, Values};
use weightvault::watermark::tardos::{Code, DEFAULT_CUTOFF};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bytes = if full { 256 << 20 } else { 1 << 20 };
    let key = SymmetricKey::from_bytes([7; 32]);
    let segments = 4096;
    let code = Code::new(&key, segments, DEFAULT_CUTOFF);
    let cw = code.codeword(&key, &[1; 16]);
    let c = Carrier::new(&key, "layers.0.mlp.weight");
    for (name, dtype, size) in [
        ("F32", safetensors::Dtype::F32, 4usize),
        ("BF16", safetensors::Dtype::BF16, 2),
    ] {
        // Plausible weights: small normal-ish values.
        let n = bytes / size;
        let mut buf: Vec<u8> = match dtype {
            safetensors::Dtype::F32 => (0..n)
                .flat_map(|i| (((i * 7919 % 1000) as f32 - 500.0) * 4e-5).to_le_bytes())
                .collect(),
            _ => (0..n)
                .flat_map(|i| {
                    half::bf16::from_f32(((i * 7919 % 1000) as f32 - 500.0) * 4e-5).to_le_bytes()
                })
                .collect(),
        };
        let original = buf.clone();
        let t = Instant::now();
        embed(dtype, &c, 0, &mut buf, segments, &cw, 8);
        let dt = t.elapsed().as_secs_f64();
        println!(
            "embed {name}: {} MiB in {:.3} s = {:.2} GB/s",
            bytes >> 20,
            dt,
            bytes as f64 / dt / 1e9
        );
        let mut d = Detector::new(segments);
        let t = Instant::now();
        d.add(
            &c,
            0,
            Values::new(dtype, &original),
            Values::new(dtype, &buf),
            1.0,
        );
        let dt = t.elapsed().as_secs_f64();
        println!(
            "detect {name}: {} MiB in {:.3} s = {:.2} GB/s ({} segments read)",
            bytes >> 20,
            dt,
            bytes as f64 / dt / 1e9,
            d.symbols(1.0).iter().filter(|s| s.is_some()).count()
        );
    }
}
