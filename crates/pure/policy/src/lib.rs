//! The release decision: typed inputs in, a [`ReleaseDecision`] with every check's verdict out.
//!
//! Pure: it reads no file and opens no socket. The policy data is parsed from text by
//! [`data::PolicyData`]; the IP-geolocation database is behind [`GeoLookup`]. Every check is
//! evaluated and explained, even after one has failed, so a compliance officer sees the whole
//! picture; the release is allowed only if none fails.

pub mod cedar;
mod checks;
pub mod classify;
pub mod data;
pub mod models;
pub mod names;
pub mod people;
pub mod rules;
pub mod screening;
pub mod tiers;
pub mod veu;

mod set;
mod source;

pub use set::PolicyData;
pub use source::{LoadedPolicy, PolicyHandle, PolicySource, PolicyVersion};
pub use weightvault_core::facts::{TrainingFacts, Usage};

use data::Tier;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::{Date, OffsetDateTime};

/// Country of an IP address, from a geolocation database.
pub trait GeoLookup: Sync {
    /// ISO 3166-1 alpha-2 code, or `None` when the address is not in the database.
    fn country(&self, ip: IpAddr) -> Option<String>;
}

/// A geolocation source that knows no address (where no source address is checked).
pub struct NoGeo;

impl GeoLookup for NoGeo {
    fn country(&self, _: IpAddr) -> Option<String> {
        None
    }
}

/// The MaxMind-format database of `@ip-location-db/geo-whois-asn-country-mmdb`.
pub struct MaxMindGeo(maxminddb::Reader<Vec<u8>>);

/// Bytes that are not a MaxMind database.
#[derive(Debug, thiserror::Error)]
#[error("not a MaxMind database: {0}")]
pub struct GeoDbError(#[source] pub maxminddb::MaxMindDbError);

impl MaxMindGeo {
    /// Parses a database held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoDbError> {
        maxminddb::Reader::from_source(bytes)
            .map(Self)
            .map_err(GeoDbError)
    }
}

impl GeoLookup for MaxMindGeo {
    fn country(&self, ip: IpAddr) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Rec {
            country_code: String,
        }
        let r = self.0.lookup(ip).ok()?;
        r.decode::<Rec>().ok().flatten().map(|r| r.country_code)
    }
}

/// Host claims after the attestation layer verified them (issue 5 verifies signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostClaims {
    /// Host id.
    pub host_id: String,
    /// Attested country (ISO 3166-1 alpha-2).
    pub country: String,
    /// Attested region.
    pub region: String,
    /// Attester that signed the evidence.
    pub attester: String,
    /// Evidence issue time.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Evidence expiry time.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The signature verified under the attester's key.
    pub signature_valid: bool,
    /// The nonce was issued by this vault, to this client, and not used before.
    pub nonce_fresh: bool,
    /// The facility the attester places the host in (an id of `veu.toml`), when it says.
    #[serde(default)]
    pub facility: Option<String>,
}

/// A compliance officer's approval of a held request: it lets a request through that is held
/// for the same reasons (the same [`ReleaseDecision::review_key`]) until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The review it decided (the ledger index of the held decision).
    pub review: u64,
    /// The review key of the held decision.
    pub key: String,
    /// Who approved.
    pub by: String,
    /// Last instant it lets a request through.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// What is asked.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    /// Requester identity (from the client certificate).
    pub requester: String,
    /// Model name.
    pub model: String,
    /// Training facts recorded when the model was sealed, if known: they must agree with
    /// the inventory.
    pub sealed_facts: Option<TrainingFacts>,
    /// Verified host claims.
    pub host: HostClaims,
    /// Source address of the request (after trusted-proxy handling), if known.
    pub source_ip: Option<IpAddr>,
    /// Decision time (tiers and licences are judged on its date).
    pub time: OffsetDateTime,
    /// Releases and bytes already released under each licence as counted by the vault (its
    /// ledger), added to the `releases_used` and `bytes_used` of the licence file: the
    /// allocation left is judged on the sums.
    pub used: std::collections::BTreeMap<String, Usage>,
    /// Bytes this release would let out (the original lengths of the files it covers): judged
    /// against a licence's `max_bytes`.
    pub size: u64,
    /// Approvals of held requests in force (the decision uses one whose key matches).
    pub approvals: Vec<Approval>,
    /// A compliance officer's what-if (`policy check`): host evidence, and the network origin
    /// when no source address is given, are reported as not evaluated instead of judged. The
    /// release service never sets this.
    pub dry_run: bool,
}

