//! Organisations, persons and workloads (`policies/people.toml`), and what the deemed-export
//! rule reads of a person: US status, citizenships and permanent residencies with the dates
//! each was acquired and ended, protected-individual status and when it lapses. Pure: parsed
//! from text; the country a release to a person is an export to is computed here
//! ([`Requester::export_countries`]) and judged by the deemed-export check.
//!
//! Facts: under the EAR (15 CFR 734.13(b), 734.14(b); 81 FR 35603, 2016) releasing
//! technology to a foreign person is an export to that person's *most recent* country of
//! citizenship or permanent residency. A foreign person is anyone who is not a US citizen, a
//! US lawful permanent resident or a protected individual under 8 USC 1324b(a)(3) (refugees
//! and asylees, whose protection lapses by that statute's rules). Under the ITAR (22 CFR
//! 120.50/120.51) it is an export to every country whose citizenship the person holds or has
//! held, and of permanent residency.

use crate::data::{check_country, date, Ctx, PolicyError};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use time::Date;
use toml::Spanned;

/// Who owns part of an organisation.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerRef {
    /// Another organisation of this file (by id).
    Organisation(String),
    /// A party named as the screening list names it.
    Party(String),
}

/// A share of an organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// Who.
    pub owner: OwnerRef,
    /// Per cent held, directly (0 < p <= 100).
    pub percent: f64,
}

/// An organisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Organisation {
    /// Id used in the other files.
    pub id: String,
    /// Legal name (screened against restricted parties).
    pub name: String,
    /// Country of headquarters.
    pub country: String,
    /// Its owners and their shares (what is known; the rest is unlisted).
    pub owners: Vec<Owner>,
}

/// A deemed-export clearance on file for one country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clearance {
    /// The country cleared.
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
    /// A person (e-mail identity); releases to them may be deemed exports.
    Person,
    /// A workload (SPIFFE-style URI identity).
    Workload,
}

/// A person's status in the United States.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsStatus {
    /// A US citizen (a US dual national is a US person).
    Citizen,
    /// A lawful permanent resident (green-card holder).
    PermanentResident,
    /// A protected individual under 8 USC 1324b(a)(3) (refugee or asylee).
    ProtectedIndividual,
    /// None of these: a foreign person.
    None,
}

/// Citizenship or permanent residency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    /// Citizenship.
    Citizenship,
    /// Permanent residency.
    Residency,
}

impl StatusKind {
    fn word(self) -> &'static str {
        match self {
            StatusKind::Citizenship => "citizenship",
            StatusKind::Residency => "permanent residency",
        }
    }
}

/// One citizenship or permanent residency, with when it was acquired and ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Which.
    pub kind: StatusKind,
    /// Country.
    pub country: String,
    /// Day acquired.
    pub acquired: Date,
    /// Day it ended (renounced, lost, given up), if it did.
    pub ended: Option<Date>,
}

impl Status {
    /// Held on `d`: acquired by then and not ended.
    pub fn held_on(&self, d: Date) -> bool {
        self.acquired <= d && self.ended.is_none_or(|e| e > d)
    }
    fn describe(&self) -> String {
        format!(
            "{} {} acquired {}{}",
            self.country,
            self.kind.word(),
            self.acquired,
            self.ended.map_or(String::new(), |e| format!(", ended {e}"))
        )
    }
}

/// Refugee or asylee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionBasis {
    /// Admitted as a refugee (8 USC 1157).
    Refugee,
    /// Granted asylum (8 USC 1158).
    Asylee,
}

/// Protected-individual status, with the facts its lapse depends on (8 USC 1324b(a)(3)(B): it
/// lapses for one who does not apply for naturalisation within six months of first becoming
/// eligible, or who applied in time but is not naturalised within two years of applying,
/// unless actively pursuing naturalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// Refugee or asylee.
    pub basis: ProtectionBasis,
    /// Day granted.
    pub granted: Date,
    /// Day first eligible to apply for naturalisation, if reached or known.
    pub naturalisation_eligible: Option<Date>,
    /// Day the application for naturalisation was filed, if it was.
    pub naturalisation_applied: Option<Date>,
    /// Still actively pursuing naturalisation (keeps the protection past two years).
    pub actively_pursuing: bool,
}

