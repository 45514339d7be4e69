//! Integration: sequenced entries in, the objects to write and the new tree head out.
//!
//! [`integrate`] reads only the right edge of the tree it grows (one partial tile per level
//! and the partial entry bundle: at most 8 tiles and one bundle), checks it against the
//! tree head it was given, and returns every tile and bundle the batch creates or changes.
//! It hashes each new entry once, and each node of the tree once: about two hashes per entry,
//! plus at most a few thousand for the right edge. A function of its inputs, so a retry of
//! the same batch on the same tree gives the same objects byte for byte.

use super::encoding::{encode_bundle, encode_tile, MAX_ENTRY_LEN};
use super::path::{BundleId, TileId, TlogPath, MAX_LEVEL, TILE_WIDTH};
use super::tree::{check_bundle, read_bundle, read_tile, tiles_for_root, Loaded};
use super::{TileError, TileReader, TreeHead};
use crate::checkpoint::Checkpoint;
use crate::merkle::{self, Hash};
use std::collections::BTreeMap;

/// What one integration makes: the tree head it leads to and the objects to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    /// The tree it grew.
    pub old: TreeHead,
    /// The tree it makes.
    pub new: TreeHead,
    /// Hash tiles it creates or changes, level by level in index order: every tile it fills
    /// (full, written once) and the new right edge (partial).
    pub tiles: Vec<(TileId, Vec<Hash>)>,
    /// Entry bundles it creates or changes, in index order, encoded.
    pub bundles: Vec<(BundleId, Vec<u8>)>,
}

/// One object to write, relative to the log's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogObject {
    /// Where it goes.
    pub path: TlogPath,
    /// What it holds.
    pub bytes: Vec<u8>,
}

impl Integration {
    /// The objects to write, entry bundles first, then tiles from level 0 up. Write all of
    /// them before the checkpoint of [`Integration::new`], so that every object a checkpoint
    /// needs is there once it is published.
    ///
    /// Objects whose [`TlogPath::is_immutable`] holds (full tiles and bundles) are created
    /// once (`If-None-Match: *`, the write-once bucket). If one is already there (a retry
    /// after a crash, or an integrator taking over), read it back: the same bytes mean it is
    /// done; other bytes mean the bucket holds another tree, so stop without overwriting and
    /// raise the alarm. Partial objects are at paths that depend on the tree size, hold the
    /// same bytes whenever rewritten, and may be replaced, or deleted once the full object at
    /// the same place exists.
    pub fn objects(&self) -> Vec<TlogObject> {
        let bundles = self.bundles.iter().map(|(b, bytes)| TlogObject {
            path: b.path(),
            bytes: bytes.clone(),
        });
        let tiles = self.tiles.iter().map(|(t, hashes)| TlogObject {
            path: t.path(),
            bytes: encode_tile(hashes),
        });
        bundles.chain(tiles).collect()
    }

    /// The checkpoint of the new tree, for the ledger key to sign ([`Checkpoint::body`]).
    pub fn checkpoint(&self, origin: &str, time: u64) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            size: self.new.size,
            root: self.new.root,
            time,
        }
    }
}

/// What [`integrate`] reads to grow the tree of `size`: its right edge (the partial tile of
/// each level) and its partial entry bundle. An asynchronous integrator can fetch these in
/// parallel into a [`super::TileSet`] and integrate from that.
pub fn integration_reads(size: u64) -> Vec<TlogPath> {
    let mut reads: Vec<TlogPath> = tiles_for_root(size).iter().map(TileId::path).collect();
    if let Some(b) = BundleId::in_tree(size / TILE_WIDTH, size).filter(|b| !b.is_full()) {
        reads.push(b.path());
    }
    reads
}