/// The checks, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    /// The requester is known.
    Identity,
    /// The model is in the inventory and its classification holds.
    Classification,
    /// The attested destination's tier.
    Destination,
    /// Licence or licence exception.
    Licence,
    /// Deemed export to every nationality of a person.
    DeemedExport,
    /// Restricted-party screening.
    RestrictedParties,
    /// Ownership by listed parties (the BIS affiliates rule).
    Ownership,
    /// Host evidence validity.
    HostEvidence,
    /// Network origin of the request.
    NetworkOrigin,
    /// Organisation rules (Cedar).
    OrgRules,
    /// Daily quotas per requester and organisation.
    Quota,
}

impl CheckId {
    /// Every check, in report order.
    pub const ALL: [CheckId; 11] = [
        CheckId::Identity,
        CheckId::Classification,
        CheckId::Destination,
        CheckId::Licence,
        CheckId::DeemedExport,
        CheckId::RestrictedParties,
        CheckId::Ownership,
        CheckId::HostEvidence,
        CheckId::NetworkOrigin,
        CheckId::OrgRules,
        CheckId::Quota,
    ];
    /// The check's name as in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            CheckId::Identity => "identity",
            CheckId::Classification => "classification",
            CheckId::Destination => "destination",
            CheckId::Licence => "licence",
            CheckId::DeemedExport => "deemed_export",
            CheckId::RestrictedParties => "restricted_parties",
            CheckId::Ownership => "ownership",
            CheckId::HostEvidence => "host_evidence",
            CheckId::NetworkOrigin => "network_origin",
            CheckId::OrgRules => "org_rules",
            CheckId::Quota => "quota",
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Satisfied.
    Pass,
    /// Not satisfied: the release is denied.
    Fail,
    /// Does not apply to this request (e.g. deemed export for a workload).
    NotApplicable,
    /// Neither satisfied nor failed: held for a compliance officer (a close but not exact
    /// screening match, a party on the Unverified List, a material ownership share under the
    /// threshold, an uncertain classification).
    Review,
}

/// What a decision comes to: deny wins over review, review over allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    /// Every check passed (or does not apply).
    Allow,
    /// No check failed, but at least one holds the request for a compliance officer.
    Review,
    /// At least one check failed.
    Deny,
}

impl DecisionOutcome {
    /// The outcome of a set of verdicts: deny if any failed, else review if any is held.
    pub fn of(verdicts: impl IntoIterator<Item = Verdict>) -> Self {
        verdicts
            .into_iter()
            .map(|v| match v {
                Verdict::Fail => DecisionOutcome::Deny,
                Verdict::Review => DecisionOutcome::Review,
                Verdict::Pass | Verdict::NotApplicable => DecisionOutcome::Allow,
            })
            .max()
            .unwrap_or(DecisionOutcome::Allow)
    }

    /// `allow`, `review` or `deny`.
    pub fn name(self) -> &'static str {
        match self {
            DecisionOutcome::Allow => "allow",
            DecisionOutcome::Review => "review",
            DecisionOutcome::Deny => "deny",
        }
    }
}

/// One check with its verdict and a sentence a compliance officer can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check.
    pub check: CheckId,
    /// Outcome.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
}

/// What the release relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Authority {
    /// Not subject to 4E091 controls.
    NotControlled,
    /// A licence exception (Tier 1).
    LicenceException {
        /// Its name.
        name: String,
    },
    /// A licence.
    Licence {
        /// Licence id.
        id: String,
    },
    /// A Validated End User authorisation (15 CFR 748.15).
    Veu {
        /// Its id.
        id: String,
    },
    /// 4E091 licensing is not applied: the policy follows the AI Diffusion rule as BIS
    /// enforces it.
    NotEnforced {
        /// The reading's source, as `tiers.toml` gives it.
        reading: String,
    },
}

