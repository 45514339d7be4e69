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
    /// The facility the host sits in (an id a Validated End User authorisation lists), when
    /// the attester states it. Absent, not `null`, when it does not, so statements made
    /// before this claim existed read and verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
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

/// Signs a statement whose times the caller made.
///
/// # Panics
/// For a time RFC 3339 cannot write (a year outside 0..=9999, an offset with seconds): use
/// [`try_sign`] for times that come from elsewhere.
pub fn sign(st: &Statement, key: &ed25519_dalek::SigningKey) -> Evidence {
    try_sign(st, key).expect("statement serialises: RFC 3339 writes its times")
}

/// Signs a statement; an error, not a panic, for one that cannot be written (a time RFC 3339
/// cannot write: a year outside 0..=9999, an offset with seconds).
pub fn try_sign(
    st: &Statement,
    key: &ed25519_dalek::SigningKey,
) -> Result<Evidence, EvidenceError> {
    use ed25519_dalek::Signer;
    let statement = serde_json::to_string(st)
        .map_err(|e| EvidenceError::Malformed(format!("statement cannot be written: {e}")))?;
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(statement.as_bytes());
    Ok(Evidence {
        statement,
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&msg).to_bytes()),
    })
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
            facility: None,
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

    /// RFC 3339 writes four-digit years and whole-minute offsets: a statement with a time
    /// before the year 0 (the `time` crate goes down to -9999; up to 9999 without its
    /// `large-dates` feature, which nothing here turns on) or an offset with seconds is an
    /// error from `try_sign`, not a panic.
    #[test]
    fn a_time_rfc3339_cannot_write_is_an_error() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let at = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let last = at(253_402_300_799); // 9999-12-31T23:59:59Z
        let first = at(-62_167_219_200); // 0000-01-01T00:00:00Z
        let before = at(-62_167_219_201); // -0001-12-31T23:59:59Z
        let odd = last.to_offset(time::UtcOffset::from_hms(-1, 0, -30).unwrap());
        let rows = [
            (first, last, true),
            (before, last, false),
            (first, before, false),
            (first, odd, false),
        ];
        for (issued_at, expires_at, ok) in rows {
            let s = Statement {
                issued_at,
                expires_at,
                ..st()
            };
            let got = try_sign(&s, &k);
            assert_eq!(got.is_ok(), ok, "{issued_at} .. {expires_at}");
            if let Err(e) = got {
                assert!(e.to_string().contains("cannot be written"), "{e}");
            }
        }
    }
}
