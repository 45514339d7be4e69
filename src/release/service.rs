//! The key-release service (`weightvault serve`): axum on rustls with mutual TLS. Challenge,
//! evidence, decision, ledger, then shards streamed sealed to the attested host key. The
//! protocol is in `docs/PROTOCOL.md`.
//!
//! The handlers are thin: every decision is the release engine's ([`super::engine`], pure
//! and unit-tested as tables); what the service remembers between requests is behind
//! [`ReleaseState`]; the time comes from a [`Clock`]. A handler parses, calls the engine and
//! the edges (state, ledger, store) in order, and maps errors to one [`ApiCode`].

use super::engine::{self, Admitted, Asked, Client, FileView, Grant, Marks, Refusal, RevisionView};
use super::state::{DecideError, LocalState, ReleaseState, StateError, Withdrawal};
use super::stream::{Sealer, HEADER_LEN};
use super::tls::{self, ClientIdentity, ServerTls};
use super::wire::{ApiCode, ChallengeReply, ReleaseBody, ReleaseReply};
use crate::clock::{Clock, SystemClock};
use crate::format::aead::AwsLc;
use crate::hsm::Pkcs11KeyWrap;
use crate::keys::SymmetricKey;
use crate::ledger::{backend::LedgerBackend, usage::Allocations};
use crate::policy::{self, GeoLookup, NoGeo, PolicyHandle};
use crate::store::object::RangeRead;
use crate::store::sealed::FileKeys;
use crate::store::ServeSection;
use crate::store::{ManifestEntry, OpenedRevision, RevisionRef, Vault};
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tower_governor::GovernorError;
use weightvault_core::facts::rfc3339;

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The vault directory.
    pub vault: PathBuf,
    /// The policy directory.
    pub policies: PathBuf,
    /// IP-geolocation database (MaxMind format); without one, public source addresses cannot
    /// be located and are refused.
    pub geoip: Option<PathBuf>,
    /// TLS files.
    pub tls: ServerTls,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long a release id may be used.
    pub release_ttl: Duration,
    /// How long a challenge nonce may be used.
    pub nonce_ttl: Duration,
    /// How often the service signs a ledger checkpoint when there are new entries (and once
    /// more when it stops).
    pub checkpoint_every: Duration,
    /// Embed a per-recipient watermark in every release (off only for measurements).
    pub watermark: bool,
    /// Where to serve `/healthz`, `/readyz` and `/metrics` (plain HTTP), if anywhere.
    pub ops_listen: Option<SocketAddr>,
    /// Refuse to start unless the ledger's tiles go to a bucket whose Object Lock retention
    /// is at least what `[ledger.tiles]` asks.
    pub require_worm: bool,
}

/// Set-up errors of the service (one line each).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Anything that stops the service from starting.
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> ServeError {
    ServeError::Setup(e.to_string())
}

/// The keys and authenticated head of each file of a revision, in manifest order, without
/// its objects.
type Keys = Vec<(ManifestEntry, Arc<FileKeys<AwsLc>>)>;

/// What this replica keeps for a release it serves: each file's unwrapped data key and
/// authenticated head (no open file: a stream opens its file and closes it when it ends),
/// the marks of the release's codeword, and the switch that ends its running streams when
/// the release is withdrawn.
struct Serving {
    model: String,
    revision: String,
    files: Arc<Keys>,
    view: RevisionView,
    marks: Option<Marks>,
    cut: tokio::sync::watch::Sender<Option<Vec<String>>>,
    /// The release's expiry: after it the entry is forgotten (its data keys dropped).
    expires_at: time::OffsetDateTime,
}

/// Keeps what this replica serves a release with, forgetting the entries of expired releases
/// (running streams keep theirs until they end).
fn keep_serving(
    st: &AppState,
    id: [u8; 16],
    s: Arc<Serving>,
    now: time::OffsetDateTime,
) -> Arc<Serving> {
    let mut m = st.serving.lock().expect("serving lock");
    m.retain(|_, v| v.expires_at > now);
    m.entry(id).or_insert(s).clone()
}

struct AppState {
    vault: Vault,
    kw: Pkcs11KeyWrap,
    /// The vault's service key (HSM-wrapped `watermark.key`): watermark codes, and each
    /// release's stream secret (derived from it and the release id).
    wm_key: SymmetricKey,
    policy: PolicyHandle,
    geo: Box<dyn GeoLookup + Send>,
    ledger: Arc<dyn LedgerBackend>,
    state: Arc<dyn ReleaseState>,
    clock: Arc<dyn Clock>,
    /// Releases this replica serves, by id.
    serving: Mutex<HashMap<[u8; 16], Arc<Serving>>>,
    /// The sealed files running streams read, shared by every stream of the same file and
    /// closed when the last of them ends.
    objects: Objects,
    /// The keys of the revisions of live releases, shared by the releases of one revision.
    revisions: Revisions,
    metrics: Arc<super::ops::Metrics>,
    /// Where the ledger is published as tiles, if anywhere.
    tiles: Option<crate::ledger::tiles::TileLog>,
    /// The database replicas share, if any: the policy in force is its version.
    db: Option<crate::postgres::Database>,
    /// With a database: this replica's candidacy to sign checkpoints and publish tiles (one
    /// replica at a time).
    election: Option<Mutex<crate::postgres::Election>>,
    cfg: ServeConfig,
    /// `[serve]` of the vault's configuration.
    limits: ServeSection,
}

/// Open sealed files by (model, revision, path): weak, so a file is open exactly while some
/// stream reads it, however many releases of it are live.
#[derive(Default)]
struct Objects(Mutex<HashMap<ObjectKey, Weak<dyn RangeRead>>>);

/// A sealed file's model, revision and path.
type ObjectKey = (String, String, String);

impl Objects {
    /// The open object of a file, or the file opened anew (blocking).
    fn get(
        &self,
        vault: &Vault,
        model: &str,
        revision: &str,
        path: &str,
    ) -> Result<Arc<dyn RangeRead>, crate::store::StoreError> {
        let key = (model.to_owned(), revision.to_owned(), path.to_owned());
        if let Some(o) = self
            .0
            .lock()
            .expect("objects lock")
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok(o);
        }
        // Opened without the lock (a bucket object costs a round trip); two streams racing
        // here open it twice, and the map keeps one.
        let o = vault.open_file_object(model, revision, path)?;
        let mut m = self.0.lock().expect("objects lock");
        m.retain(|_, w| w.strong_count() > 0);
        match m.get(&key).and_then(Weak::upgrade) {
            Some(kept) => Ok(kept),
            None => {
                m.insert(key, Arc::downgrade(&o));
                Ok(o)
            }
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Clone)]
struct Peer {
    id: ClientIdentity,
    addr: SocketAddr,
}

