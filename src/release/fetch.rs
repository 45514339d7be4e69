//! `weightvault fetch`: the serving node's side of the protocol. Challenge, evidence from the
//! attestation agent, release, then every shard downloaded in parallel, each chunk
//! authenticated and decrypted with the host key as it arrives.
//!
//! Plaintext is written only to unnamed files ([`crate::store::output::PlaintextFile`]) that
//! get their names when every file of the release is complete; the output directory then
//! appears at once. Whatever ends the fetch before that (an error, SIGINT, SIGKILL, a power
//! cut), no plaintext byte is left under any name.
//!
//! Resuming: beside the output, the directory `.<out>.weightvault-partial` (locked while a
//! fetch uses it) keeps the release (`state.json`) and, with `--resumable`, each shard's stream
//! exactly as received (`streams/<index>`): ciphertext sealed to this host's key, never
//! plaintext. Without it nothing received is kept: a transfer that breaks is retried once at
//! once under the same release, from the start of every stream, and a restarted fetch does
//! the same while the release is valid. A resumable fetch opens what is there chunk by chunk (so a chunk damaged in a power cut is fetched
//! again, not trusted), then asks only for the rest with `Range`, while the release is still
//! valid; otherwise it starts over with a new release. A withdrawn release or a tampered
//! stream removes it; `weightvault gc` removes one nothing resumes.

use super::stream::{Opener, StreamHeader, HEADER_LEN};
use super::wire::{ApiCode, ErrorBody, ReleaseInfo, ReleaseReply, ShardInfo};
use crate::format::aead::TAG_LEN;
use crate::store::output::PlaintextFile;
use crate::store::RevisionRef;
use futures_util::StreamExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use x25519_dalek::StaticSecret;

/// How to reach the vault and prove who and where this host is.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Base URL of the vault, e.g. `https://vault.example:8443`.
    pub server: String,
    /// The organisation CA that issued the vault's certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
    /// This host's X25519 secret key (64 hex digits).
    pub host_key: PathBuf,
    /// The attestation agent: a shell command, run with `WEIGHTVAULT_NONCE` and
    /// `WEIGHTVAULT_HOST_PUBLIC_KEY` in its environment, that prints the evidence JSON; or an
    /// `http://` / `https://` URL that answers a POST of `{"nonce", "host_public_key"}` with it.
    pub attest: String,
    /// Shards downloaded at once.
    pub parallel: usize,
    /// Show progress bars.
    pub progress: bool,
    /// Most stream bytes per second over all shards (`None`: as fast as possible).
    pub limit_rate: Option<u64>,
    /// Keep each shard's stream as received (ciphertext sealed to the host key) beside the
    /// output, so that a fetch stopped by anything, SIGKILL and power cuts included, resumes
    /// where it stopped. It writes every byte twice on this host: measured twice as slow.
    pub resumable: bool,
    /// How many times a transfer that broke, or a vault that cannot be reached (refused or
    /// reset connections: a service restarting), is tried again, waiting 0.5 s, then twice as
    /// long each time up to 8 s.
    pub retries: u32,
}

/// What [`FetchConfig::retries`] is unless set.
pub const DEFAULT_RETRIES: u32 = 5;

/// `fetch --config FILE`: the same settings in TOML (paths relative to the file).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchFile {
    /// Base URL of the vault.
    pub server: Option<String>,
    /// Organisation CA (PEM).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
    /// Host X25519 secret key file.
    pub host_key: Option<PathBuf>,
    /// Attestation agent command.
    pub attest: Option<String>,
    /// Shards downloaded at once.
    pub parallel: Option<usize>,
    /// Keep the received streams for resuming.
    pub resumable: Option<bool>,
    /// Tries again after a broken transfer or an unreachable vault.
    pub retries: Option<u32>,
}

