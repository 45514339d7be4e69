//! The release decision: typed inputs in, a [`ReleaseDecision`] with every check's verdict out.
//!
//! Pure: it reads no file and opens no socket. The policy data is parsed from text by
//! [`data::PolicyData`]; the IP-geolocation database is behind [`GeoLookup`]. Every check is
//! evaluated and explained, even after one has failed, so a compliance officer sees the whole
//! picture; the release is allowed only if none fails.

pub mod cedar;
pub mod classify;
pub mod data;
pub mod names;

mod set;
mod source;

pub use set::PolicyData;
pub use source::{LoadedPolicy, PolicyHandle, PolicySource, PolicyVersion};
pub use weightvault_core::facts::{TrainingFacts, Usage};

use data::{RequesterKind, Tier};
use serde::Serialize;
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

impl MaxMindGeo {
    /// Parses a database held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        maxminddb::Reader::from_source(bytes)
            .map(Self)
            .map_err(|e| format!("not a MaxMind database: {e}"))
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
    /// A compliance officer's what-if (`policy check`): host evidence, and the network origin
    /// when no source address is given, are reported as not evaluated instead of judged. The
    /// release service never sets this.
    pub dry_run: bool,
}

/// The checks, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Hash)]
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
    /// Host evidence validity.
    HostEvidence,
    /// Network origin of the request.
    NetworkOrigin,
    /// Organisation rules (Cedar).
    OrgRules,
}

impl CheckId {
    /// Every check, in report order.
    pub const ALL: [CheckId; 9] = [
        CheckId::Identity,
        CheckId::Classification,
        CheckId::Destination,
        CheckId::Licence,
        CheckId::DeemedExport,
        CheckId::RestrictedParties,
        CheckId::HostEvidence,
        CheckId::NetworkOrigin,
        CheckId::OrgRules,
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
            CheckId::HostEvidence => "host_evidence",
            CheckId::NetworkOrigin => "network_origin",
            CheckId::OrgRules => "org_rules",
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Satisfied.
    Pass,
    /// Not satisfied: the release is denied.
    Fail,
    /// Does not apply to this request (e.g. deemed export for a workload).
    NotApplicable,
}

/// One check with its verdict and a sentence a compliance officer can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Which check.
    pub check: CheckId,
    /// Outcome.
    pub verdict: Verdict,
    /// Why.
    pub reason: String,
}

/// What the release relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// Duties that come with an allowed release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obligations {
    /// Embed a per-recipient watermark.
    pub watermark: bool,
    /// Consume one release of this licence's allocation.
    pub consume_licence: Option<String>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseDecision {
    /// Allowed only when no check failed.
    pub allowed: bool,
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
}

struct Checks(Vec<CheckResult>);

impl Checks {
    fn add(&mut self, check: CheckId, verdict: Verdict, reason: impl Into<String>) {
        self.0.push(CheckResult {
            check,
            verdict,
            reason: reason.into(),
        });
    }
}

fn day(d: Date) -> String {
    d.to_string()
}

