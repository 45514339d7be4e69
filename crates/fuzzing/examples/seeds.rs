//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`: the
//! container vectors (`tests/vectors/*.sealed`) and the compat vault's sealed files, ledger
//! and checkpoints (`tests/fixtures/compat-v1`) cut into the piece each target reads, the
//! repository's `policies/`, and small inputs made here with the real encoders.
//!
//! `cargo run -p weightvault-fuzzing --example seeds [TARGET...]` (every target, or only those
//! named), then minimise with `cargo fuzz cmin`.

use std::fs;
use std::path::{Path, PathBuf};
use weightvault_core::format::{ParsedHead, SealedHeader, KEY_SLOT_LEN, PRELUDE_LEN};
use weightvault_ledger::checkpoint::{Checkpoint, LedgerSigner};
use weightvault_ledger::merkle;
use weightvault_ledger::record::{OpenOutcome, Record};
use weightvault_ledger::tiles;
use weightvault_ledger::words::{KeyEvent, Kind, Outcome};

struct Seeds {
    root: PathBuf,
    n: usize,
    only: Vec<String>,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, mode: Option<u8>, bytes: &[u8]) {
        if !self.only.is_empty() && !self.only.iter().any(|t| t == target) {
            return;
        }
        let dir = self.root.join("fuzz/corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        let mut b = mode.map(|m| vec![m]).unwrap_or_default();
        b.extend_from_slice(bytes);
        fs::write(dir.join(format!("seed-{name}")), b).unwrap();
        self.n += 1;
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut s = Seeds {
        root: root.clone(),
        n: 0,
        only: std::env::args().skip(1).collect(),
    };
    let mut sealed: Vec<(String, Vec<u8>)> = Vec::new();
    for e in fs::read_dir(root.join("tests/vectors")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "sealed") {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            sealed.push((name, fs::read(&p).unwrap()));
        }
    }
    let compat = root.join("tests/fixtures/compat-v1/vault/models/acme-frontier/r1");
    for (name, p) in [
        ("compat-manifest", compat.join("manifest.sealed")),
        ("compat-config", compat.join("files/config.json.sealed")),
        (
            "compat-model",
            compat.join("files/model.safetensors.sealed"),
        ),
    ] {
        sealed.push((name.into(), fs::read(p).unwrap()));
    }
    sealed.sort();
    for (name, b) in &sealed {
        let hl = SealedHeader::parse_prelude(b).unwrap() as usize;
        let enc = &b[..PRELUDE_LEN + hl];
        s.put("container_prelude", name, None, &b[..PRELUDE_LEN]);
        s.put("container_header", name, Some(0), enc);
        let head = ParsedHead::parse(
            &b[..(ParsedHead::needed(b).unwrap() as usize)],
            b.len() as u64,
        )
        .unwrap();
        let so = head.layout.key_slots_offset as usize;
        s.put(
            "container_key_slots",
            name,
            Some(0),
            &b[so..so + KEY_SLOT_LEN],
        );
        if b.len() <= 64 * 1024 {
            s.put("container_head", name, Some(0), b);
        } else {
            // Too long for -max_len: the head alone (refused as truncated, past the parse).
            s.put(
                "container_head",
                name,
                Some(0),
                &b[..head.layout.data_offset as usize],
            );
        }
        if head.header.kind == weightvault_core::format::FileKind::Manifest {
            s.put("manifest", name, Some(0), &head.header.meta);
        }
        if head.header.kind == weightvault_core::format::FileKind::Safetensors {
            s.put("safetensors_header", name, Some(0), &head.header.meta);
            s.put(
                "safetensors_header",
                &format!("{name}-json"),
                Some(1),
                &head.header.meta[8..],
            );
        }
    }
    // Structured modes: a fixed pattern the first mutations start from.
    let pattern: Vec<u8> = (0..256u32).map(|i| (i * 37 + 11) as u8).collect();
    for t in [
        "container_header",
        "container_key_slots",
        "container_head",
        "evidence",
        "release_body",
    ] {
        s.put(t, "structured", Some(1), &pattern);
    }
    s.put("safetensors_header", "structured", Some(2), &pattern);
    s.put("ledger_checkpoint", "structured", Some(4), &pattern);
    s.put("ledger_checkpoint", "merkle", Some(3), &pattern);
    s.put("ledger_tiles", "structured", Some(1), &pattern);
    s.put("manifest", "structured", Some(1), &pattern);
    s.put("ledger_frames", "structured", Some(1), &pattern);

    // Policies: each file of the set, under its selector.
    for (i, f) in weightvault_policy::data::FILES.iter().enumerate() {
        let text = fs::read(root.join("policies").join(f)).unwrap();
        s.put("policy_file", f, Some(i as u8), &text);
    }

    // Evidence and a release body, signed by the repository's test attester.
    let seed = fs::read_to_string(root.join("tools/test-attester/seed.hex")).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(
        &hex::decode(seed.trim()).unwrap().try_into().unwrap(),
    );
    let st = weightvault_core::evidence::Statement {
        attester: "weightvault-test-attester".into(),
        host_id: "gpu-node-1".into(),
        country: "US".into(),
        region: "us-east".into(),
        measurement: "sha256:00".into(),
        nonce: "ab".repeat(16),
        issued_at: time::OffsetDateTime::from_unix_timestamp(1_796_126_300).unwrap(),
        expires_at: time::OffsetDateTime::from_unix_timestamp(1_796_126_700).unwrap(),
        host_key: "11".repeat(32),
        facility: None,
    };
    let ev = weightvault_core::evidence::sign(&st, &key);
    s.put(
        "evidence",
        "signed",
        Some(0),
        &serde_json::to_vec(&ev).unwrap(),
    );
    for (name, body) in [
        (
            "all",
            serde_json::json!({"model": "acme-frontier", "evidence": ev}),
        ),
        (
            "shards",
            serde_json::json!({"model": "acme-small", "revision": "r1",
                "shards": ["config.json", "model.safetensors"], "evidence": ev}),
        ),
    ] {
        s.put(
            "release_body",
            name,
            Some(0),
            &serde_json::to_vec(&body).unwrap(),
        );
    }

    // Ledger records: the compat vault's, and one of each constructor.
    let seg = fs::read(
        root.join("tests/fixtures/compat-v1/vault/ledger/segments/seg-00000000000000000000.log"),
    )
    .unwrap();
    s.put("ledger_frames", "compat-segment", Some(0), &seg);
    s.put(
        "ledger_frames",
        "compat-torn",
        Some(0),
        &seg[..seg.len() - 20],
    );
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while let Some(k) = find(&seg[i..], br#"{"kind":"#) {
        let at = i + k;
        let mut it =
            serde_json::Deserializer::from_slice(&seg[at..]).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(_)) => {
                let end = at + it.byte_offset();
                records.push(seg[at..end].to_vec());
                i = end;
            }
            _ => i = at + 1,
        }
    }
    let t = "2026-12-01T12:00:00Z";
    let open = Record::action(
        t,
        "operator-open",
        "alice",
        "m",
        Some("r"),
        vec!["a".into()],
        "started",
    );
    let made = [
        open.clone(),
        Record::open_end(
            0,
            &open,
            t,
            OpenOutcome::Completed,
            Some(9),
            Some("ok".into()),
        ),
        Record::key_event(
            t,
            Kind::KekRotate,
            "operator",
            ("", None),
            &[
                KeyEvent::Kek {
                    label: "weightvault-kek".into(),
                    version: 2,
                },
                KeyEvent::From {
                    version: 1,
                    files: 3,
                },
            ],
            Outcome::Completed,
        ),
        Record::policy_reload(t, &[3, 5], None),
        Record::policy_reload(t, &[], Some("tiers.toml:3: bad".into())),
    ];
    for r in &made {
        records.push(r.canonical());
    }
    for (k, r) in records.iter().enumerate() {
        s.put("ledger_record", &format!("record-{k:02}"), None, r);
    }
    s.put(
        "ledger_record",
        "open-and-end",
        None,
        &[made[0].canonical(), made[1].canonical()].join(&b'\n'),
    );

    // Checkpoints: the compat vault's notes (another key), and one signed by the targets' key.
    let cps =
        fs::read_to_string(root.join("tests/fixtures/compat-v1/vault/ledger/checkpoints.log"))
            .unwrap();
    for (k, line) in cps.lines().take(3).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        s.put(
            "ledger_checkpoint",
            &format!("compat-{k}"),
            Some(0),
            v["note"].as_str().unwrap().as_bytes(),
        );
    }
    let lk = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    let pk = lk.verifying_key().to_bytes();
    let leaves: Vec<[u8; 32]> = records.iter().map(|r| merkle::leaf_hash(r)).collect();
    let cp = Checkpoint {
        origin: "weightvault.example/ledger".into(),
        size: leaves.len() as u64,
        root: merkle::root(&leaves),
        time: 1_796_126_400,
    };
    let note = cp.signed_note(
        "weightvault.example/ledger",
        &pk,
        &lk.sign(cp.body().as_bytes()).unwrap(),
    );
    s.put("ledger_checkpoint", "signed", Some(0), note.as_bytes());
    let proof = weightvault_ledger::InclusionProof {
        index: 2,
        entry: String::from_utf8(records[2].clone()).unwrap(),
        proof: merkle::inclusion_proof(&leaves, 2)
            .unwrap()
            .iter()
            .map(hex::encode)
            .collect(),
        checkpoint: note.clone(),
    };
    s.put(
        "ledger_checkpoint",
        "inclusion",
        Some(1),
        &serde_json::to_vec(&proof).unwrap(),
    );
    let proof = weightvault_ledger::ConsistencyProof {
        old_size: 0,
        proof: vec![],
        checkpoint: note,
    };
    s.put(
        "ledger_checkpoint",
        "consistency",
        Some(2),
        &serde_json::to_vec(&proof).unwrap(),
    );

    // Tiles: a bundle, a tile and paths, each behind its width.
    let bundle = tiles::encode_bundle(&records).unwrap();
    let mut b = (records.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(&bundle);
    s.put("ledger_tiles", "bundle", Some(0), &b);
    let mut b = (leaves.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(&tiles::encode_tile(&leaves));
    s.put("ledger_tiles", "tile", Some(0), &b);
    for (k, p) in [
        "checkpoint",
        "tile/0/x001/234",
        "tile/entries/x001/234.p/17",
        "tile/3/000.p/1",
    ]
    .iter()
    .enumerate()
    {
        let mut b = vec![0, 1];
        b.extend_from_slice(p.as_bytes());
        s.put("ledger_tiles", &format!("path-{k}"), Some(0), &b);
    }
    // A sealed stream to the targets' host key (x25519 secret [5; 32]): a head and two chunks.
    let host = x25519_dalek::StaticSecret::from([5u8; 32]);
    let hp = x25519_dalek::PublicKey::from(&host).to_bytes();
    let secret = weightvault_core::keys::SymmetricKey::from_bytes([9; 32]);
    let file: Vec<u8> = (0..100u8).collect();
    let sealer =
        weightvault_core::stream::Sealer::new(&secret, &hp, [1; 16], 2, 32, 20, 80).unwrap();
    let h = *sealer.header();
    let mut stream = h.encode().to_vec();
    for i in 0..h.chunks() {
        let o = h.plain_offset(i) as usize;
        let mut b = file[o..o + h.plain_len(i) as usize].to_vec();
        let t = sealer.seal_chunk(i, &mut b);
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&t);
    }
    s.put("sealed_stream", "three-chunks", Some(0), &stream);
    s.put("sealed_stream", "structured", Some(1), &pattern);
    eprintln!("{} seeds written under fuzz/corpus/", s.n);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