impl Peer {
    fn client(&self) -> Client {
        Client {
            name: self.id.name.clone(),
            fingerprint: self.id.fingerprint,
            workload: self.id.workload,
        }
    }
}

/// An engine refusal as an HTTP answer; internal detail goes to the log only.
#[derive(Debug)]
struct ApiError(Refusal);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError(r)
    }
}

fn api(code: ApiCode, message: impl Into<String>) -> ApiError {
    ApiError(Refusal::new(code, message))
}

/// The state could not be read or written (a shared database unreachable: it holds the
/// ledger too), so the request fails closed with 503.
fn unavailable(what: &str, e: StateError) -> ApiError {
    tracing::error!("{what}: {e}");
    api(
        ApiCode::LedgerUnavailable,
        "the release state and ledger cannot be reached; nothing is released",
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!("{what}: {e}");
    api(
        ApiCode::Internal,
        format!("{what} failed; see the service log"),
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0.code.status(), Json(self.0.into_body())).into_response()
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}

fn ttl(d: Duration) -> time::Duration {
    time::Duration::try_from(d).expect("a TTL fits")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal("a worker", e))
}

async fn challenge(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<ChallengeReply>, ApiError> {
    let now = st.clock.now();
    let expires_at = now + ttl(st.cfg.nonce_ttl);
    let nonce = st
        .state
        .issue_nonce(&peer.id.fingerprint, now, expires_at)
        .await
        .map_err(|e| unavailable("issuing a nonce", e))?;
    Ok(Json(ChallengeReply {
        nonce,
        expires_at: rfc3339(expires_at),
    }))
}

/// The engine's view of an opened revision.
fn view_of(rev: &OpenedRevision) -> RevisionView {
    RevisionView {
        label: rev.label.clone(),
        model: rev.manifest.model.clone(),
        revision: rev.manifest.revision.clone(),
        training: rev.manifest.training.clone(),
        files: rev
            .files
            .iter()
            .map(|(e, f)| {
                let h = f.header();
                FileView {
                    path: e.path.clone(),
                    original_len: e.original_len,
                    chunk_size: h.chunk_size,
                    head_len: h.meta.len() as u64,
                    data_len: h.plaintext_len,
                }
            })
            .collect(),
    }
}

/// Opens a revision for serving (blocking: files and the HSM).
async fn open_revision(st: &Arc<AppState>, r: RevisionRef) -> Result<OpenedRevision, ApiError> {
    let st2 = st.clone();
    let asked = match &r.revision {
        Some(rev) => format!("{}@{rev}", r.model),
        None => r.model.clone(),
    };
    blocking(move || st2.vault.open_revision(&r, &st2.kw))
        .await?
        .map_err(|e| match e {
            // In words of its own: the store's would suggest the names the vault holds,
            // which a client has no business learning.
            crate::store::StoreError::NotFound(_) => api(
                ApiCode::NotFound,
                format!("no model or revision {asked} in this vault"),
            ),
            e @ crate::store::StoreError::Shredded(..) => api(ApiCode::Shredded, e.to_string()),
            // Before any decision: nothing is recorded, nothing released.
            e @ crate::store::StoreError::Hsm {
                source: crate::hsm::HsmError::Pkcs11 { .. } | crate::hsm::HsmError::TokenMissing(_),
                ..
            } => {
                tracing::error!("opening the revision: {e}");
                api(
                    ApiCode::HsmUnavailable,
                    "the HSM cannot unwrap this revision's keys now; nothing is released",
                )
            }
            e => internal("opening the revision", e),
        })
}

/// The keys of the revisions live releases are served from, one copy per revision however
/// many releases of it are live (each release still opens the revision anew: the manifest
/// and headers authenticated, the data keys unwrapped by the HSM, the shred mark checked).
#[derive(Default)]
struct Revisions(Mutex<HashMap<(String, String), Weak<Keys>>>);

impl Revisions {
    /// The keys of `rev`, as kept for its other live releases if it is the same revision
    /// (the same files with the same header hashes: not one removed and sealed again).
    fn share(&self, rev: OpenedRevision) -> Arc<Keys> {
        let key = (rev.manifest.model.clone(), rev.manifest.revision.clone());
        let fresh = keys_of(rev);
        let mut m = self.0.lock().expect("revisions lock");
        m.retain(|_, w| w.strong_count() > 0);
        if let Some(kept) = m.get(&key).and_then(Weak::upgrade) {
            let same = kept.len() == fresh.len()
                && kept
                    .iter()
                    .zip(&fresh)
                    .all(|((a, _), (b, _))| a.path == b.path && a.header_hash == b.header_hash);
            if same {
                return kept;
            }
        }
        let a = Arc::new(fresh);
        m.insert(key, Arc::downgrade(&a));
        a
    }
}

/// The keys of an opened revision; its files close here (or when the last stream reading
/// one ends).
fn keys_of(rev: OpenedRevision) -> Keys {
    rev.files
        .into_iter()
        .map(|(e, f)| (e, f.detach().0))
        .collect()
}

/// The marks of a release's copy, when it is watermarked.
fn marks_of(st: &AppState, rev: &OpenedRevision, g: &Grant) -> Result<Option<Marks>, ApiError> {
    g.codeword
        .map(|cid| {
            engine::marks(&st.wm_key, rev.file_heads(), &cid)
                .map_err(|e| internal("reading tensor headers", e))
        })
        .transpose()
}

async fn releases(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Json<ReleaseBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ReleaseReply>, ApiError> {
    let Json(body) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(&st),
        _ => api(ApiCode::BadRequest, e.body_text()),
    })?;
    let policy = st.policy.current();
    let evidence: Admitted = engine::admit(&policy, &body)?;
    // The nonce is spent by this request whatever the outcome.
    let nonce_fresh = st
        .state
        .take_nonce(
            &evidence.statement.nonce,
            &peer.id.fingerprint,
            st.clock.now(),
        )
        .await
        .map_err(|e| unavailable("taking the nonce", e))?;
    let (model, revision) = engine::target(&body)?;
    let rev = open_revision(&st, RevisionRef { model, revision }).await?;
    let view = view_of(&rev);
    let files = engine::select_shards(&view, body.shards.as_deref())?;
    let client = peer.client();
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let now = st.clock.now();
    let asked = Asked {
        client: &client,
        source: engine::source_ip(peer.addr.ip(), forwarded, &policy.network.trusted_proxies),
        evidence: &evidence,
        nonce_fresh,
        revision: &view,
        files: &files,
        now,
        codeword: st.cfg.watermark.then(random16),
        approvals: st
            .state
            .approvals(policy.rules.approval_hours, now)
            .await
            .map_err(|e| unavailable("reading the approvals of held releases", e))?,
    };
    let (judged, ledger_index) = decide_and_record(&st, &policy, &asked).await?;
    let expires_at = now + ttl(st.cfg.release_ttl);
    let (grant, info, decision) = engine::grant(
        &asked,
        judged,
        ledger_index,
        random16(),
        expires_at,
        &st.wm_key,
    )?;
    let serving = Serving {
        marks: marks_of(&st, &rev, &grant)?,
        model: grant.model.clone(),
        revision: grant.revision.clone(),
        files: st.revisions.share(rev),
        view,
        cut: tokio::sync::watch::channel(None).0,
        expires_at,
    };
    keep_serving(&st, grant.id, Arc::new(serving), now);
    st.state
        .put_release(grant, now)
        .await
        .map_err(|e| unavailable("keeping the release", e))?;
    Ok(Json(ReleaseReply {
        decision,
        ledger_index,
        release: Some(info),
    }))
}