/// Integrates `entries`, the next entries in sequence (ledger indices `old.size ..`), into
/// the tree `old`, whose objects `reader` reads.
///
/// The right edge read is checked against `old.root` first, so an integrator that takes over
/// never grows a tree other than the one last signed. Fails, writing nothing, on an entry
/// longer than [`MAX_ENTRY_LEN`], on a right edge that is missing or does not match `old`,
/// or on a reader error. Memory is proportional to the batch: integrate a long backlog in
/// batches (a segment of 2^16 entries is a good one).
pub fn integrate<E: AsRef<[u8]>>(
    old: TreeHead,
    reader: &(impl TileReader + ?Sized),
    entries: &[E],
) -> Result<Integration, TileError> {
    let size = old
        .size
        .checked_add(entries.len() as u64)
        .ok_or(TileError::TooManyEntries {
            size: old.size,
            more: entries.len(),
        })?;
    if let Some((k, e)) = entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.as_ref().len() > MAX_ENTRY_LEN)
    {
        return Err(TileError::EntryTooLong {
            index: old.size + k as u64,
            len: e.as_ref().len(),
        });
    }

    // The right edge of the old tree, checked against its root.
    let mut edge = BTreeMap::new();
    for t in tiles_for_root(old.size) {
        edge.insert(t, read_tile(reader, t, old.size)?);
    }
    let got = merkle::range_root(
        &Loaded {
            size: old.size,
            tiles: &edge,
        },
        0,
        old.size,
    );
    if got != old.root {
        return Err(TileError::RootMismatch {
            size: old.size,
            got: hex::encode(got),
            want: hex::encode(old.root),
        });
    }
    let partial = |level: u8| {
        let hashes = old.size >> (8 * u32::from(level));
        TileId::in_tree(level, hashes / TILE_WIDTH, old.size)
            .filter(|t| !t.is_full())
            .map(|t| (t, edge[&t].clone()))
    };

    // Entry bundles: the old partial one (checked against its tile), then the batch.
    let mut bundles = Vec::new();
    let mut pending: Vec<&[u8]> = Vec::new();
    let old_bundle;
    let mut index = old.size / TILE_WIDTH;
    if let Some((t, leaves)) = partial(0) {
        let b = BundleId::of_tile(t);
        old_bundle = read_bundle(reader, b, old.size)?;
        check_bundle(b, &old_bundle, &leaves)?;
        pending.extend(old_bundle.iter().map(Vec::as_slice));
    }
    for e in entries {
        pending.push(e.as_ref());
        if pending.len() as u64 == TILE_WIDTH {
            let id = BundleId::new(index, TILE_WIDTH).expect("in the tree");
            bundles.push((id, encode_bundle(&pending).expect("checked lengths")));
            pending.clear();
            index += 1;
        }
    }
    if !pending.is_empty() && !entries.is_empty() {
        let id = BundleId::new(index, pending.len() as u64).expect("in the tree");
        bundles.push((id, encode_bundle(&pending).expect("checked lengths")));
    }

    // Hash tiles, level by level: the hashes a level gains are the roots of the tiles the
    // level below fills.
    let mut tiles = Vec::new();
    let mut gained: Vec<Hash> = entries
        .iter()
        .map(|e| merkle::leaf_hash(e.as_ref()))
        .collect();
    for level in 0..=MAX_LEVEL {
        if gained.is_empty() {
            break;
        }
        let mut index = (old.size >> (8 * u32::from(level))) / TILE_WIDTH;
        let mut current = partial(level).map(|(_, h)| h).unwrap_or_default();
        let mut filled = Vec::new();
        for h in gained {
            current.push(h);
            if current.len() as u64 == TILE_WIDTH {
                filled.push(merkle::root(&current));
                let id = TileId::new(level, index, TILE_WIDTH).expect("in the tree");
                tiles.push((id, std::mem::take(&mut current)));
                index += 1;
            }
        }
        if !current.is_empty() {
            let id = TileId::new(level, index, current.len() as u64).expect("in the tree");
            tiles.push((id, current));
        }
        gained = filled;
    }

    // The new root, from the new right edge: tiles just made, and the old right edge where a
    // level did not change.
    let mut all = edge;
    all.extend(tiles.iter().cloned());
    let root = merkle::range_root(&Loaded { size, tiles: &all }, 0, size);
    Ok(Integration {
        old,
        new: TreeHead { size, root },
        tiles,
        bundles,
    })
}

#[cfg(test)]
mod tests {
    use super::super::TileSet;
    use super::*;

    fn entry(i: u64) -> Vec<u8> {
        format!("{{\"entry\":{i}}}").into_bytes()
    }

    /// Grows a bucket to each size in `steps`, one integration per step.
    fn grow(steps: &[u64]) -> (TileSet, TreeHead, Vec<Integration>) {
        let mut bucket = TileSet::new();
        let mut head = TreeHead::empty();
        let mut done = Vec::new();
        for &to in steps {
            let batch: Vec<Vec<u8>> = (head.size..to).map(entry).collect();
            let i = integrate(head, &bucket, &batch).unwrap();
            bucket.apply(&i).unwrap();
            head = i.new;
            done.push(i);
        }
        (bucket, head, done)
    }

