//! The sealed stream a release is sent in (core stream.rs), as a fetcher receives it:
//! `StreamHeader::decode`, the chunk layout it gives, and `Opener` chunk by chunk. The
//! fetcher's own buffer and chunk loop (src/release/fetch.rs) is not pure yet (plan B2(c)):
//! the loop here reads a whole stream held in memory the way the core's own tests do.

use crate::mode;
use crate::mutate::mutate;
use arbitrary::{Arbitrary, Unstructured};
use weightvault_core::format::aead::TAG_LEN;
use weightvault_core::keys::SymmetricKey;
use weightvault_core::stream::{Opener, Sealer, StreamHeader, HEADER_LEN};
use x25519_dalek::{PublicKey, StaticSecret};

fn host() -> StaticSecret {
    StaticSecret::from([5; 32])
}

/// A stream to seal: release, shard, a chunk size of 1 to 256 bytes and a file of up to a
/// few kilobytes, the first `head` bytes of it its head.
#[derive(Debug, Arbitrary)]
struct ArbStream {
    release: [u8; 16],
    shard: u32,
    chunk_size: u8,
    head: u16,
    file: Vec<u8>,
}

/// Mode byte even: the raw bytes as a stream to the targets' host key: its header decoded and
/// its layout checked (chunk offsets increase, `chunk_at` finds each chunk), then each chunk
/// that the bytes hold opened in turn. Odd: a stream sealed by `Sealer` from arbitrary values,
/// which must open to its file, then mutated: a mutation that still opens whole gives the same
/// file.
pub fn sealed_stream(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        let _ = open(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbStream::arbitrary(&mut u) else {
        return;
    };
    let mut file = a.file;
    file.truncate(4096);
    let head = usize::from(a.head).min(file.len());
    let hp = PublicKey::from(&host()).to_bytes();
    let secret = SymmetricKey::from_bytes([9; 32]);
    let s = Sealer::new(
        &secret,
        &hp,
        a.release,
        a.shard,
        u32::from(a.chunk_size).max(1),
        head as u64,
        (file.len() - head) as u64,
    )
    .expect("the host key is not low-order");
    let h = *s.header();
    let mut stream = h.encode().to_vec();
    for i in 0..h.chunks() {
        let o = h.plain_offset(i) as usize;
        let mut b = file[o..o + h.plain_len(i) as usize].to_vec();
        let t = s.seal_chunk(i, &mut b);
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&t);
    }
    assert_eq!(stream.len() as u64, h.stream_len());
    assert_eq!(open(&stream), Some(file.clone()), "a sealed stream opens");
    mutate(&mut u, &mut stream);
    if let Some(f) = open(&stream) {
        assert_eq!(f, file, "an altered stream opened to another file");
    }
}

/// The file a stream opens to, if every chunk is there and authentic.
fn open(stream: &[u8]) -> Option<Vec<u8>> {
    let h = StreamHeader::decode(stream).ok()?;
    layout(&h);
    let o = Opener::new(&stream[..HEADER_LEN], &host()).ok()?;
    let mut file = Vec::new();
    for i in 0..h.chunks() {
        let at = usize::try_from(h.offset(i)).ok()?;
        let n = usize::try_from(h.plain_len(i)).ok()?;
        let end = at.checked_add(n)?;
        let b = stream.get(at..end)?;
        let t: [u8; TAG_LEN] = stream
            .get(end..end.checked_add(TAG_LEN)?)?
            .try_into()
            .ok()?;
        let mut b = b.to_vec();
        o.open_chunk(i, &mut b, &t).ok()?;
        file.extend_from_slice(&b);
    }
    (stream.len() as u64 == h.stream_len()).then_some(file)
}

/// What a decoded header's arithmetic must give, at its edges.
fn layout(h: &StreamHeader) {
    let n = h.chunks();
    assert!(n >= 2, "a head and at least one data chunk");
    assert_eq!(h.offset(n), h.stream_len());
    assert_eq!(h.file_len(), h.head_len + h.data_len);
    for i in [0, 1, n / 2, n - 2, n - 1] {
        assert!(
            h.offset(i) <= h.offset(i + 1),
            "chunk {i} ends before it starts"
        );
        assert_eq!(
            h.offset(i + 1) - h.offset(i),
            h.plain_len(i) + TAG_LEN as u64
        );
        assert_eq!(h.chunk_at(h.offset(i)), i);
    }
    assert_eq!(h.chunk_at(u64::MAX), n - 1);
}