impl FetchFile {
    /// Reads a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, FetchError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
        let mut f: FetchFile =
            toml::from_str(&text).map_err(|e| other(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut f.ca, &mut f.cert, &mut f.key, &mut f.host_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(f)
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The vault refused the release.
    #[error("{message}")]
    Denied {
        /// The vault's message.
        message: String,
        /// The decision, with every check.
        decision: Box<crate::policy::ReleaseDecision>,
        /// The ledger entry of the refusal.
        ledger_index: u64,
    },
    /// The request is held for a compliance officer: no release until one approves it.
    #[error("{message}")]
    Held {
        /// The vault's message.
        message: String,
        /// The decision, with every check (those that hold it say review).
        decision: Box<crate::policy::ReleaseDecision>,
        /// The review's id (the ledger entry of the held decision).
        review: u64,
    },
    /// The vault answered with an error.
    #[error("the vault refused: {message} ({code})")]
    Server {
        /// Stable code.
        code: ApiCode,
        /// Message.
        message: String,
    },
    /// A sealed chunk failed authentication: nothing was written.
    #[error("{0}; nothing was written")]
    Tampered(String),
    /// The release was withdrawn while it streamed (a licence revoked or suspended, a
    /// clearance withdrawn): the partial output was removed.
    #[error("{0}; the partial output was removed")]
    Revoked(String),
    /// The transfer broke in the middle of a shard.
    #[error("{0}")]
    Broken(String),
    /// SIGINT or SIGTERM stopped the fetch.
    #[error("{}; no plaintext was kept{}", .0, kept_note(.1))]
    Interrupted(crate::interrupt::Interrupted, Option<PathBuf>),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

fn kept_note(resume: &Option<PathBuf>) -> String {
    match resume {
        Some(p) => format!(
            "; the host-sealed stream received so far stays in {} for the next fetch to resume (`weightvault gc` removes it)",
            p.display()
        ),
        None => String::new(),
    }
}

fn other(e: impl std::fmt::Display) -> FetchError {
    FetchError::Other(e.to_string())
}

/// A request that did not reach the vault: [`FetchError::Broken`] when the connection was
/// refused, reset or cut (worth trying again: a service restarting, a replica going away),
/// else as it is (a certificate refused in the handshake stays refused).
fn unreached(what: &str, e: reqwest::Error) -> FetchError {
    use std::io::ErrorKind::*;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(x) = src {
        // An I/O error may carry another inside it (the TLS connector's errors come as kind
        // `Other` around the socket's), which `source()` skips: looked into too.
        let mut io = x.downcast_ref::<std::io::Error>();
        while let Some(i) = io {
            if matches!(
                i.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | UnexpectedEof
                    | BrokenPipe
            ) {
                return FetchError::Broken(format!("{what}: {e}: {i}"));
            }
            io = i.get_ref().and_then(|r| r.downcast_ref::<std::io::Error>());
        }
        // A connection accepted and then closed before the answer (a load balancer in TCP
        // mode whose backend just went away) is cut too.
        if let Some(h) = x.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return FetchError::Broken(format!("{what}: {e}: {h}"));
            }
        }
        src = x.source();
    }
    // The causes too: reqwest's own words ("error sending request") do not say what failed.
    let mut line = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        line.push_str(&format!(": {x}"));
        src = x.source();
    }
    other(line)
}

/// Waits before try `n` (from 0) again: 0.5 s, doubling up to 8 s; or the interrupt.
async fn back_off(n: u32, why: &str) -> Result<(), FetchError> {
    let wait = std::time::Duration::from_millis(500 << n.min(4));
    tracing::warn!("{why}; trying again in {wait:?}");
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(()),
        i = crate::interrupt::stopped() => Err(FetchError::Interrupted(i, None)),
    }
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The release.
    pub release: ReleaseInfo,
    /// Ledger entry of the decision (`None` when resuming an earlier release).
    pub ledger_index: Option<u64>,
    /// Whether an interrupted fetch was resumed.
    pub resumed: bool,
    /// Stream bytes downloaded by this run, over all its attempts (a resume after a broken
    /// transfer adds to what the broken one received; bytes received again count again).
    pub downloaded: u64,
    /// Bytes written (sum of file sizes).
    pub bytes: u64,
    /// Time the attestation agent took.
    pub attest_time: std::time::Duration,
    /// Time from the start to the first shard byte, without the attestation agent's time.
    pub first_byte: Option<std::time::Duration>,
}