/// Decides a release. Pure: the same inputs give the same decision.
pub fn decide(policy: &PolicyData, geo: &dyn GeoLookup, req: &ReleaseRequest) -> ReleaseDecision {
    use Verdict::*;
    let today = req.time.date();
    let mut c = Checks(Vec::with_capacity(9));
    let who = policy.requesters.get(&req.requester);
    let org = who.and_then(|w| policy.organisations.get(&w.organisation));
    match (who, org) {
        (Some(w), Some(o)) => c.add(
            CheckId::Identity,
            Pass,
            format!(
                "{} is a {} of {} ({})",
                w.id,
                match w.kind {
                    RequesterKind::Person => "person",
                    RequesterKind::Workload => "workload",
                },
                o.name,
                o.country
            ),
        ),
        _ => c.add(
            CheckId::Identity,
            Fail,
            format!("{} is not a known person or workload", req.requester),
        ),
    }

    // Classification.
    let model = policy.models.get(&req.model);
    match model {
        None => c.add(
            CheckId::Classification,
            Fail,
            format!(
                "{} is not in the model inventory: unclassified models are never released",
                req.model
            ),
        ),
        Some(m) => {
            let disagree = req.sealed_facts.as_ref().and_then(|f| {
                let why = classify::inventory_disagreements(f, m);
                (!why.is_empty()).then(|| why.join("; "))
            });
            match disagree {
                Some(why) => c.add(
                    CheckId::Classification,
                    Fail,
                    format!("{}: sealed facts disagree with the inventory ({why}): treated as unclassified", m.name),
                ),
                None if m.controlled() => c.add(
                    CheckId::Classification,
                    Pass,
                    format!("{}: closed weights, {:e} training operations (>= 1e26): ECCN 4E091, controlled", m.name, m.training_ops),
                ),
                None => c.add(
                    CheckId::Classification,
                    Pass,
                    format!(
                        "{}: {} ({}): not controlled under 4E091",
                        m.name,
                        if m.open_weights { "open weights".to_string() } else { format!("{:e} training operations, below 1e26", m.training_ops) },
                        m.eccn
                    ),
                ),
            }
        }
    }
    let controlled = model.is_some_and(|m| m.controlled());

    // Destination tier.
    let tier = match policy.tiers.tier(&req.host.country, today) {
        Ok(t) => {
            let (v, why) = match (t, controlled) {
                (Tier::Three, true) => (
                    Fail,
                    "Tier 3 (arms-embargoed or Macau): presumption of denial for 4E091",
                ),
                (Tier::Three, false) => (Pass, "Tier 3, but the model is not controlled"),
                (Tier::Two, _) => (Pass, "Tier 2: a licence is required for controlled models"),
                (Tier::One, _) => (Pass, "Tier 1"),
            };
            c.add(
                CheckId::Destination,
                v,
                format!(
                    "host {} is in {} on {}: {why}",
                    req.host.host_id,
                    req.host.country,
                    day(today)
                ),
            );
            Some(t)
        }
        Err(e) => {
            c.add(CheckId::Destination, Fail, format!("attested country: {e}"));
            None
        }
    };

    // Licence.
    let mut authority = None;
    let mut consume = None;
    if model.is_some() && !controlled {
        c.add(
            CheckId::Licence,
            NotApplicable,
            "not controlled: no licence needed",
        );
        authority = Some(Authority::NotControlled);
    } else if model.is_none() {
        c.add(
            CheckId::Licence,
            Fail,
            "no classification, so no licence can be judged",
        );
    } else {
        match tier {
            Some(Tier::One) => {
                c.add(
                    CheckId::Licence,
                    Pass,
                    format!(
                        "Tier 1 destination: relies on {}",
                        policy.tiers.tier1_exception
                    ),
                );
                authority = Some(Authority::LicenceException {
                    name: policy.tiers.tier1_exception.clone(),
                });
            }
            None => c.add(
                CheckId::Licence,
                Fail,
                "destination unknown, so no licence can be judged",
            ),
            Some(_) => match (who, org) {
                (Some(w), Some(o)) => {
                    match find_licence(policy, &o.id, &w.id, &req.host.country, today, req) {
                        Ok(l) => {
                            let u = licence_use(l, req);
                            let bytes = match l.max_bytes {
                                Some(max) => format!(
                                    ", {} of {max} bytes used, {} more in this release",
                                    u.bytes, req.size
                                ),
                                None => String::new(),
                            };
                            c.add(
                                CheckId::Licence,
                                Pass,
                                format!(
                                    "licence {} ({} to {}, valid {}..{}, {} of {} releases used{bytes})",
                                    l.id,
                                    l.licensee,
                                    req.host.country,
                                    l.valid_from,
                                    l.valid_until,
                                    u.releases,
                                    l.max_releases
                                ),
                            );
                            authority = Some(Authority::Licence { id: l.id.clone() });
                            consume = Some(l.id.clone());
                        }
                        Err(why) => c.add(CheckId::Licence, Fail, why),
                    }
                }
                _ => c.add(
                    CheckId::Licence,
                    Fail,
                    "unknown requester: no licence applies",
                ),
            },
        }
    }

    // Deemed export.
    match who {
        Some(w) if w.kind == RequesterKind::Person && controlled => {
            let mut uncleared = Vec::new();
            let mut notes = Vec::new();
            for n in &w.nationalities {
                match policy.tiers.tier(n, today) {
                    Ok(Tier::One) => notes.push(format!("{n}: Tier 1")),
                    Ok(_) => {
                        if let Some(cl) = w
                            .clearances
                            .iter()
                            .find(|cl| cl.country == *n && cl.until >= today)
                        {
                            notes.push(format!(
                                "{n}: clearance {} until {}",
                                cl.reference, cl.until
                            ));
                        } else if let Ok(l) =
                            find_licence(policy, &w.organisation, &w.id, n, today, req)
                        {
                            notes.push(format!("{n}: licence {}", l.id));
                        } else {
                            uncleared.push(n.clone());
                        }
                    }
                    Err(e) => uncleared.push(format!("{n} ({e})")),
                }
            }
            if uncleared.is_empty() {
                c.add(
                    CheckId::DeemedExport,
                    Pass,
                    format!("every nationality cleared: {}", notes.join(", ")),
                );
            } else {
                c.add(
                    CheckId::DeemedExport,
                    Fail,
                    format!(
                        "releasing to {} is an export to {}: no clearance or licence on file for {}",
                        w.id,
                        w.nationalities.join(", "),
                        uncleared.join(", ")
                    ),
                );
            }
        }
        Some(w) if w.kind == RequesterKind::Person => {
            c.add(CheckId::DeemedExport, NotApplicable, "model not controlled")
        }
        Some(_) => c.add(
            CheckId::DeemedExport,
            NotApplicable,
            "a workload has no nationality",
        ),
        None => c.add(CheckId::DeemedExport, Fail, "unknown requester"),
    }

    // Restricted parties.
    match (who, org) {
        (Some(w), Some(o)) => {
            let mut hits = Vec::new();
            if let Some(p) = policy.restricted.screen(&o.name) {
                hits.push(format!(
                    "organisation {} matches '{}' ({})",
                    o.name, p.name, p.list
                ));
            }
            if w.kind == RequesterKind::Person {
                if let Some(p) = policy.restricted.screen(&w.name) {
                    hits.push(format!(
                        "end user {} matches '{}' ({})",
                        w.name, p.name, p.list
                    ));
                }
            }
            if hits.is_empty() {
                c.add(
                    CheckId::RestrictedParties,
                    Pass,
                    format!(
                        "{} and the end user are not on the {}-entry list",
                        o.name,
                        policy.restricted.len()
                    ),
                );
            } else {
                c.add(CheckId::RestrictedParties, Fail, hits.join("; "));
            }
        }
        _ => c.add(
            CheckId::RestrictedParties,
            Fail,
            "unknown requester cannot be screened",
        ),
    }

    // Host evidence.
    let h = &req.host;
    let mut bad = Vec::new();
    if req.dry_run {
        c.add(
            CheckId::HostEvidence,
            NotApplicable,
            "dry run: host evidence not evaluated",
        );
    } else {
        if !policy.attesters.contains_key(&h.attester) {
            bad.push(format!("attester '{}' is not trusted", h.attester));
        }
        if !h.signature_valid {
            bad.push("signature does not verify".to_string());
        }
        if !h.nonce_fresh {
            bad.push("challenge nonce reused or unknown".to_string());
        }
        if req.time < h.issued_at {
            bad.push("issued in the future".to_string());
        }
        if req.time > h.expires_at {
            bad.push(format!("expired at {}", h.expires_at));
        }
        if bad.is_empty() {
            c.add(
                CheckId::HostEvidence,
                Pass,
                format!("signed by {}, fresh, nonce unused", h.attester),
            );
        } else {
            c.add(CheckId::HostEvidence, Fail, bad.join("; "));
        }
    }

    // Network origin.
    let mut origin_country = String::new();
    match req.source_ip {
        None if req.dry_run => c.add(
            CheckId::NetworkOrigin,
            NotApplicable,
            "dry run without a source address: not evaluated",
        ),
        None => c.add(CheckId::NetworkOrigin, Fail, "source address unknown"),
        Some(ip) => {
            let private = policy
                .network
                .private
                .iter()
                .find(|(n, _, _)| n.contains(&ip));
            let vpn = policy.network.vpn.iter().find(|(n, _)| n.contains(&ip));
            let origin = match private {
                Some((_, cc, site)) => Some((cc.clone(), format!("private range of site {site}"))),
                None => geo.country(ip).map(|cc| (cc, "geolocation".to_string())),
            };
            match origin {
                None => c.add(CheckId::NetworkOrigin, Fail, format!("{ip}: not in a configured private range and not in the geolocation database")),
                Some((cc, how)) => {
                    origin_country = cc.clone();
                    match policy.tiers.tier(&cc, today) {
                        Ok(Tier::Three) => c.add(CheckId::NetworkOrigin, Fail, format!("{ip} is in {cc} ({how}): a Tier 3 origin")),
                        Err(e) => c.add(CheckId::NetworkOrigin, Fail, format!("{ip}: {e}")),
                        Ok(_) if cc == h.country => c.add(CheckId::NetworkOrigin, Pass, format!("{ip} is in {cc} ({how}), as attested")),
                        Ok(_) => match vpn {
                            Some((_, name)) => c.add(
                                CheckId::NetworkOrigin,
                                Pass,
                                format!("{ip} is in {cc} ({how}), not {}, but inside the corporate VPN range {name}", h.country),
                            ),
                            None => c.add(
                                CheckId::NetworkOrigin,
                                Fail,
                                format!("{ip} is in {cc} ({how}) but the host is attested in {}", h.country),
                            ),
                        },
                    }
                }
            }
        }
    }

    // Organisation rules.
    match (who, org, model) {
        (Some(w), Some(o), Some(m)) => {
            let v = policy.org_rules.decide(
                w,
                o,
                m,
                &cedar::OrgContext {
                    host_id: &h.host_id,
                    host_country: &h.country,
                    host_region: &h.region,
                    tier: tier.map_or(0, Tier::number),
                    origin_country: &origin_country,
                },
            );
            let mut why = if v.allowed {
                format!("permitted by {}", v.policies.join(", "))
            } else if v.policies.is_empty() {
                "no organisation rule permits this".to_string()
            } else {
                format!("forbidden by {}", v.policies.join(", "))
            };
            if !v.errors.is_empty() {
                why.push_str(&format!(" (rule errors: {})", v.errors.join("; ")));
            }
            c.add(CheckId::OrgRules, if v.allowed { Pass } else { Fail }, why);
        }
        _ => c.add(CheckId::OrgRules, Fail, "requester or model unknown"),
    }

    let allowed = !c.0.iter().any(|r| r.verdict == Fail);
    ReleaseDecision {
        allowed,
        obligations: allowed.then_some(Obligations {
            watermark: true,
            consume_licence: consume,
        }),
        authority: if allowed { authority } else { None },
        checks: c.0,
        tier,
        dry_run: req.dry_run,
    }
}

