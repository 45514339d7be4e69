//! The keyed carrier of every weight. The elements of tensor `T` are taken in groups of
//! [`GROUP`] (32) consecutive elements; group `g` gets 8 bytes of the AES-256-CTR keystream
//! under `HKDF-SHA256(watermark key, info = "weightvault watermark carrier v1" || T)`, bytes
//! `8g .. 8g + 8` (block `g / 2`): the first little-endian u32 `a` picks the group's segment,
//! `⌊a · S / 2^32⌋` of `S`, and bit `j` of the second is the carrier sign of element `32g + j`
//! (1 for +1). Any element range is computed on its own (random access), so chunks, parts and
//! resumed ranges agree bit for bit.
//!
//! Why groups: a keystream word per element made the AES keystream twice the size of a BF16
//! tensor and the segment look-up per element the bulk of the embedding cost; a group costs a
//! quarter byte of keystream per element and one look-up per 32 elements. A segment is still
//! spread at random over every tensor (its groups are), and the signs stay per element.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::iv::FixedLength;
use weightvault_core::keys::SymmetricKey;

/// The carrier stream of one tensor.
pub struct Carrier {
    key: EncryptingKey,
}

impl Carrier {
    /// The carrier of tensor `tensor` under the watermark key.
    pub fn new(wm_key: &SymmetricKey, tensor: &str) -> Self {
        let mut info = b"weightvault watermark carrier v1".to_vec();
        info.extend_from_slice(tensor.as_bytes());
        Self::stream(wm_key, &info)
    }

    /// A keystream of 32-bit words for another purpose (`info` names it; see `tardos`).
    pub fn stream(wm_key: &SymmetricKey, info: &[u8]) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, wm_key.expose());
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        hk.expand(info, k.as_mut()).expect("32 bytes");
        let key =
            EncryptingKey::ctr(UnboundCipherKey::new(&AES_256, k.as_ref()).expect("AES-256 key"))
                .expect("CTR");
        Self { key }
    }

    /// Keystream words `first .. first + out.len()` (for other purposes than the carrier).
    pub fn words(&self, first: u64, out: &mut [u32]) {
        let mut ks = Vec::new();
        let bytes = self.keystream(first * 4, out.len() * 4, &mut ks);
        for (w, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes(b.try_into().expect("4"));
        }
    }

    /// Calls `f(k0, group)` for the groups that cover elements `first .. first + n`, where
    /// `k0` is the index (relative to `first`) of the group's first element (negative when the
    /// group starts before `first`). `scratch` is reused between calls.
    pub(crate) fn for_groups(
        &self,
        first: u64,
        n: usize,
        segments: u32,
        scratch: &mut Vec<u8>,
        mut f: impl FnMut(i64, Group),
    ) {
        if n == 0 {
            return;
        }
        let g0 = first / GROUP as u64;
        let g1 = (first + n as u64).div_ceil(GROUP as u64);
        let bytes = self.keystream(8 * g0, 8 * (g1 - g0) as usize, scratch);
        for (i, b) in bytes.chunks_exact(8).enumerate() {
            let a = u32::from_le_bytes(b[..4].try_into().expect("4"));
            let signs = u32::from_le_bytes(b[4..].try_into().expect("4"));
            let segment = ((u64::from(a) * u64::from(segments)) >> 32) as u32;
            let k0 = ((g0 + i as u64) * GROUP as u64) as i64 - first as i64;
            f(k0, Group { segment, signs });
        }
    }

    /// The carrier sign (`true` for +1) and segment of elements `first .. first + n`, in
    /// `signs` and `segs` (each of length `n`).
    pub fn signs_and_segments(
        &self,
        first: u64,
        segments: u32,
        signs: &mut [bool],
        segs: &mut [u32],
        scratch: &mut Vec<u8>,
    ) {
        let n = signs.len();
        assert_eq!(n, segs.len());
        self.for_groups(first, n, segments, scratch, |k0, g| {
            for k in group_span(k0, n) {
                signs[k] = (g.signs >> (k as i64 - k0)) & 1 == 1;
                segs[k] = g.segment;
            }
        });
    }

    /// The embedding directions of elements `first .. first + out.len()`: `true` (up) where
    /// the carrier sign equals the codeword bit of the element's segment.
    pub fn directions(
        &self,
        first: u64,
        segments: u32,
        codeword: &[bool],
        out: &mut [bool],
        scratch: &mut Vec<u8>,
    ) {
        let n = out.len();
        let codeword = &codeword[..segments as usize];
        self.for_groups(first, n, segments, scratch, |k0, g| {
            // Up where sign == bit: the signs themselves when the bit is 1, inverted when 0.
            let up = if codeword[g.segment as usize] {
                g.signs
            } else {
                !g.signs
            };
            if k0 >= 0 && k0 as usize + GROUP <= n {
                let o = &mut out[k0 as usize..k0 as usize + GROUP];
                for (j, u) in o.iter_mut().enumerate() {
                    *u = (up >> j) & 1 == 1;
                }
            } else {
                let span = group_span(k0, n);
                for (k, u) in out.iter_mut().enumerate().take(span.end).skip(span.start) {
                    *u = (up >> (k as i64 - k0)) & 1 == 1;
                }
            }
        });
    }

    /// Keystream bytes `at .. at + n` in `buf`.
    fn keystream<'b>(&self, at: u64, n: usize, buf: &'b mut Vec<u8>) -> &'b [u8] {
        if n == 0 {
            return &[];
        }
        let skip = (at % 16) as usize;
        let len = (skip + n).div_ceil(16) * 16;
        buf.clear();
        buf.resize(len, 0);
        let iv = u128::from(at / 16).to_be_bytes();
        self.key
            .less_safe_encrypt(buf, EncryptionContext::Iv128(FixedLength::from(iv)))
            .expect("CTR keystream");
        &buf[skip..skip + n]
    }
}

