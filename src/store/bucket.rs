//! Sealed revisions in object storage (S3 and S3-compatible servers, through `object_store`):
//! the same objects under the same names as in a vault directory, below a bucket prefix.
//!
//! ```text
//! <prefix>/models/<model>/<rev>/.claim                   who is sealing it (created first, once)
//! <prefix>/models/<model>/<rev>/files/<path>.sealed      one per checkpoint file (created once)
//! <prefix>/models/<model>/<rev>/manifest.sealed          created last: the revision exists
//! <prefix>/models/<model>/<rev>/<object>.slots           the object's key slots, once changed
//! <prefix>/models/<model>/<rev>/SHREDDED                 the shred mark
//! ```
//!
//! Every sealed object is created once (`If-None-Match: *`, on a single PUT and on the
//! completion of a multipart upload), so a revision is never overwritten by the store itself,
//! not only by the check before sealing. Reads are ranged GETs, so any chunk decrypts on its
//! own as on disk. Key slots are the one part of a sealed file that changes (rewrap, shred):
//! they change in a small side object, `<object>.slots` (the 512 bytes of both slots), which a
//! reader lays over the object's own slot area, so the ciphertext object is never rewritten
//! or uploaded again (docs/FORMAT.md, "Key slots in object storage"). A slot write replaces
//! the side object in one conditional PUT (`If-Match` on the ETag it read, `If-None-Match`
//! for the first), so an interrupted rewrap leaves the old slots or the new, both openable, and
//! two concurrent rewraps cannot lose each other's slot.
//!
//! `object_store` is async; the vault's store traits are synchronous (the service calls them
//! on blocking threads). A bucket owns a small runtime of its own and waits on it through a
//! channel, which works from any thread, inside another runtime or not.

use super::object::{
    ObjectName, ObjectRef, ObjectSink, RangeRead, RevisionSink, RevisionState, SealedStore,
};
use super::StoreError;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use weightvault_core::names::{model_dir, model_of_dir};

/// `[store]` settings for a bucket (see `store::StoreSection`).
#[derive(Debug, Clone)]
pub struct BucketConfig {
    /// `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); AWS when absent (or
    /// `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (or `AWS_REGION`, `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// Whether plain `http://` endpoints are allowed (also `AWS_ALLOW_HTTP=true`).
    pub allow_http: bool,
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: u64,
    /// Parts uploaded at once by one writer.
    pub parallel_parts: usize,
    /// Blocks of 4 MiB a reader of an object requests ahead of the one it reads.
    pub read_ahead: usize,
    /// Access key id and secret, instead of the `AWS_*` variables and the other sources the
    /// AWS SDKs read (library callers and tests; `vault.toml` never holds a secret).
    pub credentials: Option<(String, String)>,
}

/// Default multipart part size: 16 MiB (S3 wants at least 5 MiB for every part but the last,
/// and at most 10,000 parts; larger objects get larger parts).
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// Bytes read with the first GET of an object: its prelude, header, slots and tag table for
/// files up to a few GiB, in one request.
const HEAD_PREFETCH: u64 = 64 << 10;

/// Length of both key slots together.
const SLOTS_LEN: usize = crate::format::KEY_SLOT_LEN * crate::format::KEY_SLOTS;

