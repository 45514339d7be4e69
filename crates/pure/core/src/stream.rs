//! The sealed stream a released shard travels in (inside TLS): the file's bytes, encrypted
//! chunk by chunk to the attested host's X25519 key. Pure. Byte layout in `docs/PROTOCOL.md`.
//!
//! Header (80 bytes): magic `WVSTRM01`, the sender's ephemeral X25519 public key, release id
//! (16), shard index (u32 BE), chunk size (u32 BE), head length (u64 BE: the clear safetensors
//! header, chunk 0), data length (u64 BE). Then chunk 0 (the head) and the data chunks, each
//! `ciphertext || 16-byte GCM tag`, at offsets computable from the header alone, so a byte
//! range of the stream maps to whole chunks (resume with `Range`).
//!
//! Key: HKDF-SHA256(ikm = X25519(ephemeral, host), salt = header, info = "weightvault stream
//! v1" || host public key); nonce = chunk index (u64 BE) || last-chunk flag (u32 BE), as at
//! rest. The ephemeral key is derived from a per-release secret and the shard index, so the
//! same release gives the same bytes every time (a resumed range matches what came before).

use crate::format::aead::{AuthFailed, AwsLc, ChunkAead, TAG_LEN};
use crate::format::{chunk_count, chunk_nonce};
use crate::keys::SymmetricKey;
use x25519_dalek::{PublicKey, StaticSecret};

/// Stream magic and version.
pub const MAGIC: [u8; 8] = *b"WVSTRM01";
/// Header length in bytes.
pub const HEADER_LEN: usize = 80;
/// Largest chunk accepted by a receiver (64 MiB).
pub const MAX_CHUNK: u32 = 64 << 20;
/// Largest head (clear safetensors header) accepted by a receiver (100 MiB, as safetensors).
pub const MAX_HEAD: u64 = 100 << 20;

/// Stream errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// Not a weightvault stream header.
    #[error("not a weightvault sealed stream: {0}")]
    BadHeader(&'static str),
    /// The key agreement gave no secret (a low-order public key).
    #[error("the host or ephemeral key is not usable (low-order point)")]
    WeakKey,
    /// A chunk failed authentication.
    #[error("sealed stream chunk {0} failed authentication: altered in transit, or sealed to another host key")]
    Chunk(u64),
}

/// The stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// Sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Release id.
    pub release: [u8; 16],
    /// Shard (file) index within the release.
    pub shard: u32,
    /// Data chunk size.
    pub chunk_size: u32,
    /// Length of chunk 0: the file's clear head (safetensors header; 0 for other files).
    pub head_len: u64,
    /// Length of the file's data after the head.
    pub data_len: u64,
}

impl StreamHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..40].copy_from_slice(&self.ephemeral);
        b[40..56].copy_from_slice(&self.release);
        b[56..60].copy_from_slice(&self.shard.to_be_bytes());
        b[60..64].copy_from_slice(&self.chunk_size.to_be_bytes());
        b[64..72].copy_from_slice(&self.head_len.to_be_bytes());
        b[72..80].copy_from_slice(&self.data_len.to_be_bytes());
        b
    }

    /// Decodes and sanity-checks a header.
    pub fn decode(b: &[u8]) -> Result<Self, StreamError> {
        if b.len() < HEADER_LEN {
            return Err(StreamError::BadHeader("too short"));
        }
        if b[..8] != MAGIC {
            return Err(StreamError::BadHeader("wrong magic or version"));
        }
        let u32_at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().expect("4"));
        let u64_at = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().expect("8"));
        let h = Self {
            ephemeral: b[8..40].try_into().expect("32"),
            release: b[40..56].try_into().expect("16"),
            shard: u32_at(56),
            chunk_size: u32_at(60),
            head_len: u64_at(64),
            data_len: u64_at(72),
        };
        if h.chunk_size == 0 || h.chunk_size > MAX_CHUNK {
            return Err(StreamError::BadHeader("chunk size out of range"));
        }
        if h.head_len > MAX_HEAD {
            return Err(StreamError::BadHeader("head too long"));
        }
        if h.data_len > 1 << 50 {
            return Err(StreamError::BadHeader("data too long"));
        }
        Ok(h)
    }

    /// Number of chunks: the head, then at least one data chunk.
    pub fn chunks(&self) -> u64 {
        1 + chunk_count(self.data_len, self.chunk_size)
    }

    /// Plaintext length of chunk `i`.
    pub fn plain_len(&self, i: u64) -> u64 {
        if i == 0 {
            return self.head_len;
        }
        let cs = u64::from(self.chunk_size);
        let start = (i - 1) * cs;
        self.data_len.saturating_sub(start).min(cs)
    }

    /// Offset of chunk `i`'s plaintext in the file.
    pub fn plain_offset(&self, i: u64) -> u64 {
        if i == 0 {
            0
        } else {
            self.head_len + (i - 1) * u64::from(self.chunk_size)
        }
    }

    /// Offset of chunk `i` in the stream (`i == chunks()` gives the stream length).
    pub fn offset(&self, i: u64) -> u64 {
        let h = HEADER_LEN as u64;
        if i == 0 {
            return h;
        }
        let tag = TAG_LEN as u64;
        h + self.head_len
            + tag
            + (self.plain_offset(i) - self.head_len).min(self.data_len)
            + (i - 1) * tag
    }

    /// Length of the whole stream.
    pub fn stream_len(&self) -> u64 {
        self.offset(self.chunks())
    }

    /// The file's length (head + data).
    pub fn file_len(&self) -> u64 {
        self.head_len + self.data_len
    }

    /// The chunk holding stream byte `pos` (a position in the header gives chunk 0).
    pub fn chunk_at(&self, pos: u64) -> u64 {
        if pos < self.offset(1) {
            return 0;
        }
        let per = u64::from(self.chunk_size) + TAG_LEN as u64;
        (1 + (pos - self.offset(1)) / per).min(self.chunks() - 1)
    }
}

