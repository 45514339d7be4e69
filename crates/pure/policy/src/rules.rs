//! Rules of the deploying organisation and dated legal settings that are not about one party
//! (`policies/rules.toml`): the BIS affiliates rule's periods and thresholds, how long a
//! compliance officer's approval of a held release lasts, and per-requester and
//! per-organisation daily quotas. Pure: parsed from text.

use crate::data::{date, Ctx, PolicyError};
use serde::Deserialize;
use time::Date;
use toml::Spanned;

/// Whether the affiliates rule applies on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleStatus {
    /// In force: an organisation owned 50 % or more by listed parties is treated as listed.
    InForce,
    /// Suspended: such ownership is held for review instead.
    Suspended,
}

/// One period of the affiliates rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulePeriod {
    /// First day.
    pub from: Date,
    /// Status from that day.
    pub status: RuleStatus,
    /// Citation.
    pub source: String,
}

/// The BIS affiliates rule (FR Doc 2025-19001): ownership by listed parties.
#[derive(Debug, Clone, PartialEq)]
pub struct Affiliates {
    /// Per cent owned (directly or indirectly, alone or together) at which an organisation is
    /// treated as listed.
    pub threshold_percent: f64,
    /// Per cent at or above which a share under the threshold is held for review (a policy
    /// choice).
    pub review_percent: f64,
    /// Periods, sorted by date.
    pub periods: Vec<RulePeriod>,
}

impl Affiliates {
    /// The period in force on `d`, if the rule had begun.
    pub fn period(&self, d: Date) -> Option<&RulePeriod> {
        self.periods.iter().take_while(|p| p.from <= d).last()
    }
}

/// A daily quota: releases and bytes per requester or per organisation per UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// What it counts.
    pub scope: QuotaScope,
    /// Releases a day, if limited.
    pub releases_per_day: Option<u64>,
    /// Bytes a day (original file lengths), if limited.
    pub bytes_per_day: Option<u64>,
}

/// Whom a quota counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    /// One requester (id).
    Requester(String),
    /// Every requester of one organisation together (id).
    Organisation(String),
    /// Each requester that has no quota of its own.
    EachRequester,
}

impl QuotaScope {
    /// The counter this scope reads for `requester` of `organisation` on `day`: the key of
    /// the usage map the release decision is given (see `weightvault_ledger::usage`).
    pub fn counter(&self, requester: &str, organisation: &str, day: Date) -> String {
        match self {
            QuotaScope::Requester(_) | QuotaScope::EachRequester => {
                quota_counter("requester", requester, day)
            }
            QuotaScope::Organisation(_) => quota_counter("organisation", organisation, day),
        }
    }

    /// In words.
    pub fn describe(&self) -> String {
        match self {
            QuotaScope::Requester(r) => format!("requester {r}"),
            QuotaScope::Organisation(o) => format!("organisation {o}"),
            QuotaScope::EachRequester => "each requester".into(),
        }
    }
}

/// The usage-map key of a daily counter: `quota:requester:ID:2026-06-01` or
/// `quota:organisation:ID:2026-06-01` (licence counters are keyed by the licence id alone,
/// which never starts with `quota:`).
pub fn quota_counter(kind: &str, id: &str, day: Date) -> String {
    format!("quota:{kind}:{id}:{day}")
}

/// Everything `rules.toml` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// The affiliates rule.
    pub affiliates: Affiliates,
    /// Hours an approval of a held release lets the same request through.
    pub approval_hours: u32,
    /// Quotas.
    pub quotas: Vec<Quota>,
}

/// The longest `[review] approval_hours` may be (30 days): an approval is bounded in time.
pub const MAX_APPROVAL_HOURS: u32 = 24 * 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    affiliates: AffiliatesFile,
    review: ReviewFile,
    #[serde(default, rename = "quota")]
    quotas: Vec<QuotaFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AffiliatesFile {
    threshold_percent: Spanned<f64>,
    review_percent: Spanned<f64>,
    #[serde(default, rename = "period")]
    periods: Vec<PeriodFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodFile {
    from: Spanned<toml::value::Datetime>,
    status: RuleStatus,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewFile {
    approval_hours: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaFile {
    #[serde(default)]
    requester: Option<Spanned<String>>,
    #[serde(default)]
    organisation: Option<Spanned<String>>,
    #[serde(default)]
    each_requester: bool,
    #[serde(default)]
    releases_per_day: Option<u64>,
    #[serde(default)]
    bytes_per_day: Option<u64>,
}

/// The rules, and the requester and organisation ids its quotas name (checked by the set).
pub(crate) type ParsedRules = (Rules, Vec<Spanned<String>>, Vec<Spanned<String>>);

/// Parses `rules.toml`.
pub(crate) fn parse_rules(ctx: &Ctx<'_>) -> Result<ParsedRules, PolicyError> {
    let f: RulesFile = ctx.parse()?;
    let a = &f.affiliates;
    let (t, r) = (*a.threshold_percent.get_ref(), *a.review_percent.get_ref());
    if !(t > 0.0 && t <= 100.0) {
        return Err(ctx.at(
            &a.threshold_percent,
            "threshold_percent is more than 0 and at most 100",
        ));
    }
    if !(r > 0.0 && r <= t) {
        return Err(ctx.at(
            &a.review_percent,
            "review_percent is more than 0 and at most threshold_percent",
        ));
    }
    let mut periods = Vec::new();
    for p in &a.periods {
        periods.push(RulePeriod {
            from: date(ctx, &p.from)?,
            status: p.status,
            source: p.source.clone(),
        });
    }
    periods.sort_by_key(|p| p.from);
    let hours = *f.review.approval_hours.get_ref();
    if !(1..=MAX_APPROVAL_HOURS).contains(&hours) {
        return Err(ctx.at(
            &f.review.approval_hours,
            "approval_hours is from 1 to 720 (30 days): an approval is bounded in time",
        ));
    }
    let mut quotas = Vec::new();
    let (mut reqs, mut orgs) = (Vec::new(), Vec::new());
    for q in f.quotas {
        let scope = match (&q.requester, &q.organisation, q.each_requester) {
            (Some(r), None, false) => {
                reqs.push(r.clone());
                QuotaScope::Requester(r.get_ref().clone())
            }
            (None, Some(o), false) => {
                orgs.push(o.clone());
                QuotaScope::Organisation(o.get_ref().clone())
            }
            (None, None, true) => QuotaScope::EachRequester,
            _ => {
                return Err(PolicyError {
                    file: ctx.file.into(),
                    line: q.requester.as_ref().or(q.organisation.as_ref()).map_or(0, |s| ctx.line(s.span().start)),
                    message: "a [[quota]] names exactly one of requester, organisation or each_requester = true".into(),
                })
            }
        };
        if q.releases_per_day.is_none() && q.bytes_per_day.is_none() {
            return Err(PolicyError {
                file: ctx.file.into(),
                line: 0,
                message: format!(
                    "the quota of {} limits nothing: give releases_per_day or bytes_per_day",
                    scope.describe()
                ),
            });
        }
        quotas.push(Quota {
            scope,
            releases_per_day: q.releases_per_day,
            bytes_per_day: q.bytes_per_day,
        });
    }
    Ok((
        Rules {
            affiliates: Affiliates {
                threshold_percent: t,
                review_percent: r,
                periods,
            },
            approval_hours: hours,
            quotas,
        },
        reqs,
        orgs,
    ))
}