/// Clocks of one fetch.
struct Timing {
    start: std::time::Instant,
    attest: std::sync::Mutex<std::time::Duration>,
    first_byte: std::sync::OnceLock<std::time::Duration>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PartialState {
    server: String,
    release: ReleaseInfo,
}

/// The resume directory of `out`, taken (locked) for this fetch, after the abandoned scratch
/// of the same output is swept. An earlier version's resume directory (it held plaintext
/// under `files/`) is removed.
fn take_partial(out: &Path) -> Result<crate::store::output::Scratch, FetchError> {
    let s = crate::store::output::Scratch::for_output(out, "partial", true).map_err(other)?;
    if s.path().join("files").exists() || s.path().join("tags").exists() {
        for d in ["files", "tags", "headers"] {
            let _ = std::fs::remove_dir_all(s.path().join(d));
        }
        let _ = std::fs::remove_file(s.path().join("state.json"));
    }
    Ok(s)
}

fn mkdir_private(p: &Path) -> Result<(), FetchError> {
    crate::store::output::create_private_dir(p).map_err(|e| other(format!("{}: {e}", p.display())))
}

fn read_host_key(p: &Path) -> Result<StaticSecret, FetchError> {
    let t =
        std::fs::read_to_string(p).map_err(|e| other(format!("host key {}: {e}", p.display())))?;
    let b: [u8; 32] = hex::decode(t.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| other(format!("host key {}: not 64 hex digits", p.display())))?;
    Ok(StaticSecret::from(b))
}

/// How many times a request refused with 429 is asked again, waiting what `Retry-After` says
/// (at most a minute each time).
const PACED_TRIES: u32 = 5;

/// Sends a request, and again after the wait the service asks for while it answers 429
/// `too_many_requests` (its per-certificate rate), a few times; the last answer either way.
async fn send_paced(
    base: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, FetchError> {
    let mut tries = 1;
    loop {
        let resp = request().send().await.map_err(|e| unreached(base, e))?;
        if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || tries == PACED_TRIES {
            return Ok(resp);
        }
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 60);
        tracing::warn!("{base}: too many requests from this certificate; asking again in {wait} s");
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        tries += 1;
    }
}

async fn error_of(resp: reqwest::Response) -> FetchError {
    let status = resp.status();
    let Ok(body) = resp.json::<ErrorBody>().await else {
        return FetchError::Server {
            code: ApiCode::Unknown,
            message: format!("HTTP {status} without an error body"),
        };
    };
    match body {
        ErrorBody {
            code: ApiCode::Denied,
            message,
            decision: Some(decision),
            ledger_index,
        } => FetchError::Denied {
            message,
            decision: Box::new(decision),
            ledger_index: ledger_index.unwrap_or(0),
        },
        ErrorBody {
            code: ApiCode::HeldForReview,
            message,
            decision: Some(decision),
            ledger_index,
        } => FetchError::Held {
            message,
            decision: Box::new(decision),
            review: ledger_index.unwrap_or(0),
        },
        ErrorBody { code, message, .. } => FetchError::Server { code, message },
    }
}

fn attest(cmd: &str, nonce: &str, host_public: &[u8; 32]) -> Result<serde_json::Value, FetchError> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WEIGHTVAULT_NONCE", nonce)
        .env("WEIGHTVAULT_HOST_PUBLIC_KEY", hex::encode(host_public))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| other(format!("running the attestation agent: {e}")))?;
    if !out.status.success() {
        return Err(other(format!(
            "the attestation agent failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        other(format!(
            "the attestation agent printed no evidence JSON: {e}"
        ))
    })
}

/// Asks an attestation agent over HTTP (a local agent; HTTPS with the system's roots).
async fn attest_url(
    url: &str,
    nonce: &str,
    host_public: &[u8; 32],
) -> Result<serde_json::Value, FetchError> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(other)?;
    let resp = client
        .post(url)
        .json(&serde_json::json!({"nonce": nonce, "host_public_key": hex::encode(host_public)}))
        .send()
        .await
        .map_err(|e| other(format!("the attestation agent {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(other(format!(
            "the attestation agent {url} answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default().trim()
        )));
    }
    resp.json().await.map_err(|e| {
        other(format!(
            "the attestation agent {url} sent no evidence JSON: {e}"
        ))
    })
}