/// Decides under the allocation the state holds and appends the decision, without holding
/// the allocation across the append: concurrent decisions share the ledger's group commit and
/// never exceed a licence. The decision is durable before anything is answered: no record, no
/// release.
async fn decide_and_record(
    st: &Arc<AppState>,
    policy: &crate::policy::PolicyData,
    asked: &Asked<'_>,
) -> Result<(engine::Judged, u64), ApiError> {
    let decision_timer = st.metrics.decision_seconds.start_timer();
    let (judged, ledger_index) = st
        .state
        .decide(
            &mut |used| engine::judge(policy, &*st.geo, asked, used),
            &st.ledger,
            &crate::release::state::Reads {
                now: asked.now,
                counters: crate::policy::counters_read(policy, &asked.client.name, asked.now),
            },
        )
        .await
        .map_err(|e| match e {
            DecideError::Ledger(e @ crate::ledger::LedgerError::TooLong(_)) => {
                // Not the ledger's failure: this decision cannot be an entry (a revision of
                // thousands of files); others go on.
                tracing::error!("decision not recorded: {e}");
                api(ApiCode::Internal, format!("{e}; nothing is released"))
            }
            DecideError::Ledger(e) => {
                tracing::error!("ledger append failed: {e}");
                api(
                    ApiCode::LedgerUnavailable,
                    "the release ledger cannot be written; nothing is released",
                )
            }
            DecideError::State(e) => unavailable("deciding under the licence allocations", e),
        })?;
    decision_timer.observe_duration();
    let r = &judged.record;
    st.metrics
        .releases
        .with_label_values(&[&r.outcome.to_string()])
        .inc();
    tracing::info!(
        requester = %r.requester, model = %r.model, outcome = %r.outcome,
        failed = ?r.failed_checks, ledger_index, "release decision"
    );
    Ok((judged, ledger_index))
}

/// What this replica serves a release with: kept from the request, or opened again (a
/// release made by another replica, or before this one forgot it).
async fn serving_of(st: &Arc<AppState>, g: &Grant) -> Result<Arc<Serving>, ApiError> {
    if let Some(s) = st.serving.lock().expect("serving lock").get(&g.id) {
        return Ok(s.clone());
    }
    let rev = open_revision(
        st,
        RevisionRef {
            model: g.model.clone(),
            revision: Some(g.revision.clone()),
        },
    )
    .await?;
    let s = Arc::new(Serving {
        marks: marks_of(st, &rev, g)?,
        view: view_of(&rev),
        model: g.model.clone(),
        revision: g.revision.clone(),
        files: st.revisions.share(rev),
        cut: tokio::sync::watch::channel(g.withdrawn.clone()).0,
        expires_at: g.expires_at,
    });
    Ok(keep_serving(st, g.id, s, st.clock.now()))
}

async fn shard(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    path: Result<UrlPath<(String, u32)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let UrlPath((id, n)) = path.map_err(|e| api(ApiCode::BadRequest, e.body_text()))?;
    let unknown = || api(ApiCode::UnknownRelease, "no such release");
    let id: [u8; 16] = hex::decode(&id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(unknown)?;
    let grant = st
        .state
        .release(&id)
        .await
        .map_err(|e| unavailable("reading the release", e))?
        .ok_or_else(unknown)?;
    let fi = engine::admit_shard(&grant, &peer.id.fingerprint, st.clock.now(), n).inspect_err(
        |r| {
            if r.code == ApiCode::WrongClient {
                tracing::warn!(requester = %peer.id.name, release = %hex::encode(id), "release used by another client");
            }
        },
    )?;
    let serving = serving_of(&st, &grant).await?;
    let sealer = engine::sealer(&st.wm_key, &grant, n, &serving.view.files[fi])
        .map_err(|e| internal("sealing", e))?;
    let total = sealer.header().stream_len();
    let range = engine::parse_range(headers.get(header::RANGE).map(|h| h.as_bytes()), total)?;
    let (start, end) = range.unwrap_or((0, total));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let (report, handed) = tokio::sync::oneshot::channel();
    let st2 = st.clone();
    let mut cut = serving.cut.subscribe();
    tokio::task::spawn_blocking(move || {
        let job = Job {
            grant: &grant,
            serving: &serving,
            fi,
            n,
            sealer: &sealer,
            start,
            end,
        };
        produce(&st2, job, tx, handed)
    });
    // A withdrawn release ends its running streams at once: the body stops short of its
    // length (the client sees the transfer break) and the producer stops on its next send.
    let cut = async move {
        let _ = cut.wait_for(Option::is_some).await;
    };
    st.metrics.open_streams.inc();
    let body = Body::from_stream(Counted {
        inner: Box::pin(futures_util::StreamExt::take_until(
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
            cut,
        )),
        handed: 0,
        report: Some(report),
        metrics: st.metrics.clone(),
    });
    let mut resp = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes");
    if range.is_some() {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{total}", end - 1),
        );
    }
    resp.body(body).map_err(|e| internal("a response", e))
}

/// A response body that counts the bytes it hands to the connection and reports the count
/// when the connection is done with it (sent whole, cut by a withdrawal, or dropped because
/// the client went away). That count, not what the producer made, is what the ledger records.
struct Counted<S> {
    inner: std::pin::Pin<Box<S>>,
    handed: u64,
    report: Option<tokio::sync::oneshot::Sender<u64>>,
    metrics: Arc<super::ops::Metrics>,
}

