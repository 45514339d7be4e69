//! A real S3 server for a test binary: one `moto_server` (PyPI `moto[server]`, installed by
//! `tools/s3-env`) on a free port of 127.0.0.1, started on first use and stopped when the
//! test process ends; a new bucket per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use weightvault::store::bucket::{Bucket, BucketConfig, DEFAULT_PART_SIZE};
use weightvault_testkit::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};

/// The binaries `tools/s3-env` installed (run once if missing).
pub fn s3_bin() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/s3-env");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "tools/s3-env failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// This test binary's moto server.
pub fn moto() -> &'static S3Server {
    static S: OnceLock<S3Server> = OnceLock::new();
    S.get_or_init(|| {
        let bin = s3_bin();
        let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("moto-{}.log", std::process::id()));
        S3Server::moto(&bin, &log).expect("moto_server starts")
    })
}

/// A new bucket on the test server (with Object Lock when asked): its name.
pub fn new_bucket(object_lock: bool) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "wv-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    moto().create_bucket(&name, object_lock).unwrap();
    name
}

/// How the library reaches `url` on the test server (`part_size` bytes per part).
pub fn bucket_config(url: &str, part_size: u64) -> BucketConfig {
    BucketConfig {
        url: url.into(),
        endpoint: Some(moto().endpoint.clone()),
        region: Some(REGION.into()),
        allow_http: true,
        part_size,
        parallel_parts: 4,
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
    }
}

/// The store at `url` on the test server.
pub fn bucket(url: &str) -> Bucket {
    Bucket::new(&bucket_config(url, DEFAULT_PART_SIZE)).unwrap()
}

/// The environment a `weightvault` process needs to use `url` on the test server.
pub fn store_env(url: &str) -> Vec<(&'static str, String)> {
    let mut e = moto().env();
    e.push(("WEIGHTVAULT_STORE", url.into()));
    e
}
