//! Ledger appends per second with 1 and 16 concurrent writers (group commit; every append
//! acknowledged only after fdatasync), and tree-head time. `cargo bench --bench ledger`
//! (under `cargo test` a small smoke run). Writes under target/bench-ledger on the real disk.

use std::sync::Arc;
use std::time::Instant;
use weightvault::ledger::{log::LogFile, merkle};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-ledger");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let entry = vec![b'e'; 600]; // about the size of a decision record
    for writers in [1usize, 16] {
        let per = if full { 4000 / writers.min(4) } else { 20 };
        let path = dir.join(format!("w{writers}.log"));
        let (log, _) = LogFile::open(&path).unwrap();
        let log = Arc::new(log);
        let t = Instant::now();
        let hs: Vec<_> = (0..writers)
            .map(|_| {
                let (log, e) = (log.clone(), entry.clone());
                std::thread::spawn(move || {
                    for _ in 0..per {
                        log.append(&e).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let n = (per * writers) as f64;
        println!(
            "{writers:2} writer(s): {n} appends in {:.2}s = {:.0} appends/s",
            t.elapsed().as_secs_f64(),
            n / t.elapsed().as_secs_f64()
        );
    }
    let n = if full { 1_000_000 } else { 1000 };
    let leaves: Vec<merkle::Hash> = (0..n as u64)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let t = Instant::now();
    let r = merkle::root(&leaves);
    println!(
        "tree head of {n} leaves: {:.1} ms ({})",
        t.elapsed().as_secs_f64() * 1e3,
        &hex::encode(r)[..16]
    );
    let t = Instant::now();
    let p = merkle::inclusion_proof(&leaves, (n / 3) as u64).unwrap();
    println!(
        "inclusion proof at {n} leaves (recomputed from leaves): {:.1} ms, {} hashes",
        t.elapsed().as_secs_f64() * 1e3,
        p.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
