//! The keyed carrier of every weight. For tensor `T`, element `e` gets a 32-bit word: word
//! `e mod 4` of AES-256 block `e / 4` of the CTR keystream under the key
//! `HKDF-SHA256(watermark key, info = "weightvault watermark carrier v1" || T)`. Bit 0 is the
//! carrier sign; the other 31 bits pick the element's segment. Any element range is computed
//! on its own (random access), so chunks, parts and resumed ranges agree bit for bit.

use crate::keys::SymmetricKey;
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_256};
use aws_lc_rs::iv::FixedLength;

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

    /// The words of elements `first .. first + out.len()`.
    pub fn words(&self, first: u64, out: &mut [u32]) {
        if out.is_empty() {
            return;
        }
        let skip = (first % 4) as usize;
        let mut buf = vec![0u8; (skip + out.len()).div_ceil(4) * 16];
        let iv = u128::from(first / 4).to_be_bytes();
        self.key
            .less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(iv)))
            .expect("CTR keystream");
        for (k, w) in out.iter_mut().enumerate() {
            let o = (skip + k) * 4;
            *w = u32::from_le_bytes(buf[o..o + 4].try_into().expect("4"));
        }
    }
}

/// The carrier sign of a word: `true` for +1.
pub fn positive(word: u32) -> bool {
    word & 1 == 1
}

/// The segment (of `segments`) a word picks, uniformly.
pub fn segment(word: u32, segments: u32) -> u32 {
    ((u64::from(word >> 1) * u64::from(segments)) >> 31) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_equals_the_same_part_of_the_whole() {
        let k = SymmetricKey::from_bytes([3; 32]);
        let c = Carrier::new(&k, "encoder.layer.0.attention.self.query.weight");
        let mut whole = vec![0u32; 1000];
        c.words(0, &mut whole);
        for (a, n) in [
            (0usize, 1usize),
            (1, 7),
            (3, 4),
            (5, 300),
            (997, 3),
            (400, 0),
        ] {
            let mut part = vec![0u32; n];
            c.words(a as u64, &mut part);
            assert_eq!(part, whole[a..a + n], "{a}+{n}");
        }
        // Another tensor or key gives another stream.
        let mut other = vec![0u32; 1000];
        Carrier::new(&k, "other.weight").words(0, &mut other);
        assert_ne!(other, whole);
        Carrier::new(
            &SymmetricKey::from_bytes([4; 32]),
            "encoder.layer.0.attention.self.query.weight",
        )
        .words(0, &mut other);
        assert_ne!(other, whole);
        // Signs are balanced and segments uniform (loose checks over 100,000 words).
        let mut w = vec![0u32; 100_000];
        c.words(12_345, &mut w);
        let pos = w.iter().filter(|x| positive(**x)).count();
        assert!((49_000..51_000).contains(&pos), "{pos}");
        let mut hist = [0u32; 10];
        w.iter().for_each(|x| hist[segment(*x, 10) as usize] += 1);
        assert!(hist.iter().all(|h| (9_500..10_500).contains(h)), "{hist:?}");
    }
}