impl<S: futures_util::Stream<Item = Result<Bytes, std::io::Error>>> futures_util::Stream
    for Counted<S>
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(b))) = &r {
            self.handed += b.len() as u64;
            self.metrics.bytes_streamed.inc_by(b.len() as u64);
        }
        r
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.metrics.open_streams.dec();
        if let Some(r) = self.report.take() {
            let _ = r.send(self.handed);
        }
    }
}

/// One stream to produce: bytes `[start, end)` of shard `n` (file `fi` of the revision).
struct Job<'a> {
    grant: &'a Grant,
    serving: &'a Serving,
    fi: usize,
    n: u32,
    sealer: &'a Sealer,
    start: u64,
    end: u64,
}

/// Decrypts, seals and sends a stream's bytes, then records how the stream ended: once the
/// body is done, with the bytes it handed to the connection.
fn produce(
    st: &AppState,
    job: Job<'_>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    handed: tokio::sync::oneshot::Receiver<u64>,
) {
    let Job {
        grant,
        serving,
        fi,
        n,
        sealer,
        start,
        end,
    } = job;
    let h = *sealer.header();
    let (entry, keys) = &serving.files[fi];
    // The file is open while this stream reads it (shared with other streams of it).
    let f = st
        .objects
        .get(&st.vault, &serving.model, &serving.revision, &entry.path)
        .and_then(|o| keys.attach(o));
    let marks = serving.marks.as_ref().map(|m| {
        crate::watermark::mark::FileMarks::new(
            &st.wm_key,
            m.files[fi].clone(),
            m.segments,
            &m.codeword,
            crate::watermark::DEFAULT_REL_BITS,
        )
    });
    let send = |b: Bytes| -> bool { tx.blocking_send(Ok(b)).is_ok() };
    let fail = |e: &dyn std::fmt::Display| {
        tracing::error!("release {}: {e}", hex::encode(grant.id));
        let _ = tx.blocking_send(Err(std::io::Error::other(
            "the vault could not read this shard",
        )));
    };
    let f = match f {
        Ok(f) => Some(f),
        Err(e) => {
            fail(&e);
            None
        }
    };
    let mut ok = f.is_some();
    if ok && start < HEADER_LEN as u64 {
        let hb = h.encode();
        ok = send(Bytes::copy_from_slice(
            &hb[start as usize..end.min(HEADER_LEN as u64) as usize],
        ));
    }
    let mut i = h.chunk_at(start.max(HEADER_LEN as u64));
    while ok && i < h.chunks() && h.offset(i) < end && serving.cut.borrow().is_none() {
        let f = f.as_ref().expect("ok only with the file");
        let off = h.offset(i);
        let len = h.plain_len(i) as usize;
        let mut buf = vec![0u8; len + 16];
        if i == 0 {
            buf[..len].copy_from_slice(&f.header().meta);
        } else {
            let at = (i - 1) * u64::from(h.chunk_size);
            let r = f
                .read_chunk(i - 1, &mut buf[..len])
                .and_then(|()| match &marks {
                    Some(m) => m.apply(at, &mut buf[..len], |o, l| f.read_range(o, o + l)),
                    None => Ok(()),
                });
            if let Err(e) = r {
                fail(&e);
                break;
            }
        }
        let tag = sealer.seal_chunk(i, &mut buf[..len]);
        buf[len..].copy_from_slice(&tag);
        let s = start.max(off) - off;
        let e = end.min(off + len as u64 + 16) - off;
        ok = send(Bytes::from(buf).slice(s as usize..e as usize));
        i += 1;
    }
    // The body ends when the channel closes; then it reports what it handed on. The file
    // closes here unless another stream reads it.
    drop(f);
    drop(tx);
    let sent = handed.blocking_recv().unwrap_or(0);
    let cut = serving.cut.borrow().clone();
    let r = engine::stream_end(
        grant,
        &entry.path,
        sent,
        end - start,
        cut.as_deref(),
        st.clock.now(),
    );
    let appended = {
        let _t = st.metrics.append_seconds.start_timer();
        st.ledger.append(&r)
    };
    match appended {
        Ok(i) => {
            // On a blocking thread of the service's runtime.
            let counted = tokio::runtime::Handle::current().block_on(st.state.count(i, &r));
            if let Err(e) = counted {
                tracing::error!("counting the end of a stream: {e}");
            }
            tracing::info!(
                shard = n,
                bytes = sent,
                complete = sent == end - start,
                ledger_index = i,
                "stream end"
            )
        }
        Err(e) => tracing::error!("recording the end of a stream: {e}"),
    }
}