    #[test]
    fn roots_are_the_merkle_roots() {
        let leaves: Vec<Hash> = (0..1_100).map(|i| merkle::leaf_hash(&entry(i))).collect();
        let (_, head, done) = grow(&[1, 2, 255, 256, 257, 511, 512, 513, 800, 1_100]);
        for i in &done {
            assert_eq!(i.new.root, merkle::root(&leaves[..i.new.size as usize]));
        }
        assert_eq!(head.size, 1_100);
    }

    #[test]
    fn integration_reads_only_the_right_edge() {
        let (bucket, head, _) = grow(&[70_000]);
        let reads = integration_reads(head.size);
        assert_eq!(reads.len(), 4);
        let mut only = TileSet::new();
        for p in &reads {
            only.insert(*p, bucket.get(p).unwrap().to_vec());
        }
        let batch: Vec<Vec<u8>> = (70_000..70_600).map(entry).collect();
        assert_eq!(
            integrate(head, &only, &batch).unwrap(),
            integrate(head, &bucket, &batch).unwrap()
        );
        assert_eq!(integration_reads(0), vec![]);
        assert_eq!(integration_reads(65_536).len(), 1);
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        let (bucket, head, _) = grow(&[300]);
        let i = integrate(head, &bucket, &Vec::<Vec<u8>>::new()).unwrap();
        assert_eq!(i.new, head);
        assert!(i.objects().is_empty());
        let i = integrate(TreeHead::empty(), &TileSet::new(), &Vec::<Vec<u8>>::new()).unwrap();
        assert_eq!(i.new, TreeHead::empty());
    }

    #[test]
    fn a_retry_writes_the_same_objects_and_batches_do_not_matter() {
        let (bucket, head, _) = grow(&[300]);
        let batch: Vec<Vec<u8>> = (300..1_000).map(entry).collect();
        let a = integrate(head, &bucket, &batch).unwrap();
        let b = integrate(head, &bucket, &batch).unwrap();
        assert_eq!(a, b);
        // A crash after some objects were written, then a bigger batch: whatever was written
        // is written again with the same bytes.
        let mut crashed = bucket.clone();
        crashed.apply(&a).unwrap();
        let more: Vec<Vec<u8>> = (300..1_500).map(entry).collect();
        let c = integrate(head, &bucket, &more).unwrap();
        assert!(crashed.apply(&c).unwrap() > 0);
        // One batch or many, the same bucket.
        let (one, h1, _) = grow(&[1_500]);
        let (many, h2, _) = grow(&[7, 300, 511, 512, 1_000, 1_500]);
        assert_eq!(h1, h2);
        assert_eq!(h1, c.new);
        for p in one.paths() {
            assert_eq!(one.get(p), many.get(p), "{p}");
        }
    }

    #[test]
    fn a_wrong_or_damaged_right_edge_is_refused() {
        let (bucket, head, _) = grow(&[70_000]);
        let batch = vec![entry(70_000)];
        let mut wrong = head;
        wrong.root[0] ^= 1;
        assert!(matches!(
            integrate(wrong, &bucket, &batch),
            Err(TileError::RootMismatch { size: 70_000, .. })
        ));
        for t in tiles_for_root(head.size) {
            let mut b = bucket.clone();
            b.get_mut(&t.path()).unwrap()[5] ^= 1;
            assert!(
                matches!(
                    integrate(head, &b, &batch),
                    Err(TileError::RootMismatch { .. })
                ),
                "{t}"
            );
            let mut b = bucket.clone();
            b.remove(&t.path());
            assert!(
                matches!(integrate(head, &b, &batch), Err(TileError::Missing { .. })),
                "{t}"
            );
        }
        let mut b = bucket.clone();
        let p = BundleId::in_tree(273, 70_000).unwrap().path();
        let bundle = b.get_mut(&p).unwrap();
        let last = bundle.len() - 1;
        bundle[last] ^= 1;
        assert!(matches!(
            integrate(head, &b, &batch),
            Err(TileError::EntryAltered { index: 69_999, .. })
        ));
    }

    #[test]
    fn over_long_entries_are_refused_before_anything_is_read() {
        let long = vec![b'x'; MAX_ENTRY_LEN + 1];
        let ok = vec![b'x'; MAX_ENTRY_LEN];
        assert!(matches!(
            integrate(TreeHead::empty(), &TileSet::new(), &[&ok[..], &long[..]]),
            Err(TileError::EntryTooLong {
                index: 1,
                len: 65_536
            })
        ));
        let i = integrate(TreeHead::empty(), &TileSet::new(), &[&ok[..]]).unwrap();
        assert_eq!(i.new.root, merkle::leaf_hash(&ok));
    }
}
