//! What an auditor does with the bucket and the ledger's public key alone, no database:
//! check a signed checkpoint against the tiles, audit every tile and entry of its tree, and
//! make inclusion and consistency proofs that this crate's [`crate::proof`] verifies offline.
//!
//! The audit anchors each tile on the one above it: the right edge (the partial tile of each
//! level) must give the checkpoint's root, and every full tile must hash to its hash in the
//! tile above, so every tile is bound to the signed root. It walks down from the right edge,
//! and checks each tile against the very bytes of its parent that were checked (each object
//! is read once), so a reader serving one version for the check and another for use gains
//! nothing. A deleted tile or bundle is named as missing, an overwritten one as altered.

use super::path::{BundleId, TileId, TILE_WIDTH};
use super::tree::{
    check_bundle, consistency_proof, inclusion_proof, read_bundle, read_entry, read_tile,
    tiles_for_root, Loaded,
};
use super::{TileError, TileReader, TreeHead};
use crate::checkpoint::Checkpoint;
use crate::merkle::{self, Hash};
use crate::proof::{ConsistencyProof, InclusionProof};
use std::collections::BTreeMap;

/// Verifies the signed checkpoint `note` with the ledger's `public` key and that the tiles
/// give its root (reading the right edge only); returns the checkpoint.
pub fn verify_checkpoint(
    note: &str,
    key_name: &str,
    public: &[u8; 32],
    reader: &(impl TileReader + ?Sized),
) -> Result<Checkpoint, TileError> {
    let cp = Checkpoint::verify(note, key_name, public)?;
    right_edge(TreeHead::from(&cp), reader)?;
    Ok(cp)
}

/// The right edge of `head`, checked against its root.
fn right_edge(
    head: TreeHead,
    reader: &(impl TileReader + ?Sized),
) -> Result<BTreeMap<TileId, Vec<Hash>>, TileError> {
    let mut edge = BTreeMap::new();
    for t in tiles_for_root(head.size) {
        edge.insert(t, read_tile(reader, t, head.size)?);
    }
    let got = merkle::range_root(
        &Loaded {
            size: head.size,
            tiles: &edge,
        },
        0,
        head.size,
    );
    if got != head.root {
        return Err(TileError::RootMismatch {
            size: head.size,
            got: hex::encode(got),
            want: hex::encode(head.root),
        });
    }
    Ok(edge)
}

/// What an audit went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked (the tree size).
    pub entries: u64,
    /// Hash tiles read and checked.
    pub tiles: u64,
    /// Entry bundles read and checked.
    pub bundles: u64,
}