impl Authority {
    /// In words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Authority::NotControlled => "not controlled".into(),
            Authority::LicenceException { name } => name.clone(),
            Authority::Licence { id } => format!("licence {id}"),
            Authority::Veu { id } => format!("VEU authorisation {id}"),
            Authority::NotEnforced { reading } => {
                format!("4E091 licensing not enforced ({reading})")
            }
        }
    }
}

/// Duties that come with an allowed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligations {
    /// Embed a per-recipient watermark.
    pub watermark: bool,
    /// Consume one release of this licence's allocation.
    pub consume_licence: Option<String>,
    /// The daily quota counters this release counts against (keys of
    /// [`ReleaseRequest::used`]).
    #[serde(default)]
    pub quota_counters: Vec<String>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDecision {
    /// Allowed only when no check failed and none is held for review (`outcome` is allow).
    pub allowed: bool,
    /// Allow, review or deny.
    pub outcome: DecisionOutcome,
    /// Every check, in [`CheckId::ALL`] order.
    pub checks: Vec<CheckResult>,
    /// What the release relies on (when allowed, and when it could be determined).
    pub authority: Option<Authority>,
    /// Duties when allowed.
    pub obligations: Option<Obligations>,
    /// Destination tier, when known.
    pub tier: Option<Tier>,
    /// A what-if: some checks were not evaluated.
    pub dry_run: bool,
    /// For a held decision (and one let through by an approval): what an approval must match,
    /// a hash of the requester, the model, the host's country, every check's verdict and the
    /// reasons of the checks that hold it.
    #[serde(default)]
    pub review_key: Option<String>,
    /// The approval that let a held request through.
    #[serde(default)]
    pub approved_by: Option<Approval>,
}

impl ReleaseDecision {
    /// The checks that failed.
    pub fn failed(&self) -> Vec<CheckId> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| c.check)
            .collect()
    }

    /// The checks that hold the request for review.
    pub fn held(&self) -> Vec<CheckId> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Review)
            .map(|c| c.check)
            .collect()
    }
}

struct Checks(Vec<CheckResult>);

impl Checks {
    fn add(&mut self, check: CheckId, (verdict, reason): checks::Judged) {
        self.0.push(CheckResult {
            check,
            verdict,
            reason,
        });
    }
}

/// The usage counters a decision for `requester` at `time` reads ([`ReleaseRequest::used`]):
/// the licences its organisation holds, and its own and its organisation's daily quota
/// counters of that day. A release state gives a decision these and no others: the rest
/// cannot change it (`tests/policy.rs` decides every row of the decision table both ways),
/// and copying every counter of every requester and day into each decision would cost what
/// they number.
pub fn counters_read(policy: &PolicyData, requester: &str, time: OffsetDateTime) -> Vec<String> {
    let day = time.date();
    let mut out = vec![rules::quota_counter("requester", requester, day)];
    if let Some(org) = policy.requesters.get(requester).map(|w| &w.organisation) {
        out.push(rules::quota_counter("organisation", org, day));
        let held = policy.licences_by_licensee.get(org.as_str());
        out.extend(
            held.into_iter()
                .flatten()
                .map(|&i| policy.licences[i].id.clone()),
        );
    }
    out
}