/// `d` plus `months` calendar months (the day clamped to the month's length).
pub fn add_months(d: Date, months: u32) -> Date {
    let m0 = d.month() as i32 - 1 + months as i32;
    let (y, m) = (d.year() + m0.div_euclid(12), m0.rem_euclid(12) + 1);
    let month = time::Month::try_from(m as u8).expect("1..=12");
    let day = d.day().min(time::util::days_in_month(month, y));
    Date::from_calendar_date(y, month, day).expect("a valid date")
}

impl Protection {
    /// The first day the protection no longer holds, with the statute's reason, if it lapses.
    pub fn lapses(&self) -> Option<(Date, &'static str)> {
        let eligible = self.naturalisation_eligible?;
        let deadline = add_months(eligible, 6);
        match self.naturalisation_applied {
            Some(a) if a <= deadline => (!self.actively_pursuing).then(|| {
                (
                    add_months(a, 24),
                    "not naturalised within two years of applying and not actively pursuing it",
                )
            }),
            _ => Some((
                deadline,
                "did not apply for naturalisation within six months of becoming eligible",
            )),
        }
    }
}

/// How to choose among a person's statuses acquired on the same day (a policy choice of the
/// deploying organisation, not a legal fact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TieRule {
    /// The most restrictive of them (the one the release fares worst under).
    MostRestrictive,
}

/// Which export-control regime governs a model's release to persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Regime {
    /// The EAR: most recent citizenship or permanent residency.
    #[default]
    Ear,
    /// The ITAR: every citizenship held or ever held, and permanent residency.
    Itar,
}

/// Whether a person is a foreign person on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsPerson {
    /// A US person: not a foreign person at all (the sentence says which kind).
    Yes(String),
    /// A foreign person (the sentence says why, e.g. a lapsed protection).
    No(String),
}

/// The countries a release to a person is an export to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCountries {
    /// The countries to clear (several for the ITAR, or for a tie under the EAR).
    pub countries: Vec<String>,
    /// Why these: which rule picked them.
    pub why: String,
    /// Under the EAR, several statuses were acquired the same day: the tie rule picks among
    /// them.
    pub tie: bool,
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
    /// Citizenships held (not ended), for the record and the organisation rules.
    pub nationalities: Vec<String>,
    /// Deemed-export clearances.
    pub clearances: Vec<Clearance>,
    /// US status (persons; `None` for workloads).
    pub us_status: UsStatus,
    /// Citizenships and permanent residencies, in the file's order.
    pub statuses: Vec<Status>,
    /// Protected-individual facts.
    pub protection: Option<Protection>,
}

impl Requester {
    /// Whether the person is a US person on `d` (citizen, lawful permanent resident, or a
    /// protected individual whose protection has not lapsed).
    pub fn us_person(&self, d: Date) -> UsPerson {
        match self.us_status {
            UsStatus::Citizen => UsPerson::Yes(
                if self
                    .statuses
                    .iter()
                    .any(|s| s.country != "US" && s.held_on(d))
                {
                    "a US citizen (a US dual national is a US person)".into()
                } else {
                    "a US citizen".into()
                },
            ),
            UsStatus::PermanentResident => {
                UsPerson::Yes("a US lawful permanent resident (green-card holder)".into())
            }
            UsStatus::ProtectedIndividual => {
                let p = self.protection.as_ref().expect("checked at load");
                let basis = match p.basis {
                    ProtectionBasis::Refugee => "refugee",
                    ProtectionBasis::Asylee => "asylee",
                };
                match p.lapses() {
                    Some((l, why)) if d >= l => UsPerson::No(format!(
                        "a foreign person: protected individual ({basis} since {}) until {l}, when the protection lapsed (8 USC 1324b(a)(3)(B): {why})",
                        p.granted
                    )),
                    Some((l, _)) => UsPerson::Yes(format!(
                        "a protected individual (8 USC 1324b(a)(3), {basis} since {}; lapses on {l} unless naturalised)",
                        p.granted
                    )),
                    None => UsPerson::Yes(format!(
                        "a protected individual (8 USC 1324b(a)(3), {basis} since {})",
                        p.granted
                    )),
                }
            }
            UsStatus::None => UsPerson::No("a foreign person".into()),
        }
    }