/// A small runtime owned by a bucket. Futures run on it and the caller waits on a channel, so
/// a call works from a thread of another runtime as well as from a plain thread.
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weightvault-bucket")
            .enable_all()
            .build()?;
        Ok(Rt(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("bucket runtime").handle()
    }

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the bucket runtime ran the request")
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a runtime forbids on its own threads: do not wait.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A vault's sealed revisions in a bucket.
pub struct Bucket {
    os: Arc<AmazonS3>,
    /// The same bucket with `If-None-Match: *` on every request: multipart uploads are
    /// completed through it, so completing onto an existing object fails.
    create_only: Arc<AmazonS3>,
    /// `<prefix>/models`, or `models`.
    models: String,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    rt: Arc<Rt>,
    part_size: u64,
    parallel_parts: usize,
    read_ahead: usize,
}

fn bucket_err(action: &'static str, key: &Key, e: object_store::Error) -> StoreError {
    StoreError::Bucket {
        action,
        key: key.to_string(),
        source: Box::new(e),
    }
}

impl Bucket {
    /// Connects to the bucket `cfg.url` names (credentials from the standard `AWS_*`
    /// variables). Nothing is requested until it is used.
    pub fn new(cfg: &BucketConfig) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::BadInput(format!("store url {}: {why}", cfg.url));
        let rest =
            cfg.url.strip_prefix("s3://").ok_or_else(|| {
                bad("only s3:// URLs are supported (an S3-compatible server is named by `endpoint`)"
                .into())
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name".into()));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the prefix may not contain `.` or `..`".into()));
        }
        if cfg.part_size < 5 << 20 {
            return Err(bad(format!(
                "part_size {} is below S3's minimum of 5 MiB",
                cfg.part_size
            )));
        }
        let build = |extra: &[(&'static str, &'static str)]| s3_client(cfg, bucket, extra);
        let os = Arc::new(build(&[])?);
        let create_only = Arc::new(build(&[("if-none-match", "*")])?);
        let rt = Rt::new().map_err(|e| bad(format!("starting its runtime: {e}")))?;
        Ok(Bucket {
            os,
            create_only,
            models: if prefix.is_empty() {
                "models".into()
            } else {
                format!("{prefix}/models")
            },
            url: if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            },
            rt: Arc::new(rt),
            part_size: cfg.part_size,
            parallel_parts: cfg.parallel_parts.max(1),
            read_ahead: cfg.read_ahead.max(1),
        })
    }

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        self.rt.run(f)
    }

    /// The key of `rest` (`/`-separated, already checked names) under the models prefix.
    fn key(&self, rest: &str) -> Key {
        Key::from(format!("{}/{rest}", self.models))
    }

    fn revision_key(&self, model: &str, rev: &str, rest: &str) -> Key {
        self.key(&format!("{}/{rev}/{rest}", model_dir(model)))
    }

    fn object_key(&self, model: &str, rev: &str, object: ObjectName<'_>) -> Key {
        match object {
            ObjectName::Manifest => self.revision_key(model, rev, super::MANIFEST_FILE),
            ObjectName::File(p) => self.revision_key(model, rev, &format!("files/{p}.sealed")),
        }
    }

    fn get_all(&self, key: &Key) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        self.run(get_versioned(self.os.clone(), key.clone()))
            .map_err(|e| bucket_err("reading", key, e))
    }

    fn exists(&self, key: &Key) -> Result<bool, StoreError> {
        let (os, k) = (self.os.clone(), key.clone());
        match self.run(async move { os.head(&k).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(bucket_err("looking up", key, e)),
        }
    }

    /// Names directly below `prefix` that have objects under them.
    fn children(&self, prefix: &Key) -> Result<Vec<String>, StoreError> {
        let (os, p) = (self.os.clone(), prefix.clone());
        let r = self
            .run(async move { os.list_with_delimiter(Some(&p)).await })
            .map_err(|e| bucket_err("listing", prefix, e))?;
        let mut v: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(decode))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every object under `prefix`, with its size.
    fn list_all(&self, prefix: &Key) -> Result<Vec<(Key, u64)>, StoreError> {
        use futures_util::TryStreamExt;
        let (os, p) = (self.os.clone(), prefix.clone());
        self.run(async move {
            os.list(Some(&p))
                .map_ok(|m| (m.location, m.size))
                .try_collect::<Vec<_>>()
                .await
        })
        .map_err(|e| bucket_err("listing", prefix, e))
    }

    fn put(&self, key: &Key, bytes: Bytes, mode: PutMode) -> Result<(), object_store::Error> {
        self.run(put_mode(self.os.clone(), key.clone(), bytes, mode))
            .map(drop)
    }

    /// The effective key slots of an object: the side object's, or the object's own; with
    /// the offset of the slot area and the side object's version (`None`: no side object).
    fn slots_of(&self, key: &Key) -> Result<(u64, Vec<u8>, Option<UpdateVersion>), StoreError> {
        let obj = BucketObject::open(self, key)?;
        let at = obj.slots_at.ok_or_else(|| {
            StoreError::Mismatch(format!("{}: not a sealed object", self.label(key)))
        })?;
        let mut cur = vec![0u8; SLOTS_LEN];
        obj.read_exact_at(&mut cur, at)
            .map_err(|e| StoreError::Mismatch(format!("{}: {e}", self.label(key))))?;
        Ok((at, cur, obj.slots_version))
    }

    fn label(&self, key: &Key) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            strip_bucket_prefix(&self.url, key)
        )
    }
}

