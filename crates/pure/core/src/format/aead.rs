//! The chunk cipher: AES-256-GCM behind a small trait, so that the bulk implementation
//! (aws-lc-rs, at memory bandwidth) can be checked against an independent one (RustCrypto
//! `aes-gcm`) on every test vector.

use crate::keys::SymmetricKey;

/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;
/// GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;

/// Authentication failed: the ciphertext, tag, key or nonce is not the one that was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

/// One AES-256-GCM implementation.
pub trait ChunkAead: Send + Sync {
    /// A short name for messages and benchmarks.
    fn name(&self) -> &'static str;
    /// Encrypts `buf` in place and returns the tag.
    fn seal_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN];
    /// Checks `tag` and decrypts `buf` in place. On failure `buf` holds no plaintext
    /// (implementations zero it), so nothing unauthenticated escapes.
    fn open_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed>;
    /// Checks `tag` and decrypts `ciphertext` into `out` (same length). On failure `out` is
    /// zeroed.
    fn open_to(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthFailed> {
        out.copy_from_slice(ciphertext);
        self.open_in_place(key, nonce, aad, out, tag)
    }
}

/// aws-lc-rs: the implementation used for bulk work.
#[derive(Debug, Default, Clone, Copy)]
pub struct AwsLc;

impl AwsLc {
    fn key(key: &SymmetricKey) -> aws_lc_rs::aead::LessSafeKey {
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key.expose())
            .expect("a 32-byte key is a valid AES-256 key");
        aws_lc_rs::aead::LessSafeKey::new(unbound)
    }
}

impl ChunkAead for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }

    fn open_to(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthFailed> {
        Self::key(key)
            .open_separate_gather(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
                aws_lc_rs::aead::Aad::from(aad),
                ciphertext,
                tag,
                out,
            )
            .map_err(|_| {
                out.fill(0);
                AuthFailed
            })
    }

    fn seal_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = Self::key(key)
            .seal_in_place_separate_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
                aws_lc_rs::aead::Aad::from(aad),
                buf,
            )
            .expect("GCM sealing of a chunk below 64 GiB cannot fail");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        let r = Self::key(key).open_in_place_separate_tag(
            aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
            aws_lc_rs::aead::Aad::from(aad),
            tag,
            buf,
        );
        match r {
            Ok(_) => Ok(()),
            Err(_) => {
                buf.fill(0);
                Err(AuthFailed)
            }
        }
    }
}

/// RustCrypto `aes-gcm`: the independent second implementation.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

impl ChunkAead for RustCrypto {
    fn name(&self) -> &'static str {
        "rustcrypto-aes-gcm"
    }

    fn seal_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let cipher = aes_gcm::Aes256Gcm::new(key.expose().into());
        let tag = cipher
            .encrypt_inout_detached(nonce.into(), aad, buf.into())
            .expect("GCM sealing of a chunk below 64 GiB cannot fail");
        tag.into()
    }

    fn open_in_place(
        &self,
        key: &SymmetricKey,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        use aes_gcm::aead::{AeadInOut, KeyInit};
        let cipher = aes_gcm::Aes256Gcm::new(key.expose().into());
        cipher
            .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into())
            .map_err(|_| {
                buf.fill(0);
                AuthFailed
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_implementations_agree_and_reject_tampering() {
        let key = SymmetricKey::from_bytes([3; 32]);
        let nonce = [9u8; NONCE_LEN];
        for len in [0usize, 1, 15, 16, 17, 4096, 100_001] {
            let pt: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut a = pt.clone();
            let mut b = pt.clone();
            let ta = AwsLc.seal_in_place(&key, &nonce, b"aad", &mut a);
            let tb = RustCrypto.seal_in_place(&key, &nonce, b"aad", &mut b);
            assert_eq!(a, b, "ciphertext differs at len {len}");
            assert_eq!(ta, tb, "tag differs at len {len}");
            for imp in [&AwsLc as &dyn ChunkAead, &RustCrypto] {
                let mut c = a.clone();
                imp.open_in_place(&key, &nonce, b"aad", &mut c, &ta)
                    .unwrap();
                assert_eq!(c, pt);
                let mut bad = ta;
                bad[0] ^= 1;
                let mut c = a.clone();
                assert_eq!(
                    imp.open_in_place(&key, &nonce, b"aad", &mut c, &bad),
                    Err(AuthFailed)
                );
                assert!(c.iter().all(|&x| x == 0));
            }
        }
    }
}