fn derive(
    shared: &x25519_dalek::SharedSecret,
    host: &[u8; 32],
    header: &StreamHeader,
) -> Result<SymmetricKey, StreamError> {
    if !shared.was_contributory() {
        return Err(StreamError::WeakKey);
    }
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&header.encode()), shared.as_bytes());
    let mut info = b"weightvault stream v1".to_vec();
    info.extend_from_slice(host);
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hk.expand(&info, k.as_mut()).expect("32 bytes");
    Ok(SymmetricKey::from_bytes(*k))
}

/// A release's stream secret, from the vault's service key (HSM-wrapped, `watermark.key`) and
/// the release id: any holder of the vault's keys (another replica, the same service after a
/// restart) derives the same secret from the id alone, so no secret lives in one process's
/// memory. HKDF-SHA256 with the id as salt and a label of its own, so it is independent of
/// every other key derived from the service key (the watermark's codes and carriers).
pub fn release_secret(service_key: &SymmetricKey, release: &[u8; 16]) -> SymmetricKey {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(release), service_key.expose());
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hk.expand(b"weightvault release stream secret v1", k.as_mut())
        .expect("32 bytes");
    SymmetricKey::from_bytes(*k)
}

/// The ephemeral secret of shard `shard` of a release, from the release's secret.
pub fn ephemeral_secret(release_secret: &SymmetricKey, shard: u32) -> StaticSecret {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, release_secret.expose());
    let mut info = b"weightvault stream ephemeral".to_vec();
    info.extend_from_slice(&shard.to_be_bytes());
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    hk.expand(&info, k.as_mut()).expect("32 bytes");
    StaticSecret::from(*k)
}

/// The sending side of one shard's stream.
pub struct Sealer {
    header: StreamHeader,
    key: SymmetricKey,
}

impl Sealer {
    /// Sets up a shard's stream to `host` (the attested X25519 key).
    pub fn new(
        release_secret: &SymmetricKey,
        host: &[u8; 32],
        release: [u8; 16],
        shard: u32,
        chunk_size: u32,
        head_len: u64,
        data_len: u64,
    ) -> Result<Self, StreamError> {
        let eph = ephemeral_secret(release_secret, shard);
        let header = StreamHeader {
            ephemeral: PublicKey::from(&eph).to_bytes(),
            release,
            shard,
            chunk_size,
            head_len,
            data_len,
        };
        let shared = eph.diffie_hellman(&PublicKey::from(*host));
        Ok(Self {
            key: derive(&shared, host, &header)?,
            header,
        })
    }

    /// The header.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Encrypts chunk `i` in place and returns its tag.
    pub fn seal_chunk(&self, i: u64, buf: &mut [u8]) -> [u8; TAG_LEN] {
        debug_assert_eq!(buf.len() as u64, self.header.plain_len(i));
        let nonce = chunk_nonce(i, i + 1 == self.header.chunks());
        AwsLc.seal_in_place(&self.key, &nonce, &[], buf)
    }
}

/// The receiving side of one shard's stream.
pub struct Opener {
    header: StreamHeader,
    key: SymmetricKey,
}

