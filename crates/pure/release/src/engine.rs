//! The release engine: what the release service decides, without I/O.
//!
//! A release request goes through these steps; the service does the I/O between them:
//!
//! 1. [`admit`] opens the host evidence under the attesters of the policy in force.
//! 2. The service takes the evidence's nonce from its `ReleaseState` (once: a nonce counts
//!    only if it was issued to this client, is fresh and was never taken before).
//! 3. [`target`] checks the model and revision names; the service opens the revision and
//!    describes it as a [`RevisionView`]; [`select_shards`] picks the files asked for.
//! 4. [`judge`] decides under the licence allocations the state holds and builds the ledger
//!    record of the decision. The service appends it (durable before any answer).
//! 5. [`grant`] turns an allowed decision and its ledger index into a [`Grant`] (what the
//!    state keeps) and the [`ReleaseInfo`] the client is told; a denial becomes a
//!    [`Refusal`] carrying the decision.
//! 6. Each shard request is checked by [`admit_shard`] and [`parse_range`]; [`sealer`] sets
//!    up its stream; [`stream_end`] is the record of how it ended.
//! 7. On a policy reload, [`rejudge`] decides every live release again and names those the
//!    new policy withdraws; [`reload_records`] records the reload.

use crate::wire::{ApiCode, ErrorBody, ReleaseBody, ReleaseInfo, ShardInfo};
use std::collections::BTreeMap;
use std::net::IpAddr;
use time::OffsetDateTime;
use weightvault_core::evidence::{self, Statement};
use weightvault_core::facts::{rfc3339, TrainingFacts, Usage};
use weightvault_core::keys::SymmetricKey;
use weightvault_core::stream::{release_secret, Sealer, StreamError};
use weightvault_ledger::record::Record;
use weightvault_ledger::words::{self, Kind, Outcome, RecordAuthority};
use weightvault_policy::data::RequesterKind;
use weightvault_policy::{
    self as policy, Authority, DecisionOutcome, GeoLookup, HostClaims, PolicyData, ReleaseDecision,
    ReleaseRequest,
};

/// Who is asking: the identity the client certificate proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The identity (SPIFFE id or e-mail address).
    pub name: String,
    /// SHA-256 of the client certificate: a release is usable only by the certificate that
    /// asked for it.
    pub fingerprint: [u8; 32],
    /// The certificate names a workload (a SPIFFE id), not a person.
    pub workload: bool,
}

/// Why a request gets no release: the stable code a client matches on, a sentence for a
/// person, and for a denial the decision with every check and the ledger entry recording it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Stable code.
    pub code: ApiCode,
    /// What went wrong, in words.
    pub message: String,
    /// The decision, for [`ApiCode::Denied`].
    pub decision: Option<Box<ReleaseDecision>>,
    /// The ledger entry of the decision, for [`ApiCode::Denied`].
    pub ledger_index: Option<u64>,
}

impl Refusal {
    /// A refusal without a decision.
    pub fn new(code: ApiCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            decision: None,
            ledger_index: None,
        }
    }

    /// The error body the client is answered with.
    pub fn into_body(self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message,
            decision: self.decision.map(|d| *d),
            ledger_index: self.ledger_index,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One file of a revision, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
    /// Path in the checkpoint directory.
    pub path: String,
    /// Length of the original file (what a release lets out, judged against `max_bytes`).
    pub original_len: u64,
    /// The container's chunk size.
    pub chunk_size: u32,
    /// Length of the file's head (its safetensors header, sent as the stream's chunk 0).
    pub head_len: u64,
    /// Length of its data (the rest of the file).
    pub data_len: u64,
}

/// A revision that was found and authenticated, as the engine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionView {
    /// `model@revision`.
    pub label: String,
    /// Model.
    pub model: String,
    /// Revision.
    pub revision: String,
    /// The training facts recorded when it was sealed.
    pub training: TrainingFacts,
    /// Its files in manifest order.
    pub files: Vec<FileView>,
}

/// Host evidence that opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The attester's statement.
    pub statement: Statement,
    /// The signature verified under the attester's key.
    pub signature_valid: bool,
    /// The host's X25519 key: released streams are sealed to it.
    pub host_key: [u8; 32],
}