/// An S3 client of `bucket` as `cfg` says, with `extra` headers on every request. Every
/// upload carries a SHA-256 checksum (a bucket with Object Lock takes no other).
fn s3_client(
    cfg: &BucketConfig,
    bucket: &str,
    extra: &[(&'static str, &'static str)],
) -> Result<AmazonS3, StoreError> {
    let allow_http = cfg.allow_http
        || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let mut headers = http::HeaderMap::new();
    // Some servers look for this header besides the checksum itself.
    headers.insert(
        "x-amz-sdk-checksum-algorithm",
        http::HeaderValue::from_static("SHA256"),
    );
    for (k, v) in extra {
        headers.insert(*k, http::HeaderValue::from_static(v));
    }
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        // Replacing the client options drops AWS_ALLOW_HTTP: set it after them.
        .with_client_options(
            ClientOptions::new()
                .with_default_headers(headers)
                .with_allow_http(allow_http),
        )
        .with_allow_http(allow_http)
        .with_checksum_algorithm(Checksum::SHA256);
    if let Some(e) = &cfg.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(r) = &cfg.region {
        b = b.with_region(r);
    }
    if let Some((id, secret)) = &cfg.credentials {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
    }
    b.build()
        .map_err(|e| StoreError::BadInput(format!("store url {}: {e}", cfg.url)))
}

/// Small objects under a bucket prefix, read whole and written whole: what the ledger keeps
/// in object storage (its tiles, entry bundles and checkpoint).
pub struct Objects {
    os: Arc<AmazonS3>,
    prefix: String,
    url: String,
    rt: Arc<Rt>,
}

/// What [`Objects::swap`] did.
#[derive(Debug)]
pub enum Swapped {
    /// Written; the object's new version.
    Done(UpdateVersion),
    /// The object was not at the version expected (written by someone else meanwhile, or
    /// created when it was expected absent): nothing was written.
    Lost,
}

/// What [`Objects::create`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// The object is new.
    Now,
    /// An object was there already, with these bytes.
    Already(Bytes),
}

impl Objects {
    /// The objects under the prefix of `cfg.url`.
    pub fn new(cfg: &BucketConfig) -> Result<Self, StoreError> {
        let (bucket, prefix) = split_url(&cfg.url)?;
        let rt = Rt::new()
            .map_err(|e| StoreError::BadInput(format!("{}: starting its runtime: {e}", cfg.url)))?;
        Ok(Objects {
            os: Arc::new(s3_client(cfg, &bucket, &[])?),
            url: cfg.url.trim_end_matches('/').into(),
            prefix,
            rt: Arc::new(rt),
        })
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The object at `rel`, or `None`.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.get_versioned(rel)?.map(|(b, _)| b))
    }

    /// Creates `rel` once (`If-None-Match: *`); when it exists already, its bytes.
    pub fn create(&self, rel: &str, bytes: Bytes) -> Result<Created, StoreError> {
        match self.swap(rel, bytes, None)? {
            Swapped::Done(_) => Ok(Created::Now),
            Swapped::Lost => Ok(Created::Already(self.get(rel)?.unwrap_or_default())),
        }
    }

    /// The object at `rel` with its version (for [`Objects::swap`]), or `None`.
    pub fn get_versioned(&self, rel: &str) -> Result<Option<(Bytes, UpdateVersion)>, StoreError> {
        let key = self.key(rel);
        self.rt
            .run(get_versioned(self.os.clone(), key.clone()))
            .map_err(|e| bucket_err("reading", &key, e))
    }

    /// Writes `rel` only if it is still at `expected` (`None`: only if it does not exist): a
    /// compare-and-swap by the server's conditional write (`If-Match` / `If-None-Match`).
    pub fn swap(
        &self,
        rel: &str,
        bytes: Bytes,
        expected: Option<UpdateVersion>,
    ) -> Result<Swapped, StoreError> {
        let key = self.key(rel);
        let mode = match expected {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let r = self
            .rt
            .run(put_mode(self.os.clone(), key.clone(), bytes, mode));
        match r {
            Ok(p) => Ok(Swapped::Done(UpdateVersion {
                e_tag: p.e_tag,
                version: p.version,
            })),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Swapped::Lost),
            Err(e) => Err(bucket_err("writing", &key, e)),
        }
    }

    /// Writes `rel`, replacing what is there.
    pub fn replace(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        let key = self.key(rel);
        self.rt
            .run(put_mode(
                self.os.clone(),
                key.clone(),
                bytes,
                PutMode::Overwrite,
            ))
            .map(drop)
            .map_err(|e| bucket_err("writing", &key, e))
    }
}