/// Ends the running streams of every release the state withdraws (by this replica's reload
/// or, with a shared state, another's).
async fn follow_withdrawals(st: Arc<AppState>) {
    let mut rx = st.state.withdrawals();
    loop {
        match rx.recv().await {
            Ok(Withdrawal { id, failed }) => {
                if let Some(s) = st.serving.lock().expect("serving lock").get(&id) {
                    s.cut.send_replace(Some(failed));
                }
            }
            // Missed some: ask the state about every release this replica serves.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                let ids: Vec<[u8; 16]> = st
                    .serving
                    .lock()
                    .expect("serving lock")
                    .keys()
                    .copied()
                    .collect();
                for id in ids {
                    if let Ok(Some(g)) = st.state.release(&id).await {
                        if let (Some(f), Some(s)) = (
                            &g.withdrawn,
                            st.serving.lock().expect("serving lock").get(&id),
                        ) {
                            s.cut.send_replace(Some(f.clone()));
                        }
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Reads the policy directory again (SIGHUP). An invalid policy is refused and the old one
/// stays in force. With the new one, every live release is decided again as it was requested
/// (its own allocation not counted against it): a release that no longer passes — a licence
/// revoked or suspended, a clearance withdrawn, a party newly restricted — is withdrawn and its
/// running streams end at once. The reload and its outcome go to the ledger.
async fn reload_policy(st: &Arc<AppState>) {
    let st2 = st.clone();
    let res = tokio::task::spawn_blocking(move || st2.policy.reload())
        .await
        .expect("reload task");
    let mut withdrawn = Vec::new();
    let rejected = match res {
        Err(e) => {
            tracing::error!("policy reload refused, the old policy stays in force: {e}");
            Some(e.to_string())
        }
        Ok(()) => {
            if let Err(e) = withdraw_failing(st, &mut withdrawn).await {
                tracing::error!("deciding live releases again: {e}");
            }
            tracing::info!(withdrawn = withdrawn.len(), "policy reloaded");
            None
        }
    };
    let records = engine::reload_records(st.clock.now(), rejected, &withdrawn);
    if let Err(e) = append_chain(st, records).await {
        tracing::error!("recording the policy reload: {e}");
    }
}

/// Appends `records` in order, each following the one before (a `policy-reload` and its
/// `withdrawal` parts); stops at the first that fails.
async fn append_chain(
    st: &Arc<AppState>,
    records: Vec<crate::ledger::record::Record>,
) -> Result<(), crate::ledger::LedgerError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let mut prev = None;
        for r in records {
            let _t = st.metrics.append_seconds.start_timer();
            prev = Some(st.ledger.append(&r.chained_to(prev))?);
        }
        Ok(())
    })
    .await
    .expect("append task")
}

/// A reload with a shared database: this replica's directory, once it parses, is published as
/// the next version, which every replica (this one too) then applies by [`reload_policy`]. A
/// directory that does not parse is refused here, recorded like a refused local reload, and
/// nothing changes anywhere.
async fn publish_policy(st: &Arc<AppState>) {
    let st2 = st.clone();
    let res = tokio::task::spawn_blocking(move || {
        let files = checked_files(&st2.cfg.policies).map_err(|e| e.to_string())?;
        let db = st2.db.as_ref().expect("a database");
        db.publish_policy(&files, &publisher())
            .map_err(|e| format!("publishing the policy to the database: {e}"))
    })
    .await
    .expect("publish task");
    match res {
        Ok(p) => {
            tracing::info!(version = p.version, digest = %p.digest, "policy published to every replica")
        }
        Err(e) => {
            tracing::error!("policy reload refused, the old policy stays in force: {e}");
            let records = engine::reload_records(st.clock.now(), Some(e), &[]);
            if let Err(e) = append_chain(st, records).await {
                tracing::error!("recording the refused policy reload: {e}");
            }
        }
    }
}

/// Decides every live release again under the policy in force and withdraws those that fail;
/// pushes their decisions' ledger indices to `withdrawn`.
async fn withdraw_failing(st: &AppState, withdrawn: &mut Vec<u64>) -> Result<(), StateError> {
    let policy = st.policy.current();
    let now = st.clock.now();
    let grants = st.state.live_releases(now).await?;
    let mut live = Vec::with_capacity(grants.len());
    for g in &grants {
        live.push(engine::Live {
            grant: g,
            used_by_others: st.state.used_by_others(g.decision_index).await?,
        });
    }
    for (k, failed) in engine::rejudge(&policy, st.geo.as_ref(), &live, now) {
        let g = live[k].grant;
        tracing::warn!(
            release = %hex::encode(g.id), requester = %g.record.requester,
            failed = ?failed, "release withdrawn by the new policy"
        );
        st.state.withdraw(Withdrawal { id: g.id, failed }).await?;
        withdrawn.push(g.decision_index);
    }
    Ok(())
}

/// Appends the spooled operator records (counting them like any other record).
/// The ledger's housekeeping, on a thread of its own until `stop` is dropped: operator
/// records left in the spool while this service holds the ledger (`kek rotate`, `rewrap`,
/// `kek retire` run beside it) go in within a second, and a checkpoint is signed every
/// `checkpoint_every` when there are new entries; once more of each at the end. Not on the
/// runtime's blocking pool: a task every second there wakes its idle threads in turn and
/// none ever retires, so a burst of streams would leave its threads for good.
fn keep_ledger(st: &AppState, stop: &std::sync::mpsc::Receiver<()>) {
    let spool_every = Duration::from_secs(1);
    let mut last = 0;
    let mut next_spool = std::time::Instant::now();
    let mut next_checkpoint = next_spool;
    loop {
        let now = std::time::Instant::now();
        if now >= next_spool {
            ingest_spool(st);
            next_spool = now + spool_every;
        }
        if now >= next_checkpoint {
            last = checkpoint_if_new(st, last);
            next_checkpoint = now + st.cfg.checkpoint_every;
        }
        let wait = next_spool
            .min(next_checkpoint)
            .saturating_duration_since(std::time::Instant::now());
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = stop.recv_timeout(wait) {
            break;
        }
    }
    ingest_spool(st);
    checkpoint_if_new(st, 0);
}

fn ingest_spool(st: &AppState) {
    match st.ledger.take_pending() {
        Ok(got) => {
            for (i, r) in &got {
                // On the ledger's thread, inside the service's runtime.
                let counted = tokio::runtime::Handle::current().block_on(st.state.count(*i, r));
                if let Err(e) = counted {
                    tracing::error!("counting a spooled record: {e}");
                }
                tracing::info!(ledger_index = i, kind = %r.kind, "spooled record appended");
            }
        }
        Err(e) => tracing::error!("appending spooled ledger records: {e}"),
    }
}

/// Signs a checkpoint with the HSM if entries arrived since `last`, and publishes the tiles;
/// returns the size covered. With a shared database only the elected replica does (the
/// others return `last`, and sign everything once they are elected).
fn checkpoint_if_new(st: &AppState, last: u64) -> u64 {
    if let Some(e) = &st.election {
        match e.lock().expect("election lock").held() {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                tracing::warn!("standing for ledger integrator: {e}");
                return 0;
            }
        }
    }
    let n = st.ledger.len();
    if n <= last {
        return last;
    }
    let origin = st.vault.config().ledger.origin.clone();
    let r = st.ledger.checkpoint(&origin, &st.kw);
    match r {
        Ok(_) => {
            tracing::info!(size = n, "ledger checkpoint signed");
            if let Some(t) = &st.tiles {
                match st.vault.publish_tiles(t, st.ledger.as_ref(), &st.kw) {
                    Ok(p) => tracing::info!(
                        from = p.from,
                        size = p.size,
                        objects = p.objects,
                        "ledger tiles published"
                    ),
                    // The next round publishes what this one could not.
                    Err(e) => tracing::error!("publishing the ledger's tiles: {e}"),
                }
            }
            n
        }
        Err(e) => {
            tracing::error!("signing a ledger checkpoint: {e}");
            last
        }
    }
}

/// What `/readyz` checks, each a real round trip: the store lists its models, the release
/// state answers, the HSM lists its KEK versions, the ledger gives its tree head.
fn readiness(st: &Arc<AppState>) -> super::ops::CheckFn {
    let st = Arc::downgrade(st);
    Arc::new(move || {
        let Some(st) = st.upgrade() else {
            return vec![("service", Some("stopping".into()))];
        };
        let err = |r: Result<(), String>| r.err();
        vec![
            (
                "store",
                err(st
                    .vault
                    .sealed_store()
                    .models()
                    .map(drop)
                    .map_err(|e| e.to_string())),
            ),
            ("state", err(st.state.ready().map_err(|e| e.to_string()))),
            (
                "hsm",
                err(st.kw.refresh().map(drop).map_err(|e| e.to_string())),
            ),
            (
                "ledger",
                err(st.ledger.tree_head().map(drop).map_err(|e| e.to_string())),
            ),
        ]
    })
}

/// The rate limits of one route, per client certificate (its fingerprint, from the
/// connection's [`Peer`]).
#[derive(Clone, Copy)]
struct PerCertificate;

impl tower_governor::key_extractor::KeyExtractor for PerCertificate {
    type Key = [u8; 32];

    fn extract<T>(&self, req: &http::Request<T>) -> Result<[u8; 32], GovernorError> {
        req.extensions()
            .get::<Peer>()
            .map(|p| p.id.fingerprint)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

type RateLimit = Arc<
    tower_governor::governor::GovernorConfig<
        PerCertificate,
        governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    >,
>;

/// `per_minute` requests per minute for each client certificate, `burst` at once.
fn rate_limit(per_minute: u32, burst: u32) -> RateLimit {
    Arc::new(
        tower_governor::governor::GovernorConfigBuilder::default()
            .key_extractor(PerCertificate)
            .period(Duration::from_secs(60) / per_minute)
            .burst_size(burst)
            .finish()
            .expect("[serve] rates are checked to be at least 1"),
    )
}

/// A limited request's answer: 429 with `Retry-After`, or (no certificate: cannot happen
/// behind the accept loop) internal.
fn too_many(
    limit: &'static str,
    metrics: Arc<super::ops::Metrics>,
) -> impl Fn(GovernorError) -> Response + Clone {
    move |e| match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            metrics.refused.with_label_values(&[limit]).inc();
            let wait = wait_time.max(1);
            let mut r = api(
                ApiCode::TooManyRequests,
                format!("{limit}: too many requests from this client certificate; ask again in {wait} s"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
            r
        }
        e => internal("rate limiting", e).into_response(),
    }
}

/// Reads a request's whole body within `[serve] body_timeout` (hyper's own timer covers only
/// the head; tower-http's body timeout is per frame, which one byte every few seconds
/// defeats): 408 and the connection closed after it, 413 past `max_body` (the body is
/// `Limited` by the layer outside this one).
async fn body_in_time(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let limit = Duration::from_secs(st.limits.body_timeout);
    match tokio::time::timeout(limit, body.collect()).await {
        Ok(Ok(b)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                Body::from(b.to_bytes()),
            ))
            .await
        }
        Ok(Err(e)) if too_large(&e) => {
            st.metrics.refused.with_label_values(&["max_body"]).inc();
            payload_too_large(&st).into_response()
        }
        Ok(Err(e)) => api(
            ApiCode::BadRequest,
            format!("reading the request body: {e}"),
        )
        .into_response(),
        Err(_) => {
            st.metrics
                .refused
                .with_label_values(&["body_timeout"])
                .inc();
            let mut r = api(
                ApiCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    st.limits.body_timeout
                ),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// Whether a body error is `Limited`'s length limit.
fn too_large(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = src {
        if x.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = x.source();
    }
    false
}

fn payload_too_large(st: &AppState) -> ApiError {
    api(
        ApiCode::PayloadTooLarge,
        format!(
            "the request body is over {} bytes ([serve] max_body)",
            st.limits.max_body
        ),
    )
}

/// tower-http answers a declared `Content-Length` over the limit itself, in plain text:
/// the same answer in the service's JSON.
async fn json_413(State(st): State<Arc<AppState>>, r: Response) -> Response {
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        st.metrics.refused.with_label_values(&["max_body"]).inc();
        return payload_too_large(&st).into_response();
    }
    r
}

/// Bytes a request without a body to read may declare (challenge, shard).
const NO_BODY: usize = 1024;

fn router(state: Arc<AppState>) -> Router {
    use axum::middleware::{from_fn_with_state, map_response_with_state};
    use std::convert::Infallible;
    use tower_http::limit::RequestBodyLimitLayer;
    let lim = &state.limits;
    let challenges = rate_limit(lim.challenges_per_minute, lim.challenge_burst);
    let releases_rate = rate_limit(lim.releases_per_minute, lim.release_burst);
    // Keys of certificates that stopped asking are forgotten.
    for l in [challenges.clone(), releases_rate.clone()] {
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                l.limiter().retain_recent();
            }
        });
    }
    // Expired releases and nonces are forgotten every 30 s, whether or not new ones come.
    let st = state.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(30));
        loop {
            t.tick().await;
            let now = st.clock.now();
            st.serving
                .lock()
                .expect("serving lock")
                .retain(|_, v| v.expires_at > now);
            if let Err(e) = st.state.prune(now).await {
                tracing::warn!("forgetting expired releases and nonces: {e}");
            }
        }
    });
    let m = state.metrics.clone();
    Router::new()
        .route(
            "/v1/challenge",
            post(challenge)
                .layer::<_, Infallible>(RequestBodyLimitLayer::new(NO_BODY))
                .layer(
                    tower_governor::GovernorLayer::new(challenges)
                        .error_handler(too_many("challenges_per_minute", m.clone())),
                ),
        )
        .route(
            "/v1/releases",
            post(releases)
                .layer(axum::extract::DefaultBodyLimit::max(lim.max_body))
                .layer::<_, Infallible>(from_fn_with_state(state.clone(), body_in_time))
                .layer::<_, Infallible>(RequestBodyLimitLayer::new(lim.max_body))
                .layer(
                    tower_governor::GovernorLayer::new(releases_rate)
                        .error_handler(too_many("releases_per_minute", m)),
                ),
        )
        .route(
            "/v1/releases/{id}/shards/{n}",
            get(shard).layer::<_, Infallible>(RequestBodyLimitLayer::new(NO_BODY)),
        )
        .fallback(|| async { api(ApiCode::NotFound, "no such endpoint (see docs/PROTOCOL.md)") })
        .method_not_allowed_fallback(|| async {
            api(
                ApiCode::MethodNotAllowed,
                "wrong method for this endpoint (see docs/PROTOCOL.md)",
            )
        })
        .layer(map_response_with_state(state.clone(), json_413))
        .with_state(state)
}