/// Step 1: opens the evidence of a request under the attesters of `policy`. Evidence that
/// cannot be read is refused here (`bad_evidence`); evidence that is read but does not hold
/// (an unknown attester, a bad signature, an expired statement) is judged by the decision.
pub fn admit(policy: &PolicyData, body: &ReleaseBody) -> Result<Admitted, Refusal> {
    let (statement, signature_valid) = evidence::open(&body.evidence, |id| {
        policy.attesters.get(id).map(|a| a.public_key)
    })
    .map_err(|e| Refusal::new(ApiCode::BadEvidence, e.to_string()))?;
    let host_key = statement
        .host_key()
        .map_err(|e| Refusal::new(ApiCode::BadEvidence, e.to_string()))?;
    Ok(Admitted {
        statement,
        signature_valid,
        host_key,
    })
}

/// Step 3: the model and revision a request names, their names checked.
pub fn target(body: &ReleaseBody) -> Result<(String, Option<String>), Refusal> {
    let bad =
        |e: weightvault_core::names::NameError| Refusal::new(ApiCode::BadRequest, e.to_string());
    weightvault_core::names::check_model_name(&body.model).map_err(bad)?;
    if let Some(r) = &body.revision {
        weightvault_core::names::check_name("revision", r).map_err(bad)?;
    }
    Ok((body.model.clone(), body.revision.clone()))
}

/// Step 3: the indices of the files a request asks for, in its order (all, when it names none).
pub fn select_shards(rev: &RevisionView, shards: Option<&[String]>) -> Result<Vec<usize>, Refusal> {
    match shards {
        None => Ok((0..rev.files.len()).collect()),
        Some(paths) => paths
            .iter()
            .map(|p| {
                rev.files.iter().position(|f| &f.path == p).ok_or_else(|| {
                    Refusal::new(
                        ApiCode::UnknownShard,
                        format!("{} has no file {p}", rev.label),
                    )
                })
            })
            .collect(),
    }
}

/// The source address of a request: the peer's, or the last address a trusted proxy put in
/// `X-Forwarded-For` when the peer is one of `proxies`.
pub fn source_ip(peer: IpAddr, forwarded_for: Option<&str>, proxies: &[ipnet::IpNet]) -> IpAddr {
    if proxies.iter().any(|n| n.contains(&peer)) {
        if let Some(ip) = forwarded_for
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer
}

/// A release request as the service has gathered it (step 4's input).
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    /// Who asks.
    pub client: &'a Client,
    /// Where the request comes from (after [`source_ip`]).
    pub source: IpAddr,
    /// The evidence, opened.
    pub evidence: &'a Admitted,
    /// Whether its nonce was issued to this client, fresh and taken for the first time.
    pub nonce_fresh: bool,
    /// The revision asked for.
    pub revision: &'a RevisionView,
    /// The files asked for ([`select_shards`]).
    pub files: &'a [usize],
    /// The decision time.
    pub now: OffsetDateTime,
    /// The watermark codeword id this release gets if it is allowed (`None`: releases are not
    /// watermarked).
    pub codeword: Option<[u8; 16]>,
    /// Compliance officers' approvals of held requests still in force
    /// ([`crate::approvals::ApprovalBook::in_force`]).
    pub approvals: Vec<policy::Approval>,
}

/// A decided request: the decision, the record that carries it to the ledger, and what is
/// needed to decide it again.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The decision with every check.
    pub decision: ReleaseDecision,
    /// The `release-decision` record (appended before anything is answered).
    pub record: Record,
    /// The request as decided (a reload decides it again).
    pub request: ReleaseRequest,
    /// The files it covers (indices into the revision).
    pub files: Vec<usize>,
    /// The codeword id, when allowed and watermarked.
    pub codeword: Option<[u8; 16]>,
}

impl Judged {
    /// The licence whose allocation an allowed decision uses, and the bytes it lets out.
    pub fn allocation(&self) -> Option<(&str, u64)> {
        match (&self.decision.allowed, &self.decision.authority) {
            (true, Some(Authority::Licence { id })) => Some((id.as_str(), self.request.size)),
            _ => None,
        }
    }

    /// Every counter an allowed decision adds to (its licence and its daily quota counters),
    /// and the bytes it lets out: what a state holds between the decision and its append.
    pub fn counters(&self) -> (Vec<String>, u64) {
        if !self.decision.allowed {
            return (vec![], 0);
        }
        let mut c: Vec<String> = self
            .allocation()
            .map(|(id, _)| id.to_string())
            .into_iter()
            .collect();
        if let Some(o) = &self.decision.obligations {
            c.extend(o.quota_counters.iter().cloned());
        }
        (c, self.request.size)
    }
}

