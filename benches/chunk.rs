//! What a user feels per chunk: AES-256-GCM sealing and opening of 1 MiB chunks through the
//! container codec (HKDF chunk key included), aws-lc-rs against RustCrypto in the same run.
//! `cargo bench --bench chunk`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weightvault::format::aead::{AwsLc, ChunkAead, RustCrypto};
use weightvault::format::{ChunkCodec, FileKind, SealedHeader, DEFAULT_CHUNK_SIZE};
use weightvault::keys::DataKey;

fn codec<A: ChunkAead>(aead: A) -> ChunkCodec<A> {
    let dek = DataKey::from_bytes([7; 32]);
    let mut h = SealedHeader {
        file_id: [1; 16],
        kind: FileKind::File,
        model: "bench".into(),
        revision: "r".into(),
        path: "x".into(),
        shard_index: 0,
        shard_count: 0,
        chunk_size: DEFAULT_CHUNK_SIZE,
        plaintext_len: 64 * u64::from(DEFAULT_CHUNK_SIZE),
        key_check: [0; 32],
        meta: vec![],
    };
    h.key_check = ChunkCodec::<A>::key_check(&dek, &h.file_id);
    let enc = h.encode().unwrap();
    ChunkCodec::for_sealing(aead, &dek, &h, &enc).0
}

fn bench<A: ChunkAead>(c: &mut Criterion, aead: A) {
    let name = aead.name();
    let codec = codec(aead);
    let mut buf = vec![0x5au8; DEFAULT_CHUNK_SIZE as usize];
    let mut g = c.benchmark_group("chunk-1MiB");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("seal/{name}"), |b| {
        b.iter(|| codec.seal_chunk(3, &mut buf));
    });
    let tag = codec.seal_chunk(3, &mut buf);
    let ct = buf.clone();
    let mut out = vec![0u8; buf.len()];
    g.bench_function(format!("open/{name}"), |b| {
        b.iter(|| codec.open_chunk_to(3, &ct, &mut out, &tag).unwrap());
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    bench(c, AwsLc);
    bench(c, RustCrypto);
    let keys = weightvault::keys::FileKeys::new(&DataKey::from_bytes([1; 32]), &[2; 16]);
    c.bench_function("hkdf-chunk-key", |b| {
        b.iter(|| keys.chunk_key(&[3; 32], 12345))
    });
}

criterion_group!(benches, all);
criterion_main!(benches);