/// Runs the protocol and writes `out` (a new or empty directory).
pub fn fetch(cfg: &FetchConfig, r: &RevisionRef, out: &Path) -> Result<FetchReport, FetchError> {
    crate::store::check_output(out, false).map_err(other)?;
    let host = read_host_key(&cfg.host_key)?;
    let tls = super::tls::client_config(&cfg.ca, &cfg.cert, &cfg.key).map_err(other)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(other)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(other)?;
    let timing = Timing {
        start: std::time::Instant::now(),
        attest: std::sync::Mutex::new(std::time::Duration::ZERO),
        first_byte: std::sync::OnceLock::new(),
    };
    let mut report = rt.block_on(run(cfg, client, host, r, out, &timing))?;
    report.attest_time = *timing.attest.lock().expect("timing");
    report.first_byte = timing
        .first_byte
        .get()
        .map(|t| t.saturating_sub(report.attest_time));
    Ok(report)
}

async fn new_release(
    cfg: &FetchConfig,
    client: &reqwest::Client,
    host: &StaticSecret,
    r: &RevisionRef,
    timing: &Timing,
) -> Result<(ReleaseInfo, u64), FetchError> {
    let base = cfg.server.trim_end_matches('/');
    let resp = send_paced(base, || client.post(format!("{base}/v1/challenge"))).await?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    let ch: serde_json::Value = resp.json().await.map_err(other)?;
    let nonce = ch["nonce"]
        .as_str()
        .ok_or_else(|| other("no nonce in the challenge"))?;
    let public = x25519_dalek::PublicKey::from(host).to_bytes();
    let t = std::time::Instant::now();
    let evidence = if cfg.attest.starts_with("http://") || cfg.attest.starts_with("https://") {
        attest_url(&cfg.attest, nonce, &public).await?
    } else {
        tokio::task::block_in_place(|| attest(&cfg.attest, nonce, &public))?
    };
    *timing.attest.lock().expect("timing") += t.elapsed();
    let body = serde_json::json!({
        "model": r.model,
        "revision": r.revision,
        "evidence": evidence,
    });
    // A request refused by the rate limit never reached the nonce: the same evidence is
    // asked with again.
    let resp = send_paced(base, || {
        client.post(format!("{base}/v1/releases")).json(&body)
    })
    .await?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    let reply: ReleaseReply = resp.json().await.map_err(other)?;
    let rel = reply
        .release
        .ok_or_else(|| other("the vault allowed the release but sent no release"))?;
    Ok((rel, reply.ledger_index))
}

