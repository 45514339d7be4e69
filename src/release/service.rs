//! The key-release service (`weightvault serve`): axum on rustls with mutual TLS. Challenge,
//! evidence, decision, ledger, then shards streamed sealed to the attested host key. The
//! protocol is in `docs/PROTOCOL.md`.

use super::evidence;
use super::stream::{Sealer, HEADER_LEN};
use super::tls::{self, ClientIdentity, ServerTls};
use super::wire::{
    ApiCode, ChallengeReply, ErrorBody, ReleaseBody, ReleaseInfo, ReleaseReply, ShardInfo,
};
use crate::hsm::Pkcs11KeyWrap;
use crate::keys::SymmetricKey;
use crate::ledger::{record::Record, usage::Allocations, Ledger};
use crate::policy::{
    self, data::RequesterKind, Authority, GeoLookup, HostClaims, NoGeo, PolicyHandle,
    ReleaseDecision,
};
use crate::store::{OpenedRevision, RevisionRef, Vault};
use axum::body::Body;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
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

struct Nonce {
    client: [u8; 32],
    expires: Instant,
    used: bool,
}

/// What marks one release's copy.
struct Marks {
    codeword: Vec<bool>,
    segments: u32,
    /// Per file of `Release::rev`, its eligible tensors.
    files: Vec<Vec<crate::watermark::mark::MarkedTensor>>,
}

struct Release {
    id: [u8; 16],
    marks: Option<Marks>,
    client: [u8; 32],
    host_key: [u8; 32],
    secret: SymmetricKey,
    expires: Instant,
    rev: Arc<OpenedRevision>,
    /// Indices into `rev.files`, in the order of the release's shard list.
    files: Vec<usize>,
    decision_index: u64,
    base: Record,
    /// The request as decided, to decide again when the policy changes.
    req: policy::ReleaseRequest,
    /// Set (with the checks that now fail) when a policy reload withdrew the release: new
    /// shard requests are refused and running streams end at once.
    cut: tokio::sync::watch::Sender<Option<Vec<String>>>,
}

struct AppState {
    vault: Vault,
    kw: Pkcs11KeyWrap,
    wm_key: SymmetricKey,
    policy: PolicyHandle,
    geo: Box<dyn GeoLookup + Send>,
    ledger: Ledger,
    nonces: Mutex<HashMap<String, Nonce>>,
    releases: Mutex<HashMap<String, Arc<Release>>>,
    /// Releases and bytes per licence, from the ledger; held across decide-and-record so
    /// that concurrent requests never exceed an allocation.
    alloc: tokio::sync::Mutex<Allocations>,
    cfg: ServeConfig,
}

/// Who is on the other end of a connection.
#[derive(Clone)]
struct Peer {
    id: ClientIdentity,
    addr: SocketAddr,
}

/// An error at the edge: a stable code and a message; internal detail goes to the log only.
#[derive(Debug)]
struct ApiError {
    code: ApiCode,
    message: String,
    decision: Option<Box<ReleaseDecision>>,
    ledger_index: Option<u64>,
}

fn api(code: ApiCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
        decision: None,
        ledger_index: None,
    }
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
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            decision: self.decision.map(|d| *d),
            ledger_index: self.ledger_index,
        };
        (self.code.status(), Json(body)).into_response()
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    b
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
) -> Json<ChallengeReply> {
    let nonce = hex::encode(random16());
    let now = Instant::now();
    let mut n = st.nonces.lock().expect("nonce lock");
    n.retain(|_, v| v.expires > now);
    n.insert(
        nonce.clone(),
        Nonce {
            client: peer.id.fingerprint,
            expires: now + st.cfg.nonce_ttl,
            used: false,
        },
    );
    Json(ChallengeReply {
        nonce,
        expires_at: rfc3339(
            OffsetDateTime::now_utc() + time::Duration::try_from(st.cfg.nonce_ttl).expect("ttl"),
        ),
    })
}

