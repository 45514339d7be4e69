//! The tree read from tiles: which tiles a root or a proof needs, and the root and proofs
//! computed from them by this crate's own Merkle code.
//!
//! Every computation runs [`crate::merkle`]'s algorithm twice over a [`Subtrees`]: first over
//! one that only notes which complete subtrees it is asked for (the algorithms' course depends
//! on sizes, never on hash values), then, once exactly the tiles holding those subtrees are
//! read, over one that answers from them. A proof thus reads O(log n) tiles of at most 8 KiB
//! and hashes at most 127 nodes per subtree; a root reads only the right edge (the partial
//! tile of each level).

use super::encoding::{decode_bundle, decode_tile};
use super::path::{BundleId, TileId, TlogPath, MAX_LEVEL, TILE_WIDTH};
use super::{TileError, TileReader};
use crate::merkle::{self, Hash, Subtrees};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// Where complete subtree `index` at `level` sits in the tree of `size`: its tile, and the
/// range of that tile's hashes it is the root of.
fn locate(size: u64, level: u32, index: u64) -> (TileId, usize, usize) {
    let (tile_level, within) = (level / 8, level % 8);
    let first = index << within;
    let tile = TileId::in_tree(tile_level as u8, first / TILE_WIDTH, size)
        .expect("a complete subtree of the tree lies in one of its tiles");
    let start = (first % TILE_WIDTH) as usize;
    (tile, start, start + (1 << within))
}

/// Notes the tiles holding the subtrees asked for; answers with a dummy hash.
struct Recorder {
    size: u64,
    tiles: RefCell<BTreeSet<TileId>>,
}

impl Subtrees for Recorder {
    fn subtree(&self, level: u32, index: u64) -> Hash {
        self.tiles
            .borrow_mut()
            .insert(locate(self.size, level, index).0);
        [0; 32]
    }
}

/// Answers from tiles read for the tree of `size`.
pub(super) struct Loaded<'a> {
    pub(super) size: u64,
    pub(super) tiles: &'a BTreeMap<TileId, Vec<Hash>>,
}

impl Subtrees for Loaded<'_> {
    fn subtree(&self, level: u32, index: u64) -> Hash {
        let (tile, a, b) = locate(self.size, level, index);
        let hashes = self
            .tiles
            .get(&tile)
            .expect("the recorder's run read every tile this run asks for");
        if b - a == 1 {
            hashes[a]
        } else {
            merkle::root(&hashes[a..b])
        }
    }
}

/// The tiles `f` needs in the tree of `size`.
fn needs(size: u64, f: impl Fn(&dyn Subtrees)) -> Vec<TileId> {
    let r = Recorder {
        size,
        tiles: RefCell::default(),
    };
    f(&r);
    r.tiles.into_inner().into_iter().collect()
}

/// Runs `f` over the tiles it needs in the tree of `size`, read from `reader`.
fn over_tiles<T>(
    size: u64,
    reader: &(impl TileReader + ?Sized),
    f: impl Fn(&dyn Subtrees) -> T,
) -> Result<T, TileError> {
    let mut tiles = BTreeMap::new();
    for id in needs(size, |s| {
        f(s);
    }) {
        tiles.insert(id, read_tile(reader, id, size)?);
    }
    Ok(f(&Loaded {
        size,
        tiles: &tiles,
    }))
}

/// Reads an object, falling back from a partial object that is gone to the full one at the
/// same place (tlog-tiles lets a log delete a partial tile once the full one exists, and the
/// partial is a prefix of it); `None` if neither is there.
fn read_object(
    reader: &(impl TileReader + ?Sized),
    path: TlogPath,
    full: TlogPath,
) -> Result<Option<(TlogPath, Vec<u8>)>, TileError> {
    let get = |p: TlogPath| {
        reader
            .read(p)
            .map_err(|source| TileError::Read { path: p, source })
    };
    if let Some(b) = get(path)? {
        return Ok(Some((path, b)));
    }
    if full != path {
        if let Some(b) = get(full)? {
            return Ok(Some((full, b)));
        }
    }
    Ok(None)
}

