//! Tampering with sealed revisions: every change is refused by `verify` and `open` with a
//! specific error, and `open` leaves nothing behind.

mod common;

use common::*;
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weightvault::format::{KEY_SLOT_LEN, PRELUDE_LEN};
use weightvault::store::sealed::SealedFile;
use weightvault::store::Vault;

const CS: u32 = 4096;
const S1: &str = "files/model-00001-of-00002.safetensors.sealed";
const S2: &str = "files/model-00002-of-00002.safetensors.sealed";

fn make_checkpoint(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    write_safetensors(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            (
                "a.weight",
                Dtype::BF16,
                vec![64, 64],
                bytes(seed, 64 * 64 * 2),
            ),
            ("a.bias", Dtype::F32, vec![64], bytes(seed + 1, 256)),
        ],
    );
    write_safetensors(
        &dir.join("model-00002-of-00002.safetensors"),
        &[(
            "b.weight",
            Dtype::BF16,
            vec![64, 80],
            bytes(seed + 2, 64 * 80 * 2),
        )],
    );
    let idx = serde_json::json!({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "a.bias": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"hidden":64}"#).unwrap();
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().into(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn restore(dir: &Path, snap: &BTreeMap<PathBuf, Vec<u8>>) {
    std::fs::remove_dir_all(dir).unwrap();
    for (rel, b) in snap {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

fn flip(path: &Path, at: u64) {
    edit(path, |b| b[at as usize] ^= 0x10);
}

#[derive(Clone, Copy)]
struct Offsets {
    header_end: u64,
    header_tag: u64,
    slots: u64,
    tags: u64,
    tags_end: u64,
    data: u64,
    len: u64,
    chunks: u64,
}

fn offsets(p: &Path) -> Offsets {
    let f = SealedFile::open(p).unwrap();
    let l = f.head.layout;
    Offsets {
        header_end: l.header_tag_offset,
        header_tag: l.header_tag_offset,
        slots: l.key_slots_offset,
        tags: l.tag_table_offset,
        tags_end: l.tag_table_end(),
        data: l.data_offset,
        len: l.file_len(),
        chunks: l.chunk_count,
    }
}

type Mutation = Box<dyn Fn(&Path, &Path)>; // (revision dir r2, revision dir r1)

/// Every tampering of revision r2 (with r1 beside it to splice from), and what the error must
/// say (one of).
fn cases(o: &Offsets) -> Vec<(String, Mutation, Vec<&'static str>)> {
    let o = *o;
    let mut cases: Vec<(String, Mutation, Vec<&'static str>)> = Vec::new();
    let shard1 = "shard 1 of 2 (model-00001-of-00002.safetensors)";

    // Header: many positions, from magic to the safetensors JSON.
    let step = ((o.header_end - 1) / 23).max(1);
    for at in (0..o.header_end)
        .step_by(step as usize)
        .chain([o.header_end - 1])
    {
        cases.push((
            format!("header bit at {at}"),
            Box::new(move |r2, _| flip(&r2.join(S1), at)),
            vec![shard1],
        ));
    }
    // A header edited to change a shape (same length, still valid JSON).
    cases.push((
        "header shape edited".into(),
        Box::new(|r2, _| {
            edit(&r2.join(S1), |b| {
                let i = find(b, b"[64,64]");
                b[i + 4] = b'3';
            })
        }),
        vec!["header hash differs from the manifest"],
    ));
    cases.push((
        "header offset edited".into(),
        Box::new(|r2, _| {
            edit(&r2.join(S1), |b| {
                let i = find(b, b"\"data_offsets\":[0,") + "\"data_offsets\":[0,".len();
                b[i] = if b[i] == b'9' { b'8' } else { b[i] + 1 };
            })
        }),
        vec!["header hash differs from the manifest"],
    ));
    let ht = o.header_tag;
    cases.push((
        "header tag".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), ht + 3)),
        vec!["header failed authentication"],
    ));
    let sl = o.slots;
    cases.push((
        "wrapped key".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), sl + 30)),
        vec!["could not unwrap"],
    ));
    cases.push((
        "key slot generation".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), sl + 3)),
        vec!["key slot failed authentication"],
    ));
    cases.push((
        "key slot MAC".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), sl + KEY_SLOT_LEN as u64 - 1)),
        vec!["key slot failed authentication"],
    ));
    cases.push((
        "empty key slot".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), sl + KEY_SLOT_LEN as u64 + 100)),
        vec!["key slot 1 is malformed"],
    ));
    for c in 0..o.chunks {
        let t = o.tags + c * 16 + (c % 16);
        cases.push((
            format!("tag of chunk {c}"),
            Box::new(move |r2, _| flip(&r2.join(S1), t)),
            vec![Box::leak(
                format!("chunk {c} of {} failed authentication", o.chunks).into_boxed_str(),
            )],
        ));
    }
    let te = o.tags_end;
    cases.push((
        "padding".into(),
        Box::new(move |r2, _| flip(&r2.join(S1), te + 1)),
        vec!["padding"],
    ));
    let d = o.data;
    let last = o.len - 1;
    for at in [d, d + 1, d + 4095, d + 4096, d + 8192, last] {
        let chunk = (at - d) / u64::from(CS);
        cases.push((
            format!("ciphertext byte {}", at - d),
            Box::new(move |r2, _| flip(&r2.join(S1), at)),
            vec![Box::leak(format!("chunk {chunk} of").into_boxed_str())],
        ));
    }
    let len = o.len;
    let boundary = d + u64::from(CS) * (o.chunks - 1);
    cases.push((
        "truncated at a chunk boundary".into(),
        Box::new(move |r2, _| edit(&r2.join(S1), |b| b.truncate(boundary as usize))),
        vec!["truncated"],
    ));
    cases.push((
        "truncated inside a chunk".into(),
        Box::new(move |r2, _| edit(&r2.join(S1), |b| b.truncate((len - 7) as usize))),
        vec!["truncated"],
    ));
    cases.push((
        "truncated inside the header".into(),
        Box::new(move |r2, _| edit(&r2.join(S1), |b| b.truncate(PRELUDE_LEN + 5))),
        vec!["truncated", "header"],
    ));
    cases.push((
        "byte appended".into(),
        Box::new(|r2, _| edit(&r2.join(S1), |b| b.push(0))),
        vec!["extended"],
    ));
    let (tags, cs) = (o.tags as usize, CS as usize);
    let d0 = d as usize;
    cases.push((
        "chunks 0 and 1 swapped".into(),
        Box::new(move |r2, _| {
            edit(&r2.join(S1), |b| {
                let c0: Vec<u8> = b[d0..d0 + cs].to_vec();
                b.copy_within(d0 + cs..d0 + 2 * cs, d0);
                b[d0 + cs..d0 + 2 * cs].copy_from_slice(&c0);
            })
        }),
        vec!["chunk 0 of"],
    ));
    cases.push((
        "chunks 0 and 1 swapped with their tags".into(),
        Box::new(move |r2, _| {
            edit(&r2.join(S1), |b| {
                let c0: Vec<u8> = b[d0..d0 + cs].to_vec();
                b.copy_within(d0 + cs..d0 + 2 * cs, d0);
                b[d0 + cs..d0 + 2 * cs].copy_from_slice(&c0);
                let t0: Vec<u8> = b[tags..tags + 16].to_vec();
                b.copy_within(tags + 16..tags + 32, tags);
                b[tags + 16..tags + 32].copy_from_slice(&t0);
            })
        }),
        vec!["chunk 0 of"],
    ));
    // Chunk 0 and its tag spliced in from the other shard of the same revision, and from the
    // same shard of another revision.
    let splice = move |from: PathBuf, to: PathBuf| {
        let src = std::fs::read(&from).unwrap();
        let so = offsets(&from);
        edit(&to, |b| {
            b[d0..d0 + cs].copy_from_slice(&src[so.data as usize..so.data as usize + cs]);
            b[tags..tags + 16].copy_from_slice(&src[so.tags as usize..so.tags as usize + 16]);
        });
    };
    cases.push((
        "chunk spliced from another file of the model".into(),
        Box::new(move |r2, _| splice(r2.join(S2), r2.join(S1))),
        vec!["chunk 0 of"],
    ));
    cases.push((
        "chunk spliced from another revision".into(),
        Box::new(move |r2, r1| splice(r1.join(S1), r2.join(S1))),
        vec!["chunk 0 of"],
    ));
    cases.push((
        "tag only spliced from another revision".into(),
        Box::new(move |r2, r1| {
            let src = std::fs::read(r1.join(S1)).unwrap();
            edit(&r2.join(S1), |b| {
                b[tags..tags + 16].copy_from_slice(&src[tags..tags + 16])
            });
        }),
        vec!["chunk 0 of"],
    ));
    cases.push((
        "shard dropped".into(),
        Box::new(|r2, _| std::fs::remove_file(r2.join(S2)).unwrap()),
        vec!["shard 2 of 2 (model-00002-of-00002.safetensors): missing — shard dropped"],
    ));
    cases.push((
        "shard swapped in from another revision".into(),
        Box::new(|r2, r1| {
            std::fs::copy(r1.join(S2), r2.join(S2)).unwrap();
        }),
        vec!["belongs to tm@r1"],
    ));
    cases.push((
        "shards swapped within the revision".into(),
        Box::new(|r2, _| {
            let tmp = r2.join("files/tmp");
            std::fs::rename(r2.join(S1), &tmp).unwrap();
            std::fs::rename(r2.join(S2), r2.join(S1)).unwrap();
            std::fs::rename(&tmp, r2.join(S2)).unwrap();
        }),
        vec!["files swapped"],
    ));
    cases.push((
        "manifest rolled back to another revision".into(),
        Box::new(|r2, r1| {
            std::fs::copy(r1.join("manifest.sealed"), r2.join("manifest.sealed")).unwrap();
        }),
        vec!["manifest belongs to tm@r1"],
    ));
    cases.push((
        "manifest bit".into(),
        Box::new(|r2, _| flip(&r2.join("manifest.sealed"), 40)),
        vec!["tm@r2 manifest"],
    ));
    cases.push((
        "manifest removed".into(),
        Box::new(|r2, _| std::fs::remove_file(r2.join("manifest.sealed")).unwrap()),
        vec!["manifest is missing"],
    ));
    cases.push((
        "extra file spliced in".into(),
        Box::new(|r2, r1| {
            std::fs::copy(
                r1.join("files/config.json.sealed"),
                r2.join("files/extra.json.sealed"),
            )
            .unwrap();
        }),
        vec!["not in the manifest"],
    ));
    cases.push((
        "config file replaced by another revision's".into(),
        Box::new(|r2, r1| {
            std::fs::copy(
                r1.join("files/config.json.sealed"),
                r2.join("files/config.json.sealed"),
            )
            .unwrap();
        }),
        vec!["belongs to tm@r1"],
    ));

    cases
}