/// The counters of `used` that a decision for `requester` at `time` reads
/// ([`policy::counters_read`]): what a live release's request is decided again under, not
/// every counter a state holds.
fn read_by(
    policy: &PolicyData,
    requester: &str,
    time: OffsetDateTime,
    used: &BTreeMap<String, Usage>,
) -> BTreeMap<String, Usage> {
    policy::counters_read(policy, requester, time)
        .into_iter()
        .filter_map(|k| {
            let u = used.get(&k).copied()?;
            Some((k, u))
        })
        .collect()
}

/// Step 4: decides a request under the licence use `used` (what the ledger counts, plus what
/// concurrent decisions hold) and builds its ledger record. `used` holds the counters the
/// decision reads and no others: `ReleaseState::decide` gives exactly those
/// ([`policy::counters_read`]), and the request (and a grant) keeps them as given.
pub fn judge(
    policy: &PolicyData,
    geo: &dyn GeoLookup,
    asked: &Asked<'_>,
    used: &BTreeMap<String, Usage>,
) -> Judged {
    let rev = asked.revision;
    let st = &asked.evidence.statement;
    // The bytes this release allows out: judged against a licence's byte allocation.
    let size: u64 = asked.files.iter().map(|&i| rev.files[i].original_len).sum();
    let request = ReleaseRequest {
        requester: asked.client.name.clone(),
        model: rev.model.clone(),
        sealed_facts: Some(rev.training.clone()),
        host: HostClaims {
            host_id: st.host_id.clone(),
            country: st.country.clone(),
            region: st.region.clone(),
            attester: st.attester.clone(),
            issued_at: st.issued_at,
            expires_at: st.expires_at,
            signature_valid: asked.evidence.signature_valid,
            nonce_fresh: asked.nonce_fresh,
            facility: st.facility.clone(),
        },
        source_ip: Some(asked.source),
        time: asked.now,
        used: used.clone(),
        size,
        approvals: asked.approvals.clone(),
        dry_run: false,
    };
    let decision = policy::decide(policy, geo, &request);
    let who = policy.requesters.get(&asked.client.name);
    let codeword = asked.codeword.filter(|_| decision.allowed);
    let record = Record {
        kind: Kind::ReleaseDecision,
        time: record_time(asked.now),
        requester: asked.client.name.clone(),
        requester_kind: match who.map(|w| w.kind) {
            Some(RequesterKind::Person) => words::RequesterKind::Person,
            Some(RequesterKind::Workload) => words::RequesterKind::Workload,
            None if asked.client.workload => words::RequesterKind::Workload,
            None => words::RequesterKind::Person,
        },
        organisation: who.map(|w| w.organisation.clone()),
        nationalities: who.map(|w| w.nationalities.clone()).unwrap_or_default(),
        host_id: Some(st.host_id.clone()),
        host_country: Some(st.country.clone()),
        host_region: Some(st.region.clone()),
        attester: Some(st.attester.clone()),
        source: Some(asked.source.to_string()),
        model: rev.model.clone(),
        revision: Some(rev.revision.clone()),
        shards: asked
            .files
            .iter()
            .map(|&i| rev.files[i].path.clone())
            .collect(),
        outcome: match decision.outcome {
            DecisionOutcome::Allow => Outcome::Allowed,
            DecisionOutcome::Review => Outcome::Held,
            DecisionOutcome::Deny => Outcome::Denied,
        },
        failed_checks: match decision.outcome {
            DecisionOutcome::Review => decision
                .held()
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            _ => failed_names(&decision),
        },
        authority: decision.authority.as_ref().map(|a| match a {
            Authority::NotControlled => RecordAuthority::NotControlled,
            Authority::LicenceException { name } => RecordAuthority::LicenceException(name.clone()),
            Authority::Licence { id } => RecordAuthority::Licence(id.clone()),
            Authority::Veu { id } => RecordAuthority::Veu(id.clone()),
            Authority::NotEnforced { reading } => RecordAuthority::NotEnforced(reading.clone()),
        }),
        codeword: codeword.map(hex::encode),
        // What the release allows out (its byte allocation); a stream-end carries what was sent.
        bytes: Some(size),
        follows: None,
        reason: review_reason(&decision),
    };
    Judged {
        decision,
        record,
        request,
        files: asked.files.to_vec(),
        codeword,
    }
}

