//! The sealed container: one file per checkpoint file (safetensors shard, config, tokenizer,
//! manifest). Byte layout in `docs/FORMAT.md`; this module is its reference implementation.
//!
//! Pure: bytes in, bytes out. It never opens a file or a socket and never talks to the HSM;
//! `crate::store` does the I/O and hands this module buffers.
//!
//! ```text
//! prelude (16) | header (H) | header tag (16) | key slot 0 (256) | key slot 1 (256)
//! | tag table (16 x chunk_count) | zero padding to a 4096 boundary | ciphertext (plaintext_len)
//! ```
//! Ciphertext offsets equal plaintext offsets (plus `data_offset`), so any byte range decrypts
//! by itself: read the chunks that cover it and their tags.

pub mod aead;

use crate::keys::{DataKey, FileKeys};
use aead::{AuthFailed, ChunkAead, NONCE_LEN, TAG_LEN};
use sha2::{Digest, Sha256};

/// First eight bytes of every sealed file.
pub const MAGIC: &[u8; 8] = b"WVSEALED";
/// The container version this code writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed prelude (magic, version, flags, header length).
pub const PRELUDE_LEN: usize = 16;
/// Size of one key slot.
pub const KEY_SLOT_LEN: usize = 256;
/// Number of key slots (two, so that a rewrap can write one while the other stays valid).
pub const KEY_SLOTS: usize = 2;
/// Ciphertext starts on a multiple of this.
pub const DATA_ALIGN: u64 = 4096;
/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE: u32 = 16;
/// Largest chunk size accepted (64 MiB).
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Largest header accepted: the safetensors limit (100 MB) plus room for our fields.
pub const MAX_HEADER_LEN: u32 = 100_000_000 + 65_536;
/// Longest model, revision or KEK label string.
pub const MAX_NAME_LEN: usize = 255;
/// Longest relative path of a file inside a checkpoint.
pub const MAX_PATH_LEN: usize = 4096;

/// What went wrong with a sealed file, in words a person can act on. The caller adds which
/// file, model and shard.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the magic bytes.
    #[error("not a weightvault sealed file (bad magic)")]
    BadMagic,
    /// The file was written by a different container version.
    #[error("unsupported container version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u16),
    /// Header length field out of range or past the end of the file.
    #[error("header length {0} is out of range — file altered or truncated")]
    BadHeaderLength(u64),
    /// A header field could not be parsed.
    #[error("header is malformed: {0} — file altered or not a sealed file")]
    Malformed(String),
    /// The header tag did not verify with the unwrapped data key.
    #[error("header failed authentication — header altered")]
    HeaderAuth,
    /// The data key could not be unwrapped from the active key slot.
    #[error("the data key could not be unwrapped from the key slot")]
    Unwrap,
    /// The key slot's MAC did not verify.
    #[error("key slot failed authentication — key slot altered")]
    KeySlotAuth,
    /// The unwrapped data key is not this file's.
    #[error("the data key does not belong to this file — key slot or header copied from another file, or wrong KEK")]
    KeyMismatch,
    /// Both key slots are empty.
    #[error("no key slot holds a wrapped data key (crypto-shredded or altered)")]
    NoKeySlot,
    /// A key slot could not be parsed.
    #[error("key slot {slot} is malformed: {why} — file altered")]
    BadKeySlot {
        /// Which slot.
        slot: usize,
        /// What is wrong.
        why: String,
    },
    /// File shorter than its header says.
    #[error("file is truncated: {actual} bytes, the header says {expected}")]
    Truncated {
        /// Length the header implies.
        expected: u64,
        /// Length found.
        actual: u64,
    },
    /// File longer than its header says.
    #[error("file is extended: {actual} bytes, the header says {expected} — bytes appended")]
    Extended {
        /// Length the header implies.
        expected: u64,
        /// Length found.
        actual: u64,
    },
    /// Padding between tag table and ciphertext is not zero.
    #[error("padding before the ciphertext is not zero — file altered")]
    BadPadding,
    /// A chunk did not authenticate.
    #[error("chunk {index} of {count} failed authentication — file altered, truncated, or chunks reordered or spliced")]
    ChunkAuth {
        /// Chunk index.
        index: u64,
        /// Number of chunks in the file.
        count: u64,
    },
    /// A byte range outside the plaintext was requested.
    #[error("byte range {start}..{end} is outside the {len}-byte plaintext")]
    RangeOutOfBounds {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// Plaintext length.
        len: u64,
    },
}

