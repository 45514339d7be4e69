//! Two `weightvault serve` replicas behind HAProxy (Debian's, TCP passthrough, `GET /readyz`
//! on each replica's operations port) on one vault and one PostgreSQL (a private cluster of
//! Debian's, `WEIGHTVAULT_DATABASE`), with real SoftHSM2 and real mutual TLS end to end:
//! a licence's last releases are never exceeded however the balancer splits the requests; a
//! nonce issued by one replica is taken once at either; a fetch whose replica is SIGKILLed
//! mid-shard completes through the other, with the remainder only, byte for byte the release.
//!
//! The cluster, the vault, its models and the PKI are made once per test binary; each test
//! has its own database, replicas and HAProxy.

mod common;

use common::GENERATED;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weightvault::release::stream::{Opener, StreamHeader, HEADER_LEN};
use weightvault_testkit::haproxy::{Backend, Haproxy};
use weightvault_testkit::postgres::TestPostgres;
use weightvault_testkit::{new_host_key, TestCa};

const TESTKIT: &str = env!("CARGO_BIN_EXE_weightvault-testkit");
/// A small 4E091 model: released to globex in India only under licence D-2026-0001.
const FRONTIER: &str = "acme-frontier@r1";
const LICENCE: &str = "D-2026-0001";

/// What every test of this binary shares.
struct Fixture {
    root: PathBuf,
    pg: TestPostgres,
    generated: PathBuf,
}

fn fx() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        common::require_softhsm();
        let root = common::fixture_dir("env");
        // The repository's policies; loopback (where HAProxy connects from) is a VPN range,
        // as in tests/release.rs.
        let pol = root.join("policies");
        common::loopback_policies(&pol);
        let vault = root.join("vault");
        common::init_for_service(&vault);
        let frontier = root.join("frontier");
        std::fs::create_dir_all(&frontier).unwrap();
        common::write_safetensors(
            &frontier.join("model.safetensors"),
            &[(
                "w",
                safetensors::Dtype::F32,
                vec![256, 256],
                common::bytes(3, 256 << 10),
            )],
        );
        common::seal_ok(
            &vault,
            &frontier,
            FRONTIER,
            &["--eccn", "4E091", "--training-ops", "3.1e26"],
        );
        let generated = root.join("generated");
        common::seal_generated(&vault, &generated);
        let pki = root.join("pki");
        let ca = TestCa::create(&pki, "test organisation CA").unwrap();
        ca.issue_server("server").unwrap();
        for (stem, id) in [
            ("acme", "spiffe://acme.example/ns/serving/sa/llm"),
            ("globex", "spiffe://globex.example/ns/inference/sa/llm"),
        ] {
            ca.issue_client(stem, id, None).unwrap();
        }
        new_host_key(&root.join("host-a")).unwrap();
        // Held in a static, never dropped: its guardian stops it when this process ends.
        let pg = TestPostgres::start_in(&root).unwrap();
        Fixture {
            root,
            pg,
            generated,
        }
    })
}

/// One `weightvault serve` on the shared vault, with its operations port; it stops when its
/// stdin closes (when dropped).
struct Replica {
    dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    url: String,
    backend: Backend,
    child: Child,
}

