//! The container format, without the HSM: fixed vectors that both AES-GCM implementations
//! must reproduce and open, and property tests of round trip and tamper detection.
//!
//! Vectors live in `tests/vectors/*.txt` (and `*.sealed` for the small ones). Regenerate them
//! only on a deliberate format change: `WEIGHTVAULT_BLESS=1 cargo test --test format`.

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weightvault::format::aead::{AwsLc, ChunkAead, RustCrypto};
use weightvault::format::{
    open_from_slice, seal_to_vec, FileKind, FormatError, KeySlot, ParsedHead, SealedHeader,
};
use weightvault::keys::DataKey;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

struct Vector {
    fields: BTreeMap<String, String>,
}

impl Vector {
    fn get(&self, k: &str) -> &str {
        self.fields
            .get(k)
            .unwrap_or_else(|| panic!("vector lacks '{k}'"))
    }
    fn hex(&self, k: &str) -> Vec<u8> {
        hex::decode(self.get(k)).unwrap()
    }
    fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').expect("key: value");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Self { fields }
    }
    fn header(&self) -> SealedHeader {
        let kind = match self.get("kind") {
            "safetensors" => FileKind::Safetensors,
            "file" => FileKind::File,
            "manifest" => FileKind::Manifest,
            k => panic!("kind {k}"),
        };
        SealedHeader {
            file_id: self.hex("file_id").try_into().unwrap(),
            kind,
            model: self.get("model").into(),
            revision: self.get("revision").into(),
            path: self.get("path").into(),
            shard_index: self.get("shard_index").parse().unwrap(),
            shard_count: self.get("shard_count").parse().unwrap(),
            chunk_size: self.get("chunk_size").parse().unwrap(),
            plaintext_len: 0,
            key_check: [0; 32],
            meta: self.hex("meta"),
        }
    }
    fn dek(&self) -> DataKey {
        DataKey::from_slice(&self.hex("dek")).unwrap()
    }
    fn slot(&self) -> KeySlot {
        KeySlot::new(
            1,
            self.get("kek_label"),
            self.get("kek_version").parse().unwrap(),
            self.hex("wrapped"),
        )
    }
    fn plaintext(&self) -> Vec<u8> {
        pattern(self.get("plaintext_len").parse().unwrap())
    }
}

/// The definitions of the vectors: everything but the expected outputs.
fn definitions() -> Vec<(&'static str, usize, u32, &'static str, Vec<u8>)> {
    let st_meta = {
        let json = br#"{"w":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]}}"#;
        let mut m = (json.len() as u64).to_le_bytes().to_vec();
        m.extend_from_slice(json);
        m
    };
    let mib = 1 << 20;
    vec![
        ("empty", 0, mib, "file", vec![]),
        ("one-byte", 1, mib, "file", vec![]),
        ("one-chunk", mib as usize, mib, "file", vec![]),
        ("one-chunk-plus-one", mib as usize + 1, mib, "file", vec![]),
        ("small-chunks-safetensors", 1000, 64, "safetensors", st_meta),
        (
            "manifest",
            0,
            mib,
            "manifest",
            br#"{"format":"weightvault-manifest/1"}"#.to_vec(),
        ),
    ]
}

fn bless() {
    for (i, (name, len, cs, kind, meta)) in definitions().into_iter().enumerate() {
        let mut fields = BTreeMap::new();
        let seed = |tag: u8, n: usize| -> String {
            hex::encode(
                &Sha256::digest(
                    [b"weightvault vector ".as_slice(), name.as_bytes(), &[tag]].concat(),
                )[..n],
            )
        };
        fields.insert("dek", seed(1, 32));
        fields.insert("file_id", seed(2, 16));
        fields.insert("wrapped", seed(3, 32) + &seed(4, 8));
        fields.insert("kek_label", "vector-kek".into());
        fields.insert("kek_version", "1".into());
        fields.insert("model", "vector-model".into());
        fields.insert("revision", "r1".into());
        fields.insert("path", format!("file-{i}"));
        fields.insert("kind", kind.into());
        fields.insert("shard_index", "0".into());
        fields.insert(
            "shard_count",
            if kind == "safetensors" { "1" } else { "0" }.into(),
        );
        fields.insert("chunk_size", cs.to_string());
        fields.insert("plaintext_len", len.to_string());
        fields.insert("meta", hex::encode(&meta));
        let text: String = fields.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let v = Vector::parse(&text);
        let sealed = seal_to_vec(AwsLc, v.header(), &v.dek(), v.slot(), &v.plaintext()).unwrap();
        let head = ParsedHead::parse(&sealed, sealed.len() as u64).unwrap();
        let mut out = format!(
            "# weightvault container test vector: {name}\n# plaintext byte i = (i * 31 + 7) mod 251\n{text}"
        );
        out += &format!(
            "header_hash: {}\n",
            hex::encode(weightvault::format::header_hash(&head.encoded_header))
        );
        out += &format!("tags: {}\n", hex::encode(head.tags.concat()));
        out += &format!("sealed_len: {}\n", sealed.len());
        out += &format!("sealed_sha256: {}\n", hex::encode(Sha256::digest(&sealed)));
        std::fs::write(vectors_dir().join(format!("{name}.txt")), out).unwrap();
        if sealed.len() <= 16 * 1024 {
            std::fs::write(vectors_dir().join(format!("{name}.sealed")), &sealed).unwrap();
        }
    }
}

