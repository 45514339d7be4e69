//! The ledger as it is read back from disk, a database or a bucket: records
//! (`Record::parse`), signed checkpoints and proofs, and tlog tiles and entry bundles.

use crate::mode;
use crate::mutate::mutate;
use arbitrary::{Arbitrary, Unstructured};
use ed25519_dalek::SigningKey;
use weightvault_ledger::checkpoint::{Checkpoint, LedgerSigner};
use weightvault_ledger::merkle;
use weightvault_ledger::record::{Record, UnfinishedOpens};
use weightvault_ledger::tiles::{self, TileSet, TlogPath, TreeHead};
use weightvault_ledger::{ConsistencyProof, InclusionProof};

const KEY_NAME: &str = "weightvault.example/ledger";

fn ledger_key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

fn public() -> [u8; 32] {
    ledger_key().verifying_key().to_bytes()
}

/// `Record::parse` on each line of the input (canonical JSON records, as a ledger file holds
/// them one per frame). What parses re-serialises to its bytes and answers `entry`,
/// `withdrawals`, `rejection` and `key_events`; every line also goes through
/// `UnfinishedOpens::add_entry`, and the opens left unfinished get their interrupted ends.
pub fn ledger_record(data: &[u8]) {
    let mut opens = UnfinishedOpens::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if let Ok(r) = Record::parse(line) {
            assert_eq!(r.canonical(), line, "a parsed record is canonical");
            let _ = r.entry();
            let _ = r.withdrawals();
            let _ = r.rejection();
            let _ = r.key_events();
        }
        opens.add_entry(i as u64, line);
    }
    for end in opens.interrupted_ends("2026-12-01T12:00:00Z") {
        let bytes = end.canonical();
        assert_eq!(
            Record::parse(&bytes).expect("an end parses"),
            end,
            "an interrupted end reads back"
        );
    }
}

/// A tree of a few leaves, a checkpoint of it signed by the test ledger key, and proofs.
#[derive(Debug, Arbitrary)]
struct ArbTree {
    origin: String,
    time: u64,
    leaves: Vec<Vec<u8>>,
    index: u16,
    old: u16,
    mutate_note: bool,
}

/// Mode byte 0: the raw bytes as a signed checkpoint note, verified under the test ledger
/// key. 1: as the JSON of an `InclusionProof`; 2: of a `ConsistencyProof` (from the empty
/// tree's root). 3: `merkle::verify_inclusion` and `verify_consistency` of arbitrary sizes,
/// indices and paths. 4 and up: a tree of arbitrary leaves with its signed checkpoint and an
/// inclusion and a consistency proof, which must verify, then mutated: the checkpoint note
/// (which then verifies only as signed) and the proofs (which then fail, or prove the same).
pub fn ledger_checkpoint(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    let pk = public();
    match m {
        0 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = Checkpoint::verify(s, KEY_NAME, &pk);
            }
        }
        1 => {
            if let Ok(p) = serde_json::from_slice::<InclusionProof>(rest) {
                let _ = p.verify(KEY_NAME, &pk);
            }
        }
        2 => {
            if let Ok(p) = serde_json::from_slice::<ConsistencyProof>(rest) {
                let _ = p.verify(&merkle::empty_root(), KEY_NAME, &pk);
            }
        }
        3 => {
            let mut u = Unstructured::new(rest);
            let Ok((index, size, old, leaf, root, old_root, proof)) =
                <(u64, u64, u64, [u8; 32], [u8; 32], [u8; 32], Vec<[u8; 32]>)>::arbitrary(&mut u)
            else {
                return;
            };
            let _ = merkle::verify_inclusion(index, size, &leaf, &proof, &root);
            let _ = merkle::verify_consistency(old, size, &old_root, &root, &proof);
        }
        _ => signed_tree(rest),
    }
}