/// What a sealed file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A safetensors file: `meta` holds its 8-byte length prefix and JSON header, the sealed
    /// data is its tensor byte buffer.
    Safetensors,
    /// Any other file (config, tokenizer): `meta` is empty, the sealed data is the whole file.
    File,
    /// The revision's manifest: `meta` holds its JSON, the sealed data is empty.
    Manifest,
}

impl FileKind {
    fn code(self) -> u8 {
        match self {
            FileKind::Safetensors => 1,
            FileKind::File => 2,
            FileKind::Manifest => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(FileKind::Safetensors),
            2 => Some(FileKind::File),
            3 => Some(FileKind::Manifest),
            _ => None,
        }
    }
}

/// The immutable header: everything but the wrapped key. Chunk keys are bound to its hash,
/// so it can never change without making every chunk unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// Random per-file identifier (HKDF salt).
    pub file_id: [u8; 16],
    /// What the file holds.
    pub kind: FileKind,
    /// Model name.
    pub model: String,
    /// Revision name.
    pub revision: String,
    /// Path of the original file relative to the checkpoint root, `/`-separated.
    pub path: String,
    /// Index of this safetensors shard (0 for other files).
    pub shard_index: u32,
    /// Number of safetensors shards in the revision (0 for other files).
    pub shard_count: u32,
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Length of the sealed data in bytes.
    pub plaintext_len: u64,
    /// Commitment to the data key (see [`FileKeys::key_check`]).
    pub key_check: [u8; 32],
    /// Clear, authenticated metadata: the safetensors prefix and JSON header, or the manifest.
    pub meta: Vec<u8>,
}

/// Number of chunks for a plaintext length: at least one, so that every file ends in a final
/// chunk whose nonce carries the last-chunk flag.
pub fn chunk_count(plaintext_len: u64, chunk_size: u32) -> u64 {
    plaintext_len.div_ceil(u64::from(chunk_size)).max(1)
}

/// The 12-byte GCM nonce of a chunk: big-endian index, then 1 for the final chunk, else 0.
pub fn chunk_nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[8..].copy_from_slice(&u32::from(last).to_be_bytes());
    n
}

/// Where everything is in a sealed file, computed from the header alone (checked arithmetic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Length of the encoded header (without prelude).
    pub header_len: u64,
    /// Offset of the header tag.
    pub header_tag_offset: u64,
    /// Offset of key slot 0.
    pub key_slots_offset: u64,
    /// Offset of the tag table.
    pub tag_table_offset: u64,
    /// Number of chunks.
    pub chunk_count: u64,
    /// Offset of the ciphertext.
    pub data_offset: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// Plaintext length.
    pub plaintext_len: u64,
}

impl Layout {
    /// Computes the layout; `None` when the numbers overflow a 64-bit file offset.
    pub fn new(header_len: u64, chunk_size: u32, plaintext_len: u64) -> Option<Self> {
        let chunks = chunk_count(plaintext_len, chunk_size);
        let header_tag_offset = (PRELUDE_LEN as u64).checked_add(header_len)?;
        let key_slots_offset = header_tag_offset.checked_add(TAG_LEN as u64)?;
        let tag_table_offset = key_slots_offset.checked_add((KEY_SLOT_LEN * KEY_SLOTS) as u64)?;
        let tags_end = tag_table_offset.checked_add(chunks.checked_mul(TAG_LEN as u64)?)?;
        let data_offset = tags_end.checked_next_multiple_of(DATA_ALIGN)?;
        data_offset.checked_add(plaintext_len)?;
        Some(Self {
            header_len,
            header_tag_offset,
            key_slots_offset,
            tag_table_offset,
            chunk_count: chunks,
            data_offset,
            chunk_size,
            plaintext_len,
        })
    }

    /// Offset of the first byte after the tag table.
    pub fn tag_table_end(&self) -> u64 {
        self.tag_table_offset + self.chunk_count * TAG_LEN as u64
    }

    /// Total length of the sealed file.
    pub fn file_len(&self) -> u64 {
        self.data_offset + self.plaintext_len
    }

    /// Plaintext range `[start, end)` of chunk `index`.
    pub fn chunk_range(&self, index: u64) -> (u64, u64) {
        let start = index * u64::from(self.chunk_size);
        let end = (start + u64::from(self.chunk_size)).min(self.plaintext_len);
        (start, end.max(start))
    }

