//! What tiles and entry bundles hold, byte for byte (C2SP tlog-tiles): a tile is its hashes
//! back to back (32 bytes each, 8,192 bytes when full); an entry bundle is its entries back to
//! back, each a big-endian `u16` length then that many bytes.
//!
//! Decoding is strict, because the bytes come from a bucket an auditor does not trust: a tile
//! of the wrong length, a bundle that ends inside an entry, holds more or fewer entries than
//! its path says, or has bytes after its last entry, is refused, never read in part.

use super::path::TILE_WIDTH;
use crate::merkle::Hash;

/// The longest entry an entry bundle can hold: its length is a `u16`.
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Why an entry bundle or a tile's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    /// An entry longer than [`MAX_ENTRY_LEN`]: it cannot be put in a bundle.
    #[error("entry {entry} of the bundle is {len} bytes; a bundle entry is at most 65,535 bytes")]
    EntryTooLong {
        /// Its position in the bundle.
        entry: usize,
        /// Its length.
        len: usize,
    },
    /// More than 256 entries for one bundle.
    #[error("{0} entries do not fit in one bundle of at most 256")]
    TooManyEntries(usize),
    /// The bytes end inside an entry's length.
    #[error("entry bundle is truncated: it ends inside the length of entry {0}")]
    TruncatedLength(usize),
    /// The bytes end inside an entry.
    #[error("entry bundle is truncated: entry {entry} says {len} bytes but {left} remain")]
    TruncatedEntry {
        /// Its position in the bundle.
        entry: usize,
        /// The length it gives.
        len: usize,
        /// The bytes left.
        left: usize,
    },
    /// Fewer entries than the bundle's width.
    #[error("entry bundle holds {got} entries where its path says {want}")]
    TooFewEntries {
        /// Its width.
        want: u64,
        /// Entries found.
        got: usize,
    },
    /// Bytes after the bundle's last entry.
    #[error(
        "entry bundle has {0} bytes after its last entry (more entries than its width, or garbage)"
    )]
    Trailing(usize),
    /// A tile whose length is not 32 bytes times its width.
    #[error("tile is {got} bytes where its width says {want}")]
    TileLength {
        /// 32 times its width.
        want: u64,
        /// Its length.
        got: usize,
    },
}

/// The bytes of an entry bundle of `entries` (1 to 256 of them, each at most 65,535 bytes).
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, EncodingError> {
    if entries.len() as u64 > TILE_WIDTH {
        return Err(EncodingError::TooManyEntries(entries.len()));
    }
    let total: usize = entries.iter().map(|e| 2 + e.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for (entry, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| EncodingError::EntryTooLong {
            entry,
            len: e.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// The `width` entries of an entry bundle, borrowed from its bytes.
pub fn decode_bundle(bytes: &[u8], width: u64) -> Result<Vec<&[u8]>, EncodingError> {
    let mut out = Vec::with_capacity(width.min(TILE_WIDTH) as usize);
    let mut rest = bytes;
    while (out.len() as u64) < width {
        if rest.is_empty() {
            return Err(EncodingError::TooFewEntries {
                want: width,
                got: out.len(),
            });
        }
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return Err(EncodingError::TruncatedLength(out.len()));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(EncodingError::TruncatedEntry {
                entry: out.len(),
                len,
                left: tail.len(),
            });
        }
        let (entry, tail) = tail.split_at(len);
        out.push(entry);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(EncodingError::Trailing(rest.len()));
    }
    Ok(out)
}

/// The bytes of a tile of `hashes`.
pub fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// The hashes of a tile of `width` from its bytes.
pub fn decode_tile(bytes: &[u8], width: u64) -> Result<Vec<Hash>, EncodingError> {
    if bytes.len() as u64 != 32 * width {
        return Err(EncodingError::TileLength {
            want: 32 * width,
            got: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bundle_bytes() {
        let b = encode_bundle(&[&b"ab"[..], b"", b"xyz"]).unwrap();
        assert_eq!(b, b"\x00\x02ab\x00\x00\x00\x03xyz");
        assert_eq!(decode_bundle(&b, 3).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
        let long = vec![7u8; MAX_ENTRY_LEN];
        let b = encode_bundle(&[&long]).unwrap();
        assert_eq!(&b[..2], b"\xff\xff");
        assert_eq!(decode_bundle(&b, 1).unwrap(), vec![&long[..]]);
    }

    #[test]
    fn bad_bundles_are_refused() {
        let good = b"\x00\x02ab\x00\x00\x00\x03xyz";
        let rows: &[(&[u8], u64, EncodingError)] = &[
            (b"", 1, EncodingError::TooFewEntries { want: 1, got: 0 }),
            (&good[..], 2, EncodingError::Trailing(5)),
            (
                &good[..],
                4,
                EncodingError::TooFewEntries { want: 4, got: 3 },
            ),
            (&good[..1], 1, EncodingError::TruncatedLength(0)),
            (
                &good[..3],
                1,
                EncodingError::TruncatedEntry {
                    entry: 0,
                    len: 2,
                    left: 1,
                },
            ),
            (
                &good[..8],
                3,
                EncodingError::TruncatedEntry {
                    entry: 2,
                    len: 3,
                    left: 0,
                },
            ),
            (
                &good[..10],
                3,
                EncodingError::TruncatedEntry {
                    entry: 2,
                    len: 3,
                    left: 2,
                },
            ),
            (&good[..7], 3, EncodingError::TruncatedLength(2)),
            (b"\x00\x02ab\x00", 2, EncodingError::TruncatedLength(1)),
            (b"\x00\x02abc", 1, EncodingError::Trailing(1)),
            (
                b"\xff\xff",
                1,
                EncodingError::TruncatedEntry {
                    entry: 0,
                    len: 65_535,
                    left: 0,
                },
            ),
        ];
        for (bytes, width, want) in rows {
            assert_eq!(
                decode_bundle(bytes, *width).as_ref(),
                Err(want),
                "{bytes:?}/{width}"
            );
        }
        let long = vec![0u8; MAX_ENTRY_LEN + 1];
        assert_eq!(
            encode_bundle(&[&b"a"[..], &long]),
            Err(EncodingError::EntryTooLong {
                entry: 1,
                len: 65_536
            })
        );
        assert_eq!(
            encode_bundle(&vec![b"a"; 257]),
            Err(EncodingError::TooManyEntries(257))
        );
    }

    #[test]
    fn tile_bytes() {
        let hs = [[1u8; 32], [2u8; 32]];
        let b = encode_tile(&hs);
        assert_eq!(b.len(), 64);
        assert_eq!(decode_tile(&b, 2).unwrap(), hs);
        for (len, width) in [(63, 2), (65, 2), (64, 1), (64, 3), (0, 1)] {
            assert_eq!(
                decode_tile(&vec![0; len], width),
                Err(EncodingError::TileLength {
                    want: 32 * width,
                    got: len
                })
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn bundles_round_trip(entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..=256)) {
            let b = encode_bundle(&entries).unwrap();
            let back = decode_bundle(&b, entries.len() as u64).unwrap();
            prop_assert_eq!(back, entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }

        /// Whatever the bytes, decoding either refuses them or gives entries that encode back
        /// to exactly those bytes (one encoding per bundle).
        #[test]
        fn arbitrary_bytes_decode_canonically_or_not_at_all(bytes in prop::collection::vec(any::<u8>(), 0..64), width in 1..=4u64) {
            if let Ok(entries) = decode_bundle(&bytes, width) {
                prop_assert_eq!(encode_bundle(&entries).unwrap(), bytes);
            }
        }
    }
}