async fn run(
    cfg: &FetchConfig,
    client: reqwest::Client,
    host: StaticSecret,
    r: &RevisionRef,
    out: &Path,
    timing: &Timing,
) -> Result<FetchReport, FetchError> {
    let mut scratch = take_partial(out)?;
    let partial = scratch.path().to_path_buf();
    let state_path = partial.join("state.json");
    let previous: Option<PartialState> = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &PartialState| {
            s.server == cfg.server
                && s.release.model == r.model
                && r.revision.as_ref().is_none_or(|v| *v == s.release.revision)
        });
    let mut attempt = previous.map(|s| s.release);
    // Tries again so far, after broken transfers or an unreachable vault.
    let mut tried = 0;
    // Stream bytes received by this run, over every attempt (a resume after a broken
    // transfer, a new release after an expired one).
    let downloaded = Arc::new(AtomicU64::new(0));
    loop {
        let (release, ledger_index, resumed) = match attempt.take() {
            Some(rel) => (rel, None, true),
            None => {
                let _ = std::fs::remove_dir_all(partial.join("streams"));
                let _ = std::fs::remove_file(&state_path);
                let asked = tokio::select! {
                    r = new_release(cfg, &client, &host, r, timing) => r,
                    i = crate::interrupt::stopped() => return Err(FetchError::Interrupted(i, None)),
                };
                let (rel, idx) = match asked {
                    Err(FetchError::Broken(m)) if tried < cfg.retries => {
                        back_off(tried, &m).await?;
                        tried += 1;
                        continue;
                    }
                    r => r?,
                };
                let st = PartialState {
                    server: cfg.server.clone(),
                    release: rel.clone(),
                };
                std::fs::write(&state_path, serde_json::to_vec(&st).expect("json"))
                    .map_err(other)?;
                (rel, Some(idx), false)
            }
        };
        let got = tokio::select! {
            r = download(cfg, &client, &host, &release, &partial, &downloaded, timing) => r,
            i = crate::interrupt::stopped() => {
                if !cfg.resumable {
                    return Err(FetchError::Interrupted(i, None));
                }
                scratch.keep();
                return Err(FetchError::Interrupted(i, Some(partial)));
            }
        };
        match got {
            Ok(files) => {
                finish(scratch, files, out)?;
                return Ok(FetchReport {
                    bytes: release.shards.iter().map(|s| s.size).sum(),
                    release,
                    ledger_index,
                    resumed,
                    downloaded: downloaded.load(Ordering::Relaxed),
                    attest_time: std::time::Duration::ZERO,
                    first_byte: None,
                });
            }
            // The earlier release is gone (expired, or the vault restarted): decide anew.
            Err(FetchError::Server { code, .. })
                if resumed && matches!(code, ApiCode::UnknownRelease | ApiCode::ReleaseExpired) =>
            {
                continue;
            }
            // Nothing of a tampered stream or a withdrawn release may stay on this host
            // (the scratch directory goes when dropped).
            Err(e @ FetchError::Tampered(_)) => return Err(e),
            Err(FetchError::Server {
                code: ApiCode::ReleaseRevoked,
                message,
            }) => {
                return Err(FetchError::Revoked(message));
            }
            // The transfer broke, or the vault went away: resume (the first time at once),
            // which also learns whether the vault withdrew the release or forgot it (then a
            // new release is asked for, above).
            Err(FetchError::Broken(m)) if tried < cfg.retries => {
                if tried == 0 {
                    tracing::warn!("{m}; resuming");
                } else {
                    back_off(tried - 1, &m).await?;
                }
                tried += 1;
                attempt = Some(release);
                continue;
            }
            Err(e) => {
                // Keep what was received (ciphertext) for the next fetch to resume.
                if received_any(&partial) {
                    scratch.keep();
                }
                return Err(e);
            }
        }
    }
}

/// Whether any stream bytes were received into `partial`.
fn received_any(partial: &Path) -> bool {
    std::fs::read_dir(partial.join("streams"))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        })
        .unwrap_or(false)
}

/// Names every complete file, then renames the whole tree into place and removes the resume
/// state.
fn finish(
    scratch: crate::store::output::Scratch,
    files: Vec<(String, PlaintextFile)>,
    out: &Path,
) -> Result<(), FetchError> {
    for (rel, _) in &files {
        rel_path(rel)?;
    }
    scratch.publish_files(files, out).map_err(other)
}