/// Audits the whole tree `head` (from a verified checkpoint): every tile it needs is there
/// and bound to its root, and every entry is in its bundle and hashes to its leaf; each entry
/// is then handed, in index order, to `each_entry` (to parse it as a record, say), whose
/// error is reported as [`TileError::EntryRejected`]. Reads every tile and bundle once, and
/// holds at most one tile per level and one bundle.
pub fn audit<E: std::fmt::Display>(
    head: TreeHead,
    reader: &(impl TileReader + ?Sized),
    mut each_entry: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<AuditReport, TileError> {
    let edge = right_edge(head, reader)?;
    let mut report = AuditReport {
        entries: head.size,
        tiles: edge.len() as u64,
        bundles: 0,
    };
    // From the top of the right edge down, each partial tile's full children, depth first:
    // entries come out in index order.
    for (tile, hashes) in edge.iter().rev() {
        descend(
            head.size,
            reader,
            *tile,
            hashes,
            &mut report,
            &mut each_entry,
        )?;
    }
    Ok(report)
}

/// Checks the full children of `tile` (whose `hashes` are already bound to the root) against
/// it, and theirs, down to the entries.
fn descend<E: std::fmt::Display>(
    size: u64,
    reader: &(impl TileReader + ?Sized),
    tile: TileId,
    hashes: &[Hash],
    report: &mut AuditReport,
    each_entry: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<(), TileError> {
    if tile.level() == 0 {
        let bundle = BundleId::of_tile(tile);
        let entries = read_bundle(reader, bundle, size)?;
        check_bundle(bundle, &entries, hashes)?;
        report.bundles += 1;
        for (k, e) in entries.iter().enumerate() {
            let index = tile.index() * TILE_WIDTH + k as u64;
            each_entry(index, e).map_err(|e| TileError::EntryRejected {
                index,
                reason: e.to_string(),
            })?;
        }
        return Ok(());
    }
    for (position, want) in hashes.iter().enumerate() {
        let child = TileId::new(
            tile.level() - 1,
            tile.index() * TILE_WIDTH + position as u64,
            TILE_WIDTH,
        )
        .expect("below a tile of the tree");
        let below = read_tile(reader, child, size)?;
        report.tiles += 1;
        if merkle::root(&below) != *want {
            return Err(TileError::TileAltered {
                tile: child.path(),
                parent: tile.path(),
                position: position as u64,
            });
        }
        descend(size, reader, child, &below, report, each_entry)?;
    }
    Ok(())
}

/// A self-contained inclusion proof of entry `index` against the signed checkpoint `note`,
/// made from the tiles and checked before it is returned: what `audit prove` gives, for
/// [`InclusionProof::verify`] with the public key alone.
pub fn prove_inclusion(
    note: &str,
    key_name: &str,
    public: &[u8; 32],
    index: u64,
    reader: &(impl TileReader + ?Sized),
) -> Result<InclusionProof, TileError> {
    let cp = Checkpoint::verify(note, key_name, public)?;
    let entry = read_entry(index, cp.size, reader)?;
    let entry = String::from_utf8(entry).map_err(|_| TileError::NotUtf8(index))?;
    let path = inclusion_proof(index, cp.size, reader)?;
    let proof = InclusionProof {
        index,
        entry,
        proof: path.iter().map(hex::encode).collect(),
        checkpoint: note.into(),
    };
    proof.verify(key_name, public)?;
    Ok(proof)
}

/// A consistency proof from the tree of `old_size` to the signed checkpoint `note`, made from
/// the tiles: what `audit consistency` gives, for [`ConsistencyProof::verify`] by whoever
/// holds the older root.
pub fn prove_consistency(
    note: &str,
    key_name: &str,
    public: &[u8; 32],
    old_size: u64,
    reader: &(impl TileReader + ?Sized),
) -> Result<ConsistencyProof, TileError> {
    let cp = Checkpoint::verify(note, key_name, public)?;
    let path = consistency_proof(old_size, cp.size, reader)?;
    Ok(ConsistencyProof {
        old_size,
        proof: path.iter().map(hex::encode).collect(),
        checkpoint: note.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{integrate, tiles_of, TileSet, TlogPath};
    use super::*;
    use crate::checkpoint::LedgerSigner;

    fn entry(i: u64) -> Vec<u8> {
        format!("{{\"kind\":\"test\",\"n\":{i}}}").into_bytes()
    }

    fn bucket(size: u64, steps: u64) -> (TileSet, TreeHead) {
        let mut b = TileSet::new();
        let mut head = TreeHead::empty();
        while head.size < size {
            let to = (head.size + steps).min(size);
            let batch: Vec<Vec<u8>> = (head.size..to).map(entry).collect();
            let i = integrate(head, &b, &batch).unwrap();
            b.apply(&i).unwrap();
            head = i.new;
        }
        (b, head)
    }

    /// The path of the level-0 tile that holds entry `index`'s leaf in the tree of `size`.
    fn leaf_tile(index: u64, size: u64) -> TlogPath {
        TileId::in_tree(0, index / TILE_WIDTH, size).unwrap().path()
    }

    fn no_check(_: u64, _: &[u8]) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn a_whole_bucket_audits_and_every_entry_is_seen_in_order() {
        for size in [0, 1, 255, 256, 257, 511, 512, 70_000] {
            let (b, head) = bucket(size, 997);
            let mut seen = 0;
            let report = audit(head, &b, |i, e| {
                assert_eq!(i, seen);
                assert_eq!(e, entry(i));
                seen += 1;
                Ok::<_, String>(())
            })
            .unwrap();
            assert_eq!(seen, size);
            assert_eq!(report.entries, size);
            assert_eq!(report.tiles, tiles_of(size).count() as u64, "size {size}");
            assert_eq!(report.bundles, size.div_ceil(256));
        }
    }

    /// The probe: every object the tree needs, deleted, truncated or with one bit flipped,
    /// fails the audit, naming that object (or, for the right edge, the root).
    #[test]
    fn every_deleted_or_altered_object_is_caught() {
        let size = 65_536 + 3 * 256 + 7;
        let (b, head) = bucket(size, 4_000);
        let needed: Vec<TlogPath> = tiles_of(size)
            .map(|t| t.path())
            .chain(super::super::bundles_of(size).map(|b| b.path()))
            .collect();
        // Every full object in the bucket is one the tree needs.
        for p in b.paths().filter(|p| p.is_immutable()) {
            assert!(needed.contains(p), "{p}");
        }
        let edge: Vec<TlogPath> = tiles_for_root(size).iter().map(|t| t.path()).collect();
        // Every object near the edges of the tree, and a sample of the others.
        let probe = needed.iter().enumerate().filter(|(k, p)| {
            k % 17 == 0 || !p.is_immutable() || matches!(p, TlogPath::Tile(t) if t.level() > 0)
        });
        for (_, p) in probe {
            let mut gone = b.clone();
            gone.remove(p);
            match audit(head, &gone, no_check) {
                Err(TileError::Missing { path, .. }) => assert_eq!(path, *p),
                other => panic!("{p} deleted: {other:?}"),
            }
            let len = b.get(p).unwrap().len();
            for (at, bit) in [(0, 0x01), (len / 2, 0x80), (len - 1, 0x10)] {
                let mut bad = b.clone();
                bad.get_mut(p).unwrap()[at] ^= bit;
                let named = match audit(head, &bad, no_check) {
                    Err(TileError::RootMismatch { .. }) => edge.contains(p),
                    Err(TileError::TileAltered { tile, .. }) => tile == *p,
                    Err(TileError::EntryAltered { bundle, .. }) => bundle == *p,
                    Err(TileError::Encoding { path, .. }) => path == *p,
                    other => panic!("{p} byte {at}: {other:?}"),
                };
                assert!(named, "{p} byte {at}");
            }
            let mut short = b.clone();
            short.get_mut(p).unwrap().pop();
            assert!(audit(head, &short, no_check).is_err(), "{p} truncated");
        }
        // Overwritten with another well-formed object of the same tree: a full tile or bundle
        // put in another's place.
        let tile = |i| TileId::new(0, i, 256).unwrap().path();
        let bundle = |i| BundleId::new(i, 256).unwrap().path();
        for (a, c) in [(tile(5), tile(6)), (bundle(5), bundle(6))] {
            let mut swapped = b.clone();
            let other = b.get(&c).unwrap().to_vec();
            swapped.insert(a, other);
            match audit(head, &swapped, no_check) {
                Err(TileError::TileAltered { tile, position, .. }) => {
                    assert_eq!((tile, position), (a, 5))
                }
                Err(TileError::EntryAltered { index, bundle, .. }) => {
                    assert_eq!((index, bundle), (5 * 256, a))
                }
                other => panic!("{a} replaced by {c}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_deleted_partial_tile_is_read_from_the_full_one() {
        // Tree of 300 checkpointed; the log grew to 600 and deleted the partial objects of 300.
        let (mut b, head300) = bucket(300, 300);
        let batch: Vec<Vec<u8>> = (300..600).map(entry).collect();
        let i = integrate(head300, &b, &batch).unwrap();
        b.apply(&i).unwrap();
        let p0 = TileId::in_tree(0, 1, 300).unwrap();
        assert!(!p0.is_full());
        b.remove(&p0.path());
        b.remove(&BundleId::of_tile(p0).path());
        audit(head300, &b, no_check).unwrap();
        assert_eq!(leaf_tile(299, 300), p0.path());
    }

    #[test]
    fn entries_are_handed_to_the_auditor() {
        let (b, head) = bucket(600, 600);
        let r = audit(head, &b, |i, _| {
            if i == 513 {
                Err("not a record")
            } else {
                Ok(())
            }
        });
        assert!(matches!(
            r,
            Err(TileError::EntryRejected { index: 513, .. })
        ));
    }

    #[test]
    fn proofs_from_the_bucket_verify_with_the_public_key_alone() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let public = key.public_key().unwrap();
        let (b, head) = bucket(1_000, 333);
        let cp = Checkpoint {
            origin: "weightvault.test/ledger".into(),
            size: head.size,
            root: head.root,
            time: 1_700_000_000,
        };
        let sig = key.sign(cp.body().as_bytes()).unwrap();
        let note = cp.signed_note(&cp.origin, &public, &sig);
        let name = "weightvault.test/ledger";
        assert_eq!(verify_checkpoint(&note, name, &public, &b).unwrap(), cp);
        for index in [0, 1, 255, 256, 511, 999] {
            let p = prove_inclusion(&note, name, &public, index, &b).unwrap();
            assert_eq!(p.entry.as_bytes(), entry(index));
            // The proof as an auditor gets it: JSON, checked with nothing but the key.
            let json = serde_json::to_string(&p).unwrap();
            let back: InclusionProof = serde_json::from_str(&json).unwrap();
            assert_eq!(back.verify(name, &public).unwrap(), cp);
        }
        assert!(matches!(
            prove_inclusion(&note, name, &public, 1_000, &b),
            Err(TileError::IndexOutOfRange { .. })
        ));
        let (_, h300) = bucket(300, 300);
        let c = prove_consistency(&note, name, &public, 300, &b).unwrap();
        assert_eq!(c.verify(&h300.root, name, &public).unwrap(), cp);
        let mut other = h300.root;
        other[0] ^= 1;
        assert!(c.verify(&other, name, &public).is_err());

        // Another key, or a bucket whose edge was replaced, is refused.
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let stranger_pub = stranger.public_key().unwrap();
        assert!(matches!(
            verify_checkpoint(&note, name, &stranger_pub, &b),
            Err(TileError::Checkpoint(_))
        ));
        let mut bad = b.clone();
        let edge = tiles_for_root(head.size)[0].path();
        bad.get_mut(&edge).unwrap()[0] ^= 1;
        assert!(matches!(
            verify_checkpoint(&note, name, &public, &bad),
            Err(TileError::RootMismatch { .. })
        ));
        // An entry altered together with its leaf tile: the proof no longer verifies.
        let mut forged = b.clone();
        let bundle = BundleId::in_tree(1, head.size).unwrap().path();
        let bytes = forged.get(&bundle).unwrap().to_vec();
        let mut entries: Vec<Vec<u8>> = super::super::decode_bundle(&bytes, 256)
            .unwrap()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        entries[4] = b"{\"kind\":\"forged\"}".to_vec();
        forged.insert(bundle, super::super::encode_bundle(&entries).unwrap());
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        forged.insert(
            leaf_tile(260, head.size),
            super::super::encode_tile(&leaves),
        );
        assert!(matches!(
            prove_inclusion(&note, name, &public, 260, &forged),
            Err(TileError::Proof(_))
        ));
        assert!(matches!(
            audit(head, &forged, no_check),
            Err(TileError::TileAltered { .. })
        ));
    }
}
