//! The engine as tables: every decision path and every attack `tests/release.rs` drives
//! through TLS, the HSM and subprocesses, here without any of them. The policy set is the
//! repository's `policies/` (compiled in), with loopback as a VPN range as the end-to-end
//! tests add it.

use super::*;
use crate::wire::ReleaseBody;
use std::collections::BTreeMap;
use time::macros::datetime;
use weightvault_core::evidence::Evidence;
use weightvault_core::stream::{Opener, HEADER_LEN};
use weightvault_policy::PolicySource;
use weightvault_policy::{NoGeo, PolicyData};

const ATTESTER_SEED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../tools/test-attester/seed.hex"
));

const DENIALS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../tests/vectors/denials.tsv"
));

const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

struct Texts(BTreeMap<String, String>);

impl PolicySource for Texts {
    fn read(&self) -> Result<BTreeMap<String, String>, weightvault_policy::data::PolicyError> {
        Ok(self.0.clone())
    }
    fn location(&self, file: &str) -> String {
        format!("policies/{file}")
    }
}

/// The repository's policy with `edit` applied to the text of one file.
fn policy_with(edit: impl Fn(&str, String) -> String) -> PolicyData {
    let files = weightvault_policy::data::repository_files()
        .into_iter()
        .map(|(name, mut t)| {
            if name == "network.toml" {
                t.push_str(
                    "\n[[vpn]]\ncidr = \"127.0.0.0/8\"\nname = \"test hosts over loopback\"\n",
                );
            }
            let t = edit(&name, t);
            (name, t)
        })
        .collect();
    PolicyData::load(&Texts(files)).expect("the repository's policies load")
}

fn policy() -> PolicyData {
    policy_with(|_, t| t)
}

/// The identities of the end-to-end tests' client certificates.
fn client(stem: &str) -> Client {
    let name = match stem {
        "acme" => "spiffe://acme.example/ns/serving/sa/llm",
        "globex" => "spiffe://globex.example/ns/inference/sa/llm",
        "initech" => "spiffe://initech.example/sa/llm",
        "hooli" => "spiffe://hooli.example/sa/llm",
        "umbrella" => "spiffe://umbrella.example/sa/llm",
        "shadow" => "spiffe://shadow.example/sa/llm",
        "alice" | "bob" | "carol" => return person(stem),
        other => panic!("no client {other}"),
    };
    Client {
        name: name.into(),
        fingerprint: fingerprint(stem),
        workload: true,
    }
}

fn person(stem: &str) -> Client {
    Client {
        name: format!("{stem}@acme.example"),
        fingerprint: fingerprint(stem),
        workload: false,
    }
}

fn fingerprint(stem: &str) -> [u8; 32] {
    let mut f = [0u8; 32];
    f[..stem.len()].copy_from_slice(stem.as_bytes());
    f
}

fn attester_key() -> ed25519_dalek::SigningKey {
    let seed: [u8; 32] = hex::decode(ATTESTER_SEED.trim())
        .unwrap()
        .try_into()
        .unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn host_secret(k: u8) -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from([k; 32])
}

fn host_public(k: u8) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&host_secret(k)).to_bytes()
}

/// Evidence from host A in `country`, answering `nonce`, signed with `key` as `attester`.
fn evidence_as(
    country: &str,
    attester: &str,
    key: &ed25519_dalek::SigningKey,
    expires_at: OffsetDateTime,
) -> Evidence {
    evidence::sign(
        &Statement {
            attester: attester.into(),
            host_id: format!("test-{country}"),
            country: country.into(),
            region: "r1".into(),
            measurement: "sha256:00".into(),
            nonce: "00112233445566778899aabbccddeeff".into(),
            issued_at: NOW - time::Duration::minutes(1),
            expires_at,
            host_key: hex::encode(host_public(1)),
            facility: None,
        },
        key,
    )
}

fn evidence_from(country: &str) -> Evidence {
    evidence_as(
        country,
        "weightvault-test-attester",
        &attester_key(),
        NOW + time::Duration::minutes(5),
    )
}