/// The object at `k` with its version, or `None`.
async fn get_versioned(
    os: Arc<AmazonS3>,
    k: Key,
) -> Result<Option<(Bytes, UpdateVersion)>, object_store::Error> {
    match os.get(&k).await {
        Ok(r) => {
            let v = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            r.bytes().await.map(|b| Some((b, v)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One PUT of `bytes` to `k` in `mode` (create once, update at a version, or overwrite).
async fn put_mode(
    os: Arc<AmazonS3>,
    k: Key,
    bytes: Bytes,
    mode: PutMode,
) -> Result<object_store::PutResult, object_store::Error> {
    os.put_opts(&k, PutPayload::from(bytes), PutOptions::from(mode))
        .await
}

/// The bucket and the prefix (without slashes at either end) of an `s3://bucket/prefix` URL.
pub fn split_url(url: &str) -> Result<(String, String), StoreError> {
    let bad = |why: &str| StoreError::BadInput(format!("store url {url}: {why}"));
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        bad("only s3:// URLs are supported (an S3-compatible server is named by `endpoint`)")
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") {
        return Err(bad("the prefix may not contain `.` or `..`"));
    }
    Ok((bucket.into(), prefix.into()))
}

/// The key without the URL's prefix, for messages (`s3://b/p` + `p/models/x` -> `models/x`).
fn strip_bucket_prefix(url: &str, key: &Key) -> String {
    let prefix = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .map(|(_, p)| p)
        .unwrap_or("");
    let k = key.as_ref();
    if prefix.is_empty() {
        k.into()
    } else {
        k.strip_prefix(prefix)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(k)
            .into()
    }
}

/// A key part as the name it encodes.
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

fn slots_key(key: &Key) -> Key {
    Key::from(format!("{key}.slots"))
}

impl SealedStore for Bucket {
    fn models(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .children(&Key::from(self.models.clone()))?
            .iter()
            .map(|d| model_of_dir(d))
            .collect())
    }

    fn revisions(&self, model: &str) -> Result<Option<Vec<String>>, StoreError> {
        let revs = self.children(&self.key(&model_dir(model)))?;
        if revs.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for r in revs {
            if self.exists(&self.object_key(model, &r, ObjectName::Manifest))? {
                out.push(r);
            }
        }
        Ok(Some(out))
    }

    fn state(&self, model: &str, rev: &str) -> Result<RevisionState, StoreError> {
        if self.exists(&self.object_key(model, rev, ObjectName::Manifest))? {
            return Ok(RevisionState::Sealed);
        }
        let revs = self.children(&self.key(&model_dir(model)))?;
        Ok(if revs.iter().any(|r| r == rev) {
            RevisionState::NoManifest
        } else {
            RevisionState::Absent {
                model: !revs.is_empty(),
            }
        })
    }

    fn shredded(&self, model: &str, rev: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_all(&self.revision_key(model, rev, super::SHREDDED_FILE))?
            .map(|(b, _)| super::manifest::shred_mark_time(&b)))
    }

    fn files(&self, model: &str, rev: &str) -> Result<Vec<String>, StoreError> {
        let prefix = self.revision_key(model, rev, "files");
        let mut out = Vec::new();
        for (k, _) in self.list_all(&prefix)? {
            let rel: Vec<String> = k
                .prefix_match(&prefix)
                .map(|parts| parts.map(|p| decode(p.as_ref())).collect())
                .unwrap_or_default();
            let rel = rel.join("/");
            if rel.ends_with(".sealed.slots") {
                continue;
            }
            match rel.strip_suffix(".sealed") {
                Some(r) => out.push(r.to_string()),
                None => {
                    return Err(StoreError::Mismatch(format!(
                        "{}: unexpected object in a sealed revision",
                        self.label(&k)
                    )))
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn open(
        &self,
        model: &str,
        rev: &str,
        object: ObjectName<'_>,
    ) -> Result<(Box<dyn RangeRead>, String), StoreError> {
        let key = self.object_key(model, rev, object);
        let o = BucketObject::open(self, &key)?;
        Ok((Box::new(o), self.label(&key)))
    }

    fn write_key_slots(&self, o: &ObjectRef, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let key = self.object_key(&o.model, &o.rev, o.name());
        let (at, mut slots, version) = self.slots_of(&key)?;
        let end = offset + bytes.len() as u64;
        if offset < at || end > at + SLOTS_LEN as u64 {
            return Err(StoreError::BadInput(format!(
                "{}: a key slot write at {offset}..{end} is outside the slot area",
                self.label(&key)
            )));
        }
        let from = (offset - at) as usize;
        slots[from..from + bytes.len()].copy_from_slice(bytes);
        let mode = match version {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let sk = slots_key(&key);
        match self.put(&sk, Bytes::from(slots), mode) {
            Ok(()) => Ok(()),
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
            ) => Err(StoreError::BadInput(format!(
                "{}: its key slots were changed by another process meanwhile; nothing was written (run the command again)",
                self.label(&key)
            ))),
            Err(e) => Err(bucket_err("writing the key slots of", &key, e)),
        }
    }

    fn mark_shredded(&self, model: &str, rev: &str, mark: &[u8]) -> Result<(), StoreError> {
        let key = self.revision_key(model, rev, super::SHREDDED_FILE);
        match self.put(&key, Bytes::copy_from_slice(mark), PutMode::Create) {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(bucket_err("writing", &key, e)),
        }
    }

    fn begin_revision(
        &self,
        model: &str,
        rev: &str,
    ) -> Result<Box<dyn RevisionSink + '_>, StoreError> {
        let already = || StoreError::AlreadySealed {
            model: model.into(),
            revision: rev.into(),
        };
        match self.state(model, rev)? {
            RevisionState::Sealed => return Err(already()),
            RevisionState::NoManifest => {
                return Err(StoreError::BadInput(format!(
                    "{model}@{rev}: objects of an unfinished seal are in {}/{}/{rev}/ and it has no manifest; delete that prefix (e.g. `aws s3 rm --recursive`) before sealing the revision again, or choose a new revision name",
                    self.location(),
                    model_dir(model)
                )))
            }
            RevisionState::Absent { .. } => {}
        }
        let claim = self.revision_key(model, rev, ".claim");
        let body = serde_json::json!({
            "started": super::now_rfc3339(),
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
            "pid": std::process::id(),
        });
        match self.put(&claim, Bytes::from(body.to_string()), PutMode::Create) {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Err(already()),
            Err(e) => return Err(bucket_err("claiming", &claim, e)),
        }
        Ok(Box::new(BucketRevision {
            bucket: self,
            model: model.into(),
            rev: rev.into(),
            created: Default::default(),
            published: false,
        }))
    }

    fn remove_revision(&self, model: &str, rev: &str) -> Result<(usize, u64), StoreError> {
        let manifest = self.object_key(model, rev, ObjectName::Manifest);
        let all = self.list_all(&self.key(&format!("{}/{rev}", model_dir(model))))?;
        let sealed = |k: &Key| k.as_ref().ends_with(".sealed");
        let files = all.iter().filter(|(k, _)| sealed(k)).count();
        let bytes = all.iter().filter(|(k, _)| sealed(k)).map(|(_, n)| n).sum();
        // The manifest first: from then on no command takes the rest for a revision.
        let order = std::iter::once(manifest.clone())
            .chain(all.into_iter().map(|(k, _)| k).filter(|k| *k != manifest));
        for k in order {
            let (os, kk) = (self.os.clone(), k.clone());
            match self.run(async move { os.delete(&kk).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(bucket_err("deleting", &k, e)),
            }
        }
        Ok((files, bytes))
    }

    fn location(&self) -> String {
        format!("{}/models", self.url)
    }
}

/// One sealed object in a bucket, read by ranged GETs, with its key slots laid over from the
/// side object when there is one.
struct BucketObject {
    os: Arc<AmazonS3>,
    rt: Arc<Rt>,
    key: Key,
    len: u64,
    /// The object's first bytes, read with its length in one request.
    head: Bytes,
    /// Where the slot area is (from the prelude), when the object has one.
    slots_at: Option<u64>,
    /// The side object's slots, when there is one, and its version.
    slots: Option<Bytes>,
    slots_version: Option<UpdateVersion>,
    /// Blocks read ahead and recently read.
    cache: ReadAhead,
}

/// Bytes per ranged GET beyond the head: a few chunks, so a sequential reader (a shard
/// stream, `verify`, `open`) makes a quarter as many requests as chunks.
const READ_BLOCK: u64 = 4 << 20;

/// A block of an object: being fetched, then its bytes or why not.
#[derive(Default)]
struct Slot {
    data: std::sync::Mutex<Option<Result<Bytes, String>>>,
    ready: std::sync::Condvar,
}

/// Read-ahead for one object: reading block `b` also requests the next `depth` blocks, so
/// that many GETs are in flight while the reader decrypts; at most `depth + 2` blocks are held
/// (memory per object: `keep * READ_BLOCK`), the least recently used go first. Readers of the
/// same object (streams of one shard to many hosts, `verify`'s threads) share the blocks.
struct ReadAhead {
    depth: u64,
    keep: usize,
    blocks: std::sync::Mutex<Blocks>,
}

/// The blocks held, and their order of use (oldest first).
type Blocks = (HashMap<u64, Arc<Slot>>, VecDeque<u64>);

impl ReadAhead {
    fn new(depth: usize) -> Self {
        ReadAhead {
            depth: depth as u64,
            keep: depth + 2,
            blocks: Default::default(),
        }
    }
}

impl BucketObject {
    /// Block `b`, requested now if it is not already; `wanted` marks it recently used.
    fn block(&self, b: u64, wanted: bool) -> Arc<Slot> {
        let mut g = self.cache.blocks.lock().expect("read-ahead");
        let (map, order) = &mut *g;
        if let Some(s) = map.get(&b) {
            let s = s.clone();
            if wanted {
                order.retain(|x| *x != b);
                order.push_back(b);
            }
            return s;
        }
        let slot = Arc::new(Slot::default());
        map.insert(b, slot.clone());
        order.push_back(b);
        while order.len() > self.cache.keep {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        let (os, k, s2) = (self.os.clone(), self.key.clone(), slot.clone());
        let range = b * READ_BLOCK..((b + 1) * READ_BLOCK).min(self.len);
        self.rt.handle().spawn(async move {
            let r = os.get_range(&k, range).await.map_err(|e| e.to_string());
            *s2.data.lock().expect("block") = Some(r);
            s2.ready.notify_all();
        });
        slot
    }

    /// The bytes of block `b` (waiting for them), with the next blocks requested.
    fn block_bytes(&self, b: u64) -> std::io::Result<Bytes> {
        let last = (self.len - 1) / READ_BLOCK;
        let slot = self.block(b, true);
        for n in b + 1..=(b + self.cache.depth).min(last) {
            self.block(n, false);
        }
        let mut g = slot.data.lock().expect("block");
        while g.is_none() {
            g = slot.ready.wait(g).expect("block");
        }
        match g.as_ref().expect("filled") {
            Ok(bytes) => {
                let want = (((b + 1) * READ_BLOCK).min(self.len) - b * READ_BLOCK) as usize;
                if bytes.len() != want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: block {b}: got {} bytes of {want}",
                            self.key,
                            bytes.len()
                        ),
                    ));
                }
                Ok(bytes.clone())
            }
            Err(e) => {
                let e = std::io::Error::other(format!("{}: {e}", self.key));
                drop(g);
                // Not kept: the next read asks again.
                let mut c = self.cache.blocks.lock().expect("read-ahead");
                c.0.remove(&b);
                c.1.retain(|x| *x != b);
                Err(e)
            }
        }
    }

    fn open(b: &Bucket, key: &Key) -> Result<Self, StoreError> {
        let (os, k) = (b.os.clone(), key.clone());
        let (head, len) = b
            .run(async move {
                let r = os
                    .get_opts(
                        &k,
                        GetOptions {
                            range: Some(GetRange::Bounded(0..HEAD_PREFETCH)),
                            ..GetOptions::default()
                        },
                    )
                    .await?;
                let len = r.meta.size;
                r.bytes().await.map(|h| (h, len))
            })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    StoreError::NotFound(format!("{}: no such object", b.label(key)))
                }
                e => bucket_err("reading", key, e),
            })?;
        let slots_at = (head.len() >= crate::format::PRELUDE_LEN
            && head.starts_with(&crate::format::MAGIC[..]))
        .then(|| {
            let h = u32::from_be_bytes(head[12..16].try_into().expect("4 bytes"));
            crate::format::PRELUDE_LEN as u64 + u64::from(h) + crate::format::aead::TAG_LEN as u64
        });
        let (slots, slots_version) = match b.get_all(&slots_key(key))? {
            Some((s, v)) => {
                if s.len() != SLOTS_LEN {
                    return Err(StoreError::Mismatch(format!(
                        "{}: its key slot object is {} bytes, not {SLOTS_LEN}",
                        b.label(key),
                        s.len()
                    )));
                }
                (Some(s), Some(v))
            }
            None => (None, None),
        };
        Ok(BucketObject {
            os: b.os.clone(),
            rt: b.rt.clone(),
            key: key.clone(),
            len,
            head,
            slots_at,
            slots,
            slots_version,
            cache: ReadAhead::new(b.read_ahead),
        })
    }
}