/// What licence `l` has been used for: its file's counts plus what the vault counted.
fn licence_use(l: &data::Licence, req: &ReleaseRequest) -> Usage {
    let u = req.used.get(&l.id).copied().unwrap_or_default();
    Usage {
        releases: l.releases_used.saturating_add(u.releases),
        bytes: l.bytes_used.saturating_add(u.bytes),
    }
}

fn find_licence<'a>(
    policy: &'a PolicyData,
    org: &str,
    person: &str,
    country: &str,
    today: Date,
    req: &ReleaseRequest,
) -> Result<&'a data::Licence, String> {
    let candidates: Vec<&data::Licence> = policy
        .licences_by_licensee
        .get(org)
        .map(|v| v.iter().map(|&i| &policy.licences[i]).collect())
        .unwrap_or_default();
    if candidates.is_empty() {
        return Err(format!(
            "{org} holds no licence, and {country} is not Tier 1"
        ));
    }
    let mut why = Vec::new();
    for l in candidates {
        let mut bad = Vec::new();
        if l.eccn != "4E091" {
            bad.push(format!("covers {} not 4E091", l.eccn));
        }
        if !l.destinations.contains(country) {
            bad.push(format!("does not cover {country}"));
        }
        if !l.end_users.contains(org) && !l.end_users.contains(person) {
            bad.push(format!("does not name {org} or {person} as end user"));
        }
        if today < l.valid_from {
            bad.push(format!("not valid before {}", l.valid_from));
        }
        if today > l.valid_until {
            bad.push(format!("expired after {}", l.valid_until));
        }
        match l.status {
            data::LicenceStatus::Active => {}
            data::LicenceStatus::Suspended => bad.push("suspended".into()),
            data::LicenceStatus::Revoked => bad.push("revoked".into()),
        }
        let u = licence_use(l, req);
        if u.releases >= l.max_releases {
            bad.push(format!(
                "allocation used up ({} of {} releases)",
                u.releases, l.max_releases
            ));
        }
        if let Some(max) = l.max_bytes {
            let b = u.bytes;
            if b.saturating_add(req.size) > max {
                bad.push(format!(
                    "byte allocation used up ({b} of {max} bytes used, this release is {})",
                    req.size
                ));
            }
        }
        if bad.is_empty() {
            return Ok(l);
        }
        why.push(format!("licence {}: {}", l.id, bad.join(", ")));
    }
    Err(format!("no usable licence: {}", why.join("; ")))
}