fn body(model: &str, ev: Evidence) -> ReleaseBody {
    ReleaseBody {
        model: model.into(),
        revision: None,
        shards: None,
        evidence: ev,
    }
}

/// acme-frontier@r1 as sealed in the end-to-end tests: MiniLM's weights and two small files.
fn frontier() -> RevisionView {
    let file = |path: &str, len: u64, head: u64| FileView {
        path: path.into(),
        original_len: len,
        chunk_size: 1 << 20,
        head_len: head,
        data_len: len - head,
    };
    RevisionView {
        label: "acme-frontier@r1".into(),
        model: "acme-frontier".into(),
        revision: "r1".into(),
        training: TrainingFacts {
            eccn: Some("4E091".into()),
            training_ops: Some(3.1e26),
            open_weights: false,
        },
        files: vec![
            file("config.json", 612, 612),
            file("model.safetensors", 90_868_376, 10_568),
            file("tokenizer.json", 466_247, 466_247),
        ],
    }
}

/// A request decided from scratch: admitted, nonce as given, judged with `used`.
struct Case {
    policy: PolicyData,
    client: Client,
    evidence: Admitted,
    nonce_fresh: bool,
    rev: RevisionView,
    files: Vec<usize>,
    source: IpAddr,
}

impl Case {
    fn new(who: &str, country: &str) -> Self {
        Self::with(policy(), who, evidence_from(country))
    }

    fn with(policy: PolicyData, who: &str, ev: Evidence) -> Self {
        let b = body("acme-frontier", ev);
        let evidence = admit(&policy, &b).expect("evidence opens");
        let rev = frontier();
        let files = select_shards(&rev, None).unwrap();
        Case {
            policy,
            client: client(who),
            evidence,
            nonce_fresh: true,
            rev,
            files,
            source: "127.0.0.1".parse().unwrap(),
        }
    }

    fn asked(&self) -> Asked<'_> {
        Asked {
            client: &self.client,
            source: self.source,
            evidence: &self.evidence,
            nonce_fresh: self.nonce_fresh,
            revision: &self.rev,
            files: &self.files,
            now: NOW,
            codeword: Some([7; 16]),
            approvals: vec![],
        }
    }

    fn judge(&self, used: &BTreeMap<String, Usage>) -> Judged {
        judge(&self.policy, &NoGeo, &self.asked(), used)
    }

    fn grant(&self) -> Result<(Grant, ReleaseInfo, ReleaseDecision), Refusal> {
        let j = self.judge(&BTreeMap::new());
        grant(
            &self.asked(),
            j,
            41,
            [9; 16],
            NOW + time::Duration::minutes(10),
            &service_key(),
        )
    }
}

fn service_key() -> SymmetricKey {
    SymmetricKey::from_bytes([3; 32])
}

fn host_evidence_reason(d: &ReleaseDecision) -> String {
    d.checks
        .iter()
        .find(|c| c.check == policy::CheckId::HostEvidence)
        .unwrap()
        .reason
        .clone()
}

#[test]
fn denials_name_their_check_and_their_record_says_so() {
    // The rows tests/release.rs `denials_are_explained_recorded_and_release_nothing` sends
    // through the service.
    let rows = vectors::denials(DENIALS);
    assert_eq!(rows.len(), 7, "tests/vectors/denials.tsv");
    for row in rows {
        let (who, country, check) = (row.client, row.country, row.check);
        let c = Case::new(who, country);
        let j = c.judge(&BTreeMap::new());
        assert!(!j.decision.allowed, "{who}/{country}");
        let failed = failed_names(&j.decision);
        assert!(
            failed.iter().any(|f| f == check),
            "{who}/{country}: {failed:?}"
        );
        // The record that goes to the ledger before any answer.
        let r = &j.record;
        assert_eq!(
            (r.kind.as_str(), r.outcome.as_str()),
            ("release-decision", "denied")
        );
        assert_eq!(r.failed_checks, failed);
        assert_eq!(r.requester, c.client.name);
        assert_eq!(r.host_country.as_deref(), Some(country));
        assert_eq!(r.codeword, None, "a denial gets no codeword");
        assert_eq!(j.allocation(), None, "a denial holds no allocation");
        // Answered as `denied`, carrying the decision and its ledger entry; no release.
        let e = c.grant().unwrap_err();
        assert_eq!(e.code, ApiCode::Denied);
        assert!(e.message.contains(check), "{}", e.message);
        assert_eq!(e.ledger_index, Some(41));
        assert!(e
            .decision
            .unwrap()
            .failed()
            .iter()
            .any(|f| f.name() == check));
    }
}