#[test]
fn vectors_reproduce_and_open_with_both_implementations() {
    if std::env::var_os("WEIGHTVAULT_BLESS").is_some() {
        bless();
    }
    let mut seen = 0;
    for (name, ..) in definitions() {
        let path = vectors_dir().join(format!("{name}.txt"));
        let v = Vector::parse(&std::fs::read_to_string(&path).unwrap());
        let pt = v.plaintext();
        let impls: [&dyn Fn() -> Vec<u8>; 2] = [
            &|| seal_to_vec(AwsLc, v.header(), &v.dek(), v.slot(), &pt).unwrap(),
            &|| seal_to_vec(RustCrypto, v.header(), &v.dek(), v.slot(), &pt).unwrap(),
        ];
        let a = impls[0]();
        let b = impls[1]();
        assert_eq!(a, b, "{name}: aws-lc-rs and RustCrypto seal differently");
        assert_eq!(
            a.len(),
            v.get("sealed_len").parse::<usize>().unwrap(),
            "{name}"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&a)),
            v.get("sealed_sha256"),
            "{name}"
        );
        let head = ParsedHead::parse(&a, a.len() as u64).unwrap();
        assert_eq!(hex::encode(head.tags.concat()), v.get("tags"), "{name}");
        assert_eq!(
            hex::encode(weightvault::format::header_hash(&head.encoded_header)),
            v.get("header_hash"),
            "{name}"
        );
        let sealed_file = vectors_dir().join(format!("{name}.sealed"));
        if sealed_file.exists() {
            assert_eq!(
                std::fs::read(&sealed_file).unwrap(),
                a,
                "{name}: .sealed differs"
            );
        }
        for imp in [&AwsLc as &dyn ChunkAead, &RustCrypto] {
            let (h, out) = open_dyn(imp, &a, &v.dek()).unwrap();
            assert_eq!(out, pt, "{name}: {} opened wrong plaintext", imp.name());
            assert_eq!(h.model, "vector-model");
            // The wrong data key is told apart from a damaged header.
            let wrong = DataKey::from_bytes([0x55; 32]);
            assert_eq!(
                open_dyn(imp, &a, &wrong).unwrap_err(),
                FormatError::KeyMismatch
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 6);
}

struct Dyn<'a>(&'a dyn ChunkAead);
impl ChunkAead for Dyn<'_> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn seal_in_place(&self, k: &DataKey, n: &[u8; 12], a: &[u8], b: &mut [u8]) -> [u8; 16] {
        self.0.seal_in_place(k, n, a, b)
    }
    fn open_in_place(
        &self,
        k: &DataKey,
        n: &[u8; 12],
        a: &[u8],
        b: &mut [u8],
        t: &[u8; 16],
    ) -> Result<(), weightvault::format::aead::AuthFailed> {
        self.0.open_in_place(k, n, a, b, t)
    }
}

fn open_dyn(
    imp: &dyn ChunkAead,
    sealed: &[u8],
    dek: &DataKey,
) -> Result<(SealedHeader, Vec<u8>), FormatError> {
    open_from_slice(Dyn(imp), sealed, |_| Some(dek.clone()))
}

fn test_header(cs: u32, file_id: [u8; 16]) -> SealedHeader {
    SealedHeader {
        file_id,
        kind: FileKind::File,
        model: "prop".into(),
        revision: "r".into(),
        path: "x.bin".into(),
        shard_index: 0,
        shard_count: 0,
        chunk_size: cs,
        plaintext_len: 0,
        key_check: [0; 32],
        meta: b"meta".to_vec(),
    }
}