async fn download(
    cfg: &FetchConfig,
    client: &reqwest::Client,
    host: &StaticSecret,
    rel: &ReleaseInfo,
    partial: &Path,
    downloaded: &Arc<AtomicU64>,
    timing: &Timing,
) -> Result<Vec<(String, PlaintextFile)>, FetchError> {
    if cfg.resumable {
        mkdir_private(&partial.join("streams"))?;
    }
    let total: u64 = rel.shards.iter().map(|s| s.stream_len).sum();
    let bar = if cfg.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        b.set_message(format!("{}@{}", rel.model, rel.revision));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let results: Vec<(String, Result<PlaintextFile, FetchError>)> =
        futures_util::stream::iter(rel.shards.iter())
            .map(|s| {
                let (bar, downloaded) = (bar.clone(), downloaded.clone());
                async move {
                    let r = shard(
                        cfg,
                        client,
                        host,
                        rel,
                        s,
                        partial,
                        &bar,
                        &downloaded,
                        timing,
                    )
                    .await;
                    (s.path.clone(), r)
                }
            })
            .buffer_unordered(cfg.parallel.max(1))
            .collect()
            .await;
    bar.finish_and_clear();
    // A tampered stream wins over other errors: nothing may be kept.
    let mut first = None;
    let mut files = Vec::with_capacity(results.len());
    for (path, r) in results {
        match r {
            Ok(f) => files.push((path, f)),
            Err(e @ FetchError::Tampered(_)) => return Err(e),
            Err(e) if first.is_none() => first = Some(e),
            Err(_) => {}
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(files),
    }
}

fn rel_path(p: &str) -> Result<&str, FetchError> {
    crate::store::checkpoint::check_rel_path(p)
        .map_err(|w| other(format!("the vault named a bad file path {p:?}: {w}")))?;
    Ok(p)
}

/// Opens the chunks of a stream kept from an interrupted run (`stream`, as received) into
/// `plain`, and returns how many opened: the first that is incomplete or fails
/// authentication (a power cut can leave either) ends the replay and is fetched again.
fn replay(
    opener: &Opener,
    stream: &std::fs::File,
    stream_len: u64,
    plain: &std::fs::File,
) -> std::io::Result<u64> {
    let h = opener.header();
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let mut k = 0;
    while k < h.chunks() {
        let (at, n) = (h.offset(k), h.plain_len(k) as usize);
        if at + (n + TAG_LEN) as u64 > stream_len {
            break;
        }
        buf.resize(n + TAG_LEN, 0);
        stream.read_exact_at(&mut buf, at)?;
        let (chunk, tag) = buf.split_at_mut(n);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().expect("16");
        if opener.open_chunk(k, chunk, &tag).is_err() {
            break;
        }
        plain.write_all_at(chunk, h.plain_offset(k))?;
        k += 1;
    }
    Ok(k)
}

#[allow(clippy::too_many_arguments)]
async fn shard(
    cfg: &FetchConfig,
    client: &reqwest::Client,
    host: &StaticSecret,
    rel: &ReleaseInfo,
    s: &ShardInfo,
    partial: &Path,
    bar: &indicatif::ProgressBar,
    downloaded: &AtomicU64,
    timing: &Timing,
) -> Result<PlaintextFile, FetchError> {
    rel_path(&s.path)?;
    let io = |what: &str, e: std::io::Error| other(format!("{what} {}: {e}", s.path));
    // With --resumable, the stream as received (ciphertext) is kept beside the output.
    let stream = match cfg.resumable {
        true => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(partial.join("streams").join(s.index.to_string()))
                .map_err(|e| io("opening the stream of", e))?,
        ),
        false => None,
    };
    let plain = PlaintextFile::create_in(partial).map_err(|e| io("creating", e))?;
    let file = plain.file();
    // What an interrupted run received: its header, then every chunk that still opens.
    let kept = match &stream {
        Some(f) => f
            .metadata()
            .map_err(|e| io("reading the stream of", e))?
            .len(),
        None => 0,
    };
    let mut opener = None;
    let mut done = 0u64;
    if let Some(stream) = stream.as_ref().filter(|_| kept >= HEADER_LEN as u64) {
        let mut h = [0u8; HEADER_LEN];
        stream
            .read_exact_at(&mut h, 0)
            .map_err(|e| io("reading the stream of", e))?;
        let o = Opener::new(&h, host).map_err(|e| FetchError::Tampered(e.to_string()))?;
        check_header(o.header(), rel, s)?;
        done = tokio::task::block_in_place(|| replay(&o, stream, kept, file))
            .map_err(|e| io("resuming", e))?;
        bar.inc(o.header().offset(done));
        if done == o.header().chunks() {
            finish_file(file, o.header(), &s.path)?;
            return Ok(plain);
        }
        opener = Some(o);
    }
    let from = opener.as_ref().map_or(0, |o| o.header().offset(done));
    if let Some(f) = &stream {
        f.set_len(from)
            .map_err(|e| io("truncating the stream of", e))?;
    }
    let base = cfg.server.trim_end_matches('/');
    let resp = client
        .get(format!("{base}/v1/releases/{}/shards/{}", rel.id, s.index))
        .header(reqwest::header::RANGE, format!("bytes={from}-"))
        .send()
        .await
        .map_err(|e| unreached(&s.path, e))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = from; // stream position of buf[0]
    let mut received = from; // stream bytes kept in `stream`
    let mut next = done; // next chunk to open
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        let b =
            b.map_err(|e| FetchError::Broken(format!("{}: the transfer broke: {e}", s.path)))?;
        if let Some(limit) = cfg.limit_rate {
            // Keep the bytes of all shards so far within the rate.
            let total = downloaded.load(Ordering::Relaxed) + b.len() as u64;
            let due = std::time::Duration::from_secs_f64(total as f64 / limit.max(1) as f64);
            let ahead = due.saturating_sub(timing.start.elapsed());
            if !ahead.is_zero() {
                tokio::time::sleep(ahead).await;
            }
        }
        let _ = timing.first_byte.set(timing.start.elapsed());
        downloaded.fetch_add(b.len() as u64, Ordering::Relaxed);
        bar.inc(b.len() as u64);
        // As received: ciphertext sealed to this host, kept for a resume.
        if let Some(f) = &stream {
            f.write_all_at(&b, received)
                .map_err(|e| io("keeping the stream of", e))?;
        }
        received += b.len() as u64;
        buf.extend_from_slice(&b);
        if opener.is_none() && buf.len() >= HEADER_LEN {
            let o = Opener::new(&buf[..HEADER_LEN], host)
                .map_err(|e| FetchError::Tampered(format!("{}: {e}", s.path)))?;
            check_header(o.header(), rel, s)?;
            opener = Some(o);
        }
        let Some(o) = &opener else { continue };
        let h = *o.header();
        // Open every complete chunk in the buffer.
        let mut used = 0usize;
        while next < h.chunks() {
            let start = (h.offset(next) - pos) as usize;
            let n = h.plain_len(next) as usize;
            if buf.len() < start + n + TAG_LEN {
                break;
            }
            let tag: [u8; TAG_LEN] = buf[start + n..start + n + TAG_LEN].try_into().expect("16");
            let chunk = &mut buf[start..start + n];
            o.open_chunk(next, chunk, &tag)
                .map_err(|e| FetchError::Tampered(format!("{}: {e}", s.path)))?;
            file.write_all_at(chunk, h.plain_offset(next))
                .map_err(|e| io("writing", e))?;
            used = start + n + TAG_LEN;
            next += 1;
        }
        if used > 0 {
            buf.drain(..used);
            pos += used as u64;
        }
    }
    let Some(o) = &opener else {
        return Err(other(format!(
            "{}: the stream ended before its header",
            s.path
        )));
    };
    if next < o.header().chunks() {
        return Err(FetchError::Broken(format!(
            "{}: the stream ended after {next} of {} chunks",
            s.path,
            o.header().chunks()
        )));
    }
    if !buf.is_empty() {
        return Err(FetchError::Tampered(format!(
            "{}: bytes after the last chunk",
            s.path
        )));
    }
    finish_file(file, o.header(), &s.path)?;
    Ok(plain)
}