/// The hashes of `tile` of the tree of `size`, checked for length.
pub(super) fn read_tile(
    reader: &(impl TileReader + ?Sized),
    tile: TileId,
    size: u64,
) -> Result<Vec<Hash>, TileError> {
    let (path, bytes) =
        read_object(reader, tile.path(), tile.full().path())?.ok_or(TileError::Missing {
            path: tile.path(),
            size,
        })?;
    let width = if path == tile.path() {
        tile.width()
    } else {
        TILE_WIDTH
    };
    let mut hashes =
        decode_tile(&bytes, width).map_err(|source| TileError::Encoding { path, source })?;
    hashes.truncate(tile.width() as usize);
    Ok(hashes)
}

/// The entries of `bundle` of the tree of `size`, checked for form (not yet against the
/// level-0 tile: see [`check_bundle`]).
pub(super) fn read_bundle(
    reader: &(impl TileReader + ?Sized),
    bundle: BundleId,
    size: u64,
) -> Result<Vec<Vec<u8>>, TileError> {
    let full = BundleId::new(bundle.index(), TILE_WIDTH).expect("same place");
    let (path, bytes) =
        read_object(reader, bundle.path(), full.path())?.ok_or(TileError::Missing {
            path: bundle.path(),
            size,
        })?;
    let width = if path == bundle.path() {
        bundle.width()
    } else {
        TILE_WIDTH
    };
    let entries =
        decode_bundle(&bytes, width).map_err(|source| TileError::Encoding { path, source })?;
    Ok(entries
        .into_iter()
        .take(bundle.width() as usize)
        .map(<[u8]>::to_vec)
        .collect())
}

/// Checks that each entry of `bundle` hashes to its leaf in the level-0 tile's `leaves`.
pub(super) fn check_bundle(
    bundle: BundleId,
    entries: &[impl AsRef<[u8]>],
    leaves: &[Hash],
) -> Result<(), TileError> {
    for (k, (e, leaf)) in entries.iter().zip(leaves).enumerate() {
        if merkle::leaf_hash(e.as_ref()) != *leaf {
            return Err(TileError::EntryAltered {
                index: bundle.index() * TILE_WIDTH + k as u64,
                bundle: bundle.path(),
                tile: bundle.tile().path(),
            });
        }
    }
    Ok(())
}

/// The tiles a root of the tree of `size` needs: its right edge, the partial tile of each
/// level that has one.
pub fn tiles_for_root(size: u64) -> Vec<TileId> {
    needs(size, |s| {
        merkle::range_root(s, 0, size);
    })
}

/// The tiles an inclusion proof of entry `index` in the tree of `size` needs.
pub fn tiles_for_inclusion(index: u64, size: u64) -> Vec<TileId> {
    needs(size, |s| {
        merkle::inclusion_proof_in(s, index, size);
    })
}

/// The tiles a consistency proof from the tree of `old` to the tree of `size` needs.
pub fn tiles_for_consistency(old: u64, size: u64) -> Vec<TileId> {
    needs(size, |s| {
        merkle::consistency_proof_in(s, old, size);
    })
}

/// The root of the tree of `size`, from its tiles.
pub fn tree_root(size: u64, reader: &(impl TileReader + ?Sized)) -> Result<Hash, TileError> {
    over_tiles(size, reader, |s| merkle::range_root(s, 0, size))
}

/// The inclusion proof (RFC 6962 audit path, leaf first) of entry `index` in the tree of
/// `size`, from its tiles.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &(impl TileReader + ?Sized),
) -> Result<Vec<Hash>, TileError> {
    if index >= size {
        return Err(TileError::IndexOutOfRange { index, size });
    }
    over_tiles(size, reader, |s| {
        merkle::inclusion_proof_in(s, index, size).expect("index < size")
    })
}

