//! The policy data in `policies/`: parsed from text (the caller reads the files), validated
//! whole, with the file, line and what is wrong for every error.

use super::names::normalise;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use time::Date;
use toml::Spanned;

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct PolicyError {
    /// File name (as given to the loader).
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Names the policy files once: the loader's list, and the repository's own set compiled in.
macro_rules! policy_files {
    ($($name:literal),* $(,)?) => {
        /// The file names the loader reads from a policy directory.
        pub const FILES: &[&str] = &[$($name),*];

        /// The repository's own `policies/`, compiled in (feature `repository-policies`): a
        /// set that tests of the layers above can decide with, without reading a directory.
        #[cfg(feature = "repository-policies")]
        pub fn repository_files() -> std::collections::BTreeMap<String, String> {
            [$(($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../policies/", $name)))),*]
                .into_iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect()
        }
    };
}

policy_files!(
    "tiers.toml",
    "models.toml",
    "people.toml",
    "licences.toml",
    "restricted-parties.csv",
    "screening.toml",
    "screening-list.json",
    "attesters.toml",
    "network.toml",
    "org.cedarschema",
    "org.cedar",
);

pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Ctx<'_> {
    pub fn line(&self, offset: usize) -> usize {
        1 + self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
    pub fn err(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.into(),
            line: self.line(offset),
            message: message.into(),
        }
    }
    pub fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        self.err(s.span().start, message)
    }
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, PolicyError> {
        toml::from_str(self.text).map_err(|e| {
            self.err(
                e.span().map(|s| s.start).unwrap_or(0),
                e.message().trim().to_string(),
            )
        })
    }
}

/// A country code that is not ISO 3166-1 alpha-2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown country code '{0}' (use ISO 3166-1 alpha-2, upper case, e.g. US, DE, IN)")]
pub struct CountryError(pub String);

/// An ISO 3166-1 alpha-2 code, checked against the standard's list.
pub fn check_country(code: &str) -> Result<String, CountryError> {
    if code.len() == 2
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && celes::Country::from_alpha2(code).is_ok()
    {
        return Ok(code.to_string());
    }
    Err(CountryError(code.to_string()))
}

fn date(ctx: &Ctx<'_>, d: &Spanned<toml::value::Datetime>) -> Result<Date, PolicyError> {
    let v = d.get_ref();
    match (v.date, v.time) {
        (Some(dd), None) => time::Month::try_from(dd.month)
            .ok()
            .and_then(|m| Date::from_calendar_date(i32::from(dd.year), m, dd.day).ok())
            .ok_or_else(|| ctx.at(d, format!("invalid date {v}"))),
        _ => Err(ctx.at(d, format!("expected a date like 2026-02-03, got {v}"))),
    }
}

// ---------------------------------------------------------------- tiers

/// Destination tier of a country under the AI diffusion framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub enum Tier {
    /// Tier 1: licence exception available.
    #[serde(rename = "1")]
    One,
    /// Tier 2: licence required.
    #[serde(rename = "2")]
    Two,
    /// Tier 3: presumption of denial.
    #[serde(rename = "3")]
    Three,
}

impl Tier {
    /// 1, 2 or 3.
    pub fn number(self) -> i64 {
        match self {
            Tier::One => 1,
            Tier::Two => 2,
            Tier::Three => 3,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    tier1_exception: String,
    #[serde(default, rename = "change")]
    changes: Vec<ChangeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeFile {
    effective: Spanned<toml::value::Datetime>,
    tier: Spanned<u8>,
    #[serde(default)]
    add: Vec<Spanned<String>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    source: String,
}

/// One dated change to a tier list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    /// First day it applies.
    pub effective: Date,
    /// Tier 1 or 3 (Tier 2 is everyone else).
    pub tier: Tier,
    /// Countries added.
    pub add: BTreeSet<String>,
    /// Countries removed.
    pub remove: BTreeSet<String>,
    /// Where it comes from.
    pub source: String,
}

/// The country tiers with their history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryTiers {
    /// Name of the licence exception Tier 1 destinations rely on.
    pub tier1_exception: String,
    /// Changes, sorted by date (stable).
    pub changes: Vec<TierChange>,
}

impl CountryTiers {
    pub(crate) fn parse(ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let f: TiersFile = ctx.parse()?;
        let mut changes = Vec::new();
        for c in f.changes {
            let tier = match *c.tier.get_ref() {
                1 => Tier::One,
                3 => Tier::Three,
                t => {
                    return Err(ctx.at(
                        &c.tier,
                        format!(
                            "tier {t}: only tier 1 and tier 3 are listed (tier 2 is everyone else)"
                        ),
                    ))
                }
            };
            let set = |v: &[Spanned<String>]| -> Result<BTreeSet<String>, PolicyError> {
                v.iter()
                    .map(|s| check_country(s.get_ref()).map_err(|m| ctx.at(s, m.to_string())))
                    .collect()
            };
            changes.push(TierChange {
                effective: date(ctx, &c.effective)?,
                tier,
                add: set(&c.add)?,
                remove: set(&c.remove)?,
                source: c.source,
            });
        }
        changes.sort_by_key(|c| c.effective);
        Ok(Self {
            tier1_exception: f.tier1_exception,
            changes,
        })
    }

    /// The tier of `country` on `date`, or an error for a code that is not ISO 3166-1.
    pub fn tier(&self, country: &str, date: Date) -> Result<Tier, CountryError> {
        check_country(country)?;
        let mut t1 = false;
        let mut t3 = false;
        for c in self.changes.iter().take_while(|c| c.effective <= date) {
            let flag = if c.tier == Tier::One {
                &mut t1
            } else {
                &mut t3
            };
            if c.add.contains(country) {
                *flag = true;
            }
            if c.remove.contains(country) {
                *flag = false;
            }
        }
        Ok(if t3 {
            Tier::Three
        } else if t1 {
            Tier::One
        } else {
            Tier::Two
        })
    }
}

// ---------------------------------------------------------------- models

/// A model's classification facts, as the inventory records them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// Model name (as sealed).
    pub name: String,
    /// ECCN as recorded (e.g. `4E091`, `EAR99`).
    pub eccn: String,
    /// Training compute, operations.
    pub training_ops: f64,
    /// Published weights.
    pub open_weights: bool,
    /// Owner organisation id.
    pub owner: String,
}

/// Training operations at or above which closed weights are ECCN 4E091.
pub const CONTROL_THRESHOLD_OPS: f64 = 1e26;

impl ModelEntry {
    /// Whether the weights are controlled under 4E091: closed and trained with >= 1e26 ops.
    pub fn controlled(&self) -> bool {
        !self.open_weights && self.training_ops >= CONTROL_THRESHOLD_OPS
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default, rename = "model")]
    models: Vec<ModelFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: Spanned<String>,
    eccn: Spanned<String>,
    training_ops: Spanned<f64>,
    open_weights: bool,
    owner: Spanned<String>,
}