    /// The countries a release to this person on `d` is an export to, under `regime` (US
    /// statuses are left out: they are not what makes a person foreign).
    pub fn export_countries(&self, regime: Regime, d: Date) -> ExportCountries {
        let foreign: Vec<&Status> = self
            .statuses
            .iter()
            .filter(|s| s.country != "US" && s.acquired <= d)
            .collect();
        match regime {
            Regime::Itar => {
                let picked: Vec<&Status> = foreign
                    .iter()
                    .copied()
                    .filter(|s| s.kind == StatusKind::Citizenship || s.held_on(d))
                    .collect();
                ExportCountries {
                    countries: dedup(picked.iter().map(|s| s.country.clone())),
                    why: format!(
                        "ITAR (22 CFR 120.50/120.51): every citizenship held or ever held, and permanent residency: {}",
                        picked.iter().map(|s| s.describe()).collect::<Vec<_>>().join("; ")
                    ),
                    tie: false,
                }
            }
            Regime::Ear => {
                let held: Vec<&Status> = foreign.iter().copied().filter(|s| s.held_on(d)).collect();
                // A person who holds none of their statuses any more (stateless after a
                // renunciation): the most recent ever held (a policy choice, stated).
                let (pool, note) = if held.is_empty() {
                    (
                        foreign.clone(),
                        " (none is held now: the most recent ever held)",
                    )
                } else {
                    (held, "")
                };
                let Some(latest) = pool.iter().map(|s| s.acquired).max() else {
                    return ExportCountries {
                        countries: vec![],
                        why: "no citizenship or permanent residency on file".into(),
                        tie: false,
                    };
                };
                let picked: Vec<&Status> = pool
                    .iter()
                    .copied()
                    .filter(|s| s.acquired == latest)
                    .collect();
                let countries = dedup(picked.iter().map(|s| s.country.clone()));
                let tie = countries.len() > 1;
                ExportCountries {
                    why: format!(
                        "EAR (15 CFR 734.13(b)): the most recent citizenship or permanent residency{note}: {}{}",
                        picked.iter().map(|s| s.describe()).collect::<Vec<_>>().join(" and "),
                        if tie {
                            " (acquired the same day: the most restrictive of them, a policy choice)"
                        } else {
                            ""
                        }
                    ),
                    countries,
                    tie,
                }
            }
        }
    }
}