/// Decides a release. Pure: the same inputs give the same decision. Every check runs (its own
/// function in [`checks`]), even after one has failed, in [`CheckId::ALL`] order.
pub fn decide(policy: &PolicyData, geo: &dyn GeoLookup, req: &ReleaseRequest) -> ReleaseDecision {
    let s = checks::Subject::new(policy, req);
    let mut c = Checks(Vec::with_capacity(CheckId::ALL.len()));
    c.add(CheckId::Identity, checks::identity(&s));
    c.add(CheckId::Classification, checks::classification(&s));
    let (judged, tier) = checks::destination(&s);
    c.add(CheckId::Destination, judged);
    let licence = checks::licence(&s, tier);
    c.add(CheckId::Licence, licence.judged);
    c.add(CheckId::DeemedExport, checks::deemed_export(&s));
    c.add(
        CheckId::RestrictedParties,
        checks::restricted_parties(&s, licence.consume.as_deref()),
    );
    c.add(CheckId::Ownership, checks::ownership(&s));
    c.add(CheckId::HostEvidence, checks::host_evidence(&s));
    let (judged, origin_country) = checks::network_origin(&s, geo);
    c.add(CheckId::NetworkOrigin, judged);
    c.add(
        CheckId::OrgRules,
        checks::org_rules(&s, tier, &origin_country),
    );
    let (judged, quota_counters) = checks::quota(&s);
    c.add(CheckId::Quota, judged);
    debug_assert!(c.0.iter().map(|r| r.check).eq(CheckId::ALL));

    let mut outcome = DecisionOutcome::of(c.0.iter().map(|r| r.verdict));
    let review_key = (outcome == DecisionOutcome::Review).then(|| review_key(req, &c.0));
    let approved_by = review_key.as_ref().and_then(|k| {
        req.approvals
            .iter()
            .find(|a| &a.key == k && req.time <= a.until)
            .cloned()
    });
    if approved_by.is_some() {
        outcome = DecisionOutcome::Allow;
    }
    let allowed = outcome == DecisionOutcome::Allow;
    ReleaseDecision {
        allowed,
        outcome,
        obligations: allowed.then_some(Obligations {
            watermark: true,
            consume_licence: licence.consume,
            quota_counters,
        }),
        // A held request keeps what it would rely on if a compliance officer approves it.
        authority: if outcome == DecisionOutcome::Deny {
            None
        } else {
            licence.authority
        },
        checks: c.0,
        tier,
        dry_run: req.dry_run,
        review_key,
        approved_by,
    }
}

