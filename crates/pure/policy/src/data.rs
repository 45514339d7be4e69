//! The policy data in `policies/`: parsed from text (the caller reads the files), validated
//! whole, with the file, line and what is wrong for every error.

use super::names::normalise;
pub use crate::models::*;
pub use crate::people::*;
pub use crate::tiers::*;
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
    "rules.toml",
    "veu.toml",
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
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, PolicyError> {
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

pub(crate) fn date(ctx: &Ctx<'_>, d: &Spanned<toml::value::Datetime>) -> Result<Date, PolicyError> {
    let v = d.get_ref();
    match (v.date, v.time) {
        (Some(dd), None) => time::Month::try_from(dd.month)
            .ok()
            .and_then(|m| Date::from_calendar_date(i32::from(dd.year), m, dd.day).ok())
            .ok_or_else(|| ctx.at(d, format!("invalid date {v}"))),
        _ => Err(ctx.at(d, format!("expected a date like 2026-02-03, got {v}"))),
    }
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
    /// The models it covers, when it names them (a licence granted under a named-model
    /// requirement names its model); `None`: every model of its ECCN.
    pub models: Option<BTreeSet<String>>,
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
    #[serde(default)]
    models: Option<Vec<Spanned<String>>>,
}

pub(crate) fn parse_licences(
    ctx: &Ctx<'_>,
    orgs: &BTreeMap<String, Organisation>,
    reqs: &BTreeMap<String, Requester>,
) -> Result<(Vec<Licence>, Vec<Spanned<String>>), PolicyError> {
    let f: LicencesFile = ctx.parse()?;
    let mut model_refs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in f.licences {
        if l.id.get_ref().starts_with("quota:") {
            // The ledger's counters share one namespace: licence ids and the daily quota
            // counters (`quota:...`).
            return Err(ctx.at(&l.id, "a licence id may not start with 'quota:'"));
        }
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
            models: l
                .models
                .as_ref()
                .map(|v| v.iter().map(|m| m.get_ref().clone()).collect()),
        });
        if let Some(ms) = &l.models {
            model_refs.extend(ms.iter().cloned());
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, model_refs))
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
