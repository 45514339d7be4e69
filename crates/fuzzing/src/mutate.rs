//! Mutations of a valid encoding, driven by the rest of a fuzz input: what a structured target
//! does to the bytes the real encoder wrote before it parses them again.

use arbitrary::{Arbitrary, Unstructured};

/// One change to a byte string. Positions are taken modulo its length.
#[derive(Debug, Arbitrary)]
enum Mutation {
    /// XOR one byte.
    Flip(u32, u8),
    /// Cut the string at a position.
    Truncate(u32),
    /// Insert bytes at a position.
    Insert(u32, Vec<u8>),
    /// Overwrite 4 bytes with a big-endian value chosen to sit on a boundary.
    Word(u32, Edge),
    /// Overwrite 8 bytes likewise.
    Long(u32, Edge),
    /// Remove a range.
    Remove(u32, u16),
}

/// A value on a boundary, where length checks go wrong.
#[derive(Debug, Arbitrary)]
enum Edge {
    Zero,
    One,
    Max,
    Half,
    Len,
    LenPlus(u8),
    LenMinus(u8),
    Any(u64),
}

impl Edge {
    fn value(&self, len: usize, max: u64) -> u64 {
        let len = len as u64;
        match self {
            Edge::Zero => 0,
            Edge::One => 1,
            Edge::Max => max,
            Edge::Half => max / 2 + 1,
            Edge::Len => len,
            Edge::LenPlus(n) => len.wrapping_add(u64::from(*n)),
            Edge::LenMinus(n) => len.wrapping_sub(u64::from(*n)),
            Edge::Any(v) => *v,
        }
    }
}

/// Applies up to 8 mutations read from `u` to `b`.
pub(crate) fn mutate(u: &mut Unstructured<'_>, b: &mut Vec<u8>) {
    for _ in 0..8 {
        let Ok(m) = Mutation::arbitrary(u) else {
            return;
        };
        let at = |p: u32, len: usize| if len == 0 { 0 } else { p as usize % len };
        match m {
            Mutation::Flip(p, x) => {
                if !b.is_empty() {
                    let i = at(p, b.len());
                    b[i] ^= x;
                }
            }
            Mutation::Truncate(p) => {
                let i = at(p, b.len() + 1);
                b.truncate(i);
            }
            Mutation::Insert(p, bytes) => {
                let i = at(p, b.len() + 1);
                b.splice(i..i, bytes);
            }
            Mutation::Word(p, e) => {
                if b.len() >= 4 {
                    let i = at(p, b.len() - 3);
                    let v = e.value(b.len(), u64::from(u32::MAX)) as u32;
                    b[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            Mutation::Long(p, e) => {
                if b.len() >= 8 {
                    let i = at(p, b.len() - 7);
                    let v = e.value(b.len(), u64::MAX);
                    b[i..i + 8].copy_from_slice(&v.to_be_bytes());
                }
            }
            Mutation::Remove(p, n) => {
                let i = at(p, b.len() + 1);
                let end = (i + usize::from(n)).min(b.len());
                b.drain(i..end);
            }
        }
    }
}

/// A string of at most `max` bytes, cut at a character boundary.
pub(crate) fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    s
}
