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
