//! Ledger benchmarks: appends per second with 1 and 16 concurrent writers (group commit; every
//! append acknowledged only after fdatasync), then at 1,000,000 entries: tree head, inclusion
//! and consistency proof generation (live and offline), and `audit verify` (every frame
//! rehashed, every record parsed, every checkpoint checked). `cargo bench --bench ledger`
//! (under `cargo test` a small smoke run). Writes under target/bench-ledger on the real disk.

use std::sync::Arc;
use std::time::Instant;
use weightvault::ledger::{log::Log, record::Record, Ledger};

fn record(i: u64) -> Record {
    // About the size of a real decision record (~600 bytes).
    Record {
        kind: "release-decision".into(),
        time: "2026-11-22T12:00:00Z".into(),
        requester: format!("spiffe://acme.example/ns/serving/sa/llm-{}", i % 97),
        requester_kind: "workload".into(),
        organisation: Some("acme".into()),
        nationalities: vec![],
        host_id: Some(format!("host-{:06}", i % 5000)),
        host_country: Some("US".into()),
        host_region: Some("us-east-1".into()),
        attester: Some("weightvault-test-attester".into()),
        source: Some("10.1.2.3".into()),
        model: "acme-frontier".into(),
        revision: Some("2026-11-01".into()),
        shards: (1..=8)
            .map(|k| format!("model-{k:05}-of-00008.safetensors"))
            .collect(),
        outcome: "allowed".into(),
        failed_checks: vec![],
        authority: Some("licence:L-2026-0042".into()),
        codeword: Some(format!("{:032x}", i.wrapping_mul(0x9e3779b97f4a7c15))),
        bytes: None,
        follows: None,
        reason: None,
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-ledger");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let entry = record(1).canonical();
    println!("record size {} bytes", entry.len());
    for writers in [1usize, 16] {
        let per = if full { 4000 / writers.min(4) } else { 20 };
        let (log, _) = Log::open(&dir.join(format!("w{writers}"))).unwrap();
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
            secs(t),
            n / secs(t)
        );
    }

    // A ledger of N entries with a checkpoint every 10,000, filled by 64 writers.
    let n: u64 = if full { 1_000_000 } else { 2000 };
    let every = if full { 10_000 } else { 500 };
    let ldir = dir.join("big");
    let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
    let public = key.verifying_key().to_bytes();
    let origin = "weightvault.bench/ledger";
    let (l, _) = Ledger::open(&ldir, origin).unwrap();
    let l = Arc::new(l);
    let t = Instant::now();
    let writers = 64;
    let hs: Vec<_> = (0..writers)
        .map(|w| {
            let (l, key) = (l.clone(), key.clone());
            std::thread::spawn(move || {
                for i in (w..n).step_by(writers as usize) {
                    let idx = l.append(&record(i)).unwrap();
                    if idx % every == every - 1 {
                        l.checkpoint(origin, &key).unwrap();
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    println!(
        "filled {n} entries with {writers} writers in {:.1}s ({:.0} appends/s)",
        secs(t),
        n as f64 / secs(t)
    );
    let t = Instant::now();
    let (size, _) = l.log().tree_head().unwrap();
    println!(
        "tree head of {size} entries (cached subtrees): {:.3} ms",
        secs(t) * 1e3
    );
    let t = Instant::now();
    l.checkpoint(origin, &key).unwrap();
    println!(
        "checkpoint (tree head + sign + fsync): {:.2} ms",
        secs(t) * 1e3
    );
    for index in [n / 3, n - 1] {
        let t = Instant::now();
        let p = l.log().inclusion_proof(index, size).unwrap().unwrap();
        println!(
            "live inclusion proof of {index} at {size}: {:.2} ms, {} hashes",
            secs(t) * 1e3,
            p.len()
        );
    }
    let t = Instant::now();
    let p = l.log().consistency_proof(n / 3 + 1, size).unwrap().unwrap();
    println!(
        "live consistency proof {} -> {size}: {:.2} ms, {} hashes",
        n / 3 + 1,
        secs(t) * 1e3,
        p.len()
    );
    drop(l);
    let t = Instant::now();
    let proof = Ledger::prove(&ldir, n / 3).unwrap();
    proof.verify(origin, &public).unwrap();
    println!(
        "offline `audit prove` of entry {} (reads the log): {:.0} ms",
        n / 3,
        secs(t) * 1e3
    );
    let t = Instant::now();
    let rep = Ledger::verify(&ldir, origin, &public).unwrap();
    println!(
        "audit verify of {} entries, {} closed segments, {} checkpoints: {:.1} s",
        rep.entries,
        rep.closed_segments,
        rep.checkpoints,
        secs(t)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