    /// Whether `index` is the final chunk.
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunk_count
    }

    /// The chunks that cover plaintext bytes `[start, end)` (empty when the range is empty).
    pub fn chunks_covering(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        if start >= end {
            return 0..0;
        }
        let cs = u64::from(self.chunk_size);
        (start / cs)..end.div_ceil(cs)
    }
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl SealedHeader {
    /// Checks the fields a writer controls, before encoding.
    pub fn check(&self) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::Malformed(m));
        if self.model.is_empty() || self.model.len() > MAX_NAME_LEN {
            return bad(format!("model name must be 1..={MAX_NAME_LEN} bytes"));
        }
        if self.revision.is_empty() || self.revision.len() > MAX_NAME_LEN {
            return bad(format!("revision must be 1..={MAX_NAME_LEN} bytes"));
        }
        if self.path.is_empty() || self.path.len() > MAX_PATH_LEN {
            return bad(format!("path must be 1..={MAX_PATH_LEN} bytes"));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return bad(format!(
                "chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            ));
        }
        if self.meta.len() as u64 > u64::from(MAX_HEADER_LEN) - 65_536 {
            return bad("metadata too large".into());
        }
        if Layout::new(0, self.chunk_size, self.plaintext_len).is_none() {
            return bad("plaintext length overflows a file offset".into());
        }
        Ok(())
    }

    /// Encodes prelude and header: the bytes that are hashed and authenticated.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.check()?;
        let mut body = Vec::with_capacity(128 + self.meta.len());
        body.extend_from_slice(&self.file_id);
        body.push(self.kind.code());
        put_str16(&mut body, &self.model);
        put_str16(&mut body, &self.revision);
        put_str16(&mut body, &self.path);
        body.extend_from_slice(&self.shard_index.to_be_bytes());
        body.extend_from_slice(&self.shard_count.to_be_bytes());
        body.extend_from_slice(&self.chunk_size.to_be_bytes());
        body.extend_from_slice(&self.plaintext_len.to_be_bytes());
        body.extend_from_slice(&chunk_count(self.plaintext_len, self.chunk_size).to_be_bytes());
        body.extend_from_slice(&self.key_check);
        body.extend_from_slice(&(self.meta.len() as u32).to_be_bytes());
        body.extend_from_slice(&self.meta);
        let mut out = Vec::with_capacity(PRELUDE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads the prelude and returns the header length it announces (not yet trusted).
    pub fn parse_prelude(prelude: &[u8]) -> Result<u32, FormatError> {
        if prelude.len() < PRELUDE_LEN || &prelude[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_be_bytes([prelude[8], prelude[9]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = u16::from_be_bytes([prelude[10], prelude[11]]);
        if flags != 0 {
            return Err(FormatError::Malformed(format!(
                "unknown flags {flags:#06x}"
            )));
        }
        let len = u32::from_be_bytes(prelude[12..16].try_into().expect("4 bytes"));
        if len > MAX_HEADER_LEN {
            return Err(FormatError::BadHeaderLength(u64::from(len)));
        }
        Ok(len)
    }

    /// Parses prelude + header bytes exactly as [`SealedHeader::encode`] wrote them. Strict: no
    /// trailing bytes, no unknown kinds, counts must agree. The result is NOT yet authenticated.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let len = Self::parse_prelude(bytes)? as usize;
        if bytes.len() != PRELUDE_LEN + len {
            return Err(FormatError::BadHeaderLength(len as u64));
        }
        let mut r = Reader {
            buf: &bytes[PRELUDE_LEN..],
        };
        let file_id: [u8; 16] = r.array()?;
        let kind_code = r.u8()?;
        let kind = FileKind::from_code(kind_code)
            .ok_or_else(|| FormatError::Malformed(format!("unknown file kind {kind_code}")))?;
        let model = r.str16("model")?;
        let revision = r.str16("revision")?;
        let path = r.str16("path")?;
        let shard_index = u32::from_be_bytes(r.array()?);
        let shard_count = u32::from_be_bytes(r.array()?);
        let chunk_size = u32::from_be_bytes(r.array()?);
        let plaintext_len = u64::from_be_bytes(r.array()?);
        let count = u64::from_be_bytes(r.array()?);
        let key_check: [u8; 32] = r.array()?;
        let meta_len = u32::from_be_bytes(r.array()?) as usize;
        let meta = r.take(meta_len)?.to_vec();
        if !r.buf.is_empty() {
            return Err(FormatError::Malformed(format!(
                "{} unexpected bytes after the header fields",
                r.buf.len()
            )));
        }
        let h = Self {
            file_id,
            kind,
            model,
            revision,
            path,
            shard_index,
            shard_count,
            chunk_size,
            plaintext_len,
            key_check,
            meta,
        };
        h.check()?;
        if count != chunk_count(plaintext_len, chunk_size) {
            return Err(FormatError::Malformed(format!(
                "chunk count {count} does not match length {plaintext_len} at chunk size {chunk_size}"
            )));
        }
        Ok(h)
    }

    /// The file's layout.
    pub fn layout(&self, header_len: u64) -> Layout {
        Layout::new(header_len, self.chunk_size, self.plaintext_len)
            .expect("checked by SealedHeader::check")
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Malformed("header ends early".into()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn str16(&mut self, what: &str) -> Result<String, FormatError> {
        let n = u16::from_be_bytes(self.array()?) as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| FormatError::Malformed(format!("{what} is not UTF-8")))
    }
}

/// One key slot: a data key wrapped by a versioned key-encryption key, authenticated by an
/// HMAC-SHA256 keyed from the data key and bound to the header hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Increases with every rewrap; the non-empty slot with the highest generation is used.
    pub generation: u32,
    /// KEK label on the token (without version suffix).
    pub kek_label: String,
    /// KEK version.
    pub kek_version: u32,
    /// The wrapped data key (RFC 5649 output for the default mechanism).
    pub wrapped: Vec<u8>,
    /// HMAC-SHA256(slot key, header hash || slot body).
    pub mac: [u8; 32],
}

const SLOT_MAX_WRAPPED: usize = 160;
/// Bytes of a slot body other than the label and the wrapped key: generation, KEK version,
/// label length, wrapped length.
const SLOT_FIXED: usize = 4 + 4 + 1 + 2;
/// Length of a key slot's body (everything before its MAC).
pub const KEY_SLOT_BODY_LEN: usize = KEY_SLOT_LEN - 32;

fn slot_mac(key: &crate::keys::SymmetricKey, header_hash: &[u8; 32], body: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key");
    m.update(header_hash);
    m.update(body);
    m.finalize().into_bytes().into()
}

impl KeySlot {
    /// A new slot; its MAC is filled in by [`ChunkCodec::seal_key_slot`].
    pub fn new(generation: u32, kek_label: &str, kek_version: u32, wrapped: Vec<u8>) -> Self {
        Self {
            generation,
            kek_label: kek_label.into(),
            kek_version,
            wrapped,
            mac: [0; 32],
        }
    }

    /// The slot body: every field but the MAC, zero-padded to [`KEY_SLOT_BODY_LEN`].
    pub fn body(&self) -> Result<[u8; KEY_SLOT_BODY_LEN], FormatError> {
        if self.generation == 0 {
            return Err(FormatError::Malformed(
                "key slot generation 0 means empty".into(),
            ));
        }
        if self.kek_label.is_empty() || self.kek_label.len() > 64 {
            return Err(FormatError::Malformed(
                "KEK label must be 1..=64 bytes".into(),
            ));
        }
        if self.wrapped.is_empty() || self.wrapped.len() > SLOT_MAX_WRAPPED {
            return Err(FormatError::Malformed(format!(
                "wrapped key must be 1..={SLOT_MAX_WRAPPED} bytes"
            )));
        }
        // Each in range, the two together may still not fit (found by fuzzing).
        if SLOT_FIXED + self.kek_label.len() + self.wrapped.len() > KEY_SLOT_BODY_LEN {
            return Err(FormatError::Malformed(format!(
                "KEK label and wrapped key together must fit {} bytes",
                KEY_SLOT_BODY_LEN - SLOT_FIXED
            )));
        }
        let mut out = [0u8; KEY_SLOT_BODY_LEN];
        let mut v = Vec::with_capacity(KEY_SLOT_BODY_LEN);
        v.extend_from_slice(&self.generation.to_be_bytes());
        v.extend_from_slice(&self.kek_version.to_be_bytes());
        v.push(self.kek_label.len() as u8);
        v.extend_from_slice(self.kek_label.as_bytes());
        v.extend_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        v.extend_from_slice(&self.wrapped);
        out[..v.len()].copy_from_slice(&v);
        Ok(out)
    }

    /// Encodes into exactly [`KEY_SLOT_LEN`] bytes: body, then MAC.
    pub fn encode(&self) -> Result<[u8; KEY_SLOT_LEN], FormatError> {
        let mut out = [0u8; KEY_SLOT_LEN];
        out[..KEY_SLOT_BODY_LEN].copy_from_slice(&self.body()?);
        out[KEY_SLOT_BODY_LEN..].copy_from_slice(&self.mac);
        Ok(out)
    }

    /// Parses a slot; `Ok(None)` for an empty (all-zero) slot. The MAC is not checked here.
    pub fn parse(slot: usize, b: &[u8]) -> Result<Option<Self>, FormatError> {
        let bad = |why: &str| FormatError::BadKeySlot {
            slot,
            why: why.into(),
        };
        if b.len() != KEY_SLOT_LEN {
            return Err(bad("wrong length"));
        }
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        let generation = u32::from_be_bytes(b[0..4].try_into().expect("4"));
        if generation == 0 {
            return Err(bad("generation 0 with content"));
        }
        let kek_version = u32::from_be_bytes(b[4..8].try_into().expect("4"));
        let ll = b[8] as usize;
        if ll == 0 || ll > 64 {
            return Err(bad("label length out of range"));
        }
        let label = std::str::from_utf8(&b[9..9 + ll]).map_err(|_| bad("label not UTF-8"))?;
        let p = 9 + ll;
        let wl = u16::from_be_bytes([b[p], b[p + 1]]) as usize;
        if wl == 0 || wl > SLOT_MAX_WRAPPED {
            return Err(bad("wrapped key length out of range"));
        }
        let end = p + 2 + wl;
        if end > KEY_SLOT_BODY_LEN {
            return Err(bad("label and wrapped key overrun the slot"));
        }
        if b[end..KEY_SLOT_BODY_LEN].iter().any(|&x| x != 0) {
            return Err(bad("non-zero padding"));
        }
        Ok(Some(Self {
            generation,
            kek_label: label.to_string(),
            kek_version,
            wrapped: b[p + 2..end].to_vec(),
            mac: b[KEY_SLOT_BODY_LEN..].try_into().expect("32"),
        }))
    }

    /// Picks the active slot of a file: the non-empty one with the highest generation.
    pub fn active(slots: &[Option<KeySlot>]) -> Result<&KeySlot, FormatError> {
        slots
            .iter()
            .flatten()
            .max_by_key(|s| s.generation)
            .ok_or(FormatError::NoKeySlot)
    }
}

/// The cipher state of one sealed file once its data key is known: seals and opens chunks.
pub struct ChunkCodec<A: ChunkAead> {
    keys: FileKeys,
    header_hash: [u8; 32],
    layout: Layout,
    aead: A,
}

/// SHA-256 of prelude + header.
pub fn header_hash(encoded_header: &[u8]) -> [u8; 32] {
    Sha256::digest(encoded_header).into()
}

const HEADER_TAG_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

impl<A: ChunkAead> ChunkCodec<A> {
    /// For a writer: derives the key check the header must carry. Call before encoding.
    pub fn key_check(dek: &DataKey, file_id: &[u8; 16]) -> [u8; 32] {
        FileKeys::new(dek, file_id).key_check()
    }

    /// Builds the codec for a header, checking that the DEK belongs to it and that the header
    /// tag and the key slot's MAC verify. `encoded` is prelude + header as stored.
    pub fn new(
        aead: A,
        dek: &DataKey,
        header: &SealedHeader,
        encoded: &[u8],
        header_tag: &[u8; TAG_LEN],
        slot: &KeySlot,
    ) -> Result<Self, FormatError> {
        let keys = FileKeys::new(dek, &header.file_id);
        if keys.key_check() != header.key_check {
            return Err(FormatError::KeyMismatch);
        }
        let mut empty = [0u8; 0];
        aead.open_in_place(
            &keys.header_key(),
            &HEADER_TAG_NONCE,
            encoded,
            &mut empty,
            header_tag,
        )
        .map_err(|_| FormatError::HeaderAuth)?;
        let codec = Self::unchecked(aead, keys, header, encoded);
        let want = slot_mac(
            &codec.keys.key_slot_key(),
            &codec.header_hash,
            &slot.body()?,
        );
        if aws_lc_rs::constant_time::verify_slices_are_equal(&want, &slot.mac).is_err() {
            return Err(FormatError::KeySlotAuth);
        }
        Ok(codec)
    }

    /// Fills in a key slot's MAC for this file.
    pub fn seal_key_slot(&self, mut slot: KeySlot) -> Result<KeySlot, FormatError> {
        slot.mac = slot_mac(&self.keys.key_slot_key(), &self.header_hash, &slot.body()?);
        Ok(slot)
    }

    /// For a writer: the codec and the header tag to store.
    pub fn for_sealing(
        aead: A,
        dek: &DataKey,
        header: &SealedHeader,
        encoded: &[u8],
    ) -> (Self, [u8; TAG_LEN]) {
        let keys = FileKeys::new(dek, &header.file_id);
        let tag = aead.seal_in_place(&keys.header_key(), &HEADER_TAG_NONCE, encoded, &mut []);
        (Self::unchecked(aead, keys, header, encoded), tag)
    }

    fn unchecked(aead: A, keys: FileKeys, header: &SealedHeader, encoded: &[u8]) -> Self {
        let layout = header.layout((encoded.len() - PRELUDE_LEN) as u64);
        Self {
            keys,
            header_hash: header_hash(encoded),
            layout,
            aead,
        }
    }

    /// The file's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The header hash the chunk keys are bound to.
    pub fn header_hash(&self) -> &[u8; 32] {
        &self.header_hash
    }

    fn check_len(&self, index: u64, len: usize) {
        let (s, e) = self.layout.chunk_range(index);
        assert!(index < self.layout.chunk_count, "chunk index out of range");
        assert_eq!((e - s) as usize, len, "chunk buffer has the wrong length");
    }

    /// Seals chunk `index` in place; `buf` must be exactly that chunk's plaintext.
    pub fn seal_chunk(&self, index: u64, buf: &mut [u8]) -> [u8; TAG_LEN] {
        self.check_len(index, buf.len());
        let key = self.keys.chunk_key(&self.header_hash, index);
        let nonce = chunk_nonce(index, self.layout.is_last(index));
        self.aead.seal_in_place(&key, &nonce, &[], buf)
    }

    /// Opens chunk `index` in place; on failure `buf` is zeroed.
    pub fn open_chunk(
        &self,
        index: u64,
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), FormatError> {
        self.check_len(index, buf.len());
        let key = self.keys.chunk_key(&self.header_hash, index);
        let nonce = chunk_nonce(index, self.layout.is_last(index));
        self.aead
            .open_in_place(&key, &nonce, &[], buf, tag)
            .map_err(|AuthFailed| FormatError::ChunkAuth {
                index,
                count: self.layout.chunk_count,
            })
    }
}

impl<A: ChunkAead> ChunkCodec<A> {
    /// Opens chunk `index` from `ciphertext` into `out` (same length); on failure `out` is
    /// zeroed.
    pub fn open_chunk_to(
        &self,
        index: u64,
        ciphertext: &[u8],
        out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), FormatError> {
        self.check_len(index, ciphertext.len());
        assert_eq!(ciphertext.len(), out.len(), "output has the wrong length");
        let key = self.keys.chunk_key(&self.header_hash, index);
        let nonce = chunk_nonce(index, self.layout.is_last(index));
        self.aead
            .open_to(&key, &nonce, &[], ciphertext, tag, out)
            .map_err(|AuthFailed| FormatError::ChunkAuth {
                index,
                count: self.layout.chunk_count,
            })
    }
}

/// Writes the head of a sealed file: prelude, header, header tag, key slots, tag table, padding.
/// Returns exactly `layout.data_offset` bytes.
pub fn encode_head(
    encoded_header: &[u8],
    header_tag: &[u8; TAG_LEN],
    slots: &[Option<KeySlot>; KEY_SLOTS],
    tags: &[[u8; TAG_LEN]],
    layout: &Layout,
) -> Result<Vec<u8>, FormatError> {
    assert_eq!(tags.len() as u64, layout.chunk_count, "one tag per chunk");
    let mut out = Vec::with_capacity(layout.data_offset as usize);
    out.extend_from_slice(encoded_header);
    out.extend_from_slice(header_tag);
    for s in slots {
        match s {
            Some(s) => out.extend_from_slice(&s.encode()?),
            None => out.extend_from_slice(&[0u8; KEY_SLOT_LEN]),
        }
    }
    for t in tags {
        out.extend_from_slice(t);
    }
    out.resize(layout.data_offset as usize, 0);
    Ok(out)
}

/// Parses the head of a sealed file once its length is known: the header (unauthenticated),
/// header tag, key slots and tag table. Checks the file length and the zero padding.
#[derive(Debug, Clone)]
pub struct ParsedHead {
    /// Prelude + header bytes as stored (what the header tag and hash cover).
    pub encoded_header: Vec<u8>,
    /// The parsed header (authenticated only once a [`ChunkCodec`] was built from it).
    pub header: SealedHeader,
    /// The header tag.
    pub header_tag: [u8; TAG_LEN],
    /// The two key slots.
    pub slots: [Option<KeySlot>; KEY_SLOTS],
    /// One tag per chunk.
    pub tags: Vec<[u8; TAG_LEN]>,
    /// The layout.
    pub layout: Layout,
}

impl ParsedHead {
    /// `head` must hold the first `min(file_len, data_offset)` bytes of the file; call
    /// [`ParsedHead::needed`] first to learn how many.
    pub fn parse(head: &[u8], file_len: u64) -> Result<Self, FormatError> {
        let hl = SealedHeader::parse_prelude(head)? as u64;
        let enc_end = PRELUDE_LEN as u64 + hl;
        if enc_end > head.len() as u64 {
            return Err(FormatError::Truncated {
                expected: enc_end,
                actual: file_len,
            });
        }
        let encoded_header = head[..enc_end as usize].to_vec();
        let header = SealedHeader::parse(&encoded_header)?;
        let layout = header.layout(hl);
        let expected = layout.file_len();
        if file_len < expected || (head.len() as u64) < layout.data_offset {
            return Err(FormatError::Truncated {
                expected,
                actual: file_len,
            });
        }
        if file_len > expected {
            return Err(FormatError::Extended {
                expected,
                actual: file_len,
            });
        }
        let o = layout.header_tag_offset as usize;
        let header_tag: [u8; TAG_LEN] = head[o..o + TAG_LEN].try_into().expect("16");
        let so = layout.key_slots_offset as usize;
        let slots = [
            KeySlot::parse(0, &head[so..so + KEY_SLOT_LEN])?,
            KeySlot::parse(1, &head[so + KEY_SLOT_LEN..so + 2 * KEY_SLOT_LEN])?,
        ];
        let to = layout.tag_table_offset as usize;
        let te = layout.tag_table_end() as usize;
        let tags = head[to..te]
            .chunks_exact(TAG_LEN)
            .map(|c| c.try_into().expect("16"))
            .collect();
        if head[te..layout.data_offset as usize]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(FormatError::BadPadding);
        }
        Ok(Self {
            encoded_header,
            header,
            header_tag,
            slots,
            tags,
            layout,
        })
    }

    /// How many leading bytes [`ParsedHead::parse`] needs, from the prelude and header alone.
    /// `prefix` must hold at least the prelude and header.
    pub fn needed(prefix: &[u8]) -> Result<u64, FormatError> {
        let hl = SealedHeader::parse_prelude(prefix)? as usize;
        let end = PRELUDE_LEN + hl;
        if prefix.len() < end {
            return Ok(end as u64);
        }
        let header = SealedHeader::parse(&prefix[..end])?;
        Ok(header.layout(hl as u64).data_offset)
    }
}

/// Seals `plaintext` into a complete sealed file in memory (small files, tests, vectors).
/// `header.key_check` and `header.plaintext_len` are filled in here; `slot` gets its MAC.
pub fn seal_to_vec<A: ChunkAead>(
    aead: A,
    mut header: SealedHeader,
    dek: &DataKey,
    slot: KeySlot,
    plaintext: &[u8],
) -> Result<Vec<u8>, FormatError> {
    header.key_check = FileKeys::new(dek, &header.file_id).key_check();
    header.plaintext_len = plaintext.len() as u64;
    let encoded = header.encode()?;
    let (codec, header_tag) = ChunkCodec::for_sealing(aead, dek, &header, &encoded);
    let layout = *codec.layout();
    let mut data = plaintext.to_vec();
    let mut tags = Vec::with_capacity(layout.chunk_count as usize);
    for i in 0..layout.chunk_count {
        let (s, e) = layout.chunk_range(i);
        tags.push(codec.seal_chunk(i, &mut data[s as usize..e as usize]));
    }
    let slots = [Some(codec.seal_key_slot(slot)?), None];
    let mut out = encode_head(&encoded, &header_tag, &slots, &tags, &layout)?;
    out.extend_from_slice(&data);
    Ok(out)
}

/// Opens a complete sealed file held in memory. `unwrap` turns the active key slot into the
/// data key (the HSM's job at the edge). Returns the authenticated header and the plaintext.
pub fn open_from_slice<A: ChunkAead>(
    aead: A,
    sealed: &[u8],
    unwrap: impl FnOnce(&KeySlot) -> Option<DataKey>,
) -> Result<(SealedHeader, Vec<u8>), FormatError> {
    let head = ParsedHead::parse(sealed, sealed.len() as u64)?;
    let slot = KeySlot::active(&head.slots)?;
    let dek = unwrap(slot).ok_or(FormatError::Unwrap)?;
    let codec = ChunkCodec::new(
        aead,
        &dek,
        &head.header,
        &head.encoded_header,
        &head.header_tag,
        slot,
    )?;
    let l = head.layout;
    let mut data = sealed[l.data_offset as usize..].to_vec();
    for i in 0..l.chunk_count {
        let (s, e) = l.chunk_range(i);
        if let Err(err) =
            codec.open_chunk(i, &mut data[s as usize..e as usize], &head.tags[i as usize])
        {
            zeroize::Zeroize::zeroize(&mut data);
            return Err(err);
        }
    }
    Ok((head.header, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u64, cs: u32) -> SealedHeader {
        SealedHeader {
            file_id: [5; 16],
            kind: FileKind::File,
            model: "m".into(),
            revision: "r".into(),
            path: "p".into(),
            shard_index: 0,
            shard_count: 0,
            chunk_size: cs,
            plaintext_len: len,
            key_check: [0; 32],
            meta: vec![],
        }
    }

    #[test]
    fn chunk_counts_past_two_to_the_sixteen() {
        // 2^40 bytes (1 TiB) at 1 MiB chunks: 2^20 chunks; at 16-byte chunks: 2^36.
        let l = Layout::new(100, DEFAULT_CHUNK_SIZE, 1 << 40).unwrap();
        assert_eq!(l.chunk_count, 1 << 20);
        assert_eq!(l.data_offset % DATA_ALIGN, 0);
        assert_eq!(l.tag_table_end(), l.tag_table_offset + (1 << 24));
        assert_eq!(
            l.chunk_range(l.chunk_count - 1),
            ((1 << 40) - (1 << 20), 1 << 40)
        );
        assert!(l.is_last((1 << 20) - 1) && !l.is_last(1 << 16));
        let l = Layout::new(100, 16, (1 << 40) + 1).unwrap();
        assert_eq!(l.chunk_count, (1 << 36) + 1);
        assert_eq!(
            l.chunks_covering(1 << 20, (1 << 20) + 17),
            (1 << 16)..((1 << 16) + 2)
        );
        assert_eq!(l.file_len(), l.data_offset + (1 << 40) + 1);
        assert_eq!(chunk_nonce(70_000, true)[..8], 70_000u64.to_be_bytes());
        assert!(Layout::new(0, 16, u64::MAX - 10).is_none());
        assert_eq!(chunk_count(0, 16), 1);
        assert_eq!(chunk_count(16, 16), 1);
        assert_eq!(chunk_count(17, 16), 2);
    }

    #[test]
    fn header_round_trips_and_rejects_trailing_bytes() {
        let h = header(12345, 4096);
        let enc = h.encode().unwrap();
        assert_eq!(SealedHeader::parse(&enc).unwrap(), h);
        let mut longer = enc.clone();
        longer.push(0);
        assert!(SealedHeader::parse(&longer).is_err());
        let mut wrong_count = enc.clone();
        let n = wrong_count.len();
        wrong_count[n - 4 - 32 - 1] ^= 1; // low byte of chunk_count
        assert!(matches!(
            SealedHeader::parse(&wrong_count),
            Err(FormatError::Malformed(_))
        ));
    }

    #[test]
    fn key_slot_round_trip_and_strictness() {
        let mut s = KeySlot::new(1, "weightvault-kek", 1, vec![9; 40]);
        s.mac = [7; 32];
        let b = s.encode().unwrap();
        assert_eq!(KeySlot::parse(0, &b).unwrap(), Some(s));
        assert_eq!(KeySlot::parse(0, &[0; KEY_SLOT_LEN]).unwrap(), None);
        let mut p = b;
        p[KEY_SLOT_BODY_LEN - 1] = 1;
        assert!(KeySlot::parse(0, &p).is_err());
    }

    /// A label and a wrapped key each within its own limit but together longer than the
    /// body: refused by the writer, and a slot claiming them is refused by the reader (both
    /// panicked before; found by the container_key_slots fuzz target).
    #[test]
    fn a_label_and_wrapped_key_that_overrun_the_slot_are_refused() {
        let free = KEY_SLOT_BODY_LEN - SLOT_FIXED;
        let fits = KeySlot::new(1, &"k".repeat(64), 1, vec![9; free - 64]);
        assert!(fits.encode().is_ok());
        let over = KeySlot::new(1, &"k".repeat(64), 1, vec![9; free - 63]);
        assert!(matches!(over.encode(), Err(FormatError::Malformed(_))));
        let mut b = [0u8; KEY_SLOT_LEN];
        b[..4].copy_from_slice(&1u32.to_be_bytes());
        b[8] = 64;
        b[9..73].fill(b'k');
        b[73..75].copy_from_slice(&(SLOT_MAX_WRAPPED as u16).to_be_bytes());
        assert!(matches!(
            KeySlot::parse(0, &b),
            Err(FormatError::BadKeySlot { .. })
        ));
    }
}