/// Models an integrity-checked unwrap (as RFC 5649 is): the data key comes back only for the
/// exact wrapped bytes and KEK that were written.
fn unwrap_exact<'a>(
    slot: &'a KeySlot,
    dek: &'a DataKey,
) -> impl FnOnce(&KeySlot) -> Option<DataKey> + 'a {
    move |s| {
        (s.wrapped == slot.wrapped
            && s.kek_label == slot.kek_label
            && s.kek_version == slot.kek_version)
            .then(|| dek.clone())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 64 } else { 256 }))]

    #[test]
    fn open_of_seal_is_identity(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        cs in 16u32..4096,
        key in any::<[u8; 32]>(),
        id in any::<[u8; 16]>(),
    ) {
        let dek = DataKey::from_bytes(key);
        let slot = KeySlot::new(1, "k", 1, vec![1; 40]);
        let sealed = seal_to_vec(AwsLc, test_header(cs, id), &dek, slot.clone(), &data).unwrap();
        let (_, a) = open_from_slice(AwsLc, &sealed, unwrap_exact(&slot, &dek)).unwrap();
        let (_, b) = open_from_slice(RustCrypto, &sealed, unwrap_exact(&slot, &dek)).unwrap();
        prop_assert_eq!(&a, &data);
        prop_assert_eq!(&b, &data);
    }

    #[test]
    fn any_single_byte_change_fails(
        data in proptest::collection::vec(any::<u8>(), 0..6_000),
        cs in 16u32..2048,
        key in any::<[u8; 32]>(),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let dek = DataKey::from_bytes(key);
        let slot = KeySlot::new(1, "k", 1, vec![1; 40]);
        let mut sealed = seal_to_vec(AwsLc, test_header(cs, [3; 16]), &dek, slot.clone(), &data).unwrap();
        let i = pos.index(sealed.len());
        sealed[i] ^= xor;
        let r = open_from_slice(AwsLc, &sealed, unwrap_exact(&slot, &dek));
        prop_assert!(r.is_err(), "byte {} of {} changed and the file still opened", i, sealed.len());
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_000), len in any::<u64>()) {
        let _ = SealedHeader::parse(&bytes);
        let _ = ParsedHead::parse(&bytes, len);
        let _ = ParsedHead::needed(&bytes);
        let _ = KeySlot::parse(0, &bytes);
        let _ = weightvault::store::checkpoint::parse_safetensors_meta(&bytes);
    }
}

#[test]
fn truncation_extension_and_chunk_swaps_are_named() {
    let dek = DataKey::from_bytes([9; 32]);
    let slot = KeySlot::new(1, "k", 1, vec![1; 40]);
    let data = pattern(64 * 5 + 10);
    let sealed = seal_to_vec(AwsLc, test_header(64, [1; 16]), &dek, slot.clone(), &data).unwrap();
    let open = |b: &[u8]| open_from_slice(AwsLc, b, unwrap_exact(&slot, &dek)).map(|_| ());
    let n = sealed.len();
    // Truncation at a chunk boundary and inside a chunk.
    assert!(matches!(
        open(&sealed[..n - 10]),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        open(&sealed[..n - 30]),
        Err(FormatError::Truncated { .. })
    ));
    let mut ext = sealed.clone();
    ext.push(0);
    assert!(matches!(open(&ext), Err(FormatError::Extended { .. })));
    // Swap chunks 1 and 2 together with their tags: keys are per index, so both fail.
    let head = ParsedHead::parse(&sealed, n as u64).unwrap();
    let d = head.layout.data_offset as usize;
    let t = head.layout.tag_table_offset as usize;
    let mut sw = sealed.clone();
    let (c1, c2) = (d + 64, d + 128);
    let tmp: Vec<u8> = sw[c1..c1 + 64].to_vec();
    sw.copy_within(c2..c2 + 64, c1);
    sw[c2..c2 + 64].copy_from_slice(&tmp);
    let tmp: Vec<u8> = sw[t + 16..t + 32].to_vec();
    sw.copy_within(t + 32..t + 48, t + 16);
    sw[t + 32..t + 48].copy_from_slice(&tmp);
    assert_eq!(
        open(&sw),
        Err(FormatError::ChunkAuth { index: 1, count: 6 })
    );
}