impl RangeRead for BucketObject {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read past the end of {}", self.key),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        if end <= self.head.len() as u64 {
            buf.copy_from_slice(&self.head[offset as usize..end as usize]);
        } else {
            let mut at = offset;
            while at < end {
                let b = at / READ_BLOCK;
                let bytes = self.block_bytes(b)?;
                let from = (at - b * READ_BLOCK) as usize;
                let n = (bytes.len() - from).min((end - at) as usize);
                let to = (at - offset) as usize;
                buf[to..to + n].copy_from_slice(&bytes[from..from + n]);
                at += n as u64;
            }
        }
        if let (Some(at), Some(s)) = (self.slots_at, &self.slots) {
            let (lo, hi) = (offset.max(at), end.min(at + SLOTS_LEN as u64));
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&s[(lo - at) as usize..(hi - at) as usize]);
            }
        }
        Ok(())
    }
}

/// A revision being sealed into a bucket: its claim is made; the manifest, created last,
/// publishes it. Dropped unpublished (an error, SIGINT, SIGTERM), it deletes what it wrote and
/// its claim, so the name is free again; only SIGKILL or a crash leaves them (see
/// [`SealedStore::begin_revision`]'s refusal, which names the prefix).
struct BucketRevision<'a> {
    bucket: &'a Bucket,
    model: String,
    rev: String,
    /// Keys of the objects created so far (multipart uploads abort themselves).
    created: std::sync::Arc<std::sync::Mutex<Vec<Key>>>,
    published: bool,
}