fn signed_tree(rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbTree::arbitrary(&mut u) else {
        return;
    };
    // A signed note's text holds no control character but its newlines (C2SP signed-note).
    let origin: String = a
        .origin
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let origin = if origin.is_empty() {
        "o".into()
    } else {
        origin
    };
    let leaves: Vec<[u8; 32]> = a
        .leaves
        .iter()
        .take(40)
        .map(|l| merkle::leaf_hash(l))
        .collect();
    if leaves.is_empty() {
        return;
    }
    let size = leaves.len() as u64;
    let cp = Checkpoint {
        origin,
        size,
        root: merkle::root(&leaves),
        time: a.time,
    };
    let key = ledger_key();
    let sig = key
        .sign(cp.body().as_bytes())
        .expect("a software key signs");
    let note = cp.signed_note(KEY_NAME, &public(), &sig);
    assert_eq!(
        Checkpoint::verify(&note, KEY_NAME, &public()).expect("a signed note verifies"),
        cp
    );
    let index = u64::from(a.index) % size;
    let old = u64::from(a.old) % (size + 1);
    let hexes = |p: Vec<[u8; 32]>| p.iter().map(hex::encode).collect::<Vec<_>>();
    let inclusion = InclusionProof {
        index,
        entry: String::from_utf8_lossy(&a.leaves[index as usize]).into_owned(),
        proof: hexes(merkle::inclusion_proof(&leaves, index).expect("index < size")),
        checkpoint: note.clone(),
    };
    // The entry is hashed as text: a leaf that is not UTF-8 is not this entry.
    if std::str::from_utf8(&a.leaves[index as usize]).is_ok() {
        inclusion
            .verify(KEY_NAME, &public())
            .expect("an inclusion proof verifies");
    }
    let old_root = merkle::root(&leaves[..old as usize]);
    let consistency = ConsistencyProof {
        old_size: old,
        proof: hexes(merkle::consistency_proof(&leaves, old).expect("old <= size")),
        checkpoint: note.clone(),
    };
    consistency
        .verify(&old_root, KEY_NAME, &public())
        .expect("a consistency proof verifies");

    let mut n = note.clone().into_bytes();
    if a.mutate_note {
        mutate(&mut u, &mut n);
    }
    let n = String::from_utf8_lossy(&n).into_owned();
    if let Ok(got) = Checkpoint::verify(&n, KEY_NAME, &public()) {
        assert_eq!(got, cp, "an altered note verified as another checkpoint");
    }
    let mut j = serde_json::to_vec(&InclusionProof {
        checkpoint: n.clone(),
        ..inclusion
    })
    .expect("serialises");
    mutate(&mut u, &mut j);
    if let Ok(p) = serde_json::from_slice::<InclusionProof>(&j) {
        if let Ok(got) = p.verify(KEY_NAME, &public()) {
            assert_eq!(got, cp);
        }
    }
    let mut j = serde_json::to_vec(&ConsistencyProof {
        checkpoint: n,
        ..consistency
    })
    .expect("serialises");
    mutate(&mut u, &mut j);
    if let Ok(p) = serde_json::from_slice::<ConsistencyProof>(&j) {
        if let Ok(got) = p.verify(&old_root, KEY_NAME, &public()) {
            assert_eq!(got, cp);
        }
    }
}

/// A tiled log of arbitrary entries, and what is done to its objects before it is read.
#[derive(Debug, Arbitrary)]
struct ArbLog {
    entries: Vec<Vec<u8>>,
    padding: u16,
    batches: u8,
    changes: Vec<(u8, Change)>,
    index: u16,
    old: u16,
}

/// A change to one object of a tiled log.
#[derive(Debug, Arbitrary)]
enum Change {
    Delete,
    Mutate,
    Replace(Vec<u8>),
}

