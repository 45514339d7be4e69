//! Signed checkpoints in the C2SP tlog-checkpoint / signed-note text form, so that existing
//! transparency-log tooling (witnesses, verifiers) can read them.
//!
//! ```text
//! <origin>
//! <tree size>
//! <root hash, base64>
//! time <unix seconds>
//!
//! — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>
//! ```
//! The key id is the first 4 bytes of SHA-256(key name || "\n" || 0x01 || public key). The
//! signature covers the body (every line up to and including the blank line's preceding
//! newline). Pure: signing is done by whoever holds the key (the HSM).

use base64::Engine;
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log origin line (e.g. `weightvault.example/ledger`).
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root.
    pub root: [u8; 32],
    /// Unix seconds when it was made.
    pub time: u64,
}

/// Why a signed checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not in the expected text form.
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    /// No signature line for this key.
    #[error("no signature by key '{0}' on the checkpoint")]
    NoSignature(String),
    /// Signature does not verify.
    #[error("checkpoint signature by '{0}' does not verify — altered, or signed by another key")]
    BadSignature(String),
}

/// The 4-byte key id of an Ed25519 key in signed notes.
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(public);
    h.finalize()[..4].try_into().expect("4")
}

impl Checkpoint {
    /// The signed text (body), ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time
        )
    }

    /// The full signed note, given a signature over [`Checkpoint::body`].
    pub fn signed_note(&self, key_name: &str, public: &[u8; 32], signature: &[u8; 64]) -> String {
        let mut sig = key_id(key_name, public).to_vec();
        sig.extend_from_slice(signature);
        format!("{}\n\u{2014} {key_name} {}\n", self.body(), B64.encode(sig))
    }

    /// Parses a signed note and verifies the signature of `key_name` with `public`. The note
    /// is read byte for byte: lines end in `\n` alone, and a control character other than
    /// that newline (a `\r` of CRLF line ends, a tab) is refused, as C2SP signed-note
    /// requires, so the checkpoint returned is exactly the text that was signed.
    pub fn verify(note: &str, key_name: &str, public: &[u8; 32]) -> Result<Self, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.into());
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad(
                "a control character other than newline (CRLF line ends?)",
            ));
        }
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before signatures"))?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin"))?
            .to_string();
        let size: u64 = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("bad tree size"))?;
        let root: [u8; 32] = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("bad root hash"))?;
        let time: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("time "))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("bad time line"))?;
        if lines.next().is_some() {
            return Err(bad("unexpected extra lines"));
        }
        let id = key_id(key_name, public);
        let vk = ed25519_dalek::VerifyingKey::from_bytes(public)
            .map_err(|_| bad("public key is not a valid Ed25519 key"))?;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(bad("signature line does not start with an em dash"));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(bad("signature line lacks a key name"));
            };
            if name != key_name {
                continue;
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| bad("signature is not base64"))?;
            if raw.len() != 68 || raw[..4] != id {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_bytes(raw[4..].try_into().expect("64"));
            return vk
                .verify_strict(body.as_bytes(), &sig)
                .map(|()| Self {
                    origin,
                    size,
                    root,
                    time,
                })
                .map_err(|_| CheckpointError::BadSignature(key_name.into()));
        }
        Err(CheckpointError::NoSignature(key_name.into()))
    }
}

/// Why a [`LedgerSigner`] could not sign: the signer's own error (the HSM's, in production).
pub type SignError = Box<dyn std::error::Error + Send + Sync>;

/// Who signs checkpoints: the ledger key in the HSM in production, a software Ed25519 key for
/// a test or an offline witness.
pub trait LedgerSigner: Send + Sync {
    /// The ledger key's Ed25519 public key.
    fn public_key(&self) -> Result<[u8; 32], SignError>;
    /// An Ed25519 signature of `msg` (a checkpoint body) by the ledger key.
    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], SignError>;
}

impl LedgerSigner for ed25519_dalek::SigningKey {
    fn public_key(&self) -> Result<[u8; 32], SignError> {
        Ok(self.verifying_key().to_bytes())
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64], SignError> {
        Ok(ed25519_dalek::Signer::sign(self, msg).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NAME: &str = "weightvault.example/ledger";

    fn signed(origin: &str) -> (Checkpoint, String, [u8; 32]) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let cp = Checkpoint {
            origin: origin.into(),
            size: 3,
            root: [1; 32],
            time: 1_796_126_400,
        };
        let sig = LedgerSigner::sign(&key, cp.body().as_bytes()).unwrap();
        let note = cp.signed_note(NAME, &public, &sig);
        (cp, note, public)
    }

    #[test]
    fn a_signed_note_verifies_as_the_checkpoint_signed() {
        let (cp, note, public) = signed("weightvault.example/ledger");
        assert_eq!(Checkpoint::verify(&note, NAME, &public).unwrap(), cp);
    }

    /// A note is read byte for byte: one row per text that differs from what was signed only
    /// in a control character, which `str::lines` would have stripped or kept.
    #[test]
    fn control_characters_and_crlf_line_ends_are_refused() {
        let (_, note, public) = signed("weightvault.example/ledger");
        let crlf = note.replace('\n', "\r\n");
        let cr_in_body = note.replacen('\n', "\r\n", 1);
        let cr_in_sig = format!("{}\r\n", note.trim_end_matches('\n'));
        let (_, signed_cr, public_cr) = signed("x\r");
        let (_, signed_tab, public_tab) = signed("x\ty");
        let rows = [
            (crlf.as_str(), &public),
            (cr_in_body.as_str(), &public),
            (cr_in_sig.as_str(), &public),
            (signed_cr.as_str(), &public_cr),
            (signed_tab.as_str(), &public_tab),
        ];
        for (k, (n, pk)) in rows.iter().enumerate() {
            let err = Checkpoint::verify(n, NAME, pk).unwrap_err();
            assert!(
                matches!(&err, CheckpointError::Malformed(m) if m.starts_with("a control character")),
                "row {k}: {err}"
            );
        }
    }
}
