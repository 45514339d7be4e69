//! The sealed container as a bucket hands it over: prelude, header, key slots and the whole
//! head (tag table, padding), then a file opened end to end.

use crate::mode;
use crate::mutate::{cut, mutate};
use arbitrary::{Arbitrary, Unstructured};
use weightvault_core::format::aead::AwsLc;
use weightvault_core::format::{
    self, FileKind, KeySlot, ParsedHead, SealedHeader, KEY_SLOT_BODY_LEN, KEY_SLOT_LEN,
    MAX_CHUNK_SIZE, MAX_HEADER_LEN, MAX_NAME_LEN, MAX_PATH_LEN, MIN_CHUNK_SIZE, PRELUDE_LEN,
};
use weightvault_core::keys::DataKey;

/// A header's fields, brought into the ranges a writer may use.
#[derive(Debug, Arbitrary)]
struct ArbHeader {
    file_id: [u8; 16],
    kind: u8,
    model: String,
    revision: String,
    path: String,
    shard_index: u32,
    shard_count: u32,
    chunk_size: u32,
    plaintext_len: u64,
    key_check: [u8; 32],
    meta: Vec<u8>,
}

impl ArbHeader {
    fn header(self, chunk_sizes: std::ops::RangeInclusive<u32>) -> SealedHeader {
        let nonempty = |s: String, max: usize| {
            let s = cut(s, max);
            if s.is_empty() {
                "x".to_string()
            } else {
                s
            }
        };
        let span = chunk_sizes.end() - chunk_sizes.start() + 1;
        SealedHeader {
            file_id: self.file_id,
            kind: match self.kind % 3 {
                0 => FileKind::Safetensors,
                1 => FileKind::File,
                _ => FileKind::Manifest,
            },
            model: nonempty(self.model, MAX_NAME_LEN),
            revision: nonempty(self.revision, MAX_NAME_LEN),
            path: nonempty(self.path, MAX_PATH_LEN),
            shard_index: self.shard_index,
            shard_count: self.shard_count,
            chunk_size: chunk_sizes.start() + self.chunk_size % span,
            plaintext_len: self.plaintext_len,
            key_check: self.key_check,
            meta: self.meta,
        }
    }
}

/// `SealedHeader::parse_prelude` (core format/mod.rs) on raw bytes.
pub fn container_prelude(data: &[u8]) {
    if let Ok(len) = SealedHeader::parse_prelude(data) {
        assert!(len <= MAX_HEADER_LEN);
        assert_eq!(&data[..8], format::MAGIC);
    }
}