fn check_header(h: &StreamHeader, rel: &ReleaseInfo, s: &ShardInfo) -> Result<(), FetchError> {
    if hex::encode(h.release) != rel.id
        || h.shard != s.index
        || h.file_len() != s.size
        || h.stream_len() != s.stream_len
    {
        return Err(FetchError::Tampered(format!(
            "{}: the stream header does not match the release",
            s.path
        )));
    }
    Ok(())
}

fn finish_file(file: &std::fs::File, h: &StreamHeader, path: &str) -> Result<(), FetchError> {
    file.set_len(h.file_len())
        .and_then(|()| file.sync_all())
        .map_err(|e| other(format!("syncing {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load balancer in TCP mode whose backend just went away accepts the connection and
    /// closes it: the TLS handshake meets a reset or an end of stream, which is a transfer to
    /// try again (it was taken as fatal: the I/O error came wrapped in another).
    #[tokio::test]
    async fn a_connection_closed_in_the_handshake_is_worth_trying_again() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for linger in [true, false].into_iter().cycle() {
                let (s, _) = l.accept().await.unwrap();
                if linger {
                    // Reset (RST), as a killed backend's connection is.
                    s.set_zero_linger().unwrap();
                }
                drop(s);
            }
        });
        let c = reqwest::Client::builder().build().unwrap();
        for _ in 0..2 {
            let e = c.get(format!("https://{addr}/")).send().await.unwrap_err();
            match unreached("asking", e) {
                FetchError::Broken(_) => {}
                other => panic!("not taken as broken: {other:?}"),
            }
        }
        // A server that is not there at all: refused, also tried again.
        drop(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let gone = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = c.get(format!("https://{gone}/")).send().await.unwrap_err();
        assert!(matches!(unreached("asking", e), FetchError::Broken(_)));
    }
}
