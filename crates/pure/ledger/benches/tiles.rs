//! What integrating and reading a tiled ledger costs, in the same run as its baselines:
//! integrating one segment (2^16 real-sized records) into tiles, against hashing the same
//! records into the local log's in-memory tree (`merkle::Levels`, what an append costs there)
//! and against the leaf hashes alone; then, at 2^20 entries, a root, an inclusion and a
//! consistency proof from tiles, and the full audit of one segment's worth of tree.
//! `cargo bench -p weightvault-ledger --bench tiles` (under `cargo test` one run of each).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use weightvault_ledger::merkle::{self, Levels};
use weightvault_ledger::record::Record;
use weightvault_ledger::tiles::{self, integrate, TileSet, TreeHead};
use weightvault_ledger::words::{Kind, Outcome};

const SEGMENT: u64 = 1 << 16;

/// A `seal` record naming eight shards: about the size of the release fixture's median
/// record (523 bytes).
fn record(i: u64) -> Vec<u8> {
    let shards = (1..=8)
        .map(|k| format!("model-{k:05}-of-00008.safetensors"))
        .collect();
    let mut r = Record::action(
        "2026-11-22T12:00:00Z",
        Kind::Seal,
        "alice",
        "acme-frontier",
        Some("step-42000"),
        shards,
        Outcome::Sealed,
    );
    r.codeword = Some(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    r.bytes = Some(i);
    r.canonical()
}

/// A bucket of `size` entries made by `entry`, integrated a segment at a time.
fn grown(size: u64, entry: fn(u64) -> Vec<u8>) -> (TileSet, TreeHead) {
    let mut b = TileSet::new();
    let mut head = TreeHead::empty();
    while head.size < size {
        let to = (head.size + SEGMENT).min(size);
        let batch: Vec<Vec<u8>> = (head.size..to).map(entry).collect();
        let i = integrate(head, &b, &batch).unwrap();
        b.apply(&i).unwrap();
        head = i.new;
    }
    (b, head)
}

fn integration(c: &mut Criterion) {
    let batch: Vec<Vec<u8>> = (0..SEGMENT).map(record).collect();
    let bytes: usize = batch.iter().map(Vec::len).sum();
    println!(
        "segment: {SEGMENT} records, {bytes} bytes (mean {} per record)",
        bytes as u64 / SEGMENT
    );
    let mut g = c.benchmark_group("integrate one segment");
    g.throughput(Throughput::Elements(SEGMENT));
    g.sample_size(10);
    g.bench_function("tiles, into an empty tree", |b| {
        b.iter(|| integrate(TreeHead::empty(), &TileSet::new(), black_box(&batch)).unwrap())
    });
    // Not aligned: the right edge of every level is read and rewritten.
    let (bucket, head) = grown(SEGMENT + 1_000, record);
    let later: Vec<Vec<u8>> = (head.size..head.size + SEGMENT).map(record).collect();
    g.bench_function("tiles, at 66,536 entries", |b| {
        b.iter(|| integrate(head, &bucket, black_box(&later)).unwrap())
    });
    g.bench_function("baseline: merkle::Levels (local log)", |b| {
        b.iter_batched(
            Levels::default,
            |mut lv| {
                for e in &batch {
                    lv.push(merkle::leaf_hash(e));
                }
                lv.root()
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("baseline: leaf hashes only", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|e| merkle::leaf_hash(e))
                .fold(0u8, |a, h| a ^ h[0])
        })
    });
    g.finish();
}

fn reading(c: &mut Criterion) {
    // Proofs and roots read tiles only: short entries keep the bucket small. Under `cargo
    // test` (no --bench), a smaller one.
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { 16 * SEGMENT } else { 2 * SEGMENT + 77 };
    let (bucket, head) = grown(size, |i| i.to_be_bytes().to_vec());
    let mut g = c.benchmark_group(format!("from tiles at {size} entries"));
    g.bench_function("root", |b| {
        b.iter(|| tiles::tree_root(black_box(size), &bucket).unwrap())
    });
    g.bench_function("inclusion proof", |b| {
        b.iter(|| tiles::inclusion_proof(black_box(123_457), size, &bucket).unwrap())
    });
    g.bench_function("consistency proof", |b| {
        b.iter(|| tiles::consistency_proof(black_box(size * 2 / 3), size, &bucket).unwrap())
    });
    g.finish();
    let (seg, seg_head) = grown(SEGMENT, record);
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Elements(SEGMENT));
    g.sample_size(10);
    g.bench_function("one segment, every tile and entry", |b| {
        b.iter(|| tiles::audit(seg_head, &seg, |_, _| Ok::<_, String>(())).unwrap())
    });
    g.finish();
    assert_eq!(tiles::tree_root(size, &bucket).unwrap(), head.root);
}

criterion_group!(benches, integration, reading);
criterion_main!(benches);