type LedgerAndState = (
    Arc<dyn LedgerBackend>,
    Arc<dyn ReleaseState>,
    Option<crate::postgres::Database>,
);

/// The ledger and the release state: in PostgreSQL when a database is configured (shared by
/// every replica; `WEIGHTVAULT_DATABASE`), else the vault's local ledger and this process's
/// memory, with each licence's use counted from the ledger.
fn open_ledger_and_state(vault: &Vault) -> Result<LedgerAndState, ServeError> {
    if let Some(section) =
        crate::database::DatabaseSection::resolve(vault.config().database.as_ref())
    {
        let db = crate::postgres::Database::connect(&section)
            .map_err(|e| setup(format!("database {}: {e}", section.redacted_url())))?;
        tracing::info!(database = %db.redacted_url(), "release state and ledger in PostgreSQL");
        let ledger = db.ledger().with_origin(&vault.config().ledger.origin);
        return Ok((Arc::new(ledger), Arc::new(db.state()), Some(db)));
    }
    // One read of the ledger: opening it also counts each licence's use and the approvals.
    let mut alloc = Allocations::default();
    let mut book = crate::release::approvals::ApprovalBook::default();
    let (ledger, rec) = vault
        .ledger_visiting(&mut |i, e| {
            let r = crate::ledger::record::Record::parse(e)?;
            alloc.add(i, &r);
            book.add(i, &r);
            Ok(())
        })
        .map_err(|e| setup(format!("opening the ledger and counting licence use: {e}")))?;
    if rec.discarded_bytes > 0 {
        tracing::warn!(
            "ledger: discarded a torn final write of {} bytes",
            rec.discarded_bytes
        );
    }
    for (id, u) in &alloc.used {
        let streamed = alloc.streamed.get(id).copied().unwrap_or(0);
        tracing::info!(
            licence = %id, releases = u.releases, bytes = u.bytes, streamed,
            "licence usage in the ledger"
        );
    }
    Ok((
        Arc::new(ledger),
        Arc::new(LocalState::new(alloc, book)),
        None,
    ))
}

