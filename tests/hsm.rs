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

/// `verify` catches every kind of tampering with the stored ledger.
#[test]
fn ledger_tampering_is_detected() {
    use weightvault::ledger::{merkle, Ledger};
    let sh = shared();
    let public = sh.kw.ledger_public_key().unwrap();
    let name = "weightvault.test/ledger";
    let tmp = common::scratch();
    let dir = tmp.path().join("ledger");
    // Segments of 4 entries: 12 entries fill three closed (write-once) segments.
    let (l, _) = Ledger::open_with(&dir, name, 2).unwrap();
    for i in 0..12 {
        assert_eq!(l.append(&common::record(i)).unwrap(), i);
        if i == 4 || i == 9 {
            l.checkpoint(name, &sh.kw).unwrap();
        }
    }
    l.checkpoint(name, &sh.kw).unwrap();
    drop(l);
    let rep = Ledger::verify(&dir, name, &public).unwrap();
    assert_eq!(
        (
            rep.entries,
            rep.closed_segments,
            rep.checkpoints,
            rep.latest_size
        ),
        (12, 3, 3, 12)
    );

    // The log as a list of segment files (name, bytes).
    type Segs = Vec<(String, Vec<u8>)>;
    let segdir = dir.join("segments");
    let read_segs = || -> Segs {
        let mut v: Segs = std::fs::read_dir(&segdir)
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_name().to_string_lossy().starts_with("seg-")
            })
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let write_segs = |segs: &Segs| {
        std::fs::remove_dir_all(&segdir).unwrap();
        std::fs::create_dir(&segdir).unwrap();
        for (n, b) in segs {
            std::fs::write(segdir.join(n), b).unwrap();
        }
    };
    let cps = dir.join("checkpoints.log");
    let good_log = read_segs();
    assert_eq!(good_log.len(), 4, "three closed segments and the open one");
    let good_cps = std::fs::read(&cps).unwrap();
    let mut entries = Vec::new();
    Ledger::entries(&dir, &mut |_, e| {
        entries.push(e.to_vec());
        Ok(())
    })
    .unwrap();
    let frame = |e: &[u8]| {
        let mut f = (e.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(e);
        f.extend_from_slice(&merkle::leaf_hash(e));
        f
    };
    // Entries re-framed (valid frame hashes) into segments of 4.
    let rebuild = |es: &[Vec<u8>]| -> Segs {
        let mut segs: Segs = es
            .chunks(4)
            .enumerate()
            .map(|(k, c)| {
                (
                    format!("seg-{:020}.log", 4 * k),
                    c.iter().flat_map(|e| frame(e)).collect(),
                )
            })
            .collect();
        if es.len().is_multiple_of(4) {
            segs.push((format!("seg-{:020}.log", es.len()), Vec::new()));
        }
        segs
    };
    let mut cases: Vec<(&str, Segs, Vec<u8>, &str)> = Vec::new();
    let mut b = good_log.clone();
    b[0].1[4 + 10] ^= 1; // a byte inside record 0
    cases.push(("byte changed", b, good_cps.clone(), "entry 0"));
    let mut b = good_log.clone();
    b[2].1[4 + 10] ^= 1; // a byte inside record 8, in a closed segment
    cases.push(("byte changed in segment 2", b, good_cps.clone(), "entry 8"));
    let mut b = good_log.clone();
    b.remove(1);
    cases.push((
        "a closed segment deleted",
        b,
        good_cps.clone(),
        "a segment is missing",
    ));
    let mut es = entries.clone();
    es[6] = common::record(99).canonical(); // rewritten with a valid frame hash
    cases.push((
        "record rewritten",
        rebuild(&es),
        good_cps.clone(),
        "entries 5..10",
    ));
    let mut es = entries.clone();
    es.remove(2);
    cases.push((
        "record deleted",
        rebuild(&es),
        good_cps.clone(),
        "entries 0..5",
    ));
    let mut es = entries.clone();
    es.swap(7, 8);
    cases.push((
        "records swapped",
        rebuild(&es),
        good_cps.clone(),
        "entries 5..10",
    ));
    cases.push((
        "truncated below the last checkpoint",
        rebuild(&entries[..10]),
        good_cps.clone(),
        "log holds 10",
    ));
    // The last checkpoint re-signed with another key under the same name.
    use ed25519_dalek::Signer;
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let text = String::from_utf8(good_cps.clone()).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let body = last["note"]
        .as_str()
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .to_string()
        + "\n";
    let cp = weightvault::ledger::checkpoint::Checkpoint::verify(
        last["note"].as_str().unwrap(),
        name,
        &public,
    )
    .unwrap();
    let forged = cp.signed_note(
        name,
        &other.verifying_key().to_bytes(),
        &other.sign(body.as_bytes()).to_bytes(),
    );
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    lines[n - 1] = serde_json::json!({"size": cp.size, "note": forged}).to_string();
    cases.push((
        "checkpoint re-signed",
        good_log.clone(),
        (lines.join("\n") + "\n").into_bytes(),
        "checkpoint 3",
    ));
    for (what, l, c, want) in cases {
        write_segs(&l);
        std::fs::write(&cps, &c).unwrap();
        let e = Ledger::verify(&dir, name, &public).unwrap_err().to_string();
        assert!(e.contains(want), "{what}: '{e}' lacks '{want}'");
    }
    write_segs(&good_log);
    std::fs::write(&cps, &good_cps).unwrap();
    Ledger::verify(&dir, name, &public).unwrap();
}
