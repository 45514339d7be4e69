//! A ledger segment file as the log reads it back from disk: `frames::scan`, which splits it
//! into `u32 length || entry || leaf hash` frames and tells a torn tail from alteration.

use crate::mode;
use crate::mutate::mutate;
use arbitrary::{Arbitrary, Unstructured};
use weightvault_ledger::frames::{self, Damaged, Frames};
use weightvault_ledger::merkle::leaf_hash;

/// What holds for any bytes: both scans agree, the valid frames are exactly the bytes before
/// `end` (re-encoding them gives those bytes back), and what is left after `end` holds no
/// frame.
fn check_scan(b: &[u8]) -> Option<Frames> {
    let checked = frames::scan(b, true);
    let unchecked = frames::scan(b, false);
    match (&checked, &unchecked) {
        (Ok(c), Ok(u)) => {
            // Without `check` only a last frame's bad hash reads differently: as one more frame.
            assert!(
                u.frames.len() - c.frames.len() <= 1,
                "scans differ by more than a frame"
            );
            assert_eq!(
                c.frames[..],
                u.frames[..c.frames.len()],
                "checked frames are a prefix"
            );
            if u.frames.len() > c.frames.len() {
                assert_eq!(u.end, b.len(), "the extra unchecked frame is the last one");
            }
        }
        (Err(e), Ok(u)) => {
            // A bad hash inside: the unchecked scan reads past it.
            assert!(
                u.frames.len() > e.index,
                "a checked error past the unchecked frames"
            );
        }
        (Ok(_), Err(e)) => panic!("only the unchecked scan failed: {e}"),
        (Err(c), Err(u)) => assert!(c.index <= u.index, "the checked scan failed later"),
    }
    for s in [&checked, &unchecked].into_iter().flatten() {
        assert!(s.end <= b.len());
        let mut again = Vec::with_capacity(s.end);
        for f in &s.frames {
            assert_eq!(f.entry.start, again.len() + 4, "frames are contiguous");
            let entry = &b[f.entry.clone()];
            again.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            again.extend_from_slice(entry);
            again.extend_from_slice(&f.leaf);
        }
        assert_eq!(
            again,
            b[..s.end],
            "the frames re-encode to the valid prefix"
        );
        assert_eq!(
            frames::scan(&b[s.end..], true).map(|t| t.frames.len()),
            Ok(0),
            "the torn tail holds no frame"
        );
    }
    if let Ok(c) = &checked {
        let mut again = Vec::new();
        for f in &c.frames {
            assert_eq!(frames::encode(&mut again, &b[f.entry.clone()]), f.leaf);
        }
        assert_eq!(
            again,
            b[..c.end],
            "the checked frames encode to the valid prefix"
        );
    }
    checked.ok()
}

/// One entry: bytes, or a run of one byte (long entries without long inputs).
#[derive(Debug, Arbitrary)]
enum ArbEntry {
    Bytes(Vec<u8>),
    Run(u8, u16),
}

/// A segment of arbitrary entries, a cut, and a one-byte change inside a frame.
#[derive(Debug, Arbitrary)]
struct ArbSegment {
    entries: Vec<ArbEntry>,
    cut: u32,
    flip_frame: u16,
    flip_at: u32,
    flip: u8,
}

/// Mode byte 0: the raw bytes as a segment file. 1 and up: arbitrary entries encoded as
/// frames, which scan back as written; then cut anywhere (never an error: whole frames before
/// the cut, the rest a torn tail); then one byte of one frame's entry or hash changed (an
/// error naming that frame when more frames follow it, a torn tail when it is the last);
/// then mutated (flips, cuts, inserts, boundary lengths), which must scan consistently.
pub fn ledger_frames(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m == 0 {
        check_scan(rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbSegment::arbitrary(&mut u) else {
        return;
    };
    let entries: Vec<Vec<u8>> = a
        .entries
        .into_iter()
        .take(64)
        .map(|e| match e {
            ArbEntry::Bytes(b) => b,
            ArbEntry::Run(b, n) => vec![b; usize::from(n)],
        })
        .collect();
    let mut seg = Vec::new();
    let mut starts = vec![0];
    for e in &entries {
        assert_eq!(frames::encode(&mut seg, e), leaf_hash(e));
        starts.push(seg.len());
    }
    let s = check_scan(&seg).expect("a written segment scans");
    assert_eq!(s.end, seg.len());
    let got: Vec<&[u8]> = s.frames.iter().map(|f| &seg[f.entry.clone()]).collect();
    assert_eq!(got, entries, "frames read back as written");

    // A cut anywhere is a torn tail, never an error.
    let cut = a.cut as usize % (seg.len() + 1);
    let s = check_scan(&seg[..cut]).expect("a cut segment is a torn tail, not an error");
    let whole = starts.iter().filter(|&&e| e <= cut).count() - 1;
    assert_eq!(s.frames.len(), whole, "whole frames before the cut");
    assert_eq!(s.end, starts[whole]);

    // One changed byte of a frame's entry or hash.
    if !entries.is_empty() && a.flip != 0 {
        let k = usize::from(a.flip_frame) % entries.len();
        let body = starts[k + 1] - starts[k] - 4;
        let at = starts[k] + 4 + a.flip_at as usize % body;
        let mut x = seg.clone();
        x[at] ^= a.flip;
        let got = frames::scan(&x, true).map(|s| (s.frames.len(), s.end));
        let want = if k + 1 == entries.len() {
            Ok((k, starts[k])) // the last frame: torn
        } else {
            Err(Damaged {
                index: k,
                offset: starts[k],
            })
        };
        assert_eq!(got, want, "one byte changed in frame {k} at {at}");
        check_scan(&x);
    }

    let mut x = seg;
    mutate(&mut u, &mut x);
    check_scan(&x);
}
