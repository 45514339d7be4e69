//! The frames of a ledger segment file: `u32 BE length || entry || SHA-256 leaf hash of entry`
//! (the RFC 6962 leaf hash doubles as the frame's checksum), one after another.
//!
//! [`scan`] reads a segment's bytes into frames and tells a torn tail (an incomplete or
//! mismatching final frame: a crash mid-append, which the log discards) from alteration (a
//! bad frame with more data after it: an error). It never does I/O; the log that writes and
//! reads segment files is an adapter above this crate (`weightvault::ledger::log`).

use crate::merkle::{leaf_hash, Hash};
use std::ops::Range;

/// Largest entry a frame may hold (1 MiB).
pub const MAX_ENTRY: usize = 1 << 20;

/// Bytes a frame adds around its entry: the length field and the leaf hash.
pub const FRAME_OVERHEAD: usize = 4 + 32;

/// One valid frame: where its entry is in the segment's bytes, and its leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Byte range of the entry.
    pub entry: Range<usize>,
    /// Leaf hash of the entry (as stored; recomputed and compared when scanning with `check`).
    pub leaf: Hash,
}

/// The valid frames of a segment, and where they end: bytes after `end` are a torn final
/// write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    /// Every valid frame, in order.
    pub frames: Vec<Frame>,
    /// Byte offset just after the last valid frame.
    pub end: usize,
}

/// A frame inside a segment (not at its end) is damaged: the segment was altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} of the segment, at byte {offset}, is damaged — the segment was altered")]
pub struct Damaged {
    /// Index of the damaged frame within the segment.
    pub index: usize,
    /// Byte offset of its length field.
    pub offset: usize,
}

/// Reads the frames of a segment's bytes. A bad frame followed by more data is alteration
/// ([`Damaged`]); an incomplete final frame, a length field torn mid-write, or a final frame
/// whose hash does not match is a torn tail, left after [`Frames::end`]. With `check` every
/// leaf hash is recomputed; without it the stored hashes are taken as they are (for proofs,
/// which a verifier checks against a signed root anyway).
pub fn scan(bytes: &[u8], check: bool) -> Result<Frames, Damaged> {
    let n = bytes.len();
    let mut frames = Vec::new();
    let mut off = 0usize;
    while n - off >= 4 {
        let len = u32::from_be_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
        // At most 4 + 2^32 - 1 + 32 past `off`: no overflow on a 64-bit target, and on a
        // 32-bit one `saturating_add` keeps a huge length a torn tail or an alteration.
        let end = off.saturating_add(FRAME_OVERHEAD).saturating_add(len);
        if len > MAX_ENTRY || end > n {
            // An incomplete final frame (or a length field torn mid-write) is a torn tail,
            // unless a plausible frame continues after it, which means alteration.
            if len > MAX_ENTRY && end <= n {
                return Err(Damaged {
                    index: frames.len(),
                    offset: off,
                });
            }
            break;
        }
        let entry = off + 4..off + 4 + len;
        let stored: Hash = bytes[off + 4 + len..end].try_into().expect("32");
        let leaf = if check {
            leaf_hash(&bytes[entry.clone()])
        } else {
            stored
        };
        if leaf != stored {
            if end == n {
                break; // the last frame was torn: its bytes are not all there
            }
            return Err(Damaged {
                index: frames.len(),
                offset: off,
            });
        }
        frames.push(Frame { entry, leaf });
        off = end;
    }
    Ok(Frames { frames, end: off })
}

/// Appends the frame of `entry` to `out` and returns its leaf hash. The caller refuses an
/// entry longer than [`MAX_ENTRY`] first (a longer one would not read back).
pub fn encode(out: &mut Vec<u8>, entry: &[u8]) -> Hash {
    debug_assert!(entry.len() <= MAX_ENTRY, "entry longer than MAX_ENTRY");
    let h = leaf_hash(entry);
    out.reserve(FRAME_OVERHEAD + entry.len());
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(entry);
    out.extend_from_slice(&h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(entries: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for e in entries {
            encode(&mut b, e);
        }
        b
    }

    const ENTRIES: [&[u8]; 3] = [b"first", b"", b"third entry"];

    #[test]
    fn frames_read_back_as_written() {
        let b = segment(&ENTRIES);
        for check in [false, true] {
            let s = scan(&b, check).unwrap();
            assert_eq!(s.end, b.len());
            let got: Vec<&[u8]> = s.frames.iter().map(|f| &b[f.entry.clone()]).collect();
            assert_eq!(got, ENTRIES);
            for (f, e) in s.frames.iter().zip(ENTRIES) {
                assert_eq!(f.leaf, leaf_hash(e));
            }
        }
        assert_eq!(
            scan(&[], true).unwrap(),
            Frames {
                frames: vec![],
                end: 0
            }
        );
    }

    #[test]
    fn a_cut_anywhere_is_a_torn_tail_after_the_whole_frames() {
        let b = segment(&ENTRIES);
        let ends = [0, 41, 77, 124];
        assert_eq!(*ends.last().unwrap(), b.len());
        for cut in 0..=b.len() {
            let s = scan(&b[..cut], true).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
            assert_eq!(s.frames.len(), whole, "cut at {cut}");
            assert_eq!(s.end, ends[whole], "cut at {cut}");
        }
    }

    /// One row per change: the bytes changed, and what a checking scan must say.
    #[test]
    fn alteration_inside_is_an_error_and_at_the_end_a_torn_tail() {
        let b = segment(&ENTRIES);
        type Change = fn(&mut Vec<u8>);
        type Want = Result<(usize, usize), Damaged>;
        let rows: [(&str, Change, Want); 6] = [
            (
                "first entry's byte",
                |b| b[4] ^= 1,
                Err(Damaged {
                    index: 0,
                    offset: 0,
                }),
            ),
            (
                "second frame's hash",
                |b| b[50] ^= 1,
                Err(Damaged {
                    index: 1,
                    offset: 41,
                }),
            ),
            ("last entry's byte", |b| b[81] ^= 1, Ok((2, 77))),
            (
                "last frame's hash",
                |b| *b.last_mut().unwrap() ^= 1,
                Ok((2, 77)),
            ),
            (
                "first length past MAX_ENTRY, more data after",
                |b| {
                    let mut big = vec![0u8; 4 + MAX_ENTRY + 1 + 32];
                    big[..4].copy_from_slice(&(MAX_ENTRY as u32 + 1).to_be_bytes());
                    *b = big;
                },
                Err(Damaged {
                    index: 0,
                    offset: 0,
                }),
            ),
            (
                "length field torn: past the end",
                |b| b[77..81].copy_from_slice(&u32::MAX.to_be_bytes()),
                Ok((2, 77)),
            ),
        ];
        for (what, change, want) in rows {
            let mut x = b.clone();
            change(&mut x);
            let got = scan(&x, true).map(|s| (s.frames.len(), s.end));
            assert_eq!(got, want, "{what}");
        }
        // Without `check` a bad entry byte is not seen: the stored hashes are taken.
        let mut x = b.clone();
        x[4] ^= 1;
        assert_eq!(scan(&x, false).unwrap().end, b.len());
    }
}
