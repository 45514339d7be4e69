//! The key-encryption key on a real SoftHSM2 token: what it is, and that it never comes out.

mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use weightvault::hsm::{KeyWrap, WrappedKey};
use weightvault::keys::DataKey;

#[test]
fn kek_cannot_be_read_or_wrapped_out_of_the_token() {
    let sh = shared();
    sh.kw
        .with_session(|s, keks| {
            let (&version, &kek) = keks.iter().next().expect("a KEK");
            assert_eq!(version, 1);
            // C_GetAttributeValue on CKA_VALUE: refused, or the value left out. Never bytes.
            match s.get_attributes(kek, &[AttributeType::Value]) {
                Err(e) => assert!(
                    e.to_string().contains("Sensitive") || e.to_string().contains("SENSITIVE"),
                    "{e}"
                ),
                Ok(attrs) => assert!(
                    !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
                    "the KEK's value was readable"
                ),
            }
            // Its attributes are what weightvault asked for.
            let attrs = s
                .get_attributes(
                    kek,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::Wrap,
                        AttributeType::Unwrap,
                        AttributeType::Encrypt,
                        AttributeType::Decrypt,
                        AttributeType::Token,
                        AttributeType::Private,
                        AttributeType::Modifiable,
                    ],
                )
                .unwrap();
            assert_eq!(
                attrs.len(),
                10,
                "an attribute was silently omitted: {attrs:?}"
            );
            for a in attrs {
                let ok = match a {
                    Attribute::Sensitive(v) | Attribute::NeverExtractable(v) => v,
                    Attribute::Wrap(v)
                    | Attribute::Unwrap(v)
                    | Attribute::Token(v)
                    | Attribute::Private(v) => v,
                    Attribute::Extractable(v)
                    | Attribute::Encrypt(v)
                    | Attribute::Decrypt(v)
                    | Attribute::Modifiable(v) => !v,
                    _ => false,
                };
                assert!(ok, "unexpected KEK attribute {a:?}");
            }
            // Wrapping the KEK with another key, or with itself: refused.
            let other = s
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(false),
                        Attribute::Wrap(true),
                        Attribute::Extractable(true),
                    ],
                )
                .unwrap();
            for mech in [Mechanism::AesKeyWrapPad, Mechanism::AesKeyWrap] {
                assert!(
                    s.wrap_key(&mech, other, kek).is_err(),
                    "KEK wrapped out with {mech:?}"
                );
                assert!(
                    s.wrap_key(&mech, kek, kek).is_err(),
                    "KEK wrapped by itself with {mech:?}"
                );
            }
            // Nor can it be made extractable, or used to encrypt.
            assert!(s
                .update_attributes(kek, &[Attribute::Extractable(true)])
                .is_err());
            assert!(s
                .update_attributes(kek, &[Attribute::Sensitive(false)])
                .is_err());
            assert!(s.encrypt(&Mechanism::AesEcb, kek, &[0u8; 16]).is_err());
            s.destroy_object(other).unwrap();
            Ok(())
        })
        .unwrap();
}

#[test]
fn wrap_is_rfc5649_sized_and_tampering_is_named() {
    let sh = shared();
    let dek = DataKey::random().unwrap();
    let w = sh.kw.wrap(&dek).unwrap();
    assert_eq!(
        w.wrapped.len(),
        40,
        "RFC 5649 wrap of a 32-byte key is 40 bytes"
    );
    assert_eq!(sh.kw.unwrap(&w).unwrap().expose(), dek.expose());
    for i in [0, 7, 8, 39] {
        let mut bad = w.clone();
        bad.wrapped[i] ^= 1;
        let e = sh.kw.unwrap(&bad).unwrap_err().to_string();
        assert!(e.contains("could not unwrap"), "{e}");
    }
    let missing = WrappedKey {
        kek_version: 99,
        ..w.clone()
    };
    assert!(sh
        .kw
        .unwrap(&missing)
        .unwrap_err()
        .to_string()
        .contains("version 99 is not on token"));
    let short = WrappedKey {
        wrapped: w.wrapped[..16].to_vec(),
        ..w
    };
    assert!(sh.kw.unwrap(&short).is_err());
}

#[test]
fn checkpoints_are_signed_by_the_hsm_and_verify_offline() {
    use weightvault::ledger::checkpoint::{Checkpoint, CheckpointError};
    use weightvault::ledger::merkle;
    let sh = shared();
    sh.kw.ensure_ledger_key().unwrap(); // idempotent
    let public = sh.kw.ledger_public_key().unwrap();
    let leaves: Vec<_> = (0..10u32)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let cp = Checkpoint {
        origin: "weightvault.test/ledger".into(),
        size: 10,
        root: merkle::root(&leaves),
        time: 1_795_000_000,
    };
    let sig = sh.kw.sign_ledger(cp.body().as_bytes()).unwrap();
    let note = cp.signed_note("weightvault.test/ledger", &public, &sig);
    assert!(
        note.contains("\n\n\u{2014} weightvault.test/ledger "),
        "{note}"
    );
    assert_eq!(
        Checkpoint::verify(&note, "weightvault.test/ledger", &public).unwrap(),
        cp
    );
    // Altered size, root or time: refused.
    for (from, to) in [("\n10\n", "\n11\n"), ("time 1795", "time 1796")] {
        let bad = note.replacen(from, to, 1);
        assert_eq!(
            Checkpoint::verify(&bad, "weightvault.test/ledger", &public),
            Err(CheckpointError::BadSignature(
                "weightvault.test/ledger".into()
            )),
            "{from}"
        );
    }
    // Re-signed with another key under the same name: not accepted with the vault's key.
    use ed25519_dalek::Signer;
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let forged = cp.signed_note(
        "weightvault.test/ledger",
        &other.verifying_key().to_bytes(),
        &other.sign(cp.body().as_bytes()).to_bytes(),
    );
    assert!(Checkpoint::verify(&forged, "weightvault.test/ledger", &public).is_err());
    // The ledger private key cannot be read out.
    sh.kw
        .with_session(|s, _| {
            let keys = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(weightvault::hsm::LEDGER_KEY_LABEL.as_bytes().to_vec()),
                ])
                .unwrap();
            assert_eq!(keys.len(), 1);
            match s.get_attributes(keys[0], &[AttributeType::Value]) {
                Err(_) => {}
                Ok(a) => assert!(!a.iter().any(|x| matches!(x, Attribute::Value(_)))),
            }
            Ok(())
        })
        .unwrap();
}