/// The record's reason for a held decision (the review key, then each held check's
/// sentence), and for one an approval let through (which review, who, until when).
fn review_reason(d: &ReleaseDecision) -> Option<String> {
    if let Some(a) = &d.approved_by {
        return Some(format!(
            "approved in review {} by {} (until {})",
            a.review,
            a.by,
            rfc3339(a.until)
        ));
    }
    let key = d.review_key.as_ref()?;
    let held: Vec<String> = d
        .checks
        .iter()
        .filter(|c| c.verdict == policy::Verdict::Review)
        .map(|c| format!("{}: {}", c.check.name(), c.reason))
        .collect();
    Some(format!(
        "{}{key}: {}",
        weightvault_ledger::review::KEY_PREFIX,
        held.join("; ")
    ))
}

/// The names of the checks a decision failed.
pub fn failed_names(d: &ReleaseDecision) -> Vec<String> {
    d.failed().iter().map(|c| c.name().to_string()).collect()
}

/// A record's time: RFC 3339 UTC to the second.
fn record_time(t: OffsetDateTime) -> String {
    rfc3339(t.replace_nanosecond(0).expect("0 is a valid nanosecond"))
}

/// A release as the service's state keeps it: everything a replica needs to serve its shards
/// (with the vault's keys; the stream secret is derived from the id, [`release_secret`]).
#[derive(Debug, Clone)]
pub struct Grant {
    /// Release id.
    pub id: [u8; 16],
    /// The client certificate it was made for.
    pub client: [u8; 32],
    /// The attested host key its streams are sealed to.
    pub host_key: [u8; 32],
    /// When the id stops working.
    pub expires_at: OffsetDateTime,
    /// The ledger index of its decision.
    pub decision_index: u64,
    /// The decision's record (stream-end records follow it).
    pub record: Record,
    /// The request as decided (a reload decides it again).
    pub request: ReleaseRequest,
    /// Model and revision.
    pub model: String,
    /// Revision.
    pub revision: String,
    /// Indices into the revision's files, in the order of the release's shard list.
    pub files: Vec<usize>,
    /// Paths of those files, in the same order.
    pub shards: Vec<String>,
    /// The watermark codeword id, when watermarked.
    pub codeword: Option<[u8; 16]>,
    /// Set, with the checks that now fail, when a policy reload withdrew it.
    pub withdrawn: Option<Vec<String>>,
}

/// Step 5: the request `asked`, decided as `judged`, whose record is in the ledger at
/// `ledger_index`. A denial is a [`Refusal`] carrying the decision; an allowed request becomes
/// release `id`, valid until `expires_at`, with its shard list (each stream's length depends
/// on the sealing, so the service key is needed to set them up).
pub fn grant(
    asked: &Asked<'_>,
    judged: Judged,
    ledger_index: u64,
    id: [u8; 16],
    expires_at: OffsetDateTime,
    service_key: &SymmetricKey,
) -> Result<(Grant, ReleaseInfo, ReleaseDecision), Refusal> {
    let (rev, host_key) = (asked.revision, asked.evidence.host_key);
    if judged.decision.outcome == DecisionOutcome::Review {
        let held = judged.record.failed_checks.join(", ");
        return Err(Refusal {
            code: ApiCode::HeldForReview,
            message: format!(
                "held for review {ledger_index} by a compliance officer: {held}; once approved (weightvault review approve {ledger_index} --reason ...), the same request goes through"
            ),
            decision: Some(Box::new(judged.decision)),
            ledger_index: Some(ledger_index),
        });
    }
    if !judged.decision.allowed {
        let failed = judged.record.failed_checks.join(", ");
        return Err(Refusal {
            code: ApiCode::Denied,
            message: format!("release denied: failed checks: {failed}"),
            decision: Some(Box::new(judged.decision)),
            ledger_index: Some(ledger_index),
        });
    }
    let secret = release_secret(service_key, &id);
    let mut shards = Vec::with_capacity(judged.files.len());
    for (k, &i) in judged.files.iter().enumerate() {
        let f = &rev.files[i];
        let s = shard_sealer(&secret, &host_key, id, k as u32, f)
            .map_err(|e| Refusal::new(ApiCode::BadEvidence, e.to_string()))?;
        shards.push(ShardInfo {
            index: k as u32,
            path: f.path.clone(),
            size: s.header().file_len(),
            stream_len: s.header().stream_len(),
        });
    }
    let info = ReleaseInfo {
        id: hex::encode(id),
        expires_at: rfc3339(expires_at),
        model: rev.model.clone(),
        revision: rev.revision.clone(),
        shards,
    };
    let g = Grant {
        id,
        client: asked.client.fingerprint,
        host_key,
        expires_at,
        decision_index: ledger_index,
        record: judged.record,
        request: judged.request,
        model: rev.model.clone(),
        revision: rev.revision.clone(),
        shards: judged
            .files
            .iter()
            .map(|&i| rev.files[i].path.clone())
            .collect(),
        files: judged.files,
        codeword: judged.codeword,
        withdrawn: None,
    };
    Ok((g, info, judged.decision))
}