/// Elements per carrier group.
pub const GROUP: usize = 32;

/// The elements of `0 .. n` covered by the group whose first element is `k0` (as
/// [`Carrier::for_groups`] gives it): all [`GROUP`] of them but at the ends.
pub(crate) fn group_span(k0: i64, n: usize) -> std::ops::Range<usize> {
    k0.max(0) as usize..((k0 + GROUP as i64) as usize).min(n)
}

/// One group of [`GROUP`] elements: its segment and the carrier signs of its elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    pub(crate) segment: u32,
    pub(crate) signs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_equals_the_same_part_of_the_whole() {
        let k = SymmetricKey::from_bytes([3; 32]);
        let name = "encoder.layer.0.attention.self.query.weight";
        let c = Carrier::new(&k, name);
        let cw: Vec<bool> = (0..10).map(|i| i % 3 == 0).collect();
        let mut scratch = Vec::new();
        let whole = |c: &Carrier, a: u64, n: usize, scratch: &mut Vec<u8>| {
            let (mut s, mut g, mut d) = (vec![false; n], vec![0u32; n], vec![false; n]);
            c.signs_and_segments(a, 10, &mut s, &mut g, scratch);
            c.directions(a, 10, &cw, &mut d, scratch);
            (s, g, d)
        };
        let (s, g, d) = whole(&c, 0, 1000, &mut scratch);
        for k in 0..1000 {
            assert_eq!(d[k], s[k] == cw[g[k] as usize], "direction = sign == bit");
            assert_eq!(g[k], g[k / GROUP * GROUP], "one segment per group");
        }
        for (a, n) in [
            (0usize, 1usize),
            (1, 7),
            (3, 4),
            (5, 300),
            (31, 2),
            (32, 64),
            (997, 3),
            (400, 0),
        ] {
            let (ps, pg, pd) = whole(&c, a as u64, n, &mut scratch);
            assert_eq!(ps, s[a..a + n], "{a}+{n}");
            assert_eq!(pg, g[a..a + n], "{a}+{n}");
            assert_eq!(pd, d[a..a + n], "{a}+{n}");
        }
        // Another tensor or key gives another carrier.
        let (o, _, _) = whole(&Carrier::new(&k, "other.weight"), 0, 1000, &mut scratch);
        assert_ne!(o, s);
        let (o, _, _) = whole(
            &Carrier::new(&SymmetricKey::from_bytes([4; 32]), name),
            0,
            1000,
            &mut scratch,
        );
        assert_ne!(o, s);
        // Signs are balanced and segments uniform (loose checks over 320,000 elements).
        let (s, g, _) = whole(&c, 12_345, 320_000, &mut scratch);
        let pos = s.iter().filter(|x| **x).count();
        assert!((158_000..162_000).contains(&pos), "{pos}");
        let mut hist = [0u32; 10];
        g.iter().step_by(GROUP).for_each(|x| hist[*x as usize] += 1);
        assert!(hist.iter().all(|h| (900..1100).contains(h)), "{hist:?}");
    }
}
