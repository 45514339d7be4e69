//! Key schedule: the per-file data key (DEK) and every key derived from it.
//!
//! A sealed file has one random 256-bit DEK. HKDF-SHA256 (RFC 5869) turns it into a key that
//! authenticates the header, a commitment that proves an unwrapped DEK belongs to the file, and
//! one AES-256-GCM key per chunk, bound to the file id, the hash of the immutable header and the
//! chunk index. Because every chunk has its own key, GCM nonce limits never come into play.
//!
//! This module never touches a file, a socket or the HSM, and never prints a key: key types have
//! no `Debug` that shows their bytes and are zeroized on drop.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of every symmetric key weightvault uses (AES-256).
pub const KEY_LEN: usize = 32;

const INFO_HEADER: &[u8] = b"weightvault/v1 header";
const INFO_KEY_CHECK: &[u8] = b"weightvault/v1 key-check";
const INFO_CHUNK: &[u8] = b"weightvault/v1 chunk";
const INFO_KEY_SLOT: &[u8] = b"weightvault/v1 key-slot";

/// A 256-bit symmetric key. Zeroized on drop; its `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; KEY_LEN]);

impl SymmetricKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Builds a key from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k)?;
        Ok(Self(k))
    }

    /// The key bytes, for handing to a cipher. Never log or store these.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey(<redacted>)")
    }
}

/// The per-file data key: random, wrapped by the HSM's key-encryption key, never stored in clear.
pub type DataKey = SymmetricKey;

/// The keys of one sealed file, derived from its DEK and file id.
pub struct FileKeys {
    hkdf: Hkdf<Sha256>,
}

impl FileKeys {
    /// HKDF-Extract with the file id as salt and the DEK as input keying material.
    pub fn new(dek: &DataKey, file_id: &[u8; 16]) -> Self {
        Self {
            hkdf: Hkdf::<Sha256>::new(Some(file_id), dek.expose()),
        }
    }

    fn expand(&self, info: &[&[u8]]) -> SymmetricKey {
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        self.hkdf
            .expand_multi_info(info, okm.as_mut())
            .expect("HKDF output length is valid");
        SymmetricKey(*okm)
    }

    /// The key that authenticates the immutable header (GCM over an empty message).
    pub fn header_key(&self) -> SymmetricKey {
        self.expand(&[INFO_HEADER])
    }

    /// A public commitment to the DEK, stored in the header: lets a reader tell "this data key
    /// does not belong to this file" apart from "the header was altered".
    pub fn key_check(&self) -> [u8; 32] {
        *self.expand(&[INFO_KEY_CHECK]).expose()
    }

    /// The HMAC-SHA256 key that authenticates a key slot (which changes on rewrap, so it is
    /// kept out of the header hash and authenticated on its own).
    pub fn key_slot_key(&self) -> SymmetricKey {
        self.expand(&[INFO_KEY_SLOT])
    }

    /// The AES-256-GCM key of chunk `index`, bound to the hash of the immutable header.
    pub fn chunk_key(&self, header_hash: &[u8; 32], index: u64) -> SymmetricKey {
        self.expand(&[INFO_CHUNK, header_hash, &index.to_be_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_differ_by_index_header_and_file() {
        let dek = SymmetricKey::from_bytes([7; 32]);
        let a = FileKeys::new(&dek, &[1; 16]);
        let b = FileKeys::new(&dek, &[2; 16]);
        let h1 = [0u8; 32];
        let h2 = [1u8; 32];
        let k = |f: &FileKeys, h: &[u8; 32], i| *f.chunk_key(h, i).expose();
        assert_ne!(k(&a, &h1, 0), k(&a, &h1, 1));
        assert_ne!(k(&a, &h1, 0), k(&a, &h2, 0));
        assert_ne!(k(&a, &h1, 0), k(&b, &h1, 0));
        assert_eq!(k(&a, &h1, 1 << 40), k(&a, &h1, 1 << 40));
        assert_ne!(a.key_check(), *a.header_key().expose());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SymmetricKey::from_bytes([0xAB; 32]);
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
    }
}