fn shard_sealer(
    secret: &SymmetricKey,
    host_key: &[u8; 32],
    id: [u8; 16],
    n: u32,
    f: &FileView,
) -> Result<Sealer, StreamError> {
    Sealer::new(
        secret,
        host_key,
        id,
        n,
        f.chunk_size,
        f.head_len,
        f.data_len,
    )
}

/// Step 6: may `client` have shard `n` of `grant` at `now`? Gives the index of its file in
/// the revision.
pub fn admit_shard(
    grant: &Grant,
    client: &[u8; 32],
    now: OffsetDateTime,
    n: u32,
) -> Result<usize, Refusal> {
    if &grant.client != client {
        return Err(Refusal::new(
            ApiCode::WrongClient,
            "this release was made for another client certificate",
        ));
    }
    if now > grant.expires_at {
        return Err(Refusal::new(
            ApiCode::ReleaseExpired,
            "this release has expired; request a new one",
        ));
    }
    if let Some(failed) = &grant.withdrawn {
        return Err(Refusal::new(
            ApiCode::ReleaseRevoked,
            format!(
                "this release was withdrawn by a policy change: {}",
                failed.join(", ")
            ),
        ));
    }
    grant
        .files
        .get(n as usize)
        .copied()
        .ok_or_else(|| Refusal::new(ApiCode::UnknownShard, format!("no shard {n}")))
}

/// Step 6: the stream of shard `n` of `grant` (file `file` of its revision), sealed to the
/// grant's host key under the secret derived from the service key and the release id.
pub fn sealer(
    service_key: &SymmetricKey,
    grant: &Grant,
    n: u32,
    file: &FileView,
) -> Result<Sealer, StreamError> {
    let secret = release_secret(service_key, &grant.id);
    shard_sealer(&secret, &grant.host_key, grant.id, n, file)
}

/// Step 6: a `Range: bytes=START-[END]` header (raw bytes) against a stream of `len` bytes:
/// `None` without a header, else the half-open byte range. A header of another form is
/// `bad_request` (400); a range that starts at or past its end or the stream's is
/// `bad_range` (416).
pub fn parse_range(h: Option<&[u8]>, len: u64) -> Result<Option<(u64, u64)>, Refusal> {
    let Some(h) = h else { return Ok(None) };
    let malformed = || {
        Refusal::new(
            ApiCode::BadRequest,
            "a Range header must be one range bytes=START-[END] (digits, no spaces)",
        )
    };
    let digits = |d: &str| -> Result<Option<u64>, Refusal> {
        match d {
            "" => Ok(None),
            d if d.bytes().all(|b| b.is_ascii_digit()) && d.len() <= 19 => {
                d.parse().map(Some).map_err(|_| malformed())
            }
            _ => Err(malformed()),
        }
    };
    let s = std::str::from_utf8(h).map_err(|_| malformed())?;
    let (a, b) = s
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(malformed)?;
    let start = digits(a)?.ok_or_else(malformed)?;
    let end = digits(b)?.map_or(len, |b| b.saturating_add(1).min(len));
    if start >= end {
        return Err(Refusal::new(
            ApiCode::BadRange,
            format!("the range starts at or past its end or the stream's {len} bytes"),
        ));
    }
    Ok(Some((start, end)))
}