/// What an approval of a held request must match: SHA-256 over the requester, the model, the
/// host's country, every check's verdict, and the reasons of the checks that hold it (each
/// length-prefixed), in hex.
pub fn review_key(req: &ReleaseRequest, checks: &[CheckResult]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    put(b"weightvault review key v1");
    put(req.requester.as_bytes());
    put(req.model.as_bytes());
    put(req.host.country.as_bytes());
    for c in checks {
        put(c.check.name().as_bytes());
        put(format!("{:?}", c.verdict).as_bytes());
        if c.verdict == Verdict::Review {
            put(c.reason.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

/// What licence `l` has been used for: its file's counts plus what the vault counted.
fn licence_use(l: &data::Licence, req: &ReleaseRequest) -> Usage {
    let u = req.used.get(&l.id).copied().unwrap_or_default();
    Usage {
        releases: l.releases_used.saturating_add(u.releases),
        bytes: l.bytes_used.saturating_add(u.bytes),
    }
}

/// Why no licence covers a release to a destination that is not Tier 1: the licence check's
/// sentence when it fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LicenceError {
    /// The organisation holds no licence at all.
    #[error("{org} holds no licence, and {country} is not Tier 1")]
    NoneHeld {
        /// The organisation.
        org: String,
        /// The destination.
        country: String,
    },
    /// Every licence it holds falls short, each in the ways listed.
    #[error("no usable licence: {}", join(.0, "; "))]
    NoneUsable(Vec<Unusable>),
}

/// A licence that does not cover the release, and every way it falls short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("licence {id}: {}", join(.defects, ", "))]
pub(crate) struct Unusable {
    /// The licence id.
    id: String,
    /// What is wrong with it, in the order checked (never empty).
    defects: Vec<Defect>,
}

/// One way a licence falls short of a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Defect {
    /// It licenses another ECCN.
    #[error("covers {0} not {1}")]
    Eccn(String, String),
    /// It names other models.
    #[error("does not name {0}")]
    Model(String),
    /// A named-model requirement needs a licence naming the model; it names none.
    #[error("does not name {0} (a named-model requirement needs a licence that does)")]
    NamesNoModel(String),
    /// The destination is not among its destinations.
    #[error("does not cover {0}")]
    Destination(String),
    /// Neither the organisation nor the person is an end user it names.
    #[error("does not name {org} or {person} as end user")]
    EndUser {
        /// The organisation.
        org: String,
        /// The requester.
        person: String,
    },
    /// Not valid yet.
    #[error("not valid before {0}")]
    NotYetValid(Date),
    /// No longer valid.
    #[error("expired after {0}")]
    Expired(Date),
    /// Suspended.
    #[error("suspended")]
    Suspended,
    /// Revoked.
    #[error("revoked")]
    Revoked,
    /// Every release it allows is used.
    #[error("allocation used up ({used} of {max} releases)")]
    Releases {
        /// Releases used.
        used: u64,
        /// Releases allowed.
        max: u64,
    },
    /// This release would pass the bytes it allows.
    #[error("byte allocation used up ({used} of {max} bytes used, this release is {size})")]
    Bytes {
        /// Bytes used.
        used: u64,
        /// Bytes allowed.
        max: u64,
        /// Bytes of this release.
        size: u64,
    },
}

fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// What a licence must cover besides a destination and an end user: the model's ECCN, and the
/// model by name when a named-model requirement applies.
pub(crate) struct Covering<'a> {
    pub model: &'a str,
    pub eccn: &'a str,
    pub must_name_model: bool,
}

impl<'a> Covering<'a> {
    /// A licence for model `m`'s ECCN, naming `m` when `must_name_model`.
    pub fn of(m: &'a data::ModelEntry, must_name_model: bool) -> Self {
        Covering {
            model: &m.name,
            eccn: &m.eccn,
            must_name_model,
        }
    }
}

fn find_licence<'a>(
    policy: &'a PolicyData,
    org: &str,
    person: &str,
    country: &str,
    today: Date,
    req: &ReleaseRequest,
    what: &Covering<'_>,
) -> Result<&'a data::Licence, LicenceError> {
    let candidates: Vec<&data::Licence> = policy
        .licences_by_licensee
        .get(org)
        .map(|v| v.iter().map(|&i| &policy.licences[i]).collect())
        .unwrap_or_default();
    if candidates.is_empty() {
        return Err(LicenceError::NoneHeld {
            org: org.into(),
            country: country.into(),
        });
    }
    let mut unusable = Vec::new();
    for l in candidates {
        let mut bad = Vec::new();
        if l.eccn != what.eccn {
            bad.push(Defect::Eccn(l.eccn.clone(), what.eccn.to_string()));
        }
        match &l.models {
            Some(ms) if !ms.contains(what.model) => bad.push(Defect::Model(what.model.to_string())),
            None if what.must_name_model => bad.push(Defect::NamesNoModel(what.model.to_string())),
            _ => {}
        }
        if !l.destinations.contains(country) {
            bad.push(Defect::Destination(country.into()));
        }
        if !l.end_users.contains(org) && !l.end_users.contains(person) {
            bad.push(Defect::EndUser {
                org: org.into(),
                person: person.into(),
            });
        }
        if today < l.valid_from {
            bad.push(Defect::NotYetValid(l.valid_from));
        }
        if today > l.valid_until {
            bad.push(Defect::Expired(l.valid_until));
        }
        match l.status {
            data::LicenceStatus::Active => {}
            data::LicenceStatus::Suspended => bad.push(Defect::Suspended),
            data::LicenceStatus::Revoked => bad.push(Defect::Revoked),
        }
        let u = licence_use(l, req);
        if u.releases >= l.max_releases {
            bad.push(Defect::Releases {
                used: u.releases,
                max: l.max_releases,
            });
        }
        if let Some(max) = l.max_bytes {
            let b = u.bytes;
            if b.saturating_add(req.size) > max {
                bad.push(Defect::Bytes {
                    used: b,
                    max,
                    size: req.size,
                });
            }
        }
        if bad.is_empty() {
            return Ok(l);
        }
        unusable.push(Unusable {
            id: l.id.clone(),
            defects: bad,
        });
    }
    Err(LicenceError::NoneUsable(unusable))
}
