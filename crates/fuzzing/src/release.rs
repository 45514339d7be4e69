//! A release request as a client sends it to `/v1/releases`, through the release engine
//! (crates/pure/release engine.rs) under the repository's policies: `admit`, `target`,
//! `select_shards`, `source_ip`, `judge`, `grant`, then a shard request's `admit_shard`,
//! `parse_range` and `stream_end`.

use crate::mode;
use crate::mutate::{cut, mutate};
use arbitrary::{Arbitrary, Unstructured};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use time::OffsetDateTime;
use weightvault_core::evidence::{self, Statement};
use weightvault_core::facts::TrainingFacts;
use weightvault_core::keys::SymmetricKey;
use weightvault_policy::{NoGeo, PolicyData};
use weightvault_release::engine::{self, Asked, Client, FileView, RevisionView};
use weightvault_release::wire::ReleaseBody;

/// The repository's test attester, which `policies/attesters.toml` trusts.
const ATTESTER_SEED: &str = include_str!("../../../tools/test-attester/seed.hex");
const ATTESTER: &str = "weightvault-test-attester";

/// The decision time: 2026-12-01T12:00:00Z.
const NOW: i64 = 1_796_126_400;

fn policy() -> &'static PolicyData {
    static P: OnceLock<PolicyData> = OnceLock::new();
    P.get_or_init(|| {
        PolicyData::parse(&weightvault_policy::data::repository_files())
            .expect("the repository's policies parse")
    })
}