/// Models by name, and the owner fields still to be checked against the organisations.
type Models = (BTreeMap<String, ModelEntry>, Vec<Spanned<String>>);

pub(crate) fn parse_models(ctx: &Ctx<'_>) -> Result<Models, PolicyError> {
    let f: ModelsFile = ctx.parse()?;
    let mut out = BTreeMap::new();
    let mut owners = Vec::new();
    for m in f.models {
        let ops = *m.training_ops.get_ref();
        if !(ops.is_finite() && ops >= 0.0) {
            return Err(ctx.at(
                &m.training_ops,
                "training_ops must be a non-negative number",
            ));
        }
        let e = ModelEntry {
            name: m.name.get_ref().clone(),
            eccn: m.eccn.get_ref().clone(),
            training_ops: ops,
            open_weights: m.open_weights,
            owner: m.owner.get_ref().clone(),
        };
        if e.controlled() && e.eccn != "4E091" {
            return Err(ctx.at(
                &m.eccn,
                format!(
                    "{} is closed and trained with {ops:e} operations (>= 1e26): its ECCN is 4E091, not {}",
                    e.name, e.eccn
                ),
            ));
        }
        if !e.controlled() && e.eccn == "4E091" {
            return Err(ctx.at(
                &m.eccn,
                format!(
                    "{} is not a 4E091 model (open weights or below 1e26 operations)",
                    e.name
                ),
            ));
        }
        owners.push(m.owner);
        if out.insert(e.name.clone(), e).is_some() {
            return Err(ctx.at(&m.name, format!("duplicate model '{}'", m.name.get_ref())));
        }
    }
    Ok((out, owners))
}

