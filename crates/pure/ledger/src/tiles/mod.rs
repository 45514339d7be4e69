//! The ledger's tree as a C2SP tlog-tiles log (<https://c2sp.org/tlog-tiles>): the objects an
//! integrator writes to object storage (`checkpoint`, `tile/<L>/<N>`, `tile/entries/<N>`),
//! and everything computed from them: integrating a batch of sequenced entries, tree roots,
//! inclusion and consistency proofs, and the audit that an auditor runs from the bucket and
//! the ledger's public key alone.
//!
//! Pure, like the rest of this crate: it never reads a bucket itself. Every object comes in
//! through a [`TileReader`] that the I/O layer implements over object storage (a GET of the
//! path under the log's prefix), and every object to write goes out as a value
//! ([`Integration::objects`]). Nothing here reads the clock; a checkpoint's time is given.
//!
//! Tile height is 8: a full tile holds 256 hashes, and a level-`L` tile holds hashes of
//! subtrees of `256^L` entries. A closed segment of the local log (2^16 entries, aligned) is
//! exactly one full level-1 tile, whose root is the segment's root.
//!
//! **Why not a crate.** `tlog_tiles` 0.2.0 (Cloudflare's azul project, BSD-3-Clause, the only
//! version the registry offers here) ports Go's `sumdb/tlog`: its paths are the sumdb form
//! `tile/<H>/<L>/<N>` with the height in the path and `tile/<H>/data/<N>` record tiles, not
//! tlog-tiles' `tile/<L>/<N>` and `tile/entries/<N>`, it has no entry bundles, it panics on
//! bad coordinates, and it brings a second `sha2` (0.10), `base64` (0.21) and `thiserror` (1).
//! Its tile arithmetic at height 8 is the same as tlog-tiles', though, so it is this module's
//! independent cross-check in the tests (`tests/tiles.rs`: the tiles an integration writes,
//! their paths, and proofs through its tile reader, which authenticates every tile it reads).
//! `sigsum` 0.3 speaks the Sigsum protocol and has no tiles; `siglog` 0.1 is a whole server
//! (tokio, axum, an ORM), nothing a pure crate can hold. The Merkle proofs themselves are this
//! crate's [`crate::merkle`] code, given tiles through its [`Subtrees`] trait.
//!
//! **Entry length.** A bundle entry is at most 65,535 bytes (a `u16` length), while the local
//! log takes records up to 1 MiB. Records are small (the release fixture's ledger: 281
//! records, median 523 bytes, largest 801); the ones that can grow list things: `seal`,
//! `remove` and `shred` name every file, and a `policy-reload` names every decision it
//! withdrew, which passes 65,535 bytes at 3,259 withdrawals of 7-digit indices
//! (`tests/tiles.rs`). An entry over 65,535 bytes is refused by [`integrate`] with
//! [`TileError::EntryTooLong`] — never truncated, split or put elsewhere — and every ledger
//! refuses such a record at append time, before it is sequenced
//! ([`crate::record::Record::entry`]): the append fails and the action waiting on it is
//! refused (fail closed). A record that can list thousands of things is split by its writer
//! ([`crate::record::Record::policy_reload_parts`]).
//!
//! [`Subtrees`]: crate::merkle::Subtrees

mod audit;
mod encoding;
mod integrate;
mod path;
mod tree;

pub use audit::{audit, prove_consistency, prove_inclusion, verify_checkpoint, AuditReport};
pub use encoding::{
    decode_bundle, decode_tile, encode_bundle, encode_tile, EncodingError, MAX_ENTRY_LEN,
};
pub use integrate::{integrate, integration_reads, Integration, TlogObject};
pub use path::{BundleId, PathError, TileId, TlogPath, MAX_LEVEL, TILE_WIDTH};
pub use tree::{
    bundles_of, consistency_proof, inclusion_proof, read_entry, tiles_for_consistency,
    tiles_for_inclusion, tiles_for_root, tiles_of, tree_root,
};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::merkle::Hash;
use std::collections::BTreeMap;

/// Why a [`TileReader`] could not read an object: the storage's own error.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Where a tiled log's objects are read from: object storage in production (a GET of
/// `<prefix>/<path>`), a [`TileSet`] in memory for tests or a prefetched set.
pub trait TileReader {
    /// The bytes of the object at `path`, or `None` if there is none (a 404).
    fn read(&self, path: TlogPath) -> Result<Option<Vec<u8>>, ReadError>;
}

impl<R: TileReader + ?Sized> TileReader for &R {
    fn read(&self, path: TlogPath) -> Result<Option<Vec<u8>>, ReadError> {
        (**self).read(path)
    }
}

/// A tree size and its root: what a checkpoint signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root.
    pub root: Hash,
}

impl TreeHead {
    /// The empty tree.
    pub fn empty() -> Self {
        Self {
            size: 0,
            root: crate::merkle::empty_root(),
        }
    }
}

impl From<&Checkpoint> for TreeHead {
    fn from(cp: &Checkpoint) -> Self {
        Self {
            size: cp.size,
            root: cp.root,
        }
    }
}

