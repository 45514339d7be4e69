//! Two `weightvault serve` replicas on one vault sharing one PostgreSQL (`WEIGHTVAULT_DATABASE`;
//! a private cluster of Debian's PostgreSQL on 127.0.0.1), real SoftHSM2 and real mutual TLS:
//! a nonce issued by one replica is used at the other once, never twice; a release decided at
//! one is served by the other; the decisions are in the database's ledger, not the vault's
//! local one; PostgreSQL stopped -> releases refused with 503 `ledger_unavailable` and nothing
//! recorded, and the service resumes when it is back.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use weightvault_testkit::postgres::TestPostgres;
use weightvault_testkit::{new_host_key, TestCa};

const TESTKIT: &str = env!("CARGO_BIN_EXE_weightvault-testkit");

/// Starts `weightvault serve` on 127.0.0.1:0 for `vault` with the database `db`; it stops
/// when the child's stdin closes (when the child is dropped).
fn start_replica(root: &Path, name: &str, db: &str) -> (String, Child) {
    start_replica_with(root, name, db, &[], &[])
}

/// [`start_replica`] with more arguments and environment.
fn start_replica_with(
    root: &Path,
    name: &str,
    db: &str,
    extra: &[&str],
    vars: &[(&str, String)],
) -> (String, Child) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = dir.join("addr");
    let pki = root.join("pki");
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(common::bin())
        .env("WEIGHTVAULT_LOG", "info")
        .env("WEIGHTVAULT_DATABASE", db)
        .arg("--vault")
        .arg(root.join("vault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--until-stdin-closes"])
        .arg("--addr-file")
        .arg(&addr)
        .arg("--cert")
        .arg(pki.join("server.pem"))
        .arg("--key")
        .arg(pki.join("server.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"))
        .arg("--policies")
        .arg(root.join("policies"))
        .args(extra)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&addr).map_or(true, |a| a.is_empty()) {
        assert!(
            t.elapsed().as_secs() < 60,
            "replica {name} did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&addr).unwrap();
    let url = format!("https://{}", text.lines().next().unwrap_or_default().trim());
    (url, child)
}

/// A client of one replica, as the `acme` workload.
fn acme_at(root: &Path, server: &str) -> common::api::Api {
    common::api::Api::of_pki(&root.join("pki"), "acme", server)
}

/// Host evidence for `nonce` from a US host with host-a's key, signed by the test attester.
fn evidence(root: &Path, nonce: &str) -> serde_json::Value {
    let hex = std::fs::read_to_string(root.join("host-a")).unwrap();
    let b: [u8; 32] = hex::decode(hex.trim()).unwrap().try_into().unwrap();
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b)).to_bytes();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test-attester/seed.hex");
    let o = Command::new(TESTKIT)
        .arg("attest")
        .arg("--seed")
        .arg(seed)
        .args(["--host-id", "test-US", "--country", "US", "--region", "r1"])
        .env("WEIGHTVAULT_NONCE", nonce)
        .env("WEIGHTVAULT_HOST_PUBLIC_KEY", hex::encode(public))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn psql(pg: &TestPostgres, sql: &str) -> String {
    pg.psql("vault", sql).unwrap()
}

/// Release decisions in the database's ledger.
fn decisions_in(pg: &TestPostgres) -> String {
    psql(
        pg,
        "SELECT count(*) FROM wv_entries
         WHERE convert_from(record, 'UTF8')::jsonb->>'kind' = 'release-decision'",
    )
}

fn body(ev: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"model": "acme-small", "evidence": ev})
}

/// The vault (a small generated EAR99 model), its policies (loopback as a VPN range, as in
/// tests/release.rs), the test PKI and a host key, under `root`.
fn make_vault(root: &Path) {
    common::require_softhsm();
    let pol = root.join("policies");
    common::loopback_policies(&pol);
    let vault = root.join("vault");
    common::init_for_service(&vault);
    let model = root.join("model");
    std::fs::create_dir_all(&model).unwrap();
    common::write_safetensors(
        &model.join("model.safetensors"),
        &[(
            "w",
            safetensors::Dtype::F32,
            vec![512, 1024],
            common::bytes(5, 2 << 20),
        )],
    );
    common::seal_ok(
        &vault,
        &model,
        "acme-small@g1",
        &["--eccn", "EAR99", "--training-ops", "4e24"],
    );
    let pki = root.join("pki");
    let ca = TestCa::create(&pki, "test organisation CA").unwrap();
    ca.issue_server("server").unwrap();
    ca.issue_client("acme", "spiffe://acme.example/ns/serving/sa/llm", None)
        .unwrap();
    new_host_key(&root.join("host-a")).unwrap();
}