// ---------------------------------------------------------------- people

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    /// Id used in the other files.
    pub id: String,
    /// Legal name (screened against restricted parties).
    pub name: String,
    /// Country of headquarters.
    pub country: String,
}

/// A deemed-export clearance on file for one nationality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearance {
    /// The nationality cleared.
    pub country: String,
    /// Licence or authorisation reference.
    pub reference: String,
    /// Last valid day.
    pub until: Date,
}

/// Person or workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequesterKind {
    /// A person (e-mail identity); releases to them are exports to their nationalities.
    Person,
    /// A workload (SPIFFE-style URI identity).
    Workload,
}

/// Who may ask for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Identity as in the client certificate.
    pub id: String,
    /// Person or workload.
    pub kind: RequesterKind,
    /// Full name (persons) or description.
    pub name: String,
    /// Organisation id.
    pub organisation: String,
    /// Nationalities (persons; empty for workloads).
    pub nationalities: Vec<String>,
    /// Deemed-export clearances.
    pub clearances: Vec<Clearance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    #[serde(default, rename = "organisation")]
    organisations: Vec<OrgFile>,
    #[serde(default, rename = "person")]
    persons: Vec<PersonFile>,
    #[serde(default, rename = "workload")]
    workloads: Vec<WorkloadFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    id: Spanned<String>,
    name: String,
    country: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonFile {
    id: Spanned<String>,
    name: String,
    organisation: Spanned<String>,
    nationalities: Spanned<Vec<Spanned<String>>>,
    #[serde(default, rename = "clearance")]
    clearances: Vec<ClearanceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearanceFile {
    country: Spanned<String>,
    reference: String,
    until: Spanned<toml::value::Datetime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    organisation: Spanned<String>,
}

type People = (BTreeMap<String, Organisation>, BTreeMap<String, Requester>);

pub(crate) fn parse_people(ctx: &Ctx<'_>) -> Result<People, PolicyError> {
    let f: PeopleFile = ctx.parse()?;
    let mut orgs = BTreeMap::new();
    for o in f.organisations {
        let country =
            check_country(o.country.get_ref()).map_err(|m| ctx.at(&o.country, m.to_string()))?;
        let org = Organisation {
            id: o.id.get_ref().clone(),
            name: o.name,
            country,
        };
        if orgs.insert(org.id.clone(), org).is_some() {
            return Err(ctx.at(
                &o.id,
                format!("duplicate organisation '{}'", o.id.get_ref()),
            ));
        }
    }
    let mut reqs = BTreeMap::new();
    let known_org = |s: &Spanned<String>| -> Result<String, PolicyError> {
        if orgs.contains_key(s.get_ref()) {
            Ok(s.get_ref().clone())
        } else {
            Err(ctx.at(s, format!("unknown organisation '{}'", s.get_ref())))
        }
    };
    for p in f.persons {
        if p.nationalities.get_ref().is_empty() {
            return Err(ctx.at(
                &p.nationalities,
                format!(
                    "person '{}' has no nationality (every person needs at least one)",
                    p.id.get_ref()
                ),
            ));
        }
        let mut nat = Vec::new();
        for n in p.nationalities.get_ref() {
            nat.push(check_country(n.get_ref()).map_err(|m| ctx.at(n, m.to_string()))?);
        }
        let mut clearances = Vec::new();
        for c in p.clearances {
            clearances.push(Clearance {
                country: check_country(c.country.get_ref())
                    .map_err(|m| ctx.at(&c.country, m.to_string()))?,
                reference: c.reference,
                until: date(ctx, &c.until)?,
            });
        }
        let r = Requester {
            id: p.id.get_ref().clone(),
            kind: RequesterKind::Person,
            name: p.name,
            organisation: known_org(&p.organisation)?,
            nationalities: nat,
            clearances,
        };
        if reqs.insert(r.id.clone(), r).is_some() {
            return Err(ctx.at(&p.id, format!("duplicate requester '{}'", p.id.get_ref())));
        }
    }
    for w in f.workloads {
        let r = Requester {
            id: w.id.get_ref().clone(),
            kind: RequesterKind::Workload,
            name: w.description,
            organisation: known_org(&w.organisation)?,
            nationalities: vec![],
            clearances: vec![],
        };
        if reqs.insert(r.id.clone(), r).is_some() {
            return Err(ctx.at(&w.id, format!("duplicate requester '{}'", w.id.get_ref())));
        }
    }
    Ok((orgs, reqs))
}

// ---------------------------------------------------------------- licences

/// Licence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenceStatus {
    /// In force.
    Active,
    /// Temporarily not usable.
    Suspended,
    /// Withdrawn.
    Revoked,
}