/// The consistency proof (RFC 6962 §2.1.2) from the tree of `old` to the tree of `size`,
/// from the tiles of the latter.
pub fn consistency_proof(
    old: u64,
    size: u64,
    reader: &(impl TileReader + ?Sized),
) -> Result<Vec<Hash>, TileError> {
    if old > size {
        return Err(TileError::SizeOrder { old, size });
    }
    over_tiles(size, reader, |s| {
        merkle::consistency_proof_in(s, old, size).expect("old <= size")
    })
}

/// Entry `index` of the tree of `size`, from its bundle, checked against the level-0 tile
/// (so a bundle altered in place is named here, not only by a proof that then fails).
pub fn read_entry(
    index: u64,
    size: u64,
    reader: &(impl TileReader + ?Sized),
) -> Result<Vec<u8>, TileError> {
    if index >= size {
        return Err(TileError::IndexOutOfRange { index, size });
    }
    let bundle = BundleId::in_tree(index / TILE_WIDTH, size).expect("index < size");
    let entries = read_bundle(reader, bundle, size)?;
    let leaves = read_tile(reader, bundle.tile(), size)?;
    check_bundle(bundle, &entries, &leaves)?;
    Ok(entries
        .into_iter()
        .nth((index % TILE_WIDTH) as usize)
        .expect("the bundle holds the entry"))
}

/// Every tile of the tree of `size`, level by level, in index order: about `size / 255`.
pub fn tiles_of(size: u64) -> impl Iterator<Item = TileId> {
    (0..=MAX_LEVEL).flat_map(move |level| {
        let hashes = size >> (8 * u32::from(level));
        (0..hashes.div_ceil(TILE_WIDTH))
            .map(move |index| TileId::in_tree(level, index, size).expect("in the tree"))
    })
}

/// Every entry bundle of the tree of `size`, in index order.
pub fn bundles_of(size: u64) -> impl Iterator<Item = BundleId> {
    (0..size.div_ceil(TILE_WIDTH))
        .map(move |index| BundleId::in_tree(index, size).expect("in the tree"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_reads_the_right_edge_only() {
        // (tree size, [(level, index, width)] of the tiles its root reads)
        type Row = (u64, &'static [(u8, u64, u64)]);
        let rows: &[Row] = &[
            (0, &[]),
            (1, &[(0, 0, 1)]),
            (255, &[(0, 0, 255)]),
            (256, &[(1, 0, 1)]),
            (257, &[(0, 1, 1), (1, 0, 1)]),
            (65_536, &[(2, 0, 1)]),
            (65_537, &[(0, 256, 1), (2, 0, 1)]),
            (70_000, &[(0, 273, 112), (1, 1, 17), (2, 0, 1)]),
        ];
        for (size, want) in rows {
            let want: Vec<TileId> = want
                .iter()
                .map(|&(l, i, w)| TileId::new(l, i, w).unwrap())
                .collect();
            assert_eq!(tiles_for_root(*size), want, "size {size}");
        }
    }

    #[test]
    fn a_proof_reads_one_tile_per_level_it_crosses() {
        // Entry 5 of 70,000: its level-0 tile, the level-1 tile above it and the right edge.
        let t = |l, i, w| TileId::new(l, i, w).unwrap();
        assert_eq!(
            tiles_for_inclusion(5, 70_000),
            vec![t(0, 0, 256), t(0, 273, 112), t(1, 0, 256), t(1, 1, 17)]
        );
        assert_eq!(tiles_for_inclusion(0, 1), vec![]);
        assert_eq!(tiles_for_consistency(0, 70_000), vec![]);
        assert_eq!(tiles_for_consistency(70_000, 70_000), vec![]);
    }

    #[test]
    fn every_tile_of_a_tree() {
        let all: Vec<TileId> = tiles_of(70_000).collect();
        assert_eq!(all.len(), 274 + 2 + 1);
        assert_eq!(all.iter().filter(|t| t.is_full()).count(), 274);
        assert_eq!(bundles_of(70_000).count(), 274);
        assert_eq!(tiles_of(0).count(), 0);
        assert_eq!(
            tiles_of(256).collect::<Vec<_>>(),
            vec![
                TileId::new(0, 0, 256).unwrap(),
                TileId::new(1, 0, 1).unwrap()
            ]
        );
    }
}
