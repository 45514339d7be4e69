//! The ledger's tree as a C2SP tlog-tiles log (<https://c2sp.org/tlog-tiles>): the objects an
//! integrator writes to object storage (`checkpoint`, `tile/<L>/<N>`, `tile/entries/<N>`),
//! their paths and their bytes.
//!
//! Pure, like the rest of this crate: it reads and writes no bucket itself.
//!
//! Tile height is 8: a full tile holds 256 hashes, and a level-`L` tile holds hashes of
//! subtrees of `256^L` entries. A closed segment of the local log (2^16 entries, aligned) is
//! exactly one full level-1 tile, whose root is the segment's root.
//!
//! **Entry length.** A bundle entry is at most 65,535 bytes (a `u16` length), while the local
//! log takes records up to 1 MiB. Records are small (in the release fixture's ledger, 281
//! records: median 523 bytes, largest 801); the ones that can grow list things (`seal`, `remove` and `shred` name every file, `policy-reload` every withdrawn
//! decision). An entry over 65,535 bytes is refused by [`encode_bundle`] — never truncated
//! or split.

mod encoding;
mod path;

pub use encoding::{
    decode_bundle, decode_tile, encode_bundle, encode_tile, EncodingError, MAX_ENTRY_LEN,
};
pub use path::{BundleId, PathError, TileId, TlogPath, MAX_LEVEL, TILE_WIDTH};