impl Drop for BucketRevision<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let mut keys = std::mem::take(&mut *self.created.lock().expect("created keys"));
        keys.push(self.bucket.revision_key(&self.model, &self.rev, ".claim"));
        for k in keys {
            let os = self.bucket.os.clone();
            let _ = self.bucket.run(async move { os.delete(&k).await });
        }
    }
}

impl RevisionSink for BucketRevision<'_> {
    fn create(
        &mut self,
        object: ObjectName<'_>,
        head_len: u64,
        len: u64,
    ) -> Result<Box<dyn ObjectSink + '_>, StoreError> {
        let b = self.bucket;
        let key = b.object_key(&self.model, &self.rev, object);
        // At most 10,000 parts; the first holds the head, written last.
        let part = b
            .part_size
            .max(len.div_ceil(9_000).next_multiple_of(1 << 20))
            .max(head_len.next_multiple_of(1 << 20));
        if len <= part {
            return Ok(Box::new(SinglePut {
                bucket: b,
                key,
                buf: vec![0u8; len as usize],
                created: self.created.clone(),
            }));
        }
        let (os, k) = (b.os.clone(), key.clone());
        let id = b
            .run(async move { os.create_multipart(&k).await })
            .map_err(|e| bucket_err("starting the upload of", &key, e))?;
        let count = len.div_ceil(part) as usize;
        Ok(Box::new(Multipart {
            bucket: b,
            key,
            id: Some(id),
            len,
            part,
            parts: vec![None; count],
            open: HashMap::new(),
            inflight: VecDeque::new(),
            created: self.created.clone(),
        }))
    }

    fn publish(mut self: Box<Self>) -> Result<(), StoreError> {
        // The manifest, created once like every object, already made the revision visible.
        self.published = true;
        Ok(())
    }
}