#[test]
fn allowed_releases_carry_their_authority_codeword_and_shards() {
    // acme from the US (not a licence: Tier 1) and globex from India under D-2026-0001.
    for (who, country, authority) in [
        ("acme", "US", None),
        ("globex", "IN", Some("licence:D-2026-0001")),
        ("alice", "US", None),
        ("carol", "US", None),
    ] {
        let c = Case::new(who, country);
        let j = c.judge(&BTreeMap::new());
        assert!(
            j.decision.allowed,
            "{who}/{country}: {:?}",
            failed_names(&j.decision)
        );
        let r = &j.record;
        assert_eq!(r.outcome, "allowed");
        assert!(r.failed_checks.is_empty());
        if let Some(a) = authority {
            assert_eq!(
                r.authority.as_ref().map(|x| x.to_wire()).as_deref(),
                Some(a)
            );
            assert_eq!(j.allocation(), Some(("D-2026-0001", 91_335_235)));
        }
        assert_eq!(r.codeword.as_deref(), Some(hex::encode([7u8; 16]).as_str()));
        assert_eq!(r.bytes, Some(612 + 90_868_376 + 466_247));
        assert_eq!(
            r.shards,
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
        let (g, info, d) = c.grant().unwrap();
        assert!(d.allowed);
        assert_eq!(info.id, hex::encode([9u8; 16]));
        assert_eq!(info.expires_at, "2026-12-01T12:10:00Z");
        assert_eq!((g.decision_index, g.client), (41, c.client.fingerprint));
        assert_eq!(g.host_key, host_public(1));
        assert_eq!(info.shards.len(), 3);
        for (k, s) in info.shards.iter().enumerate() {
            assert_eq!(s.index, k as u32);
            assert_eq!(s.size, c.rev.files[k].original_len);
            assert!(s.stream_len > s.size, "a sealed stream carries tags");
        }
    }
}

#[test]
fn evidence_attacks_fail_the_host_evidence_check() {
    // The rows of tests/release.rs `evidence_attacks_are_refused`.
    let rogue = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let later = NOW + time::Duration::minutes(5);
    let cases: Vec<(&str, Case)> = vec![
        ("nonce reused", {
            // A replayed request, or evidence bound to another client's nonce: the state
            // answers that the nonce is not this client's fresh one.
            let mut c = Case::new("acme", "US");
            c.nonce_fresh = false;
            c
        }),
        (
            "expired",
            Case::with(
                policy(),
                "acme",
                evidence_as(
                    "US",
                    "weightvault-test-attester",
                    &attester_key(),
                    NOW - time::Duration::minutes(1),
                ),
            ),
        ),
        (
            "not trusted",
            Case::with(
                policy(),
                "acme",
                evidence_as("US", "rogue-attester", &rogue, later),
            ),
        ),
        (
            "signature does not verify",
            Case::with(
                policy(),
                "acme",
                evidence_as("US", "weightvault-test-attester", &rogue, later),
            ),
        ),
    ];
    for (why, c) in cases {
        let j = c.judge(&BTreeMap::new());
        assert!(!j.decision.allowed, "{why}");
        assert!(
            failed_names(&j.decision).contains(&"host_evidence".to_string()),
            "{why}"
        );
        let reason = host_evidence_reason(&j.decision);
        let expect = if why == "nonce reused" {
            "nonce reused or unknown"
        } else {
            why
        };
        assert!(reason.contains(expect), "{why}: {reason}");
        assert_eq!(c.grant().unwrap_err().code, ApiCode::Denied);
    }
}

#[test]
fn the_test_attester_seed_is_the_trusted_key() {
    let p = policy();
    let trusted = p
        .attesters
        .get("weightvault-test-attester")
        .unwrap()
        .public_key;
    assert_eq!(attester_key().verifying_key().to_bytes(), trusted);
}

#[test]
fn unreadable_evidence_bad_names_and_unknown_shards_are_refused_before_any_decision() {
    let p = policy();
    let mut garbled = evidence_from("US");
    garbled.statement = "{not json".into();
    assert_eq!(
        admit(&p, &body("acme-frontier", garbled)).unwrap_err().code,
        ApiCode::BadEvidence
    );
    let mut no_key = evidence_from("US");
    no_key.statement = no_key.statement.replace(&hex::encode(host_public(1)), "zz");
    assert_eq!(
        admit(&p, &body("acme-frontier", no_key)).unwrap_err().code,
        ApiCode::BadEvidence
    );
    // Hugging Face style names are models too.
    let b = body(
        "sentence-transformers/all-MiniLM-L6-v2",
        evidence_from("US"),
    );
    assert_eq!(
        target(&b).unwrap().0,
        "sentence-transformers/all-MiniLM-L6-v2"
    );
    for (model, revision) in [
        ("../etc", None),
        ("a/b/c", None),
        ("org--name", None),
        ("acme-frontier", Some("-rf")),
        ("", None),
    ] {
        let mut b = body(model, evidence_from("US"));
        b.revision = revision.map(str::to_string);
        let e = target(&b).unwrap_err();
        assert_eq!(e.code, ApiCode::BadRequest, "{model} {revision:?}");
        assert!(e.message.contains("is not allowed"), "{}", e.message);
    }
    let rev = frontier();
    let picked =
        select_shards(&rev, Some(&["tokenizer.json".into(), "config.json".into()])).unwrap();
    assert_eq!(picked, [2, 0]);
    let e = select_shards(&rev, Some(&["model-00002.safetensors".into()])).unwrap_err();
    assert_eq!(e.code, ApiCode::UnknownShard);
    assert_eq!(
        e.message,
        "acme-frontier@r1 has no file model-00002.safetensors"
    );
    // A body that does not parse is `bad_request` at the handler: it is not a ReleaseBody.
    assert!(serde_json::from_value::<ReleaseBody>(serde_json::json!({"model": 1})).is_err());
    assert!(serde_json::from_value::<ReleaseBody>(serde_json::json!({
        "model": "m", "evidence": {"statement": "", "signature": ""}, "extra": 1
    }))
    .is_err());
}

#[test]
fn a_licence_allocation_is_judged_on_the_use_counted_and_held() {
    // D-2026-0001 allows 50 releases, 3 used in the licence file; hooli's D-2026-0003 none left.
    let c = Case::new("globex", "IN");
    let used =
        |releases, bytes| BTreeMap::from([("D-2026-0001".to_string(), Usage { releases, bytes })]);
    assert!(c.judge(&used(46, 0)).decision.allowed);
    let j = c.judge(&used(47, 0));
    assert!(!j.decision.allowed);
    assert_eq!(failed_names(&j.decision), ["licence"]);
    // max_bytes 20 GB, 270 MB used in the file: this release's 91 MB must fit what is left.
    assert!(c.judge(&used(0, 19_000_000_000)).decision.allowed);
    assert!(!c.judge(&used(0, 19_700_000_000)).decision.allowed);
}

#[test]
fn source_addresses_behind_a_trusted_proxy_are_the_forwarded_ones() {
    let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let outside: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(
        source_ip(peer, Some("203.0.113.5, 198.51.100.7"), &proxies),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    assert_eq!(source_ip(peer, Some("garbage"), &proxies), peer);
    assert_eq!(source_ip(peer, None, &proxies), peer);
    // Anyone else's header is ignored.
    assert_eq!(source_ip(outside, Some("203.0.113.5"), &proxies), outside);
}

fn a_grant() -> (Case, Grant) {
    let c = Case::new("acme", "US");
    let (g, _, _) = c.grant().unwrap();
    (c, g)
}

#[test]
fn shard_requests_are_refused_to_other_clients_after_expiry_withdrawal_or_out_of_range() {
    let (c, mut g) = a_grant();
    let me = c.client.fingerprint;
    assert_eq!(admit_shard(&g, &me, NOW, 1), Ok(1));
    let other = client("globex").fingerprint;
    let code = |r: Result<usize, Refusal>| r.unwrap_err().code;
    assert_eq!(code(admit_shard(&g, &other, NOW, 0)), ApiCode::WrongClient);
    assert_eq!(code(admit_shard(&g, &me, NOW, 3)), ApiCode::UnknownShard);
    let late = NOW + time::Duration::minutes(11);
    assert_eq!(code(admit_shard(&g, &me, late, 0)), ApiCode::ReleaseExpired);
    g.withdrawn = Some(vec!["licence".into()]);
    let e = admit_shard(&g, &me, NOW, 0).unwrap_err();
    assert_eq!(e.code, ApiCode::ReleaseRevoked);
    assert_eq!(
        e.message,
        "this release was withdrawn by a policy change: licence"
    );
    // Another client's request is refused as such even after a withdrawal.
    assert_eq!(code(admit_shard(&g, &other, NOW, 0)), ApiCode::WrongClient);
}

#[test]
fn ranges_are_one_satisfiable_byte_range() {
    let len = 1000;
    for (h, want) in [
        (None, Ok(None)),
        (Some("bytes=0-"), Ok(Some((0, 1000)))),
        (Some("bytes=10-19"), Ok(Some((10, 20)))),
        (Some("bytes=990-5000"), Ok(Some((990, 1000)))),
        (
            Some("bytes=0-99999999999999999999"),
            Err(ApiCode::BadRequest),
        ),
        (Some("bytes=1000-"), Err(ApiCode::BadRange)),
        (Some("bytes=20-10"), Err(ApiCode::BadRange)),
        (Some("bytes= 5 - 6"), Err(ApiCode::BadRequest)),
        (Some("bytes=+5-6"), Err(ApiCode::BadRequest)),
        (Some("bytes=-10"), Err(ApiCode::BadRequest)),
        (Some("items=0-1"), Err(ApiCode::BadRequest)),
        (Some("bytes=0-1,5-6"), Err(ApiCode::BadRequest)),
        (Some(""), Err(ApiCode::BadRequest)),
    ] {
        let got = parse_range(h.map(str::as_bytes), len);
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{h:?}"),
            (Err(e), Err(code)) => {
                assert_eq!(e.code, code, "{h:?}");
                if code == ApiCode::BadRange {
                    assert!(e.message.contains("1000 bytes"));
                }
            }
            (g, w) => panic!("{h:?}: got {g:?}, want {w:?}"),
        }
    }
    assert_eq!(
        parse_range(Some(&[0xff, 0xfe]), len).unwrap_err().code,
        ApiCode::BadRequest
    );
}

#[test]
fn a_stream_opens_only_with_the_attested_host_key_and_not_when_tampered() {
    let (c, g) = a_grant();
    let f = &c.rev.files[0];
    let s = sealer(&service_key(), &g, 0, f).unwrap();
    // The whole of config.json is the head: chunk 0.
    let mut chunk = vec![0x61u8; s.header().plain_len(0) as usize];
    let plain = chunk.clone();
    let tag = s.seal_chunk(0, &mut chunk);
    let header = s.header().encode();
    assert_eq!(header.len(), HEADER_LEN);
    let mine = Opener::new(&header, &host_secret(1)).unwrap();
    let mut buf = chunk.clone();
    mine.open_chunk(0, &mut buf, &tag)
        .expect("the attested host opens it");
    assert_eq!(buf, plain);
    // Another host's key: the chunk does not open.
    let theirs = Opener::new(&header, &host_secret(2)).unwrap();
    assert!(theirs.open_chunk(0, &mut chunk.clone(), &tag).is_err());
    // One flipped byte: refused.
    let mut flipped = chunk.clone();
    flipped[5] ^= 1;
    assert!(mine.open_chunk(0, &mut flipped, &tag).is_err());
    // The same release id gives the same stream on any replica with the vault's keys, and
    // another id another one.
    let again = sealer(&service_key(), &g, 0, f).unwrap();
    assert_eq!(again.header().encode(), header);
    let mut other = g.clone();
    other.id = [8; 16];
    assert_ne!(
        sealer(&service_key(), &other, 0, f)
            .unwrap()
            .header()
            .encode(),
        header
    );
}

#[test]
fn stream_ends_are_recorded_against_their_decision() {
    let (_, g) = a_grant();
    let later = NOW + time::Duration::seconds(30);
    let whole = stream_end(&g, "model.safetensors", 500, 500, None, later);
    assert_eq!(
        (
            whole.kind.as_str(),
            whole.outcome.as_str(),
            whole.bytes,
            whole.follows
        ),
        ("stream-end", "completed", Some(500), Some(41))
    );
    assert_eq!(whole.shards, ["model.safetensors"]);
    assert_eq!(whole.time, "2026-12-01T12:00:30Z");
    assert_eq!(whole.requester, g.record.requester);
    assert!(whole.failed_checks.is_empty());
    let dropped = stream_end(&g, "model.safetensors", 100, 500, None, later);
    assert_eq!(dropped.outcome, "cut-short");
    assert!(
        dropped.failed_checks.is_empty(),
        "the client went away: no check failed"
    );
    let cut = ["licence".to_string()];
    let withdrawn = stream_end(&g, "model.safetensors", 100, 500, Some(&cut), later);
    assert_eq!(
        (
            withdrawn.outcome.as_str(),
            withdrawn.failed_checks.as_slice()
        ),
        ("cut-short", &cut[..])
    );
    // A withdrawal after the last byte does not make a whole stream cut.
    let done = stream_end(&g, "model.safetensors", 500, 500, Some(&cut), later);
    assert_eq!(done.outcome, "completed");
    assert!(done.failed_checks.is_empty());
}

#[test]
fn a_new_policy_withdraws_exactly_the_releases_it_no_longer_allows() {
    // Running releases as in the end-to-end reload tests: globex under D-2026-0001, carol with
    // her CN clearance, the Acme workload, and alice.
    let grants: Vec<(&str, Grant)> = [
        ("globex", "IN"),
        ("carol", "US"),
        ("acme", "US"),
        ("alice", "US"),
    ]
    .iter()
    .map(|(who, country)| (*who, Case::new(who, country).grant().unwrap().0))
    .collect();
    let live = |skip: &[&str]| -> Vec<Live<'_>> {
        grants
            .iter()
            .filter(|(w, _)| !skip.contains(w))
            .map(|(_, g)| Live {
                grant: g,
                used_by_others: BTreeMap::new(),
            })
            .collect()
    };
    let withdrawn = |p: &PolicyData, l: &[Live<'_>]| -> Vec<(String, Vec<String>)> {
        rejudge(p, &NoGeo, l, NOW)
            .into_iter()
            .map(|(k, f)| (l[k].grant.record.requester.clone(), f))
            .collect()
    };
    // The same policy withdraws nothing.
    assert_eq!(withdrawn(&policy(), &live(&[])), []);
    // The licence suspended: globex's release only.
    let suspended = policy_with(|name, t| {
        if name != "licences.toml" {
            return t;
        }
        let i = t.find("id = \"D-2026-0001\"").unwrap();
        let j = i + t[i..].find("status = \"active\"").unwrap();
        format!(
            "{}status = \"suspended\"{}",
            &t[..j],
            &t[j + "status = \"active\"".len()..]
        )
    });
    assert_eq!(
        withdrawn(&suspended, &live(&[])),
        [(client("globex").name, vec!["licence".to_string()])]
    );
    // Carol's clearance removed: hers only, for deemed export.
    let uncleared = policy_with(|name, t| {
        if name != "people.toml" {
            return t;
        }
        let i = t
            .find("[[person.clearance]]\ncountry = \"CN\"\nreference = \"D-2026-DE-0042\"")
            .unwrap();
        let j = i + t[i..].find("until = 2029-06-30\n").unwrap() + "until = 2029-06-30\n".len();
        format!("{}{}", &t[..i], &t[j..])
    });
    assert_eq!(
        withdrawn(&uncleared, &live(&[])),
        [(
            "carol@acme.example".to_string(),
            vec!["deemed_export".to_string()]
        )]
    );
    // Acme newly listed as a restricted party: every Acme release (the workload, carol, alice).
    let listed = policy_with(|name, mut t| {
        if name == "restricted-parties.csv" {
            t.push_str("Acme AI Inc,US,Entity List (test)\n");
        }
        t
    });
    let got = withdrawn(&listed, &live(&["globex"]));
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .all(|(_, f)| f.contains(&"restricted_parties".to_string())),
        "{got:?}"
    );
    // A release already withdrawn, or expired, is not decided again.
    let mut gone = grants[0].1.clone();
    gone.withdrawn = Some(vec!["licence".into()]);
    let mut old = grants[0].1.clone();
    old.expires_at = NOW - time::Duration::seconds(1);
    let l = [
        Live {
            grant: &gone,
            used_by_others: BTreeMap::new(),
        },
        Live {
            grant: &old,
            used_by_others: BTreeMap::new(),
        },
    ];
    assert_eq!(rejudge(&suspended, &NoGeo, &l, NOW), []);
    // Decided again without its own allocation against it: the 47th release of D-2026-0001
    // still holds when the others have used 46.
    let mut full = live(&["carol", "acme", "alice"]);
    full[0].used_by_others = BTreeMap::from([(
        "D-2026-0001".to_string(),
        Usage {
            releases: 46,
            bytes: 0,
        },
    )]);
    assert_eq!(rejudge(&policy(), &NoGeo, &full, NOW), []);
    full[0]
        .used_by_others
        .get_mut("D-2026-0001")
        .unwrap()
        .releases = 47;
    assert_eq!(rejudge(&policy(), &NoGeo, &full, NOW).len(), 1);
}