/// `SealedHeader::parse` on raw bytes (mode byte even), or on a header encoded by
/// `SealedHeader::encode` from arbitrary fields (odd), which must read back as written, and
/// then on mutations of it. Whatever parses re-encodes to the same bytes (the parser is strict).
pub fn container_header(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        header_bytes(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbHeader::arbitrary(&mut u) else {
        return;
    };
    let h = a.header(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE);
    let Ok(enc) = h.encode() else { return };
    let back = SealedHeader::parse(&enc).expect("an encoded header parses");
    assert_eq!(back, h, "a header reads back as it was written");
    let mut b = enc;
    mutate(&mut u, &mut b);
    header_bytes(&b);
}

fn header_bytes(b: &[u8]) {
    if let Ok(h) = SealedHeader::parse(b) {
        assert_eq!(
            h.encode().expect("a parsed header encodes"),
            b,
            "a parsed header re-encodes to its bytes"
        );
        let l = h.layout((b.len() - PRELUDE_LEN) as u64);
        assert!(l.data_offset >= l.tag_table_end());
    }
}

/// A key slot's fields, brought into the ranges a writer may use.
#[derive(Debug, Arbitrary)]
struct ArbSlot {
    generation: u32,
    kek_label: String,
    kek_version: u32,
    wrapped: Vec<u8>,
    mac: [u8; 32],
}

/// `KeySlot::parse` on raw bytes (mode byte even: as given, and cut or zero-padded to a slot's
/// length), or on a slot encoded by `KeySlot::encode` from arbitrary fields (odd), which must
/// read back as written, and then on mutations of it.
pub fn container_key_slots(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        let _ = KeySlot::parse(0, rest);
        let mut b = rest.to_vec();
        b.resize(KEY_SLOT_LEN, 0);
        slot_bytes(&b);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbSlot::arbitrary(&mut u) else {
        return;
    };
    let mut s = KeySlot::new(
        a.generation.max(1),
        &cut(a.kek_label, 64),
        a.kek_version,
        a.wrapped,
    );
    if s.kek_label.is_empty() {
        s.kek_label = "k".into();
    }
    s.wrapped.truncate(160);
    if s.wrapped.is_empty() {
        s.wrapped.push(0);
    }
    s.mac = a.mac;
    // A label and a wrapped key that together overrun the body are refused (they panicked
    // before: fuzz/regressions/container_key_slots/slot-body-overflow).
    let fits = 4 + 4 + 1 + s.kek_label.len() + 2 + s.wrapped.len() <= KEY_SLOT_BODY_LEN;
    let enc = match s.encode() {
        Ok(enc) => enc,
        Err(_) => {
            assert!(!fits, "a slot that fits encodes");
            return;
        }
    };
    assert!(fits, "a slot that overruns its body is refused");
    assert_eq!(
        KeySlot::parse(1, &enc).expect("an encoded slot parses"),
        Some(s),
        "a slot reads back as it was written"
    );
    let mut b = enc.to_vec();
    mutate(&mut u, &mut b);
    let _ = KeySlot::parse(1, &b);
    b.resize(KEY_SLOT_LEN, 0);
    slot_bytes(&b);
}

fn slot_bytes(b: &[u8]) {
    match KeySlot::parse(0, b) {
        Ok(Some(s)) => {
            let enc = s.encode().expect("a parsed slot encodes");
            assert_eq!(&enc[..], b, "a parsed slot re-encodes to its bytes");
            assert_eq!(enc.len(), KEY_SLOT_BODY_LEN + 32);
        }
        Ok(None) => assert!(b.iter().all(|&x| x == 0)),
        Err(_) => {}
    }
}

/// A small file to seal: a header with a chunk size of 16 to 256 bytes, a plaintext of up to
/// a few kilobytes, the data key and the slot.
#[derive(Debug, Arbitrary)]
struct ArbFile {
    header: ArbHeader,
    plaintext: Vec<u8>,
    dek: [u8; 32],
    slot_generation: u32,
    kek_version: u32,
    wrapped_len: u8,
}

/// The head of a sealed file. Mode byte even: the bytes as a whole object, read as
/// `SealedFile::from_object` (src/store/sealed.rs) reads one: a 64 KiB prefix, then as many
/// bytes as `ParsedHead::needed` asks for (never more than the object holds), then
/// `ParsedHead::parse` against the object's length. Odd: a file sealed by `seal_to_vec` from
/// arbitrary values, which `open_from_slice` must open to its plaintext, then mutated: if a
/// mutation still opens, it must give the same header and plaintext (all of it is
/// authenticated).
pub fn container_head(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        head_bytes(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbFile::arbitrary(&mut u) else {
        return;
    };
    let mut header = a.header.header(MIN_CHUNK_SIZE..=256);
    header.meta.truncate(512);
    let mut plaintext = a.plaintext;
    plaintext.truncate(4096);
    let dek = DataKey::from_bytes(a.dek);
    let slot = KeySlot::new(
        a.slot_generation.max(1),
        "weightvault-kek",
        a.kek_version,
        vec![0xa5; usize::from(a.wrapped_len % 160) + 1],
    );
    let Ok(sealed) = format::seal_to_vec(AwsLc, header, &dek, slot, &plaintext) else {
        return;
    };
    let unwrap = |_: &KeySlot| Some(DataKey::from_bytes(a.dek));
    let (h, p) = format::open_from_slice(AwsLc, &sealed, unwrap).expect("a sealed file opens");
    assert_eq!(p, plaintext, "a sealed file opens to its plaintext");
    let mut b = sealed;
    mutate(&mut u, &mut b);
    head_bytes(&b);
    if let Ok((h2, p2)) = format::open_from_slice(AwsLc, &b, unwrap) {
        assert_eq!(h2, h, "an altered file opened with another header");
        assert_eq!(p2, p, "an altered file opened to other plaintext");
    }
}

fn head_bytes(object: &[u8]) {
    let file_len = object.len() as u64;
    let read = |n: u64| &object[..n.min(file_len) as usize];
    let mut prefix = read(64 * 1024);
    if prefix.len() < PRELUDE_LEN {
        return;
    }
    loop {
        let Ok(need) = ParsedHead::needed(prefix) else {
            return;
        };
        if need <= prefix.len() as u64 || prefix.len() as u64 == file_len {
            break;
        }
        prefix = read(need);
    }
    if let Ok(head) = ParsedHead::parse(prefix, file_len) {
        assert_eq!(head.layout.file_len(), file_len);
        assert_eq!(head.tags.len() as u64, head.layout.chunk_count);
    }
}