/// An object small enough for one PUT: assembled in memory, then created once.
struct SinglePut<'a> {
    bucket: &'a Bucket,
    key: Key,
    buf: Vec<u8>,
    created: std::sync::Arc<std::sync::Mutex<Vec<Key>>>,
}

fn place(buf: &mut [u8], offset: u64, bytes: &[u8], key: &Key) -> Result<(), StoreError> {
    let end = offset as usize + bytes.len();
    if end > buf.len() {
        return Err(StoreError::BadInput(format!(
            "{key}: a write at {offset}..{end} is past the object's end"
        )));
    }
    buf[offset as usize..end].copy_from_slice(bytes);
    Ok(())
}

fn exists_err(b: &Bucket, key: &Key) -> StoreError {
    StoreError::BadInput(format!(
        "{} exists already and sealed objects are never replaced; nothing was written",
        b.label(key)
    ))
}

impl ObjectSink for SinglePut<'_> {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        place(&mut self.buf, offset, bytes, &self.key)
    }

    fn finish(self: Box<Self>, head: &[u8], len: u64) -> Result<(), StoreError> {
        let mut buf = self.buf;
        if len != buf.len() as u64 {
            return Err(StoreError::BadInput(format!(
                "{}: {len} bytes finished, {} announced",
                self.key,
                buf.len()
            )));
        }
        place(&mut buf, 0, head, &self.key)?;
        match self
            .bucket
            .put(&self.key, Bytes::from(buf), PutMode::Create)
        {
            Ok(()) => {
                self.created
                    .lock()
                    .expect("created keys")
                    .push(self.key.clone());
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(exists_err(self.bucket, &self.key))
            }
            Err(e) => Err(bucket_err("writing", &self.key, e)),
        }
    }
}

type PartUpload = tokio::task::JoinHandle<object_store::Result<PartId>>;