impl Opener {
    /// Reads the header and agrees the key with the host's secret.
    pub fn new(header: &[u8], host: &StaticSecret) -> Result<Self, StreamError> {
        let header = StreamHeader::decode(header)?;
        let shared = host.diffie_hellman(&PublicKey::from(header.ephemeral));
        let key = derive(&shared, &PublicKey::from(host).to_bytes(), &header)?;
        Ok(Self { header, key })
    }

    /// The header.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The tag chunk `i` has when its plaintext is `plain`: re-sealing what was written checks
    /// it against the tag recorded when it arrived (resuming a download).
    pub fn tag_of(&self, i: u64, plain: &[u8]) -> [u8; TAG_LEN] {
        let mut b = zeroize::Zeroizing::new(plain.to_vec());
        let nonce = chunk_nonce(i, i + 1 == self.header.chunks());
        AwsLc.seal_in_place(&self.key, &nonce, &[], &mut b)
    }

    /// Authenticates and decrypts chunk `i` (ciphertext in `buf`, then its tag) in place. On
    /// failure `buf` holds no plaintext.
    pub fn open_chunk(
        &self,
        i: u64,
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), StreamError> {
        if buf.len() as u64 != self.header.plain_len(i) {
            return Err(StreamError::Chunk(i));
        }
        let nonce = chunk_nonce(i, i + 1 == self.header.chunks());
        AwsLc
            .open_in_place(&self.key, &nonce, &[], buf, tag)
            .map_err(|AuthFailed| StreamError::Chunk(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal_all(s: &Sealer, file: &[u8]) -> Vec<u8> {
        let h = s.header();
        let mut out = h.encode().to_vec();
        for i in 0..h.chunks() {
            let o = h.plain_offset(i) as usize;
            let mut b = file[o..o + h.plain_len(i) as usize].to_vec();
            let t = s.seal_chunk(i, &mut b);
            assert_eq!(out.len() as u64, h.offset(i));
            out.extend_from_slice(&b);
            out.extend_from_slice(&t);
        }
        assert_eq!(out.len() as u64, h.stream_len());
        out
    }

    fn open_all(stream: &[u8], host: &StaticSecret) -> Result<Vec<u8>, StreamError> {
        let o = Opener::new(&stream[..HEADER_LEN], host)?;
        let h = *o.header();
        let mut file = Vec::new();
        for i in 0..h.chunks() {
            let at = h.offset(i) as usize;
            let n = h.plain_len(i) as usize;
            // A flipped length field in the header: the stream no longer adds up.
            let (Some(b), Some(t)) = (stream.get(at..at + n), stream.get(at + n..at + n + 16))
            else {
                return Err(StreamError::Chunk(i));
            };
            let mut b = b.to_vec();
            let tag: [u8; 16] = t.try_into().unwrap();
            o.open_chunk(i, &mut b, &tag)?;
            file.extend_from_slice(&b);
        }
        Ok(file)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_layout_and_any_flip_fails(head in 0usize..40, data in 0usize..300, cs in 1u32..50, flip in any::<prop::sample::Index>()) {
            let host = StaticSecret::from([5u8; 32]);
            let hp = PublicKey::from(&host).to_bytes();
            let file: Vec<u8> = (0..head + data).map(|i| i as u8).collect();
            let rs = SymmetricKey::from_bytes([9; 32]);
            let s = Sealer::new(&rs, &hp, [1; 16], 3, cs, head as u64, data as u64).unwrap();
            let stream = seal_all(&s, &file);
            // Deterministic per release and shard: a resumed range matches.
            let again = Sealer::new(&rs, &hp, [1; 16], 3, cs, head as u64, data as u64).unwrap();
            prop_assert_eq!(&seal_all(&again, &file), &stream);
            prop_assert_eq!(open_all(&stream, &host).unwrap(), file.clone());
            let h = *s.header();
            for i in 0..h.chunks() {
                prop_assert_eq!(h.chunk_at(h.offset(i)), i);
                if h.plain_len(i) > 0 {
                    prop_assert_eq!(h.chunk_at(h.offset(i + 1) - 1), i);
                }
            }
            let mut bad = stream.clone();
            let k = flip.index(bad.len());
            bad[k] ^= 0x20;
            prop_assert!(open_all(&bad, &host).is_err(), "flip at {}", k);
            let other = StaticSecret::from([6u8; 32]);
            prop_assert!(open_all(&stream, &other).is_err());
        }
    }

    #[test]
    fn low_order_host_keys_are_refused() {
        let rs = SymmetricKey::from_bytes([9; 32]);
        assert_eq!(
            Sealer::new(&rs, &[0u8; 32], [1; 16], 0, 16, 0, 10).err(),
            Some(StreamError::WeakKey)
        );
    }
}