/// Step 6: the record of how a stream of `grant` ended: `sent` bytes of the `requested` were
/// handed to the connection (the whole range: `completed`; fewer: `cut-short`, with the checks
/// that failed when a withdrawal `cut` it).
pub fn stream_end(
    grant: &Grant,
    shard: &str,
    sent: u64,
    requested: u64,
    cut: Option<&[String]>,
    now: OffsetDateTime,
) -> Record {
    let complete = sent == requested;
    Record {
        kind: Kind::StreamEnd,
        time: record_time(now),
        shards: vec![shard.to_string()],
        outcome: if complete {
            Outcome::Completed
        } else {
            Outcome::CutShort
        },
        failed_checks: match cut {
            Some(failed) if !complete => failed.to_vec(),
            _ => vec![],
        },
        bytes: Some(sent),
        follows: Some(grant.decision_index),
        ..grant.record.clone()
    }
}

/// One live release to decide again: the grant, and the licence use without its own.
pub struct Live<'a> {
    /// The release.
    pub grant: &'a Grant,
    /// What the licences have used, not counting this release.
    pub used_by_others: BTreeMap<String, Usage>,
}

/// Step 7: decides every live release again under a new policy (at the time each was
/// requested, with the licence use of the others): gives, for each that no longer passes, its
/// position in `live` and the checks that now fail. Already withdrawn and expired releases are
/// skipped.
pub fn rejudge(
    policy: &PolicyData,
    geo: &dyn GeoLookup,
    live: &[Live<'_>],
    now: OffsetDateTime,
) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (k, l) in live.iter().enumerate() {
        if l.grant.withdrawn.is_some() || now > l.grant.expires_at {
            continue;
        }
        let mut req = l.grant.request.clone();
        req.used = read_by(policy, &req.requester, req.time, &l.used_by_others);
        let d = policy::decide(policy, geo, &req);
        if !d.allowed {
            out.push((k, failed_names(&d)));
        }
    }
    out
}

/// Step 7: the `policy-reload` record: `applied` with the ledger indices of the decisions it
/// withdrew, or `rejected` with why (the old policy stays in force); preceded by `withdrawal`
/// parts when it withdrew more than one record lists, appended in order, each following the
/// one before ([`Record::policy_reload_parts`]).
pub fn reload_records(
    now: OffsetDateTime,
    rejected: Option<String>,
    withdrawn: &[u64],
) -> Vec<Record> {
    Record::policy_reload_parts(&record_time(now), withdrawn, rejected)
}

/// What marks one release's copy: its Tardos codeword and, per file of the revision, the
/// tensors that carry it.
#[derive(Debug, Clone)]
pub struct Marks {
    /// The codeword of the release's codeword id.
    pub codeword: Vec<bool>,
    /// Segments per codeword.
    pub segments: u32,
    /// Per file of the revision, its eligible tensors.
    pub files: Vec<Vec<weightvault_watermark::mark::MarkedTensor>>,
}

/// The marks of codeword id `cid` for a revision whose files are given as (path, kind,
/// header bytes) in manifest order. The segment count follows from the eligible weights of
/// the whole revision, so every file of one copy carries the same codeword.
pub fn marks<'a>(
    watermark_key: &SymmetricKey,
    files: impl IntoIterator<Item = (&'a str, weightvault_core::format::FileKind, &'a [u8])>,
    cid: &[u8; 16],
) -> Result<Marks, weightvault_watermark::trace::TraceError> {
    use weightvault_watermark::tardos;
    let (files, segments) = weightvault_watermark::trace::revision_tensors(files)?;
    let code = tardos::Code::new(watermark_key, segments, tardos::DEFAULT_CUTOFF);
    Ok(Marks {
        codeword: code.codeword(watermark_key, cid),
        segments,
        files,
    })
}

/// Release requests that must be denied, as data (`tests/vectors/denials.tsv`): the same rows
/// drive the end-to-end test through the service and the engine's table test without it.
pub mod vectors {
    /// One row: the client (a stem of the test PKI), the host's country, and the check that
    /// must fail.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Denial<'a> {
        /// Client certificate stem.
        pub client: &'a str,
        /// Attested country.
        pub country: &'a str,
        /// The failing check's name.
        pub check: &'a str,
    }

    /// The rows of a denial table: tab-separated, `#` lines are comments.
    pub fn denials(text: &str) -> Vec<Denial<'_>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut f = l.split('\t');
                let mut next = || f.next().expect("client, country and check on every row");
                Denial {
                    client: next(),
                    country: next(),
                    check: next(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