/// A large object as a multipart upload: ciphertext is gathered into parts as chunks come (in
/// any order), full parts are uploaded while later chunks are encrypted (at most
/// `parallel_parts` at once, so memory stays a few parts whatever the object's size), and the
/// first part, which holds the head, is uploaded last. Completed with `If-None-Match: *`;
/// aborted when dropped unfinished.
struct Multipart<'a> {
    bucket: &'a Bucket,
    key: Key,
    id: Option<MultipartId>,
    len: u64,
    part: u64,
    parts: Vec<Option<PartId>>,
    /// Parts being filled: their buffer and how many bytes are in it.
    open: HashMap<usize, (Vec<u8>, u64)>,
    inflight: VecDeque<(usize, PartUpload)>,
    created: std::sync::Arc<std::sync::Mutex<Vec<Key>>>,
}

impl Multipart<'_> {
    fn part_len(&self, i: usize) -> u64 {
        let start = i as u64 * self.part;
        (self.len - start).min(self.part)
    }

    fn upload(&mut self, i: usize, buf: Vec<u8>) -> Result<(), StoreError> {
        while self.inflight.len() >= self.bucket.parallel_parts {
            self.wait_one()?;
        }
        let (os, k, id) = (
            self.bucket.os.clone(),
            self.key.clone(),
            self.id.clone().expect("an open upload"),
        );
        let h = self
            .bucket
            .rt
            .handle()
            .spawn(async move { os.put_part(&k, &id, i, PutPayload::from(buf)).await });
        self.inflight.push_back((i, h));
        Ok(())
    }

    fn wait_one(&mut self) -> Result<(), StoreError> {
        let Some((i, h)) = self.inflight.pop_front() else {
            return Ok(());
        };
        let r = self
            .bucket
            .run(h)
            .map_err(|e| StoreError::BadInput(format!("{}: part upload task: {e}", self.key)))?;
        let p = r.map_err(|e| bucket_err("uploading a part of", &self.key, e))?;
        self.parts[i] = Some(p);
        Ok(())
    }
}

impl ObjectSink for Multipart<'_> {
    fn write_at(&mut self, mut offset: u64, mut bytes: &[u8]) -> Result<(), StoreError> {
        if offset + bytes.len() as u64 > self.len {
            return Err(StoreError::BadInput(format!(
                "{}: a write past the object's end",
                self.key
            )));
        }
        while !bytes.is_empty() {
            let i = (offset / self.part) as usize;
            let in_part = offset - i as u64 * self.part;
            let plen = self.part_len(i);
            let n = ((plen - in_part) as usize).min(bytes.len());
            let (buf, filled) = self
                .open
                .entry(i)
                .or_insert_with(|| (vec![0u8; plen as usize], 0));
            buf[in_part as usize..in_part as usize + n].copy_from_slice(&bytes[..n]);
            *filled += n as u64;
            if i > 0 && *filled == plen {
                let (buf, _) = self.open.remove(&i).expect("just filled");
                self.upload(i, buf)?;
            }
            offset += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: &[u8], len: u64) -> Result<(), StoreError> {
        let incomplete = || StoreError::BadInput("a multipart object finished incomplete".into());
        if len != self.len || !self.open.keys().all(|i| *i == 0) {
            return Err(incomplete());
        }
        let p0 = self.part_len(0);
        let (mut buf, filled) = self
            .open
            .remove(&0)
            .unwrap_or_else(|| (vec![0u8; p0 as usize], 0));
        if filled + head.len() as u64 != p0 {
            return Err(incomplete());
        }
        buf[..head.len()].copy_from_slice(head);
        self.upload(0, buf)?;
        while !self.inflight.is_empty() {
            self.wait_one()?;
        }
        let parts: Vec<PartId> = self
            .parts
            .iter()
            .cloned()
            .collect::<Option<_>>()
            .ok_or_else(incomplete)?;
        let (os, k, id) = (
            self.bucket.create_only.clone(),
            self.key.clone(),
            self.id.clone().expect("an open upload"),
        );
        match self
            .bucket
            .run(async move { os.complete_multipart(&k, &id, parts).await })
        {
            Ok(_) => {
                self.id = None;
                self.created
                    .lock()
                    .expect("created keys")
                    .push(self.key.clone());
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(exists_err(self.bucket, &self.key)),
            Err(e) => Err(bucket_err("completing the upload of", &self.key, e)),
        }
    }
}

impl Drop for Multipart<'_> {
    fn drop(&mut self) {
        for (_, h) in self.inflight.drain(..) {
            h.abort();
        }
        if let Some(id) = self.id.take() {
            let (os, k) = (self.bucket.os.clone(), self.key.clone());
            let _ = self
                .bucket
                .run(async move { os.abort_multipart(&k, &id).await });
        }
    }
}