/// The source address: the peer, or the address a trusted proxy forwards.
fn source_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[ipnet::IpNet]) -> IpAddr {
    if proxies.iter().any(|n| n.contains(&peer)) {
        if let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer
}

async fn releases(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Result<Json<ReleaseBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ReleaseReply>, ApiError> {
    let Json(body) = body.map_err(|e| api(ApiCode::BadRequest, e.body_text()))?;
    let policy = st.policy.current();
    let (statement, signature_valid) = evidence::open(&body.evidence, |id| {
        policy.attesters.get(id).map(|a| a.public_key)
    })
    .map_err(|e| api(ApiCode::BadEvidence, e.to_string()))?;
    let host_key = statement.host_key().expect("checked by open");
    // The nonce is spent by this request whatever the outcome, and counts only if it was
    // issued to this client and is still fresh.
    let nonce_fresh = {
        let mut n = st.nonces.lock().expect("nonce lock");
        match n.get_mut(&statement.nonce) {
            Some(e) if e.client == peer.id.fingerprint => {
                let fresh = !e.used && e.expires > Instant::now();
                e.used = true;
                fresh
            }
            _ => false,
        }
    };
    let r = RevisionRef {
        model: body.model.clone(),
        revision: body.revision.clone(),
    };
    crate::store::check_name("model name", &r.model)
        .map_err(|e| api(ApiCode::BadRequest, e.to_string()))?;
    if let Some(rev) = &r.revision {
        crate::store::check_name("revision", rev)
            .map_err(|e| api(ApiCode::BadRequest, e.to_string()))?;
    }
    let st2 = st.clone();
    let rev = blocking(move || st2.vault.open_revision(&r, &st2.kw))
        .await?
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(m) => api(ApiCode::NotFound, m),
            e @ crate::store::StoreError::Shredded(..) => api(ApiCode::Shredded, e.to_string()),
            e => internal("opening the revision", e),
        })?;
    let files: Vec<usize> = match &body.shards {
        None => (0..rev.files.len()).collect(),
        Some(paths) => paths
            .iter()
            .map(|p| {
                rev.files
                    .iter()
                    .position(|(e, _)| &e.path == p)
                    .ok_or_else(|| {
                        api(
                            ApiCode::UnknownShard,
                            format!("{} has no file {p}", rev.label),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    // The bytes this release allows out: judged against a licence's byte allocation.
    let size: u64 = files.iter().map(|&i| rev.files[i].0.original_len).sum();
    // Decide and record under the allocation lock: a licence's count cannot change between
    // the check and the durable record, so concurrent requests never exceed it.
    let mut alloc = st.alloc.lock().await;
    let now = OffsetDateTime::now_utc();
    let source = source_ip(peer.addr.ip(), &headers, &policy.network.trusted_proxies);
    let req = policy::ReleaseRequest {
        requester: peer.id.name.clone(),
        model: rev.manifest.model.clone(),
        sealed_facts: Some(rev.manifest.training.clone()),
        host: HostClaims {
            host_id: statement.host_id.clone(),
            country: statement.country.clone(),
            region: statement.region.clone(),
            attester: statement.attester.clone(),
            issued_at: statement.issued_at,
            expires_at: statement.expires_at,
            signature_valid,
            nonce_fresh,
        },
        source_ip: Some(source),
        time: now,
        used: alloc.used.clone(),
        size,
        dry_run: false,
    };
    let decision = policy::decide(&policy, st.geo.as_ref(), &req);
    let who = policy.requesters.get(&peer.id.name);
    let base = Record {
        kind: "release-decision".into(),
        time: rfc3339(now.replace_nanosecond(0).expect("0")),
        requester: peer.id.name.clone(),
        requester_kind: match who.map(|w| w.kind) {
            Some(RequesterKind::Person) => "person",
            Some(RequesterKind::Workload) => "workload",
            None if peer.id.workload => "workload",
            None => "person",
        }
        .into(),
        organisation: who.map(|w| w.organisation.clone()),
        nationalities: who.map(|w| w.nationalities.clone()).unwrap_or_default(),
        host_id: Some(statement.host_id.clone()),
        host_country: Some(statement.country.clone()),
        host_region: Some(statement.region.clone()),
        attester: Some(statement.attester.clone()),
        source: Some(source.to_string()),
        model: rev.manifest.model.clone(),
        revision: Some(rev.manifest.revision.clone()),
        shards: files.iter().map(|&i| rev.files[i].0.path.clone()).collect(),
        outcome: if decision.allowed {
            "allowed"
        } else {
            "denied"
        }
        .into(),
        failed_checks: decision
            .failed()
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        authority: decision.authority.as_ref().map(|a| match a {
            Authority::NotControlled => "not-controlled".to_string(),
            Authority::LicenceException { name } => format!("licence-exception:{name}"),
            Authority::Licence { id } => format!("licence:{id}"),
        }),
        codeword: None,
        // What the release allows out (its byte allocation); a stream-end carries what was sent.
        bytes: Some(size),
        follows: None,
        reason: None,
    };
    let mut base = base;
    let codeword_id = (decision.allowed && st.cfg.watermark).then(random16);
    base.codeword = codeword_id.map(hex::encode);
    // The decision is durable before anything is answered: no record, no release.
    let st2 = st.clone();
    let rec = base.clone();
    let ledger_index = blocking(move || st2.ledger.append(&rec))
        .await?
        .map_err(|e| {
            tracing::error!("ledger append failed: {e}");
            api(
                ApiCode::LedgerUnavailable,
                "the release ledger cannot be written; nothing is released",
            )
        })?;
    alloc.add(ledger_index, &base);
    drop(alloc);
    tracing::info!(
        requester = %peer.id.name, model = %base.model, outcome = %base.outcome,
        failed = ?base.failed_checks, ledger_index, "release decision"
    );
    if !decision.allowed {
        let failed = base.failed_checks.join(", ");
        let mut e = api(
            ApiCode::Denied,
            format!("release denied: failed checks: {failed}"),
        );
        e.decision = Some(Box::new(decision));
        e.ledger_index = Some(ledger_index);
        return Err(e);
    }
    let id = random16();
    let secret = SymmetricKey::random().map_err(|e| internal("randomness", e))?;
    let ttl = st.cfg.release_ttl;
    let mut shards = Vec::new();
    for (k, &i) in files.iter().enumerate() {
        let (e, f) = &rev.files[i];
        let h = f.header();
        let s = Sealer::new(
            &secret,
            &host_key,
            id,
            k as u32,
            h.chunk_size,
            h.meta.len() as u64,
            h.plaintext_len,
        )
        .map_err(|e| api(ApiCode::BadEvidence, e.to_string()))?;
        shards.push(ShardInfo {
            index: k as u32,
            path: e.path.clone(),
            size: s.header().file_len(),
            stream_len: s.header().stream_len(),
        });
    }
    let info = ReleaseInfo {
        id: hex::encode(id),
        expires_at: rfc3339(now + time::Duration::try_from(ttl).expect("ttl")),
        model: rev.manifest.model.clone(),
        revision: rev.manifest.revision.clone(),
        shards,
    };
    let marks = match codeword_id {
        None => None,
        Some(cid) => Some(
            release_marks(&st.wm_key, &rev, &cid)
                .map_err(|e| internal("reading tensor headers", e))?,
        ),
    };
    let rel = Release {
        id,
        marks,
        client: peer.id.fingerprint,
        host_key,
        secret,
        expires: Instant::now() + ttl,
        rev: Arc::new(rev),
        files,
        decision_index: ledger_index,
        base,
        req,
        cut: tokio::sync::watch::channel(None).0,
    };
    {
        let mut rs = st.releases.lock().expect("release lock");
        let now = Instant::now();
        rs.retain(|_, r| r.expires > now);
        rs.insert(info.id.clone(), Arc::new(rel));
    }
    Ok(Json(ReleaseReply {
        decision,
        ledger_index,
        release: Some(info),
    }))
}

/// The codeword and the eligible tensors of every file of a revision, for one codeword id.
/// The segment count follows from the eligible weights of the whole revision.
fn release_marks(
    wm_key: &SymmetricKey,
    rev: &OpenedRevision,
    cid: &[u8; 16],
) -> Result<Marks, crate::watermark::trace::TraceError> {
    use crate::watermark::tardos;
    let (files, segments) = crate::watermark::trace::revision_tensors(rev)?;
    let code = tardos::Code::new(wm_key, segments, tardos::DEFAULT_CUTOFF);
    Ok(Marks {
        codeword: code.codeword(wm_key, cid),
        segments,
        files,
    })
}

/// Parses a `Range: bytes=START-[END]` header against a length.
fn parse_range(h: Option<&header::HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(h) = h else { return Ok(None) };
    let bad = || {
        api(
            ApiCode::BadRange,
            format!("only one range bytes=START-[END] within {len} bytes is served"),
        )
    };
    let s = h.to_str().map_err(|_| bad())?;
    let (a, b) = s
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end = if b.trim().is_empty() {
        len
    } else {
        b.trim()
            .parse::<u64>()
            .map_err(|_| bad())?
            .saturating_add(1)
            .min(len)
    };
    if start >= end {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

async fn shard(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    path: Result<UrlPath<(String, u32)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let UrlPath((id, n)) = path.map_err(|e| api(ApiCode::BadRequest, e.body_text()))?;
    let rel = st
        .releases
        .lock()
        .expect("release lock")
        .get(&id)
        .cloned()
        .ok_or_else(|| api(ApiCode::UnknownRelease, "no such release"))?;
    if rel.client != peer.id.fingerprint {
        tracing::warn!(requester = %peer.id.name, release = %id, "release used by another client");
        return Err(api(
            ApiCode::WrongClient,
            "this release was made for another client certificate",
        ));
    }
    if Instant::now() > rel.expires {
        return Err(api(
            ApiCode::ReleaseExpired,
            "this release has expired; request a new one",
        ));
    }
    if let Some(failed) = rel.cut.borrow().as_deref() {
        return Err(api(
            ApiCode::ReleaseRevoked,
            format!(
                "this release was withdrawn by a policy change: {}",
                failed.join(", ")
            ),
        ));
    }
    let fi = *rel
        .files
        .get(n as usize)
        .ok_or_else(|| api(ApiCode::UnknownShard, format!("no shard {n}")))?;
    let h = rel.rev.files[fi].1.header();
    let sealer = Sealer::new(
        &rel.secret,
        &rel.host_key,
        rel.id,
        n,
        h.chunk_size,
        h.meta.len() as u64,
        h.plaintext_len,
    )
    .map_err(|e| internal("sealing", e))?;
    let total = sealer.header().stream_len();
    let range = parse_range(headers.get(header::RANGE), total)?;
    let (start, end) = range.unwrap_or((0, total));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let (report, handed) = tokio::sync::oneshot::channel();
    let st2 = st.clone();
    let mut cut = rel.cut.subscribe();
    tokio::task::spawn_blocking(move || {
        produce(&st2, &rel, fi, n, &sealer, start, end, tx, handed)
    });
    // A withdrawn release ends its running streams at once: the body stops short of its
    // length (the client sees the transfer break) and the producer stops on its next send.
    let cut = async move {
        let _ = cut.wait_for(Option::is_some).await;
    };
    let body = Body::from_stream(Counted {
        inner: Box::pin(futures_util::StreamExt::take_until(
            futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)),
            cut,
        )),
        handed: 0,
        report: Some(report),
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
        }
        r
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        if let Some(r) = self.report.take() {
            let _ = r.send(self.handed);
        }
    }
}

/// Decrypts, seals and sends stream bytes `[start, end)` of one shard, then records how the
/// stream ended: once the body is done, with the bytes it handed to the connection.
#[allow(clippy::too_many_arguments)]
fn produce(
    st: &AppState,
    rel: &Release,
    fi: usize,
    n: u32,
    sealer: &Sealer,
    start: u64,
    end: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    handed: tokio::sync::oneshot::Receiver<u64>,
) {
    let h = *sealer.header();
    let (entry, f) = &rel.rev.files[fi];
    let marks = rel.marks.as_ref().map(|m| {
        crate::watermark::mark::FileMarks::new(
            &st.wm_key,
            m.files[fi].clone(),
            m.segments,
            &m.codeword,
            crate::watermark::DEFAULT_REL_BITS,
        )
    });
    let send = |b: Bytes| -> bool { tx.blocking_send(Ok(b)).is_ok() };
    let mut ok = true;
    if start < HEADER_LEN as u64 {
        let hb = h.encode();
        ok = send(Bytes::copy_from_slice(
            &hb[start as usize..end.min(HEADER_LEN as u64) as usize],
        ));
    }
    let mut i = h.chunk_at(start.max(HEADER_LEN as u64));
    while ok && i < h.chunks() && h.offset(i) < end && rel.cut.borrow().is_none() {
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
                tracing::error!("release {}: {e}", hex::encode(rel.id));
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "the vault could not read this shard",
                )));
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
    // The body ends when the channel closes; then it reports what it handed on.
    drop(tx);
    let sent = handed.blocking_recv().unwrap_or(0);
    let complete = sent == end - start;
    let mut r = rel.base.clone();
    r.kind = "stream-end".into();
    r.time = rfc3339(OffsetDateTime::now_utc().replace_nanosecond(0).expect("0"));
    r.shards = vec![entry.path.clone()];
    r.outcome = if complete { "completed" } else { "cut-short" }.into();
    // Cut by a policy change: the checks that now fail.
    r.failed_checks = match rel.cut.borrow().as_ref() {
        Some(failed) if !complete => failed.clone(),
        _ => vec![],
    };
    r.bytes = Some(sent);
    r.follows = Some(rel.decision_index);
    match st.ledger.append(&r) {
        Ok(i) => {
            st.alloc.blocking_lock().add(i, &r);
            tracing::info!(
                shard = n,
                bytes = sent,
                complete,
                ledger_index = i,
                "stream end"
            )
        }
        Err(e) => tracing::error!("recording the end of a stream: {e}"),
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
    let (outcome, why) = match res {
        Err(e) => {
            tracing::error!("policy reload refused, the old policy stays in force: {e}");
            ("rejected", vec![e.to_string()])
        }
        Ok(()) => {
            let policy = st.policy.current();
            let alloc = st.alloc.lock().await;
            let live: Vec<Arc<Release>> = st
                .releases
                .lock()
                .expect("release lock")
                .values()
                .cloned()
                .collect();
            for rel in live {
                if rel.cut.borrow().is_some() || Instant::now() > rel.expires {
                    continue;
                }
                let mut req = rel.req.clone();
                req.used = alloc.used_by_others(rel.decision_index);
                let d = policy::decide(&policy, st.geo.as_ref(), &req);
                if !d.allowed {
                    let failed: Vec<String> =
                        d.failed().iter().map(|c| c.name().to_string()).collect();
                    tracing::warn!(
                        release = %hex::encode(rel.id), requester = %rel.base.requester,
                        failed = ?failed, "release withdrawn by the new policy"
                    );
                    rel.cut.send_replace(Some(failed));
                    withdrawn.push(rel.decision_index);
                }
            }
            drop(alloc);
            tracing::info!(withdrawn = withdrawn.len(), "policy reloaded");
            ("applied", vec![])
        }
    };
    let mut r = Record::action(
        &crate::store::now_rfc3339(),
        "policy-reload",
        "weightvault-serve",
        "",
        None,
        withdrawn.iter().map(|i| format!("withdrawn:{i}")).collect(),
        outcome,
    );
    r.failed_checks = why;
    let st2 = st.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || st2.ledger.append(&r))
        .await
        .expect("append task")
    {
        tracing::error!("recording the policy reload: {e}");
    }
}

/// Appends the spooled operator records (counting them like any other record).
fn ingest_spool(st: &AppState) {
    match st.ledger.ingest_spool() {
        Ok(got) => {
            let mut alloc = st.alloc.blocking_lock();
            for (i, r) in &got {
                alloc.add(*i, r);
                tracing::info!(ledger_index = i, kind = %r.kind, "spooled record appended");
            }
        }
        Err(e) => tracing::error!("appending spooled ledger records: {e}"),
    }
}

/// Signs a checkpoint with the HSM if entries arrived since `last`; returns the size covered.
fn checkpoint_if_new(st: &AppState, last: u64) -> u64 {
    let n = st.ledger.len();
    if n <= last {
        return last;
    }
    let origin = st.vault.config().ledger.origin.clone();
    let r = (|| -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let public = st.kw.ledger_public_key()?;
        Ok(st
            .ledger
            .checkpoint(&origin, &public, &|m| Ok(st.kw.sign_ledger(m)?))?)
    })();
    match r {
        Ok(_) => {
            tracing::info!(size = n, "ledger checkpoint signed");
            n
        }
        Err(e) => {
            tracing::error!("signing a ledger checkpoint: {e}");
            last
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/challenge", post(challenge))
        .route("/v1/releases", post(releases))
        .route("/v1/releases/{id}/shards/{n}", get(shard))
        .fallback(|| async { api(ApiCode::NotFound, "no such endpoint (see docs/PROTOCOL.md)") })
        .method_not_allowed_fallback(|| async {
            api(
                ApiCode::MethodNotAllowed,
                "wrong method for this endpoint (see docs/PROTOCOL.md)",
            )
        })
        .with_state(state)
}

/// A running service.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Opens the vault, HSM, ledger and policy, binds, and serves on a background thread.
    pub fn start(cfg: ServeConfig) -> Result<Self, ServeError> {
        let vault = Vault::open(&cfg.vault).map_err(setup)?;
        let kw = vault.key_wrap().map_err(setup)?;
        let wm_key = vault.watermark_key(&kw).map_err(setup)?;
        // One read of the ledger: opening it also counts each licence's use.
        let mut alloc = Allocations::default();
        let (ledger, rec) = vault
            .ledger_visiting(&mut |i, e| Ok(alloc.add_entry(i, e)?))
            .map_err(|e| setup(format!("opening the ledger and counting licence use: {e}")))?;
        if rec.discarded_bytes > 0 {
            tracing::warn!(
                "ledger: discarded a torn final write of {} bytes",
                rec.discarded_bytes
            );
        }
        let policy = crate::local::PolicyDir::new(&cfg.policies)
            .handle()
            .map_err(setup)?;
        for (id, u) in &alloc.used {
            let streamed = alloc.streamed.get(id).copied().unwrap_or(0);
            tracing::info!(
                licence = %id, releases = u.releases, bytes = u.bytes, streamed,
                "licence usage in the ledger"
            );
        }
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
        let state = Arc::new(AppState {
            vault,
            kw,
            wm_key,
            policy,
            geo,
            ledger,
            nonces: Mutex::new(HashMap::new()),
            releases: Mutex::new(HashMap::new()),
            alloc: tokio::sync::Mutex::new(alloc),
            cfg,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("weightvault-serve")
            .build()
            .map_err(setup)?;
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let st = state.clone();
                let signer = tokio::spawn(async move {
                    let mut t = tokio::time::interval(st.cfg.checkpoint_every);
                    let mut last = 0;
                    loop {
                        t.tick().await;
                        let st = st.clone();
                        last = tokio::task::spawn_blocking(move || checkpoint_if_new(&st, last))
                            .await
                            .unwrap_or(last);
                    }
                });
                let st = state.clone();
                let reloader = tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let Ok(mut hup) = signal(SignalKind::hangup()) else {
                        tracing::error!("cannot listen for SIGHUP: policy reloads disabled");
                        return;
                    };
                    while hup.recv().await.is_some() {
                        reload_policy(&st).await;
                    }
                });
                // Operator records left in the spool while this service holds the ledger
                // (`kek rotate`, `rewrap`, `kek retire` run beside it) go in within a second.
                let st = state.clone();
                let spooler = tokio::spawn(async move {
                    let mut t = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        t.tick().await;
                        let st = st.clone();
                        let _ = tokio::task::spawn_blocking(move || ingest_spool(&st)).await;
                    }
                });
                accept_loop(listener, tls, router(state.clone()), stop_rx).await;
                signer.abort();
                reloader.abort();
                spooler.abort();
                let _ = tokio::task::spawn_blocking(move || {
                    ingest_spool(&state);
                    checkpoint_if_new(&state, 0)
                })
                .await;
            });
        });
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, "TLS handshake refused: {e}");
                        return;
                    }
                    Err(_) => return,
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
            let app = app.layer(Extension(Peer { id, addr }));
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
            {
                tracing::debug!(%addr, "connection: {e}");
            }
        });
    }
}