/// The policy directory's files, parsed and checked (errors name the file in the directory).
fn checked_files(
    dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, String>, policy::data::PolicyError> {
    use crate::policy::PolicySource;
    let local = crate::local::PolicyDir::new(dir);
    let files = local.read()?;
    policy::PolicyData::parse(&files).map_err(|mut e| {
        e.file = local.location(&e.file);
        e
    })?;
    Ok(files)
}

/// Who publishes a policy version from this process, for the database's row.
fn publisher() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "weightvault serve on {} (pid {})",
        host.trim(),
        std::process::id()
    )
}

/// The policy a replica with a shared database decides with: the version in force in the
/// database; when none was published yet, this replica's directory becomes version 1. A
/// directory that differs from the version in force is not applied (a replica restarted with
/// an older directory must not undo a suspension): it is published by a reload.
fn shared_policy(
    db: &crate::postgres::Database,
    dir: &std::path::Path,
) -> Result<(PolicyHandle, i64), ServeError> {
    let files = checked_files(dir).map_err(setup)?;
    // The handle reads this version or a later one.
    let applied = match db.policy_in_force().map_err(setup)? {
        None => {
            let p = db.publish_policy(&files, &publisher()).map_err(setup)?;
            tracing::info!(version = p.version, digest = %p.digest, "published this replica's policy directory: the database had none");
            p.version
        }
        Some(p) => {
            if p.digest == policy::PolicyVersion::of(&files) {
                tracing::info!(version = p.version, digest = %p.digest, "policy in force (the database's)");
            } else {
                tracing::warn!(
                    version = p.version, digest = %p.digest, published_by = %p.by,
                    "the database's policy version is in force; {} differs from it and is not applied until `weightvault policy reload` (or SIGHUP) publishes it",
                    dir.display()
                );
            }
            p.version
        }
    };
    let handle = PolicyHandle::load(Box::new(db.policy_source())).map_err(setup)?;
    Ok((handle, applied))
}