/// Why tiles could not be read, integrated, proved from or audited. Every variant names the
/// object concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// The reader failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The object.
        path: TlogPath,
        /// The storage's error.
        source: ReadError,
    },
    /// An object the tree needs is not there.
    #[error("{path} is missing: the tree of {size} entries needs it (deleted, or never written)")]
    Missing {
        /// The object.
        path: TlogPath,
        /// The tree size that needs it.
        size: u64,
    },
    /// An object's bytes are not a tile or bundle of its width.
    #[error("{path} is malformed: {source}")]
    Encoding {
        /// The object.
        path: TlogPath,
        /// What is wrong.
        source: EncodingError,
    },
    /// A full tile does not hash to its hash in the tile above.
    #[error(
        "{tile} does not hash to hash {position} of {parent}: one of them was altered or replaced"
    )]
    TileAltered {
        /// The full tile.
        tile: TlogPath,
        /// The tile above it.
        parent: TlogPath,
        /// Where its root should be in the tile above.
        position: u64,
    },
    /// An entry of a bundle does not hash to its leaf hash in the level-0 tile.
    #[error("entry {index} in {bundle} does not hash to its leaf in {tile}: the bundle or the tile was altered")]
    EntryAltered {
        /// The ledger index of the entry.
        index: u64,
        /// The bundle.
        bundle: TlogPath,
        /// The level-0 tile.
        tile: TlogPath,
    },
    /// The tiles do not give the tree's root.
    #[error("the tiles of the tree of {size} entries give root {got}, not the checkpoint's {want}: a tile at the right edge was altered or replaced")]
    RootMismatch {
        /// Tree size.
        size: u64,
        /// Root from the tiles, hex.
        got: String,
        /// Root expected, hex.
        want: String,
    },
    /// An entry too long for an entry bundle.
    #[error(
        "ledger entry {index} is {len} bytes; a tiled ledger holds entries of at most 65,535 bytes"
    )]
    EntryTooLong {
        /// Its ledger index.
        index: u64,
        /// Its length.
        len: usize,
    },
    /// An entry index at or past the tree size.
    #[error("entry {index} is not in the tree of {size} entries")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof asked from a larger tree to a smaller.
    #[error("a tree of {old} entries is not a prefix of one of {size}")]
    SizeOrder {
        /// The older size.
        old: u64,
        /// The newer size.
        size: u64,
    },
    /// More entries than a tree can hold.
    #[error("{size} entries and {more} more exceed 2^64 − 1")]
    TooManyEntries {
        /// The tree size.
        size: u64,
        /// Entries added.
        more: usize,
    },
    /// The checkpoint note does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// An entry is not UTF-8, so it is not a record.
    #[error("entry {0} is not UTF-8, so it is not a ledger record")]
    NotUtf8(u64),
    /// An entry refused by the auditor's own check (a record that does not parse).
    #[error("entry {index}: {reason}")]
    EntryRejected {
        /// Its ledger index.
        index: u64,
        /// Why, in the auditor's words.
        reason: String,
    },
    /// A proof made from the tiles does not verify against the checkpoint.
    #[error("proof from the tiles does not verify: {0}")]
    Proof(#[from] crate::proof::ProofError),
}

/// Objects in memory, by path: a bucket for tests, or objects an integrator prefetched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TileSet {
    objects: BTreeMap<TlogPath, Vec<u8>>,
}

impl TileSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an object, replacing any at its path; returns the one replaced.
    pub fn insert(&mut self, path: TlogPath, bytes: Vec<u8>) -> Option<Vec<u8>> {
        self.objects.insert(path, bytes)
    }

    /// Takes an object out.
    pub fn remove(&mut self, path: &TlogPath) -> Option<Vec<u8>> {
        self.objects.remove(path)
    }

    /// The object at `path`.
    pub fn get(&self, path: &TlogPath) -> Option<&[u8]> {
        self.objects.get(path).map(Vec::as_slice)
    }

    /// A mutable view of the object at `path` (to tamper with, in tests).
    pub fn get_mut(&mut self, path: &TlogPath) -> Option<&mut Vec<u8>> {
        self.objects.get_mut(path)
    }

    /// Every path, in order.
    pub fn paths(&self) -> impl Iterator<Item = &TlogPath> {
        self.objects.keys()
    }

    /// Writes an integration's objects as a bucket would: a full (immutable) object is
    /// created once, and one already there must hold the same bytes (a retry); partial ones
    /// are replaced. Returns how many immutable objects were already there, or the path of one
    /// already there with other bytes, which is a fork: nothing more is written, and a real
    /// integrator stops there too and raises the alarm.
    pub fn apply(&mut self, integration: &Integration) -> Result<usize, TlogPath> {
        let objects = integration.objects();
        if let Some(o) = objects.iter().find(|o| {
            o.path.is_immutable() && self.objects.get(&o.path).is_some_and(|b| *b != o.bytes)
        }) {
            return Err(o.path);
        }
        let mut existing = 0;
        for o in objects {
            if o.path.is_immutable() && self.objects.contains_key(&o.path) {
                existing += 1;
            } else {
                self.objects.insert(o.path, o.bytes);
            }
        }
        Ok(existing)
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

impl TileReader for TileSet {
    fn read(&self, path: TlogPath) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.objects.get(&path).cloned())
    }
}
