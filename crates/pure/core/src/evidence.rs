//! Host evidence: an attester's Ed25519-signed statement of where a host is and which X25519
//! key it holds, bound to a vault challenge nonce. Pure: signing and checking bytes.
//!
//! The signed bytes are `"weightvault evidence v1\n" || statement`, where `statement` is the
//! exact JSON text carried in the evidence (the verifier never re-serialises it).

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Domain separation for evidence signatures.
pub const DOMAIN: &[u8] = b"weightvault evidence v1\n";

/// What an attester states about a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// The attester's id (as listed in `policies/attesters.toml`).
    pub attester: String,
    /// Host id.
    pub host_id: String,
    /// Country of the host (ISO 3166-1 alpha-2), from location verification.
    pub country: String,
    /// Region within the country.
    pub region: String,
    /// Measurement of the host's software (opaque to the vault; recorded).
    pub measurement: String,
    /// The vault's challenge nonce (hex).
    pub nonce: String,
    /// When the statement was made.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it stops being valid.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The host's X25519 public key (hex): released shards are sealed to it.
    pub host_key: String,
}

/// A signed statement, as a host presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The statement's JSON text, exactly as signed.
    pub statement: String,
    /// Ed25519 signature over [`DOMAIN`] || statement, base64.
    pub signature: String,
}

/// Evidence that cannot even be read (as opposed to evidence that is read and judged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// Not a statement.
    #[error("evidence statement is not valid: {0}")]
    Malformed(String),
}

impl Statement {
    /// The host's X25519 public key.
    pub fn host_key(&self) -> Result<[u8; 32], EvidenceError> {
        hex::decode(&self.host_key)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| EvidenceError::Malformed("host_key is not 64 hex digits".into()))
    }
}

/// Signs a statement.
pub fn sign(st: &Statement, key: &ed25519_dalek::SigningKey) -> Evidence {
    use ed25519_dalek::Signer;
    let statement = serde_json::to_string(st).expect("statement serialises");
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(statement.as_bytes());
    Evidence {
        statement,
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&msg).to_bytes()),
    }
}

/// Reads the statement, and says whether its signature verifies under the key `trusted` gives
/// for the attester it names (none: not trusted). Freshness and the nonce are the caller's.
pub fn open(
    e: &Evidence,
    trusted: impl Fn(&str) -> Option<[u8; 32]>,
) -> Result<(Statement, bool), EvidenceError> {
    let st: Statement =
        serde_json::from_str(&e.statement).map_err(|x| EvidenceError::Malformed(x.to_string()))?;
    st.host_key()?;
    let public = trusted(&st.attester);
    let valid = public.is_some_and(|p| {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&e.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok());
        let key = ed25519_dalek::VerifyingKey::from_bytes(&p).ok();
        match (sig, key) {
            (Some(sig), Some(key)) => {
                let mut msg = DOMAIN.to_vec();
                msg.extend_from_slice(e.statement.as_bytes());
                key.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                    .is_ok()
            }
            _ => false,
        }
    });
    Ok((st, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> Statement {
        Statement {
            attester: "a".into(),
            host_id: "h1".into(),
            country: "US".into(),
            region: "us-east".into(),
            measurement: "sha256:00".into(),
            nonce: "ab".into(),
            issued_at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            expires_at: OffsetDateTime::from_unix_timestamp(1_800_000_300).unwrap(),
            host_key: "11".repeat(32),
        }
    }

    #[test]
    fn signatures_verify_only_unchanged_and_under_the_right_key() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let pk = k.verifying_key().to_bytes();
        let e = sign(&st(), &k);
        let by = |k: [u8; 32]| move |id: &str| (id == "a").then_some(k);
        assert_eq!(open(&e, by(pk)).unwrap(), (st(), true));
        assert!(!open(&e, by(other.verifying_key().to_bytes())).unwrap().1);
        assert!(!open(&e, |_: &str| None).unwrap().1);
        let mut t = e.clone();
        t.statement = t.statement.replace("\"US\"", "\"CA\"");
        assert_eq!(open(&t, by(pk)).unwrap().0.country, "CA");
        assert!(!open(&t, by(pk)).unwrap().1, "a changed statement verified");
        let mut t = e.clone();
        t.signature = "AAAA".into();
        assert!(!open(&t, by(pk)).unwrap().1);
        let mut t = e;
        t.statement = "{}".into();
        assert!(open(&t, by(pk)).is_err());
    }
}
