//! Host evidence as a client sends it: `evidence::open` (core evidence.rs).

use crate::mode;
use crate::mutate::{cut, mutate};
use arbitrary::{Arbitrary, Unstructured};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;
use weightvault_core::evidence::{self, Evidence, Statement};

/// The attester key the targets trust (any fixed key: the signatures are made here).
pub(crate) fn attester() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The attester id the targets trust.
pub(crate) const ATTESTER: &str = "fuzz-attester";

fn trusted(id: &str) -> Option<[u8; 32]> {
    (id == ATTESTER).then(|| attester().verifying_key().to_bytes())
}

/// A statement's fields; times are seconds between 1970 and 9999 (what RFC 3339 writes).
#[derive(Debug, Arbitrary)]
pub(crate) struct ArbStatement {
    trusted_attester: bool,
    attester: String,
    host_id: String,
    country: String,
    region: String,
    measurement: String,
    nonce: [u8; 16],
    issued_at: u32,
    lifetime: u16,
    host_key: [u8; 32],
}

impl ArbStatement {
    pub(crate) fn statement(self) -> Statement {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).expect("in range");
        // Steps of 50 s, up to the year 8775: RFC 3339 writes years up to 9999 only.
        let issued = i64::from(self.issued_at) * 50;
        Statement {
            attester: if self.trusted_attester {
                ATTESTER.into()
            } else {
                cut(self.attester, 64)
            },
            host_id: cut(self.host_id, 64),
            country: cut(self.country, 8),
            region: cut(self.region, 32),
            measurement: cut(self.measurement, 80),
            nonce: hex::encode(self.nonce),
            issued_at: t(issued),
            expires_at: t(issued + i64::from(self.lifetime)),
            host_key: hex::encode(self.host_key),
            facility: None,
        }
    }
}

/// Mode byte even: the raw bytes as the JSON of an `Evidence`, opened. Odd: a statement
/// signed by the trusted attester from arbitrary fields, which must open as signed, then its
/// JSON text and signature mutated: a mutation that still verifies left the statement as
/// signed.
pub fn evidence(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        if let Ok(e) = serde_json::from_slice::<Evidence>(rest) {
            let _ = evidence::open(&e, trusted);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbStatement::arbitrary(&mut u) else {
        return;
    };
    let st = a.statement();
    // A time RFC 3339 cannot write (before the year 0) is an error, not a panic.
    let early = OffsetDateTime::from_unix_timestamp(-62_167_219_201).expect("in range");
    let late = Statement {
        issued_at: early,
        ..st.clone()
    };
    assert!(evidence::try_sign(&late, &attester()).is_err());
    let e = evidence::try_sign(&st, &attester()).expect("a statement before 9999 signs");
    let (back, valid) = evidence::open(&e, trusted).expect("signed evidence opens");
    assert_eq!(back, st, "a statement reads back as signed");
    assert_eq!(valid, st.attester == ATTESTER);
    let mut text = e.statement.clone().into_bytes();
    mutate(&mut u, &mut text);
    let mut sig = e.signature.clone().into_bytes();
    if bool::arbitrary(&mut u).unwrap_or(false) {
        mutate(&mut u, &mut sig);
    }
    let m = Evidence {
        statement: String::from_utf8_lossy(&text).into_owned(),
        signature: String::from_utf8_lossy(&sig).into_owned(),
    };
    if let Ok((_, true)) = evidence::open(&m, trusted) {
        assert_eq!(m.statement, e.statement, "an altered statement verified");
    }
}