/// A running service.
pub struct Server {
    addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Opens the vault, HSM, ledger and policy, binds, and serves on a background thread.
    pub fn start(cfg: ServeConfig) -> Result<Self, ServeError> {
        let vault = Vault::open(&cfg.vault).map_err(setup)?;
        let limits = vault.config().serve.clone();
        limits.check().map_err(setup)?;
        let tiles = match vault.config().ledger.tiles.as_ref() {
            Some(t) => {
                if cfg.require_worm {
                    let (days, mode) = t.worm().map_err(setup)?;
                    let (worm, _) = t.buckets(&vault.config().store);
                    let r = crate::store::worm::require(&worm, days, mode)
                        .map_err(|e| setup(format!("--require-worm: {e}")))?;
                    tracing::info!(bucket = %worm.url, retention = %r, "ledger tiles bucket is write-once");
                }
                Some(vault.tile_log().expect("configured").map_err(setup)?)
            }
            None if cfg.require_worm => {
                return Err(setup(
                    "--require-worm: the vault publishes no ledger tiles ([ledger.tiles] in vault.toml)",
                ))
            }
            None => None,
        };
        let kw = vault.key_wrap().map_err(setup)?;
        let wm_key = vault.watermark_key(&kw).map_err(setup)?;
        let (ledger, state, db) = open_ledger_and_state(&vault)?;
        // Subscribed before the version in force is read: a publish after it is heard.
        let policy_versions = db.as_ref().map(|d| d.policy_versions());
        let (policy, applied) = match &db {
            Some(db) => shared_policy(db, &cfg.policies)?,
            None => (
                crate::local::PolicyDir::new(&cfg.policies)
                    .handle()
                    .map_err(setup)?,
                0,
            ),
        };
        let geo: Box<dyn GeoLookup + Send> = match &cfg.geoip {
            Some(p) => Box::new(
                policy::MaxMindGeo::from_bytes(
                    std::fs::read(p).map_err(|e| setup(format!("{}: {e}", p.display())))?,
                )
                .map_err(|e| setup(format!("{}: {e}", p.display())))?,
            ),
            None => Box::new(NoGeo),
        };
        let tls = tls::server_config(&cfg.tls).map_err(setup)?;
        let std_listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| setup(format!("listening on {}: {e}", cfg.listen)))?;
        std_listener.set_nonblocking(true).map_err(setup)?;
        let addr = std_listener.local_addr().map_err(setup)?;
        let ops_listener = match cfg.ops_listen {
            Some(a) => {
                let l = std::net::TcpListener::bind(a)
                    .map_err(|e| setup(format!("listening on {a} (--ops-listen): {e}")))?;
                l.set_nonblocking(true).map_err(setup)?;
                Some(l)
            }
            None => None,
        };
        let ops_addr = match &ops_listener {
            Some(l) => Some(l.local_addr().map_err(setup)?),
            None => None,
        };
        let state = Arc::new(AppState {
            vault,
            kw,
            wm_key,
            policy,
            geo,
            ledger,
            state,
            clock: Arc::new(SystemClock),
            serving: Mutex::new(HashMap::new()),
            objects: Objects::default(),
            revisions: Revisions::default(),
            metrics: Arc::new(super::ops::Metrics::new()),
            tiles,
            election: db.as_ref().map(|d| Mutex::new(d.election())),
            db,
            cfg,
            limits,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("weightvault-serve")
            .build()
            .map_err(setup)?;
        let (keep_stop, keep_rx) = std::sync::mpsc::channel::<()>();
        let keeper = {
            let (st, rt) = (state.clone(), rt.handle().clone());
            std::thread::Builder::new()
                .name("weightvault-keep".into())
                .spawn(move || {
                    let _in = rt.enter();
                    keep_ledger(&st, &keep_rx)
                })
                .map_err(setup)?
        };
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let st = state.clone();
                let reloader = tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let Ok(mut hup) = signal(SignalKind::hangup()) else {
                        tracing::error!("cannot listen for SIGHUP: policy reloads disabled");
                        return;
                    };
                    while hup.recv().await.is_some() {
                        match &st.db {
                            Some(_) => publish_policy(&st).await,
                            None => reload_policy(&st).await,
                        }
                    }
                });
                let st = state.clone();
                let policy_follower = tokio::spawn(async move {
                    let Some(mut versions) = policy_versions else {
                        return;
                    };
                    while versions.changed().await.is_ok() {
                        let v = *versions.borrow_and_update();
                        if v <= applied {
                            continue;
                        }
                        tracing::info!(version = v, "a new policy version was published");
                        reload_policy(&st).await;
                    }
                });
                let follower = tokio::spawn(follow_withdrawals(state.clone()));
                let ops = ops_listener.map(|l| {
                    let l = tokio::net::TcpListener::from_std(l).expect("ops listener");
                    let app = super::ops::router(state.metrics.clone(), readiness(&state));
                    tokio::spawn(super::ops::serve(l, app, std::future::pending()))
                });
                let gate = Arc::new(Gate {
                    connections: Arc::new(tokio::sync::Semaphore::new(
                        state.limits.max_connections,
                    )),
                    handshakes: Arc::new(tokio::sync::Semaphore::new(state.limits.max_handshakes)),
                    per_client: Mutex::new(HashMap::new()),
                    limits: state.limits.clone(),
                    metrics: state.metrics.clone(),
                });
                accept_loop(listener, tls, router(state.clone()), stop_rx, gate).await;
                if let Some(o) = ops {
                    o.abort();
                }
                follower.abort();
                policy_follower.abort();
                reloader.abort();
                drop(keep_stop);
                let _ = tokio::task::spawn_blocking(move || keeper.join()).await;
            });
        });
        Ok(Self {
            addr,
            ops_addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the operations port (`--ops-listen`), if any.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// Stops accepting and waits for the service thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the service stops (for `weightvault serve`).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The connection limits of `[serve]`: connections open, handshakes in progress (more wait
/// their turn), and connections per client certificate. Over the other two a connection is
/// closed without an answer (no HTTP has been spoken yet) and counted in `refused_total`.
struct Gate {
    connections: Arc<tokio::sync::Semaphore>,
    handshakes: Arc<tokio::sync::Semaphore>,
    per_client: Mutex<HashMap<[u8; 32], usize>>,
    limits: ServeSection,
    metrics: Arc<super::ops::Metrics>,
}

/// One of a client certificate's connections, given back when the connection ends.
struct ClientSlot {
    gate: Arc<Gate>,
    fingerprint: [u8; 32],
}

impl Gate {
    fn refuse(&self, limit: &str, addr: SocketAddr) {
        tracing::info!(%addr, limit, "connection refused");
        self.metrics.refused.with_label_values(&[limit]).inc();
    }

    fn client_slot(self: &Arc<Self>, fingerprint: [u8; 32]) -> Option<ClientSlot> {
        let mut m = self.per_client.lock().expect("per-client lock");
        let n = m.entry(fingerprint).or_insert(0);
        if *n >= self.limits.max_connections_per_client {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            gate: self.clone(),
            fingerprint,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.gate.per_client.lock().expect("per-client lock");
        if let Some(n) = m.get_mut(&self.fingerprint) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.fingerprint);
            }
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    gate: Arc<Gate>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let lim = gate.limits.clone();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
        };
        let Ok(conn) = gate.connections.clone().try_acquire_owned() else {
            gate.refuse("max_connections", addr);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let gate = gate.clone();
        let lim = lim.clone();
        tokio::spawn(async move {
            let _conn = conn;
            let handshake_timeout = Duration::from_secs(lim.handshake_timeout);
            // Past max_handshakes a connection waits for a turn (a fleet booting at once is
            // slowed, not refused), all within the handshake's time.
            // A connection that has sent nothing yet takes no turn.
            let handshake = async {
                tcp.readable().await?;
                let _turn = gate.handshakes.acquire().await;
                acceptor.accept(tcp).await
            };
            let stream = match tokio::time::timeout(handshake_timeout, handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%addr, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    gate.refuse("handshake_timeout", addr);
                    return;
                }
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let id = match cert.as_deref().map(tls::identity_of) {
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    tracing::info!(%addr, "client certificate refused: {e}");
                    return;
                }
                None => return,
            };
            let Some(_slot) = gate.client_slot(id.fingerprint) else {
                gate.refuse("max_connections_per_client", addr);
                return;
            };
            let app = app.layer(Extension(Peer { id, addr }));
            let svc = hyper_util::service::TowerToHyperService::new(app);
            // A client that stops reading (a stalled or malicious fetcher) is cut after
            // `write_timeout`: its stream's producer then stops and its file closes. No read
            // timeout here: hyper reads while it streams a response, and a long download is
            // not a slow request (the head and the body have their own limits).
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(Duration::from_secs(lim.write_timeout)));
            let io = hyper_util::rt::TokioIo::new(Box::pin(io));
            // HTTP/1.1 alone, as ALPN offers: an HTTP/2 preface sent without ALPN is not a
            // request line, so it is refused. The header timer needs a timer to run (without
            // one hyper drops it silently) and also bounds a kept-alive connection's idle
            // time, since it runs whenever hyper waits for a request head. A head over the
            // size or field limits is answered 431 by hyper itself.
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(lim.header_timeout))
                .max_header_size(lim.max_header_bytes)
                .max_headers(lim.max_headers)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(%addr, "connection: {e}");
            }
        });
    }
}