/// Mode byte 0: `decode_bundle` and `decode_tile` of the raw bytes at a width from their first
/// two bytes, and the rest as a tlog path (`TlogPath::from_str`). 1 and up: a log of arbitrary
/// entries integrated into tiles in batches, its checkpoint signed; then objects deleted,
/// mutated or replaced, and the log read back by `verify_checkpoint`, `audit`, `read_entry`,
/// `inclusion_proof`, `consistency_proof` and `tree_root`. Unchanged, every read must hold.
pub fn ledger_tiles(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m == 0 {
        if rest.len() < 2 {
            return;
        }
        let width = u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        if let Ok(entries) = tiles::decode_bundle(body, width) {
            assert_eq!(entries.len() as u64, width);
            assert_eq!(tiles::encode_bundle(&entries).ok().as_deref(), Some(body));
        }
        if let Ok(hashes) = tiles::decode_tile(body, width) {
            assert_eq!(tiles::encode_tile(&hashes), body);
        }
        if let Ok(s) = std::str::from_utf8(body) {
            if let Ok(p) = s.parse::<TlogPath>() {
                let again: TlogPath = p.to_string().parse().expect("a path's text parses");
                assert_eq!(again, p);
            }
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbLog::arbitrary(&mut u) else {
        return;
    };
    // Up to a few hundred entries: past one full tile and bundle (256) when padded.
    let mut entries: Vec<Vec<u8>> = a
        .entries
        .into_iter()
        .take(64)
        .map(|mut e| {
            e.truncate(tiles::MAX_ENTRY_LEN);
            e
        })
        .collect();
    for k in 0..usize::from(a.padding % 600) {
        entries.push(k.to_be_bytes().to_vec());
    }
    let mut set = TileSet::new();
    let mut head = TreeHead::empty();
    let batches = usize::from(a.batches % 4) + 1;
    let per = entries.len().div_ceil(batches).max(1);
    for batch in entries.chunks(per) {
        let i = tiles::integrate(head, &set, batch).expect("a log integrates its own tiles");
        set.apply(&i).expect("an integration applies");
        head = i.new;
    }
    let size = head.size;
    let cp = Checkpoint {
        origin: KEY_NAME.into(),
        size,
        root: head.root,
        time: 1,
    };
    let sig = ledger_key().sign(cp.body().as_bytes()).expect("signs");
    let note = cp.signed_note(KEY_NAME, &public(), &sig);
    let paths: Vec<TlogPath> = set.paths().copied().collect();
    let changed = !a.changes.is_empty() && !paths.is_empty();
    for (which, change) in a.changes.into_iter().take(4) {
        if paths.is_empty() {
            break;
        }
        let path = paths[usize::from(which) % paths.len()];
        match change {
            Change::Delete => {
                set.remove(&path);
            }
            Change::Mutate => {
                if let Some(b) = set.get_mut(&path) {
                    mutate(&mut u, b);
                }
            }
            Change::Replace(b) => {
                set.insert(path, b);
            }
        }
    }
    let holds = |ok: bool, what: &str| assert!(ok || changed, "{what} failed on an unchanged log");
    holds(
        tiles::verify_checkpoint(&note, KEY_NAME, &public(), &set).is_ok(),
        "verify_checkpoint",
    );
    let seen = std::cell::Cell::new(0u64);
    let r = tiles::audit(head, &set, |i, e: &[u8]| {
        assert_eq!(i, seen.get(), "entries come in index order");
        seen.set(i + 1);
        // Bound to the signed root: what an audit passes is what was written.
        if entries[i as usize] == e {
            Ok(())
        } else {
            Err("an entry read back differs")
        }
    });
    holds(r.is_ok(), "audit");
    if size > 0 {
        let index = u64::from(a.index) % size;
        match tiles::read_entry(index, size, &set) {
            Ok(e) => holds(e == entries[index as usize], "read_entry"),
            Err(_) => holds(false, "read_entry"),
        }
        holds(
            tiles::inclusion_proof(index, size, &set).is_ok(),
            "inclusion_proof",
        );
        let old = u64::from(a.old) % (size + 1);
        holds(
            tiles::consistency_proof(old, size, &set).is_ok(),
            "consistency_proof",
        );
    }
    if let Ok(root) = tiles::tree_root(size, &set) {
        assert!(changed || root == head.root);
    } else {
        holds(false, "tree_root");
    }
}