#[test]
fn two_replicas_share_nonces_releases_and_one_ledger_and_refuse_while_postgresql_is_down() {
    let tmp = common::scratch();
    let root = tmp.path().to_path_buf();
    make_vault(&root);
    let mut pg = TestPostgres::start_in(&root).unwrap();
    let db = pg.create_database("vault").unwrap();
    let (a_url, a_child) = start_replica(&root, "a", &db);
    let (b_url, b_child) = start_replica(&root, "b", &db);
    let (a, b) = (acme_at(&root, &a_url), acme_at(&root, &b_url));

    // A nonce from A, used at B: allowed; the same evidence again at A or B: refused.
    let ev = evidence(&root, &a.nonce());
    let (s, v) = b.post("/v1/releases", body(ev.clone()));
    assert_eq!(s, 200, "{v}");
    let release = v["release"]["id"].as_str().unwrap().to_string();
    let decided_at = v["ledger_index"].as_u64().unwrap();
    for r in [&a, &b] {
        let (s, v) = r.post("/v1/releases", body(ev.clone()));
        assert_eq!((s, v["code"].as_str()), (403, Some("denied")), "{v}");
        assert!(v.to_string().contains("nonce reused"), "{v}");
    }
    // Decided at B, served by A (and B), byte for byte the same stream.
    let (s, from_a) = a.get(&format!("/v1/releases/{release}/shards/0"));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&from_a));
    let (s, from_b) = b.get(&format!("/v1/releases/{release}/shards/0"));
    assert_eq!(s, 200);
    assert_eq!(from_a, from_b);

    // One ledger, in the database: both refusals and the decision, with gapless indices.
    assert_eq!(decisions_in(&pg), "3");
    assert_eq!(
        psql(&pg, "SELECT count(*) = max(idx) + 1 FROM wv_entries"),
        "t",
        "gapless"
    );
    assert!(decided_at < 3);
    let (ok, out, err) = common::cli(&root.join("vault"), &["audit", "show", "--json"]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("release-decision"),
        "the vault's local ledger holds no decision: {out}"
    );
    // With the database named, the CLI reads the shared ledger.
    let (ok, out, err) = common::cli_env(
        &root.join("vault"),
        &[("WEIGHTVAULT_DATABASE", db.clone())],
        &["audit", "show", "--json"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.matches("\"release-decision\"").count(), 3, "{out}");

    // PostgreSQL stopped: a nonce taken before is refused with 503 at either replica, and
    // nothing is released; back, both replicas decide again.
    let n = a.nonce();
    pg.stop().unwrap();
    for r in [&a, &b] {
        let (s, v) = r.post("/v1/releases", body(evidence(&root, &n)));
        assert_eq!(
            (s, v["code"].as_str()),
            (503, Some("ledger_unavailable")),
            "{v}"
        );
        let (s, v) = r.post("/v1/challenge", serde_json::json!({}));
        assert_eq!(s, 503, "{v}");
    }
    pg.start().unwrap();
    // The pools drop the connections the stop closed; a client retries a 503 (with a new
    // nonce: the one a refused request took may be spent).
    let mut done = None;
    for _ in 0..20 {
        let (s, v) = a.post("/v1/challenge", serde_json::json!({}));
        if s == 200 {
            let (s, v) = b.post(
                "/v1/releases",
                body(evidence(&root, v["nonce"].as_str().unwrap())),
            );
            if s != 503 {
                done = Some((s, v));
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (s, v) = done.expect("releases resumed");
    assert_eq!(s, 200, "{v}");
    assert_eq!(decisions_in(&pg), "4", "the refused requests left nothing");
    drop((a_child, b_child));
}

/// Waits up to `within` for `f` to give something.
fn wait_for<T>(within: std::time::Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The ledger of two replicas in one database, published as tiles in an Object Lock bucket by
/// one elected replica: that replica killed mid-integration, the other takes over and
/// completes the tree; the tiles hold every entry of both replicas in the database's order,
/// and an auditor verifies the tree and an inclusion proof from the buckets and the public
/// key alone. (Most of the 140,000 entries are copies of a real decision's, inserted by SQL
/// the way the sequencer commits a batch, so that one integration takes long enough to be
/// interrupted.)
#[test]
fn the_integrator_killed_mid_integration_is_replaced_and_the_tiles_hold_every_entry() {
    use common::s3::{moto, new_bucket, new_worm_bucket};
    use std::time::Duration;
    let tmp = common::scratch();
    let root = tmp.path().to_path_buf();
    make_vault(&root);
    let worm = new_worm_bucket();
    let head = new_bucket(false);
    let toml = root.join("vault/vault.toml");
    let base = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!(
            "{base}\n[ledger.tiles]\nurl = \"s3://{worm}/log\"\nhead_url = \"s3://{head}/log\"\nendpoint = \"{}\"\nallow_http = true\nworm_days = 1\nworm_mode = \"governance\"\n",
            moto().endpoint
        ),
    )
    .unwrap();
    let pg = TestPostgres::start_in(&root).unwrap();
    let db = pg.create_database("vault").unwrap();
    let vars = moto().env();
    let every = ["--checkpoint-every", "1"];
    let (a_url, a_child) = start_replica_with(&root, "a", &db, &every, &vars);
    let (b_url, b_child) = start_replica_with(&root, "b", &db, &every, &vars);
    let (a, b) = (acme_at(&root, &a_url), acme_at(&root, &b_url));
    // A decision at each replica.
    for (r, other) in [(&a, &b), (&b, &a)] {
        let (s, v) = r.post("/v1/releases", body(evidence(&root, &other.nonce())));
        assert_eq!(s, 200, "{v}");
    }
    let log_of = |name: &str| std::fs::read_to_string(root.join(name).join("serve.log")).unwrap();
    let elected = wait_for(Duration::from_secs(30), "an integrator", || {
        ["a", "b"]
            .into_iter()
            .find(|n| log_of(n).contains("elected the ledger integrator"))
    });
    let other = if elected == "a" { "b" } else { "a" };
    // 140,000 more entries, committed at once as the sequencer commits a batch (head row
    // locked, entries and head in one transaction).
    psql(
        &pg,
        "BEGIN;
         SELECT size FROM wv_ledger_head FOR UPDATE;
         INSERT INTO wv_entries (idx, record, leaf, reviewing)
           SELECT h.size + g, e.record, e.leaf, false
           FROM wv_ledger_head h, generate_series(0, 139999) g,
                (SELECT record, leaf FROM wv_entries WHERE idx = 0) e;
         UPDATE wv_ledger_head SET size = size + 140000;
         COMMIT;",
    );
    let total: u64 = psql(&pg, "SELECT size FROM wv_ledger_head")
        .parse()
        .unwrap();
    let raw_head = common::s3::Raw::new(&head);
    let published = || -> u64 {
        raw_head
            .try_get("log/checkpoint")
            .and_then(|n| String::from_utf8(n).ok()?.lines().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    // The integrator has signed a head past the first batch of 65,536 but not the whole log:
    // it is killed there.
    let mut children = [(String::from("a"), a_child), (String::from("b"), b_child)];
    let mid = wait_for(
        Duration::from_secs(120),
        "a checkpoint mid-integration",
        || {
            let n = published();
            (n > 2 && n < total).then_some(n)
        },
    );
    let k = children.iter().position(|(n, _)| n == elected).unwrap();
    children[k].1.kill().unwrap();
    children[k].1.wait().unwrap();
    let killed_at = published();
    assert!(
        killed_at < total,
        "the kill came after the whole integration"
    );
    // The other replica takes over and publishes the whole tree.
    wait_for(Duration::from_secs(120), "the whole tree published", || {
        (published() == total).then_some(())
    });
    assert!(
        log_of(other).contains("elected the ledger integrator"),
        "{}",
        log_of(other)
    );
    // The auditor: no vault, no database; the buckets and the public key.
    let (ok, key, err) = common::cli(&root.join("vault"), &["audit", "public-key"]);
    assert!(ok, "{err}");
    let nowhere = root.join("no-vault");
    let auditor = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        let (w, h) = (format!("s3://{worm}/log"), format!("s3://{head}/log"));
        let k = key.trim().to_string();
        a.extend_from_slice(&["--tiles", &w, "--head", &h, "--public-key", &k]);
        common::cli_env(&nowhere, &vars, &a)
    };
    let (ok, out, err) = auditor(&["audit", "verify"]);
    assert!(
        ok && out.contains(&format!("{total} entries")),
        "{out}{err}"
    );
    // Both replicas' decisions (entries 0.. before the copies) are in it, provably.
    let (ok, proof, err) = auditor(&["audit", "prove", "1"]);
    assert!(ok, "{err}");
    let pf = root.join("proof.json");
    std::fs::write(&pf, &proof).unwrap();
    let (ok, out, err) = common::cli_env(
        &nowhere,
        &vars,
        &[
            "audit",
            "verify-proof",
            pf.to_str().unwrap(),
            "--public-key",
            key.trim(),
        ],
    );
    assert!(
        ok && out.contains(&format!(
            "entry 1 is in the ledger at checkpoint size {total}"
        )),
        "{out}{err}"
    );
    // The vault's own CLI, on the database, audits where the service publishes.
    let mut dbvars = vars.clone();
    dbvars.push(("WEIGHTVAULT_DATABASE", db.clone()));
    let (ok, out, err) = common::cli_env(&root.join("vault"), &dbvars, &["audit", "verify"]);
    assert!(
        ok && out.contains(&format!("{total} entries")),
        "{out}{err}"
    );
    drop(children);
    println!(
        "integrator {elected} killed with {mid}..{killed_at} of {total} entries published; {other} took over and published all"
    );
}

/// Reviews and daily quotas with a shared database: a release held at one replica is
/// approved by `weightvault review approve` (recorded in the database's ledger) and then goes
/// through at the other replica; the organisation's daily quota counts the releases of both
/// replicas, and the one over it is denied naming the quota.
#[test]
fn a_release_held_at_one_replica_is_approved_once_for_both_and_a_daily_quota_spans_them() {
    let tmp = common::scratch();
    let root = tmp.path().to_path_buf();
    make_vault(&root);
    let pol = root.join("policies");
    // A listed party owns 30 % of Acme: every Acme release is held for review.
    let people = pol.join("people.toml");
    let text = std::fs::read_to_string(&people).unwrap();
    let acme = "name = \"Acme AI, Inc.\"\ncountry = \"US\"\n";
    assert!(text.contains(acme));
    let owner = "[[organisation.owner]]\nparty = \"Shadow Compute Limited\"\npercent = 30\n";
    std::fs::write(&people, text.replacen(acme, &format!("{acme}{owner}"), 1)).unwrap();
    let rules = pol.join("rules.toml");
    let text = std::fs::read_to_string(&rules).unwrap();
    let quota = "\n[[quota]]\norganisation = \"acme\"\nreleases_per_day = 2\n";
    std::fs::write(&rules, format!("{text}{quota}")).unwrap();

    let pg = TestPostgres::start_in(&root).unwrap();
    let db = pg.create_database("vault").unwrap();
    let (a_url, a_child) = start_replica(&root, "a", &db);
    let (b_url, b_child) = start_replica(&root, "b", &db);
    let (a, b) = (acme_at(&root, &a_url), acme_at(&root, &b_url));
    let ask = |r: &common::api::Api| r.post("/v1/releases", body(evidence(&root, &r.nonce())));

    let (s, v) = ask(&a);
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("held_for_review")),
        "{v}"
    );
    let review = v["ledger_index"].as_u64().unwrap();
    // Held again at B until approved: a second review of the same request.
    let (s, v) = ask(&b);
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("held_for_review")),
        "{v}"
    );

    let vault = root.join("vault");
    let env = [("WEIGHTVAULT_DATABASE", db.clone())];
    let (ok, list, e) = common::cli_env(&vault, &env, &["review", "list", "--json"]);
    assert!(ok, "{e}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["reviews"].as_array().unwrap().len(), 2, "{list}");
    let id = review.to_string();
    let approve = [
        "review",
        "approve",
        &id,
        "--reason",
        "30 % holder checked: a passive fund",
        "--policies",
        pol.to_str().unwrap(),
        "--json",
    ];
    let (ok, said, e) = common::cli_env(&vault, &env, &approve);
    assert!(ok, "{e}");
    let said: serde_json::Value = serde_json::from_str(&said).unwrap();
    let approval = said["recorded"]["ledger_index"]
        .as_u64()
        .expect("in the database");
    let (ok, _, e) = common::cli_env(&vault, &env, &approve);
    assert!(!ok && e.contains("already"), "decided once: {e}");

    // Approved: through at B (which never saw the approval being made), then at A.
    let (s, v) = ask(&b);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["decision"]["approved_by"]["review"], review, "{v}");
    let (s, v) = ask(&a);
    assert_eq!(s, 200, "{v}");
    // Acme's quota of two a day is used by the two replicas together.
    let (s, v) = ask(&b);
    assert_eq!((s, v["code"].as_str()), (403, Some("denied")), "{v}");
    assert!(v.to_string().contains("quota"), "{v}");
    let day = time::OffsetDateTime::now_utc().date();
    assert_eq!(
        psql(
            &pg,
            &format!(
                "SELECT releases FROM wv_quota_usage
                 WHERE counter = 'quota:organisation:acme:{day}'"
            )
        ),
        "2"
    );
    assert_eq!(
        psql(
            &pg,
            &format!(
                "SELECT convert_from(record, 'UTF8')::jsonb->>'outcome' FROM wv_entries
                 WHERE idx = {approval}"
            )
        ),
        "approved"
    );
    drop((a_child, b_child));
}