fn dedup(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    it.filter(|c| seen.insert(c.clone())).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    #[serde(default)]
    deemed_export: Option<DeemedExportFile>,
    #[serde(default, rename = "organisation")]
    organisations: Vec<OrgFile>,
    #[serde(default, rename = "person")]
    persons: Vec<PersonFile>,
    #[serde(default, rename = "workload")]
    workloads: Vec<WorkloadFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeemedExportFile {
    tie: TieRule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    id: Spanned<String>,
    name: String,
    country: Spanned<String>,
    #[serde(default, rename = "owner")]
    owners: Vec<OwnerFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerFile {
    #[serde(default)]
    organisation: Option<Spanned<String>>,
    #[serde(default)]
    party: Option<Spanned<String>>,
    percent: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonFile {
    id: Spanned<String>,
    name: String,
    organisation: Spanned<String>,
    us_status: Spanned<UsStatus>,
    #[serde(default)]
    citizenship: Vec<StatusFile>,
    #[serde(default)]
    residency: Vec<StatusFile>,
    #[serde(default)]
    protected: Option<Spanned<ProtectionFile>>,
    #[serde(default, rename = "clearance")]
    clearances: Vec<ClearanceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusFile {
    country: Spanned<String>,
    acquired: Spanned<toml::value::Datetime>,
    #[serde(default)]
    ended: Option<Spanned<toml::value::Datetime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectionFile {
    basis: ProtectionBasis,
    granted: Spanned<toml::value::Datetime>,
    #[serde(default)]
    naturalisation_eligible: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    naturalisation_applied: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    actively_pursuing: bool,
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

/// Everything `people.toml` holds.
pub(crate) struct People {
    pub organisations: BTreeMap<String, Organisation>,
    pub requesters: BTreeMap<String, Requester>,
    pub tie: TieRule,
}

fn statuses(
    ctx: &Ctx<'_>,
    kind: StatusKind,
    v: &[StatusFile],
    out: &mut Vec<Status>,
) -> Result<(), PolicyError> {
    for s in v {
        let acquired = date(ctx, &s.acquired)?;
        let ended = s.ended.as_ref().map(|e| date(ctx, e)).transpose()?;
        if let (Some(e), Some(es)) = (ended, &s.ended) {
            if e < acquired {
                return Err(ctx.at(
                    es,
                    format!("ended ({e}) before it was acquired ({acquired})"),
                ));
            }
        }
        out.push(Status {
            kind,
            country: check_country(s.country.get_ref())
                .map_err(|m| ctx.at(&s.country, m.to_string()))?,
            acquired,
            ended,
        });
    }
    Ok(())
}

pub(crate) fn parse_people(ctx: &Ctx<'_>) -> Result<People, PolicyError> {
    let f: PeopleFile = ctx.parse()?;
    let mut orgs = BTreeMap::new();
    let mut owner_spans = Vec::new();
    for o in f.organisations {
        let country =
            check_country(o.country.get_ref()).map_err(|m| ctx.at(&o.country, m.to_string()))?;
        let mut owners = Vec::new();
        let mut total = 0.0;
        for w in &o.owners {
            let p = *w.percent.get_ref();
            if !(p > 0.0 && p <= 100.0) {
                return Err(ctx.at(
                    &w.percent,
                    format!("percent {p}: a share is more than 0 and at most 100"),
                ));
            }
            total += p;
            if total > 100.0 + 1e-9 {
                return Err(ctx.at(
                    &w.percent,
                    format!(
                        "the shares of {} add up to {total} %, over 100 %",
                        o.id.get_ref()
                    ),
                ));
            }
            let owner = match (&w.organisation, &w.party) {
                (Some(org), None) => {
                    owner_spans.push((o.id.get_ref().clone(), org.clone()));
                    OwnerRef::Organisation(org.get_ref().clone())
                }
                (None, Some(p)) => OwnerRef::Party(p.get_ref().clone()),
                _ => {
                    return Err(ctx.at(
                        &w.percent,
                        "an owner names exactly one of organisation (an id in this file) or party (a name as the screening list has it)",
                    ))
                }
            };
            owners.push(Owner { owner, percent: p });
        }
        let org = Organisation {
            id: o.id.get_ref().clone(),
            name: o.name,
            country,
            owners,
        };
        if orgs.insert(org.id.clone(), org).is_some() {
            return Err(ctx.at(
                &o.id,
                format!("duplicate organisation '{}'", o.id.get_ref()),
            ));
        }
    }
    // Owners are known organisations, and nobody owns themselves through a chain.
    for (of, o) in &owner_spans {
        if !orgs.contains_key(o.get_ref()) {
            return Err(ctx.at(o, format!("unknown owner organisation '{}'", o.get_ref())));
        }
        if let Some(path) = owns(&orgs, o.get_ref(), of) {
            return Err(ctx.at(
                o,
                format!(
                    "ownership cycle: {of} is owned by {}",
                    path.join(", owned by ")
                ),
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
        let id = p.id.get_ref();
        let mut st = Vec::new();
        statuses(ctx, StatusKind::Citizenship, &p.citizenship, &mut st)?;
        statuses(ctx, StatusKind::Residency, &p.residency, &mut st)?;
        if !st.iter().any(|s| s.kind == StatusKind::Citizenship) {
            return Err(ctx.at(
                &p.id,
                format!("person '{id}' has no citizenship (every person needs at least one [[person.citizenship]], with the day it was acquired)"),
            ));
        }
        let us_now = |k: StatusKind| {
            st.iter()
                .any(|s| s.kind == k && s.country == "US" && s.ended.is_none())
        };
        let status = *p.us_status.get_ref();
        let contradiction = match status {
            UsStatus::Citizen if !us_now(StatusKind::Citizenship) => {
                Some("us_status = \"citizen\" needs a US citizenship that has not ended")
            }
            UsStatus::PermanentResident if !us_now(StatusKind::Residency) => {
                Some("us_status = \"permanent_resident\" needs a US permanent residency that has not ended")
            }
            UsStatus::PermanentResident | UsStatus::ProtectedIndividual | UsStatus::None
                if us_now(StatusKind::Citizenship) =>
            {
                Some("a US citizenship that has not ended makes us_status \"citizen\"")
            }
            UsStatus::ProtectedIndividual if p.protected.is_none() => {
                Some("us_status = \"protected_individual\" needs a [person.protected] table (basis, granted, naturalisation dates)")
            }
            _ => None,
        };
        if let Some(why) = contradiction {
            return Err(ctx.at(&p.us_status, format!("person '{id}': {why}")));
        }
        let protection = match p.protected {
            Some(pt) if status != UsStatus::ProtectedIndividual => {
                return Err(ctx.at(
                    &pt,
                    format!("person '{id}': [person.protected] is only for us_status = \"protected_individual\""),
                ))
            }
            Some(pt) => {
                let pf = pt.get_ref();
                let opt = |d: &Option<Spanned<toml::value::Datetime>>| d.as_ref().map(|d| date(ctx, d)).transpose();
                let pr = Protection {
                    basis: pf.basis,
                    granted: date(ctx, &pf.granted)?,
                    naturalisation_eligible: opt(&pf.naturalisation_eligible)?,
                    naturalisation_applied: opt(&pf.naturalisation_applied)?,
                    actively_pursuing: pf.actively_pursuing,
                };
                if pr.naturalisation_applied.is_some() && pr.naturalisation_eligible.is_none() {
                    return Err(ctx.at(&pt, format!("person '{id}': naturalisation_applied needs naturalisation_eligible")));
                }
                Some(pr)
            }
            None => None,
        };
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
            id: id.clone(),
            kind: RequesterKind::Person,
            name: p.name,
            organisation: known_org(&p.organisation)?,
            nationalities: dedup(
                st.iter()
                    .filter(|s| s.kind == StatusKind::Citizenship && s.ended.is_none())
                    .map(|s| s.country.clone()),
            ),
            clearances,
            us_status: status,
            statuses: st,
            protection,
        };
        if reqs.insert(r.id.clone(), r).is_some() {
            return Err(ctx.at(&p.id, format!("duplicate requester '{id}'")));
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
            us_status: UsStatus::None,
            statuses: vec![],
            protection: None,
        };
        if reqs.insert(r.id.clone(), r).is_some() {
            return Err(ctx.at(&w.id, format!("duplicate requester '{}'", w.id.get_ref())));
        }
    }
    Ok(People {
        organisations: orgs,
        requesters: reqs,
        tie: f.deemed_export.map_or(TieRule::MostRestrictive, |d| d.tie),
    })
}

/// The chain by which `from` is owned, through organisations, by `target`, if it is.
fn owns(orgs: &BTreeMap<String, Organisation>, from: &str, target: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        if at == target {
            return Some(path);
        }
        if !seen.insert(at.clone()) {
            continue;
        }
        for o in orgs
            .get(&at)
            .map(|o| o.owners.as_slice())
            .unwrap_or_default()
        {
            if let OwnerRef::Organisation(id) = &o.owner {
                let mut p = path.clone();
                p.push(id.clone());
                stack.push((id.clone(), p));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn months_are_calendar_months() {
        for (d, n, want) in [
            (date!(2025 - 01 - 31), 6, date!(2025 - 07 - 31)),
            (date!(2025 - 08 - 31), 6, date!(2026 - 02 - 28)),
            (date!(2023 - 08 - 31), 6, date!(2024 - 02 - 29)),
            (date!(2025 - 12 - 15), 24, date!(2027 - 12 - 15)),
            (date!(2025 - 07 - 01), 6, date!(2026 - 01 - 01)),
        ] {
            assert_eq!(add_months(d, n), want, "{d} + {n}");
        }
    }

    #[test]
    fn protection_lapses_by_the_statute() {
        let p = |e: Option<Date>, a: Option<Date>, active: bool| Protection {
            basis: ProtectionBasis::Asylee,
            granted: date!(2019 - 01 - 01),
            naturalisation_eligible: e,
            naturalisation_applied: a,
            actively_pursuing: active,
        };
        let e = Some(date!(2024 - 01 - 10));
        assert_eq!(p(None, None, false).lapses(), None, "not yet eligible");
        assert_eq!(p(e, None, false).lapses().unwrap().0, date!(2024 - 07 - 10));
        assert_eq!(
            p(e, Some(date!(2024 - 07 - 11)), false).lapses().unwrap().0,
            date!(2024 - 07 - 10),
            "applied a day late"
        );
        assert_eq!(
            p(e, Some(date!(2024 - 07 - 10)), false).lapses().unwrap().0,
            date!(2026 - 07 - 10),
            "applied on the last day: two years from the application"
        );
        assert_eq!(p(e, Some(date!(2024 - 03 - 01)), true).lapses(), None);
    }
}