#[test]
fn every_tampering_is_refused_with_a_specific_error() {
    let sh = shared();
    let tmp = scratch();
    let v: Vault = sh.vault(CS);
    for (rev, seed) in [("r1", 1), ("r2", 100)] {
        let src = tmp.path().join(rev);
        make_checkpoint(&src, seed);
        v.seal(&src, &seal_request("tm", rev), &sh.kw, &()).unwrap();
    }
    let models = sh.vault_dir().join("models/tm");
    let r2 = models.join("r2");
    let o = offsets(&r2.join(S1));
    assert!(o.chunks >= 3, "the shard must span several chunks");
    let cases = cases(&o);
    let r1 = models.join("r1");
    let snap = snapshot(&r2);
    let rref = "tm@r2".parse().unwrap();
    let n = cases.len();
    assert!(n >= 50, "{n} cases");
    for (name, mutate, wants) in cases {
        mutate(&r2, &r1);
        assert_ne!(snapshot(&r2), snap, "{name}: mutation changed nothing");
        let verify = v
            .open_revision(&rref, &sh.kw)
            .and_then(|r| r.verify(2, &()));
        let err = verify
            .err()
            .unwrap_or_else(|| panic!("{name}: verify accepted a tampered revision"))
            .to_string();
        assert!(
            wants.iter().any(|w| err.contains(w)),
            "{name}: verify said '{err}', expected one of {wants:?}"
        );
        eprintln!("{name}: {err}");
        let out = tmp.path().join("out");
        let open = v
            .open_revision(&rref, &sh.kw)
            .and_then(|r| r.open_to(&out, 2, &()));
        let oerr = open
            .err()
            .unwrap_or_else(|| panic!("{name}: open accepted a tampered revision"))
            .to_string();
        assert_eq!(oerr, err, "{name}: open and verify disagree");
        assert!(!out.exists(), "{name}: open left {} behind", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: open left {leftovers:?}");
        restore(&r2, &snap);
    }
    // Restored, the revision opens again: the failures came from the mutations.
    let r = v.open_revision(&rref, &sh.kw).unwrap();
    r.verify(2, &()).unwrap();
}

/// Makes the objects under `prefix` of the bucket match `now`, given that they match `was`.
fn sync_to_bucket(
    raw: &common::s3::Raw,
    prefix: &str,
    was: &BTreeMap<PathBuf, Vec<u8>>,
    now: &BTreeMap<PathBuf, Vec<u8>>,
) {
    for (p, b) in now {
        if was.get(p) != Some(b) {
            raw.put(&format!("{prefix}/{}", p.display()), b.clone());
        }
    }
    for p in was.keys() {
        if !now.contains_key(p) {
            raw.delete(&format!("{prefix}/{}", p.display()));
        }
    }
}

#[test]
fn every_tampering_of_objects_in_a_bucket_is_refused_the_same_way() {
    let sh = shared();
    let tmp = scratch();
    let bucket = common::s3::new_bucket(false);
    let mut v: Vault = sh.vault(CS);
    v.set_store(Box::new(common::s3::bucket(&format!("s3://{bucket}/t"))));
    for (rev, seed) in [("r1", 1), ("r2", 100)] {
        let src = tmp.path().join(rev);
        make_checkpoint(&src, seed);
        v.seal(&src, &seal_request("tm", rev), &sh.kw, &()).unwrap();
    }
    // A copy of the bucket's objects to tamper with; each tampering is then written to the
    // bucket behind the vault's back, as anyone with write access to the bucket could.
    let raw = common::s3::Raw::new(&bucket);
    let mirror = tmp.path().join("mirror");
    for (k, b) in raw.download("t/models/tm") {
        let p = mirror.join(k);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
    let (r1, r2) = (mirror.join("r1"), mirror.join("r2"));
    let o = offsets(&r2.join(S1));
    let snap = snapshot(&r2);
    let rref = "tm@r2".parse().unwrap();
    let prefix = "t/models/tm/r2";
    let cases = cases(&o);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for (name, mutate, wants) in cases {
        mutate(&r2, &r1);
        let now = snapshot(&r2);
        assert_ne!(now, snap, "{name}: mutation changed nothing");
        sync_to_bucket(&raw, prefix, &snap, &now);
        let err = v
            .open_revision(&rref, &sh.kw)
            .and_then(|r| r.verify(2, &()))
            .err()
            .unwrap_or_else(|| panic!("{name}: verify accepted a tampered revision in the bucket"))
            .to_string();
        assert!(
            wants.iter().any(|w| err.contains(w)),
            "{name}: verify from the bucket said '{err}', expected one of {wants:?}"
        );
        let out = tmp.path().join("out");
        let oerr = v
            .open_revision(&rref, &sh.kw)
            .and_then(|r| r.open_to(&out, 2, &()))
            .err()
            .unwrap_or_else(|| panic!("{name}: open accepted a tampered revision in the bucket"))
            .to_string();
        assert_eq!(oerr, err, "{name}: open and verify disagree");
        assert!(!out.exists(), "{name}: open left {} behind", out.display());
        restore(&r2, &snap);
        sync_to_bucket(&raw, prefix, &now, &snap);
    }
    let r = v.open_revision(&rref, &sh.kw).unwrap();
    r.verify(2, &()).unwrap();
}