fn attester() -> SigningKey {
    let seed: [u8; 32] = hex::decode(ATTESTER_SEED.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    SigningKey::from_bytes(&seed)
}

const CLIENTS: &[(&str, bool)] = &[
    ("spiffe://acme.example/ns/serving/sa/llm", true),
    ("spiffe://globex.example/ns/inference/sa/llm", true),
    ("spiffe://initech.example/sa/llm", true),
    ("spiffe://hooli.example/sa/llm", true),
    ("spiffe://umbrella.example/sa/llm", true),
    ("spiffe://shadow.example/sa/llm", true),
    ("alice@acme.example", false),
    ("bob@acme.example", false),
    ("carol@acme.example", false),
    ("mallory@nowhere.example", false),
];

const COUNTRIES: &[&str] = &[
    "US", "DE", "IN", "BR", "SG", "AE", "CN", "RU", "IR", "KP", "GB",
];

/// A revision of three files, whatever the request names (the service would have opened the
/// one it names).
fn revision(model: &str) -> RevisionView {
    let file = |path: &str, original_len: u64, head_len: u64| FileView {
        path: path.into(),
        original_len,
        chunk_size: 1 << 20,
        head_len,
        data_len: original_len - head_len,
    };
    RevisionView {
        label: format!("{model}@r1"),
        model: model.into(),
        revision: "r1".into(),
        training: TrainingFacts {
            eccn: Some("4E091".into()),
            training_ops: Some(1e26),
            open_weights: false,
        },
        files: vec![
            file("config.json", 600, 0),
            file("model.safetensors", 90_000_000, 12_000),
            file("tokenizer.json", 700_000, 0),
        ],
    }
}

/// A request built from arbitrary choices, with evidence signed by the repository's attester
/// (or not), for a model of the inventory (or not), sent from an address and with headers
/// from the input.
#[derive(Debug, Arbitrary)]
struct ArbRequest {
    client: u8,
    model: u8,
    other_model: String,
    revision: Option<String>,
    shards: Option<Vec<u8>>,
    signed: bool,
    host_id: String,
    country: u8,
    region: String,
    age: u16,
    lifetime: u16,
    host_key: [u8; 32],
    nonce_fresh: bool,
    peer: [u8; 4],
    forwarded_for: Option<String>,
    used: Vec<(u8, u64, u64)>,
    mutate_body: bool,
}

const MODELS: &[&str] = &[
    "acme-frontier",
    "acme-threshold",
    "acme-small",
    "all-minilm-l6-v2",
];

/// Mode byte even: the raw bytes as the JSON body, from a fixed client (the acme workload) on
/// loopback with a fresh nonce. Odd: a body built from arbitrary choices, its JSON then
/// mutated or not, from an arbitrary client and address.
pub fn release_body(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    if m % 2 == 0 {
        if let Ok(body) = serde_json::from_slice::<ReleaseBody>(rest) {
            let peer = IpAddr::from([127, 0, 0, 1]);
            decide(&body, 0, true, peer, None, &BTreeMap::new(), &[]);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(a) = ArbRequest::arbitrary(&mut u) else {
        return;
    };
    let model = MODELS
        .get(usize::from(a.model))
        .map_or_else(|| cut(a.other_model, 160), |m| m.to_string());
    let issued = NOW - i64::from(a.age);
    let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).expect("in range");
    let st = Statement {
        attester: ATTESTER.into(),
        host_id: cut(a.host_id, 64),
        country: COUNTRIES[usize::from(a.country) % COUNTRIES.len()].into(),
        region: cut(a.region, 32),
        measurement: "sha256:00".into(),
        nonce: "00".repeat(16),
        issued_at: t(issued),
        expires_at: t(issued + i64::from(a.lifetime)),
        host_key: hex::encode(a.host_key),
        facility: None,
    };
    let mut ev = evidence::sign(&st, &attester());
    if !a.signed {
        ev.signature = "AAAA".into();
    }
    let files = revision(&model).files;
    let body = ReleaseBody {
        model,
        revision: a.revision.map(|r| cut(r, 160)),
        shards: a.shards.map(|s| {
            s.iter()
                .take(8)
                .map(|&i| {
                    files
                        .get(usize::from(i))
                        .map_or("nope".into(), |f| f.path.clone())
                })
                .collect()
        }),
        evidence: ev,
    };
    let mut json = serde_json::to_vec(&body).expect("a body serialises");
    if a.mutate_body {
        mutate(&mut u, &mut json);
    }
    let Ok(body) = serde_json::from_slice::<ReleaseBody>(&json) else {
        return;
    };
    let used = a
        .used
        .iter()
        .take(4)
        .map(|&(l, releases, bytes)| {
            let id = policy()
                .licences
                .get(usize::from(l))
                .map_or("no-such-licence".to_string(), |l| l.id.clone());
            (id, weightvault_core::facts::Usage { releases, bytes })
        })
        .collect();
    let rest = u.take_rest();
    decide(
        &body,
        usize::from(a.client),
        a.nonce_fresh,
        IpAddr::from(a.peer),
        a.forwarded_for.as_deref(),
        &used,
        rest,
    );
}

fn decide(
    body: &ReleaseBody,
    client: usize,
    nonce_fresh: bool,
    peer: IpAddr,
    forwarded_for: Option<&str>,
    used: &BTreeMap<String, weightvault_core::facts::Usage>,
    range: &[u8],
) {
    let policy = policy();
    let Ok(admitted) = engine::admit(policy, body) else {
        return;
    };
    let Ok((model, _revision)) = engine::target(body) else {
        return;
    };
    let rev = revision(&model);
    let Ok(files) = engine::select_shards(&rev, body.shards.as_deref()) else {
        return;
    };
    let (name, workload) = CLIENTS[client % CLIENTS.len()];
    let client = Client {
        name: name.into(),
        fingerprint: [client as u8; 32],
        workload,
    };
    let proxies = ["10.0.0.0/8".parse().expect("a network")];
    let source = engine::source_ip(peer, forwarded_for, &proxies);
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("in range");
    let asked = Asked {
        client: &client,
        source,
        evidence: &admitted,
        nonce_fresh,
        revision: &rev,
        files: &files,
        now,
        codeword: Some([3; 16]),
        approvals: vec![],
    };
    let judged = engine::judge(policy, &NoGeo, &asked, used);
    // The service appends the decision's entry before it answers; one too long is refused.
    if judged.record.entry().is_err() {
        return;
    }
    let service_key = SymmetricKey::from_bytes([9; 32]);
    let expires = now + time::Duration::minutes(15);
    let Ok((grant, info, _)) = engine::grant(&asked, judged, 42, [1; 16], expires, &service_key)
    else {
        return;
    };
    assert_eq!(info.shards.len(), files.len());
    for (n, shard) in info.shards.iter().enumerate() {
        let i = engine::admit_shard(&grant, &client.fingerprint, now, n as u32)
            .expect("the client that asked may have its shards");
        assert_eq!(rev.files[i].path, shard.path);
        let header = (!range.is_empty()).then_some(range);
        if let Ok(Some((start, end))) = engine::parse_range(header, shard.stream_len) {
            assert!(start < end && end <= shard.stream_len);
            let r = engine::stream_end(
                &grant,
                &shard.path,
                end - start,
                shard.stream_len,
                None,
                now,
            );
            let entry = r.entry().expect("a stream end fits an entry");
            assert!(weightvault_ledger::record::Record::parse(&entry).is_ok());
        }
    }
}