#[test]
fn reloads_are_recorded_with_what_they_withdrew_or_why_they_were_refused() {
    let [applied] = &reload_records(NOW, None, &[4, 9])[..] else {
        panic!("two withdrawals fit one record");
    };
    assert_eq!(
        (
            applied.kind.as_str(),
            applied.outcome.as_str(),
            applied.requester.as_str()
        ),
        ("policy-reload", "applied", "weightvault-serve")
    );
    assert_eq!(applied.shards, ["withdrawn:4", "withdrawn:9"]);
    assert!(applied.failed_checks.is_empty());
    assert_eq!(applied.withdrawals(), [4, 9]);
    assert_eq!(applied.rejection(), None);
    let [rejected] = &reload_records(NOW, Some("licences.toml: line 1: bad".into()), &[])[..]
    else {
        panic!("one record");
    };
    assert_eq!(rejected.outcome, "rejected");
    // The error is the reason, not a failed check.
    assert!(rejected.failed_checks.is_empty());
    assert_eq!(
        rejected.reason.as_deref(),
        Some("licences.toml: line 1: bad")
    );
    assert_eq!(
        rejected.rejection().as_deref(),
        Some("licences.toml: line 1: bad")
    );
    assert!(rejected.shards.is_empty());
    // Past what one record lists, `withdrawal` parts come first and the reload last.
    let many: Vec<u64> = (0..3001).collect();
    let parts = reload_records(NOW, None, &many);
    let kinds: Vec<&str> = parts.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["withdrawal", "withdrawal", "policy-reload"]);
    let all: Vec<u64> = parts.iter().flat_map(|r| r.withdrawals()).collect();
    assert_eq!(all, many);
    assert_eq!(parts[2].withdrawals(), [3000]);
}
