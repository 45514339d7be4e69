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

/// Sets the default retention of `bucket` (made with Object Lock) on the test server: `mode`
/// `GOVERNANCE` or `COMPLIANCE` for `period` as the S3 API writes it (`"Days":1`,
/// `"Years":5`).
pub fn set_default_retention(bucket: &str, mode: &str, period: &str) {
    moto()
        .aws(&[
            "s3api",
            "put-object-lock-configuration",
            "--bucket",
            bucket,
            "--object-lock-configuration",
            &format!(
                r#"{{"ObjectLockEnabled":"Enabled","Rule":{{"DefaultRetention":{{"Mode":"{mode}",{period}}}}}}}"#
            ),
        ])
        .unwrap();
}

/// A new bucket with Object Lock that keeps new objects one day in GOVERNANCE mode (the
/// write-once bucket of a test's `[ledger.tiles]`, `worm_days = 1`, `worm_mode =
/// "governance"`): its name.
pub fn new_worm_bucket() -> String {
    let name = new_bucket(true);
    set_default_retention(&name, "GOVERNANCE", r#""Days":1"#);
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
        read_ahead: 8,
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

/// Direct access to a test bucket's objects, as anyone with storage access has it (the
/// tampering tests write sealed objects behind the vault's back).
pub struct Raw {
    os: object_store::aws::AmazonS3,
    rt: tokio::runtime::Runtime,
}

impl Raw {
    /// The bucket `name` on the test server.
    pub fn new(name: &str) -> Self {
        let os = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(name)
            .with_endpoint(&moto().endpoint)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_default_headers(object_store::HeaderMap::from_iter([(
                        http::HeaderName::from_static("x-amz-sdk-checksum-algorithm"),
                        object_store::HeaderValue::from_static("SHA256"),
                    )])),
            )
            .with_allow_http(true)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Raw { os, rt }
    }

    /// Every object under `prefix`: relative key -> bytes.
    pub fn download(&self, prefix: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        use futures_util::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let p = object_store::path::Path::from(prefix);
        self.rt.block_on(async {
            let keys: Vec<_> = self.os.list(Some(&p)).try_collect().await.unwrap();
            let mut out = std::collections::BTreeMap::new();
            for m in keys {
                let b = self
                    .os
                    .get(&m.location)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let rel = m.location.as_ref()[prefix.len()..].trim_start_matches('/');
                out.insert(rel.to_string(), b.to_vec());
            }
            out
        })
    }

    /// One object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let k = object_store::path::Path::from(key);
        self.rt
            .block_on(async { self.os.get(&k).await.unwrap().bytes().await.unwrap() })
            .to_vec()
    }

    /// An object's bytes, or `None` when there is none.
    pub fn try_get(&self, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let k = object_store::path::Path::from(key);
        self.rt.block_on(async {
            match self.os.get(&k).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("reading {key}: {e}"),
            }
        })
    }

    /// Writes (replacing) an object.
    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let k = object_store::path::Path::from(key);
        self.rt.block_on(self.os.put(&k, bytes.into())).unwrap();
    }

    /// Deletes an object.
    pub fn delete(&self, key: &str) {
        use object_store::ObjectStoreExt;
        let k = object_store::path::Path::from(key);
        self.rt.block_on(self.os.delete(&k)).unwrap();
    }
}