/// An export licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Licence {
    /// Licence number.
    pub id: String,
    /// Licensee organisation id.
    pub licensee: String,
    /// ECCN covered.
    pub eccn: String,
    /// Destination countries.
    pub destinations: BTreeSet<String>,
    /// End users: organisation or requester ids.
    pub end_users: BTreeSet<String>,
    /// First valid day.
    pub valid_from: Date,
    /// Last valid day.
    pub valid_until: Date,
    /// Status.
    pub status: LicenceStatus,
    /// Releases allowed in all.
    pub max_releases: u64,
    /// Releases already made.
    pub releases_used: u64,
    /// Bytes allowed out in all (the original lengths of the files released), if limited.
    pub max_bytes: Option<u64>,
    /// Bytes already released.
    pub bytes_used: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicencesFile {
    #[serde(default, rename = "licence")]
    licences: Vec<LicenceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenceFile {
    id: Spanned<String>,
    licensee: Spanned<String>,
    eccn: String,
    destinations: Vec<Spanned<String>>,
    end_users: Vec<Spanned<String>>,
    valid_from: Spanned<toml::value::Datetime>,
    valid_until: Spanned<toml::value::Datetime>,
    status: LicenceStatus,
    max_releases: u64,
    #[serde(default)]
    releases_used: u64,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    bytes_used: u64,
}

pub(crate) fn parse_licences(
    ctx: &Ctx<'_>,
    orgs: &BTreeMap<String, Organisation>,
    reqs: &BTreeMap<String, Requester>,
) -> Result<Vec<Licence>, PolicyError> {
    let f: LicencesFile = ctx.parse()?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in f.licences {
        if !seen.insert(l.id.get_ref().clone()) {
            return Err(ctx.at(&l.id, format!("duplicate licence '{}'", l.id.get_ref())));
        }
        if !orgs.contains_key(l.licensee.get_ref()) {
            return Err(ctx.at(
                &l.licensee,
                format!("unknown licensee organisation '{}'", l.licensee.get_ref()),
            ));
        }
        let valid_from = date(ctx, &l.valid_from)?;
        let valid_until = date(ctx, &l.valid_until)?;
        if valid_until < valid_from {
            return Err(ctx.at(
                &l.valid_until,
                format!(
                    "licence {} ends ({valid_until}) before it starts ({valid_from})",
                    l.id.get_ref()
                ),
            ));
        }
        let mut destinations = BTreeSet::new();
        for d in &l.destinations {
            destinations.insert(check_country(d.get_ref()).map_err(|m| ctx.at(d, m.to_string()))?);
        }
        let mut end_users = BTreeSet::new();
        for u in &l.end_users {
            if !orgs.contains_key(u.get_ref()) && !reqs.contains_key(u.get_ref()) {
                return Err(ctx.at(
                    u,
                    format!(
                        "unknown end user '{}' (an organisation or requester id)",
                        u.get_ref()
                    ),
                ));
            }
            end_users.insert(u.get_ref().clone());
        }
        out.push(Licence {
            id: l.id.get_ref().clone(),
            licensee: l.licensee.get_ref().clone(),
            eccn: l.eccn,
            destinations,
            end_users,
            valid_from,
            valid_until,
            status: l.status,
            max_releases: l.max_releases,
            releases_used: l.releases_used,
            max_bytes: l.max_bytes,
            bytes_used: l.bytes_used,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

// ---------------------------------------------------------------- restricted parties

/// One listed party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictedParty {
    /// Name as listed.
    pub name: String,
    /// Country, if listed.
    pub country: String,
    /// Which list (Entity List, SDN, ...).
    pub list: String,
}

/// The screening list, indexed by normalised name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestrictedParties {
    by_name: BTreeMap<String, RestrictedParty>,
}

impl RestrictedParties {
    pub(crate) fn parse(ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let mut r = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(ctx.text.as_bytes());
        let headers = r
            .headers()
            .map_err(|e| ctx.err(0, format!("bad CSV header: {e}")))?
            .clone();
        let want = ["name", "country", "list"];
        if headers.iter().take(3).collect::<Vec<_>>() != want {
            return Err(ctx.err(
                0,
                "the first line must be the header: name,country,list[,...]",
            ));
        }
        let mut by_name = BTreeMap::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| PolicyError {
                file: ctx.file.into(),
                line: e.position().map_or(0, |p| p.line() as usize),
                message: format!("bad CSV record: {e}"),
            })?;
            let line = rec.position().map_or(0, |p| p.line() as usize);
            let bad = |m: String| PolicyError {
                file: ctx.file.into(),
                line,
                message: m,
            };
            let name = rec.get(0).unwrap_or("").to_string();
            let key = normalise(&name);
            if key.is_empty() {
                return Err(bad("empty name".into()));
            }
            let country = rec.get(1).unwrap_or("").to_string();
            if !country.is_empty() {
                check_country(&country).map_err(|e| bad(e.to_string()))?;
            }
            by_name.insert(
                key,
                RestrictedParty {
                    name,
                    country,
                    list: rec.get(2).unwrap_or("").to_string(),
                },
            );
        }
        Ok(Self { by_name })
    }

    /// The listed party whose normalised name equals `name`'s, if any.
    pub fn screen(&self, name: &str) -> Option<&RestrictedParty> {
        self.by_name.get(&normalise(name))
    }

    /// Every entry, by normalised name.
    pub fn iter(&self) -> impl Iterator<Item = &RestrictedParty> {
        self.by_name.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

// ---------------------------------------------------------------- attesters

/// An attester the vault trusts to sign host evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attester {
    /// Id named in evidence.
    pub id: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestersFile {
    #[serde(default, rename = "attester")]
    attesters: Vec<AttesterFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttesterFile {
    id: Spanned<String>,
    public_key: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
}

pub(crate) fn parse_attesters(ctx: &Ctx<'_>) -> Result<BTreeMap<String, Attester>, PolicyError> {
    let f: AttestersFile = ctx.parse()?;
    let mut out = BTreeMap::new();
    for a in f.attesters {
        let key: [u8; 32] = hex::decode(a.public_key.get_ref())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                ctx.at(
                    &a.public_key,
                    "public_key must be 64 hex digits (an Ed25519 public key)",
                )
            })?;
        if out
            .insert(
                a.id.get_ref().clone(),
                Attester {
                    id: a.id.get_ref().clone(),
                    public_key: key,
                },
            )
            .is_some()
        {
            return Err(ctx.at(&a.id, format!("duplicate attester '{}'", a.id.get_ref())));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- network

/// Configured address ranges: never guessed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRules {
    /// Private ranges and the country of the site they belong to.
    pub private: Vec<(IpNet, String, String)>,
    /// Proxies whose forwarded-for header the service believes.
    pub trusted_proxies: Vec<IpNet>,
    /// Named corporate VPN ranges whose origin may differ from the host's country.
    pub vpn: Vec<(IpNet, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(default)]
    private: Vec<PrivateFile>,
    #[serde(default)]
    trusted_proxy: Vec<ProxyFile>,
    #[serde(default)]
    vpn: Vec<VpnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateFile {
    cidr: Spanned<String>,
    country: Spanned<String>,
    site: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyFile {
    cidr: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VpnFile {
    cidr: Spanned<String>,
    name: String,
}

pub(crate) fn parse_network(ctx: &Ctx<'_>) -> Result<NetworkRules, PolicyError> {
    let f: NetworkFile = ctx.parse()?;
    let net = |s: &Spanned<String>| -> Result<IpNet, PolicyError> {
        s.get_ref().parse::<IpNet>().map_err(|_| {
            ctx.at(
                s,
                format!("'{}' is not an address range like 10.0.0.0/8", s.get_ref()),
            )
        })
    };
    let mut out = NetworkRules::default();
    for p in f.private {
        out.private.push((
            net(&p.cidr)?,
            check_country(p.country.get_ref()).map_err(|m| ctx.at(&p.country, m.to_string()))?,
            p.site,
        ));
    }
    for p in f.trusted_proxy {
        out.trusted_proxies.push(net(&p.cidr)?);
    }
    for v in f.vpn {
        out.vpn.push((net(&v.cidr)?, v.name));
    }
    Ok(out)
}