impl Replica {
    fn start(dir: PathBuf, db: &str, policies: &Path) -> Replica {
        let f = fx();
        std::fs::create_dir_all(&dir).unwrap();
        let addr = dir.join("addr");
        let pki = f.root.join("pki");
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(common::bin())
            .env("WEIGHTVAULT_LOG", "info")
            .env("WEIGHTVAULT_DATABASE", db)
            .arg("--vault")
            .arg(f.root.join("vault"))
            .args(["serve", "--listen", "127.0.0.1:0", "--until-stdin-closes"])
            .args(["--ops-listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr)
            .arg("--cert")
            .arg(pki.join("server.pem"))
            .arg("--key")
            .arg(pki.join("server.key"))
            .arg("--client-ca")
            .arg(pki.join("ca.pem"))
            .arg("--policies")
            .arg(policies)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        let lines = loop {
            let text = std::fs::read_to_string(&addr).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
            if lines.len() >= 2 && !lines[1].is_empty() {
                break lines;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "replica {} did not start: {}",
                dir.display(),
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Replica {
            url: format!("https://{}", lines[0]),
            backend: Backend {
                service: lines[0].clone(),
                ops: lines[1].clone(),
            },
            child,
            dir,
        }
    }

    /// The value of a Prometheus sample of this replica (`name` with its labels), 0 if absent.
    fn metric(&self, name: &str) -> f64 {
        let (s, m) = common::plain_get(&self.backend.ops, "/metrics");
        assert_eq!(s, 200, "{m}");
        common::metric(&m, name).unwrap_or(0.0)
    }

    /// Release decisions this replica made.
    fn decisions(&self) -> f64 {
        ["allowed", "denied"]
            .iter()
            .map(|o| self.metric(&format!("weightvault_releases_total{{outcome=\"{o}\"}}")))
            .sum()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Two replicas on a database of their own, behind an HAProxy of their own.
struct Pair {
    db: String,
    replicas: [Replica; 2],
    lb: Haproxy,
}

impl Pair {
    /// `https://` address of the balancer.
    fn url(&self) -> String {
        format!("https://{}", self.lb.addr)
    }

    fn psql(&self, sql: &str) -> String {
        fx().pg.psql(&self.db, sql).unwrap()
    }

    /// The ledger's records of `kind` in the database, oldest first.
    fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        self.psql(&format!(
            "SELECT convert_from(record, 'UTF8') FROM wv_entries
             WHERE convert_from(record, 'UTF8')::jsonb->>'kind' = '{kind}' ORDER BY idx"
        ))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }

    fn logs(&self) -> String {
        format!(
            "--- r0 ---\n{}\n--- r1 ---\n{}",
            self.replicas[0].log(),
            self.replicas[1].log()
        )
    }
}

/// A test's directory, database (`name`), replicas deciding under `policies` (default: the
/// fixture's) and balancer, once HAProxy's checks find both replicas ready.
fn pair(name: &str, policies: Option<&Path>) -> (common::TestDir, Pair) {
    let f = fx();
    let dir = common::TestDir::new(f.root.join(name));
    std::fs::create_dir_all(&dir).unwrap();
    let db = f.pg.create_database(name).unwrap();
    let pol = policies.map_or_else(|| f.root.join("policies"), Path::to_path_buf);
    let replicas = ["r0", "r1"].map(|r| Replica::start(dir.join(r), &db, &pol));
    let backends: Vec<Backend> = replicas.iter().map(|r| r.backend.clone()).collect();
    let lb = Haproxy::start(&dir.join("haproxy"), &backends).unwrap();
    for r in ["r0", "r1"] {
        lb.wait_status(r, "UP", Duration::from_secs(20)).unwrap();
    }
    (
        dir,
        Pair {
            db: name.to_string(),
            replicas,
            lb,
        },
    )
}

/// A client as `who` (a stem in the PKI) of `server` (a replica or the balancer).
fn client_at(who: &str, server: &str) -> common::api::Api {
    common::api::Api::of_pki(&fx().root.join("pki"), who, server)
}

fn seed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test-attester/seed.hex")
}

/// The test attester's command for a host in `country` with host-a's key.
fn attest_cmd(country: &str) -> String {
    format!(
        "{TESTKIT} attest --seed {} --host-id test-{country} --country {country} --region r1",
        seed().display()
    )
}

/// Host evidence for `nonce` from a host in `country` with host-a's key.
fn evidence(nonce: &str, country: &str) -> serde_json::Value {
    let hex = std::fs::read_to_string(fx().root.join("host-a")).unwrap();
    let b: [u8; 32] = hex::decode(hex.trim()).unwrap().try_into().unwrap();
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b)).to_bytes();
    let o = Command::new("sh")
        .arg("-c")
        .arg(attest_cmd(country))
        .env("WEIGHTVAULT_NONCE", nonce)
        .env("WEIGHTVAULT_HOST_PUBLIC_KEY", hex::encode(public))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// 100 release requests at once through HAProxy for a licence with 10 releases left: 10
/// allowed, 90 refused as used up, and both replicas decided some of them.
#[test]
fn through_haproxy_two_replicas_allow_exactly_the_releases_a_licence_has_left() {
    let f = fx();
    // The licence with exactly 10 releases left (3 used before the vault counted; the new
    // database's ledger holds none).
    let tmp = common::TestDir::new(f.root.join("licence-policies"));
    common::copy_dir(&f.root.join("policies"), &tmp);
    let lic = std::fs::read_to_string(tmp.join("licences.toml")).unwrap();
    let lic = lic.replacen(
        "max_releases = 50\nreleases_used = 3",
        "max_releases = 13\nreleases_used = 3",
        1,
    );
    assert!(lic.contains("max_releases = 13"));
    std::fs::write(tmp.join("licences.toml"), lic).unwrap();
    let (_dir, p) = pair("licence", Some(&*tmp));

    let url = p.url();
    let request = || {
        let c = client_at("globex", &url);
        let ev = evidence(&c.nonce(), "IN");
        c.post(
            "/v1/releases",
            serde_json::json!({"model": "acme-frontier", "evidence": ev}),
        )
    };
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..100).map(|_| s.spawn(request)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(allowed, 10, "exactly the 10 releases left\n{}", p.logs());
    for (s, v) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 403, "{v}");
        assert!(v.to_string().contains("allocation used up ("), "{v}");
    }

    // The one ledger, in the database, says the same.
    let decisions = p.records("release-decision");
    assert_eq!(decisions.len(), 100);
    let under: Vec<_> = decisions
        .iter()
        .filter(|r| r["authority"] == format!("licence:{LICENCE}").as_str())
        .collect();
    assert_eq!(under.len(), 10, "allowed under the licence");
    assert!(under.iter().all(|r| r["outcome"] == "allowed"));
    assert_eq!(
        decisions
            .iter()
            .filter(|r| r["outcome"] == "denied")
            .count(),
        90
    );
    // The balancer split the requests: each replica decided some, and together all.
    let per: Vec<f64> = p.replicas.iter().map(Replica::decisions).collect();
    let allowed_per: Vec<f64> = p
        .replicas
        .iter()
        .map(|r| r.metric("weightvault_releases_total{outcome=\"allowed\"}"))
        .collect();
    println!("decisions per replica: {per:?}, allowed per replica: {allowed_per:?}");
    assert!(per.iter().all(|&n| n > 0.0), "{per:?}");
    assert_eq!(per.iter().sum::<f64>(), 100.0);
    assert_eq!(allowed_per.iter().sum::<f64>(), 10.0);
    let lb = p.lb.servers().unwrap();
    assert!(lb.iter().all(|s| s.sessions > 0), "{lb:?}");
}

/// A nonce issued by one replica is taken once at either, never twice: sequentially (one row
/// per case), and when the same evidence reaches both replicas at once.
#[test]
fn a_nonce_issued_by_one_replica_is_taken_once_at_either() {
    let (_dir, p) = pair("nonces", None);
    let urls = [p.replicas[0].url.clone(), p.replicas[1].url.clone()];
    let body = |ev: &serde_json::Value| serde_json::json!({"model": "acme-small", "evidence": ev});
    let refused_as_reused = |s: u16, v: &serde_json::Value| {
        s == 403 && v["code"] == "denied" && v.to_string().contains("nonce reused or unknown")
    };
    // (issued by, to whom, then presented: (replica, as whom, allowed?) in order)
    type Row = (usize, &'static str, &'static [(usize, &'static str, bool)]);
    let rows: &[Row] = &[
        (
            0,
            "acme",
            &[(1, "acme", true), (1, "acme", false), (0, "acme", false)],
        ),
        (
            1,
            "acme",
            &[(0, "acme", true), (0, "acme", false), (1, "acme", false)],
        ),
        (0, "acme", &[(0, "acme", true), (1, "acme", false)]),
        // Issued to acme: globex cannot take it at the other replica, and its try does not
        // spend it; acme then can, once.
        (
            0,
            "acme",
            &[(1, "globex", false), (1, "acme", true), (0, "acme", false)],
        ),
    ];
    for (k, (issuer, to, uses)) in rows.iter().enumerate() {
        let nonce = client_at(to, &urls[*issuer]).nonce();
        for (step, (at, who, ok)) in uses.iter().enumerate() {
            let ev = evidence(&nonce, "US");
            let (s, v) = client_at(who, &urls[*at]).post("/v1/releases", body(&ev));
            if *ok {
                assert_eq!(s, 200, "row {k} step {step}: {v}");
            } else {
                assert!(refused_as_reused(s, &v), "row {k} step {step}: {s} {v}");
            }
        }
    }
    // A nonce no replica issued.
    for url in &urls {
        let ev = evidence(&"ab".repeat(16), "US");
        let (s, v) = client_at("acme", url).post("/v1/releases", body(&ev));
        assert!(refused_as_reused(s, &v), "{s} {v}");
    }
    // The same evidence at both replicas at once, 8 times each: one release in all.
    let nonce = client_at("acme", &urls[0]).nonce();
    let ev = evidence(&nonce, "US");
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let (url, ev) = (&urls[i % 2], &ev);
                s.spawn(move || client_at("acme", url).post("/v1/releases", body(ev)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(allowed, 1, "{results:?}");
    for (s, v) in results.iter().filter(|(s, _)| *s != 200) {
        assert!(refused_as_reused(*s, v), "{s} {v}");
    }
    // Every decision, at either replica, is in the one ledger.
    let allowed_rows = rows
        .iter()
        .flat_map(|(_, _, u)| u.iter())
        .filter(|u| u.2)
        .count();
    let decisions = p.records("release-decision");
    let total = rows.iter().map(|(_, _, u)| u.len()).sum::<usize>() + 2 + 16;
    assert_eq!(decisions.len(), total);
    assert_eq!(
        decisions
            .iter()
            .filter(|r| r["outcome"] == "allowed")
            .count(),
        allowed_rows + 1
    );
    let per: Vec<f64> = p.replicas.iter().map(Replica::decisions).collect();
    assert_eq!(per.iter().sum::<f64>(), total as f64, "{per:?}");
}

/// The resume directory of a fetch into `out`.
fn partial_of(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.weightvault-partial",
        out.file_name().unwrap().to_string_lossy()
    ))
}

/// Stream bytes a resumable fetch into `out` has kept of shard `index`.
fn kept(out: &Path, index: u64) -> u64 {
    std::fs::metadata(partial_of(out).join("streams").join(index.to_string()))
        .map_or(0, |m| m.len())
}

/// The files of a release, by fetching each shard's whole stream again (as acme) and
/// opening it with host-a's key: path -> (SHA-256, the stream's header).
fn release_files(
    server: &str,
    release: &serde_json::Value,
) -> BTreeMap<String, (String, StreamHeader)> {
    use sha2::Digest;
    let raw = client_at("acme", server);
    let hex_key = std::fs::read_to_string(fx().root.join("host-a")).unwrap();
    let host = x25519_dalek::StaticSecret::from(
        <[u8; 32]>::try_from(hex::decode(hex_key.trim()).unwrap()).unwrap(),
    );
    let id = release["id"].as_str().unwrap();
    release["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let (st, stream) = raw.get(&format!("/v1/releases/{id}/shards/{}", s["index"]));
            assert_eq!(st, 200);
            let o = Opener::new(&stream[..HEADER_LEN], &host).unwrap();
            let h = *o.header();
            let mut file = Vec::new();
            for i in 0..h.chunks() {
                let (at, n) = (h.offset(i) as usize, h.plain_len(i) as usize);
                let mut b = stream[at..at + n].to_vec();
                let tag: [u8; 16] = stream[at + n..at + n + 16].try_into().unwrap();
                o.open_chunk(i, &mut b, &tag).unwrap();
                file.extend_from_slice(&b);
            }
            (
                s["path"].as_str().unwrap().to_string(),
                (hex::encode(sha2::Sha256::digest(&file)), h),
            )
        })
        .collect()
}

/// Where a resumed fetch asks a stream from, having kept `kept` bytes of it: after its last
/// chunk that is whole (the fetcher opens each again before trusting it), 0 without a
/// header, the stream's length when every chunk is there.
fn resume_point(h: &StreamHeader, kept: u64) -> u64 {
    if kept < HEADER_LEN as u64 {
        return 0;
    }
    let mut k = 0;
    while k < h.chunks() && h.offset(k) + h.plain_len(k) + 16 <= kept {
        k += 1;
    }
    if k == h.chunks() {
        h.stream_len()
    } else {
        h.offset(k)
    }
}

/// A fetch of the generated model through HAProxy, killed on the replica's side.
struct Killed {
    /// What the fetch printed (`--json`).
    report: serde_json::Value,
    /// Stream bytes of its first shard the fetch had kept when the kill landed (resumable).
    kept_at_kill: u64,
    /// Stream bytes the killed replica had handed to its connection.
    streamed_at_kill: u64,
    /// Which replica was killed.
    killed: usize,
    pair: Pair,
    out: PathBuf,
    _dir: common::TestDir,
}

/// A fetch of the generated model through HAProxy (`--parallel 1`: one connection, so one
/// replica decides and streams), slowed to 8 MiB/s; the replica streaming its first shard is
/// SIGKILLed once the shard is part-way (4 MiB kept by a resumable fetch, else 4 MiB handed to
/// the connection). Nothing is done for the fetch after that: it must complete by itself,
/// through HAProxy, at the other replica, which knows the release from the database.
fn killed_mid_shard(name: &str, resumable: bool) -> Killed {
    let f = fx();
    let (dir, mut p) = pair(name, None);
    let out = dir.join("out");
    let pki = f.root.join("pki");
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "fetch",
        GENERATED,
        "--quiet",
        "--json",
        "--server",
        &p.url(),
    ])
    .arg("--out")
    .arg(&out)
    .arg("--ca")
    .arg(pki.join("ca.pem"))
    .arg("--cert")
    .arg(pki.join("acme.pem"))
    .arg("--key")
    .arg(pki.join("acme.key"))
    .arg("--host-key")
    .arg(f.root.join("host-a"))
    .args(["--attest", &attest_cmd("US")])
    .args(["--parallel", "1", "--limit-rate", "8M"]);
    if resumable {
        cmd.arg("--resumable");
    }
    let mut fetch = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let (serving, streamed_at_kill) = loop {
        let open: Vec<usize> = (0..2)
            .filter(|&i| p.replicas[i].metric("weightvault_open_streams") > 0.0)
            .collect();
        if let [i] = open[..] {
            let streamed = p.replicas[i].metric("weightvault_bytes_streamed_total") as u64;
            let far = if resumable { kept(&out, 0) } else { streamed };
            if far >= 4 << 20 {
                break (i, streamed);
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the fetch did not get going: streams open on {open:?}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let victim = &mut p.replicas[serving].child;
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let kept_at_kill = kept(&out, 0);
    for i in 1..3 {
        assert_eq!(kept(&out, i), 0, "shard {i} started before the kill");
    }
    let t = Instant::now();
    while fetch.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the fetch did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = fetch.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the fetch failed after r{serving} was killed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        p.logs()
    );
    Killed {
        report: serde_json::from_slice(&o.stdout).unwrap(),
        kept_at_kill,
        streamed_at_kill,
        killed: serving,
        pair: p,
        out,
        _dir: dir,
    }
}

/// A stream's end as the ledger records it.
#[derive(Debug)]
struct StreamEnd {
    shard: String,
    outcome: String,
    bytes: u64,
}

impl Killed {
    fn shards(&self) -> &Vec<serde_json::Value> {
        self.report["release"]["shards"].as_array().unwrap()
    }

    /// The report's `downloaded` is every byte the fetch received over its attempts: what
    /// the survivor streamed (`ends`) and a part of the broken first shard (of `len0` stream
    /// bytes), at least what had been kept of it when the kill landed.
    fn assert_downloaded(&self, ends: &[StreamEnd], len0: u64) {
        let downloaded = self.report["downloaded"].as_u64().unwrap();
        let survivor: u64 = ends.iter().map(|e| e.bytes).sum();
        let before = downloaded.checked_sub(survivor).unwrap_or_else(|| {
            panic!("downloaded {downloaded}, fewer than the survivor's {survivor}")
        });
        assert!(
            before > 0 && before >= self.kept_at_kill && before < len0,
            "downloaded {downloaded}: {before} from the killed replica, {survivor} from the \
             survivor ({} kept at the kill, {len0} in the shard)",
            self.kept_at_kill
        );
    }

    fn total(&self) -> u64 {
        self.shards()
            .iter()
            .map(|s| s["stream_len"].as_u64().unwrap())
            .sum()
    }

    /// Checks the fetch completed the one release it started, the first shard's stream was
    /// cut inside, and the output is that release byte for byte: every stream fetched whole
    /// again from the survivor and opened, compared with the output file by file. Returns
    /// the stream ends the ledger recorded for the release before that check, and the
    /// release's stream headers.
    fn assert_the_release(&self) -> (Vec<StreamEnd>, BTreeMap<String, StreamHeader>) {
        let (f, p, r) = (fx(), &self.pair, &self.report);
        assert_eq!(r["resumed"], true, "the same release, resumed: {r}");
        let decided = p.records("release-decision");
        assert_eq!(decided.len(), 1, "no second release: {decided:?}");
        assert_eq!(decided[0]["outcome"], "allowed");
        let first = &self.shards()[0];
        assert_eq!(first["index"], 0);
        let len0 = first["stream_len"].as_u64().unwrap();
        assert!(
            self.streamed_at_kill < len0,
            "the kill landed inside the first shard: r{} had streamed {} of its {len0} bytes",
            self.killed,
            self.streamed_at_kill
        );
        let idx: u64 = p
            .psql(
                "SELECT idx FROM wv_entries
                 WHERE convert_from(record, 'UTF8')::jsonb->>'kind' = 'release-decision'",
            )
            .parse()
            .unwrap();
        let ends: Vec<StreamEnd> = p
            .records("stream-end")
            .into_iter()
            .filter(|e| e["follows"] == idx)
            .map(|e| StreamEnd {
                shard: e["shards"][0].as_str().unwrap().to_string(),
                outcome: e["outcome"].as_str().unwrap().to_string(),
                bytes: e["bytes"].as_u64().unwrap(),
            })
            .collect();
        let whole = release_files(&p.url(), &r["release"]);
        let got = common::tree_hashes(&self.out);
        let want: BTreeMap<String, String> = common::tree_hashes(&f.generated)
            .into_iter()
            .map(|(path, h)| match whole.get(&path) {
                Some((released, _)) => (path, released.clone()),
                None => (path, h),
            })
            .collect();
        assert_eq!(got, want, "the output is the release, byte for byte");
        assert!(
            !partial_of(&self.out).exists(),
            "nothing left beside the output"
        );
        // The safetensors files carry the release's watermark, not the original's bytes.
        for path in whole.keys().filter(|p| p.ends_with(".safetensors")) {
            assert_ne!(
                common::sha256_file(&f.generated.join(path)),
                got[path],
                "{path}"
            );
        }
        (ends, whole.into_iter().map(|(k, (_, h))| (k, h)).collect())
    }
}

/// The stream bytes the ledger records for `path`, from every stream of it that ended,
/// each of which must have completed.
fn sent(ends: &[StreamEnd], path: &str) -> Vec<u64> {
    ends.iter()
        .filter(|e| e.shard == path)
        .map(|e| {
            assert_eq!(e.outcome, "completed", "{path}: {ends:?}");
            e.bytes
        })
        .collect()
}

/// SIGKILL of the replica streaming a resumable fetch, mid-shard: the fetch completes through
/// HAProxy at the other replica by itself (the rest of the shards, then its one retry of the
/// broken one under the same release), asking only for what it did not have; the survivor's
/// stream ends in the shared ledger say it sent exactly that, and the output is the release
/// byte for byte.
#[test]
fn a_fetch_whose_replica_is_killed_mid_shard_completes_through_the_other_with_the_remainder_only() {
    let k = killed_mid_shard("kill_resumable", true);
    let (ends, headers) = k.assert_the_release();
    let shards = k.shards();
    let (path0, len0) = (
        shards[0]["path"].as_str().unwrap(),
        shards[0]["stream_len"].as_u64().unwrap(),
    );
    assert!(
        (4 << 20..len0).contains(&k.kept_at_kill),
        "the fetch had {} of {len0} bytes of {path0} when the kill landed",
        k.kept_at_kill
    );
    // The killed replica recorded no stream; the survivor streamed each shard once, from where
    // the fetcher stood: the first from a chunk boundary at or past what had arrived before
    // the kill, the others (not started then) whole.
    assert_eq!(ends.len(), shards.len(), "{ends:?}\n{}", k.pair.logs());
    let [rest] = sent(&ends, path0)[..] else {
        panic!("{path0} streamed once: {ends:?}")
    };
    let from = len0 - rest;
    let h0 = &headers[path0];
    assert!(
        (0..h0.chunks()).any(|c| h0.offset(c) == from),
        "resumed at {from}, not a chunk boundary"
    );
    assert!(
        from >= resume_point(h0, k.kept_at_kill) && from > 0,
        "resumed at {from}: something received before the kill ({} bytes) was sent again",
        k.kept_at_kill
    );
    for s in &shards[1..] {
        let path = s["path"].as_str().unwrap();
        assert_eq!(
            sent(&ends, path),
            [s["stream_len"].as_u64().unwrap()],
            "{path}"
        );
    }
    // After the kill the survivor sent the remainder only: every byte the fetch lacked, once.
    let survivor: u64 = ends.iter().map(|e| e.bytes).sum();
    assert_eq!(survivor, k.total() - from);
    // The retry asked for the rest of the broken shard alone; the report counts every
    // attempt's bytes: the broken shard's before the kill and all the survivor sent.
    k.assert_downloaded(&ends, len0);
    println!(
        "r{} SIGKILLed with {} of {len0} bytes of {path0} kept by the fetch; r{} sent it from \
         byte {from} and the other shards whole: {survivor} of {} stream bytes",
        k.killed,
        k.kept_at_kill,
        1 - k.killed,
        k.total()
    );
}

/// The same without `--resumable`: nothing received is kept, so the fetcher's retry through
/// the other replica takes every stream again from its start, those the first attempt
/// already finished at the survivor included; the output is still the release byte for byte.
#[test]
fn without_resumable_a_fetch_whose_replica_is_killed_downloads_every_stream_again_from_the_other() {
    let k = killed_mid_shard("kill_whole", false);
    let (ends, _) = k.assert_the_release();
    let shards = k.shards();
    // The broken shard once whole (the killed replica recorded nothing), the others whole
    // in the first attempt and again in the retry.
    for (i, s) in shards.iter().enumerate() {
        let path = s["path"].as_str().unwrap();
        let len = s["stream_len"].as_u64().unwrap();
        let times = if i == 0 { 1 } else { 2 };
        assert_eq!(sent(&ends, path), vec![len; times], "{path}: {ends:?}");
    }
    k.assert_downloaded(&ends, shards[0]["stream_len"].as_u64().unwrap());
}
