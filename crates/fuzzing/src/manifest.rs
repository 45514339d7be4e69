//! A revision's manifest as `list` and `open` read it from a vault directory or a bucket:
//! `Manifest::parse` of its JSON.

use crate::mode;
use crate::mutate::{cut, mutate};
use arbitrary::{Arbitrary, Unstructured};
use std::collections::BTreeSet;
use weightvault_core::facts::TrainingFacts;
use weightvault_core::format::{FileKind, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use weightvault_core::manifest::{Manifest, ManifestEntry, MANIFEST_FORMAT};

/// What a manifest that parsed must be, checked here without the parser's code: paths that
/// stay inside the revision and are listed once, shards numbered `0..count` once each, no
/// length sum past `u64::MAX`; and it reads back from its own JSON.
fn check_parsed(m: &Manifest) {
    assert_eq!(m.format, MANIFEST_FORMAT);
    let mut paths = BTreeSet::new();
    let mut shards = BTreeSet::new();
    for e in &m.files {
        assert!(
            !e.path.is_empty() && !e.path.starts_with('/'),
            "{:?}",
            e.path
        );
        assert!(
            e.path
                .split(['/', '\\'])
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "a path that leaves the revision: {:?}",
            e.path
        );
        assert!(paths.insert(&e.path), "{:?} twice", e.path);
        match e.kind {
            FileKind::Safetensors => {
                assert!(e.shard_index < e.shard_count);
                assert!(shards.insert(e.shard_index));
            }
            FileKind::File => assert_eq!((e.shard_index, e.shard_count, e.tensors), (0, 0, 0)),
            FileKind::Manifest => panic!("a manifest lists a manifest"),
        }
    }
    if let Some(e) = m.files.iter().find(|e| e.kind == FileKind::Safetensors) {
        assert_eq!(shards.len() as u64, u64::from(e.shard_count));
    }
    assert!(m
        .files
        .iter()
        .try_fold(0u64, |s, e| s.checked_add(e.sealed_len))
        .is_some());
    assert!(m
        .files
        .iter()
        .try_fold(0u64, |s, e| s.checked_add(e.original_len))
        .is_some());
    let json = serde_json::to_vec(m).expect("a manifest serialises");
    let again = Manifest::parse(&json).expect("a parsed manifest reads back from its JSON");
    // Floats may read back one unit in the last place off (serde_json's default parser).
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= a.abs() * 1e-15,
        (a, b) => a == b,
    };
    assert!(close(m.training.training_ops, again.training.training_ops));
    let strip = |m: &Manifest| Manifest {
        training: TrainingFacts {
            training_ops: None,
            ..m.training.clone()
        },
        ..m.clone()
    };
    assert_eq!(strip(&again), strip(m), "a manifest reads back as written");
}

/// One file of a structured manifest.
#[derive(Debug, Arbitrary)]
struct ArbFile {
    dirs: Vec<u8>,
    name: String,
    shard: bool,
    original_len: u64,
    sealed_len: u64,
    tensors: u16,
    header_hash: [u8; 32],
}

/// A manifest as a seal writes one, from arbitrary values.
#[derive(Debug, Arbitrary)]
struct ArbManifest {
    model: u16,
    revision: u16,
    sealed_at: String,
    chunk_size: u32,
    eccn: Option<String>,
    training_ops: Option<u32>,
    open_weights: bool,
    files: Vec<ArbFile>,
}

impl ArbManifest {
    fn manifest(self) -> Manifest {
        let mut files: Vec<ManifestEntry> = Vec::new();
        let mut seen = BTreeSet::new();
        for f in self.files.into_iter().take(32) {
            let name: String = f
                .name
                .chars()
                .filter(|c| !matches!(c, '/' | '\\' | '\0'))
                .collect();
            let name = cut(name, 64);
            let name = if name.is_empty() || name == "." || name == ".." {
                format!("f{}", files.len())
            } else {
                name
            };
            let dirs: Vec<String> = f
                .dirs
                .iter()
                .take(3)
                .map(|d| format!("d{}", d % 4))
                .collect();
            let mut path = dirs.join("/");
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&name);
            if !seen.insert(path.clone()) {
                continue;
            }
            files.push(ManifestEntry {
                path,
                kind: if f.shard {
                    FileKind::Safetensors
                } else {
                    FileKind::File
                },
                shard_index: 0,
                shard_count: 0,
                // Below 2^58 each: 32 of them add up below 2^63.
                original_len: f.original_len >> 6,
                sealed_len: f.sealed_len >> 6,
                tensors: if f.shard { usize::from(f.tensors) } else { 0 },
                header_hash: hex::encode(f.header_hash),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let count = files
            .iter()
            .filter(|e| e.kind == FileKind::Safetensors)
            .count() as u32;
        for (i, e) in files
            .iter_mut()
            .filter(|e| e.kind == FileKind::Safetensors)
            .enumerate()
        {
            e.shard_index = i as u32;
            e.shard_count = count;
        }
        let span = MAX_CHUNK_SIZE - MIN_CHUNK_SIZE + 1;
        Manifest {
            format: MANIFEST_FORMAT.into(),
            model: format!("model-{}", self.model),
            revision: format!("r{}", self.revision),
            sealed_at: self.sealed_at,
            chunk_size: MIN_CHUNK_SIZE + self.chunk_size % span,
            training: TrainingFacts {
                eccn: self.eccn,
                training_ops: self.training_ops.map(f64::from),
                open_weights: self.open_weights,
            },
            files,
        }
    }
}

/// Mode byte 0: the raw bytes as a manifest's JSON. 1 and up: a manifest as a seal writes
/// one, from arbitrary values, which must parse back as written; then its JSON mutated
/// (flips, cuts, inserts, boundary words). Whatever parses must satisfy [`check_parsed`]:
/// paths inside the revision, listed once, shards numbered `0..count`, lengths that add up.
pub fn manifest(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m == 0 {
        if let Ok(m) = Manifest::parse(rest) {
            check_parsed(&m);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbManifest::arbitrary(&mut u) else {
        return;
    };
    let want = a.manifest();
    let mut json = serde_json::to_vec(&want).expect("a manifest serialises");
    let got = Manifest::parse(&json).expect("a manifest as a seal writes it parses");
    assert_eq!(got, want, "a manifest reads back as written");
    check_parsed(&got);
    mutate(&mut u, &mut json);
    if let Ok(m) = Manifest::parse(&json) {
        check_parsed(&m);
    }
}
