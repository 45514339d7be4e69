//! One function per check of the release decision. Each reads the request and the policy
//! through [`Subject`] (who, which organisation, which model: looked up once) and returns its
//! verdict and the sentence that explains it; [`crate::decide`] runs them all, in
//! [`CheckId::ALL`] order, and composes the decision.

use crate::data::{ModelEntry, Organisation, Requester, RequesterKind, Tier};
use crate::people::UsPerson;
use crate::rules::{QuotaScope, RuleStatus};
use crate::tiers::Reading;
use crate::{
    cedar, classify, find_licence, licence_use, Authority, Covering, GeoLookup, PolicyData,
    ReleaseRequest, Verdict,
};
use time::Date;
use Verdict::*;

/// What every check reads: the request, the policy it is judged by, and the parties it names.
pub(crate) struct Subject<'a> {
    pub policy: &'a PolicyData,
    pub req: &'a ReleaseRequest,
    pub today: Date,
    pub who: Option<&'a Requester>,
    pub org: Option<&'a Organisation>,
    pub model: Option<&'a ModelEntry>,
    /// The model is in the inventory and controlled under 4E091.
    pub controlled: bool,
}

impl<'a> Subject<'a> {
    pub fn new(policy: &'a PolicyData, req: &'a ReleaseRequest) -> Self {
        let who = policy.requesters.get(&req.requester);
        let org = who.and_then(|w| policy.organisations.get(&w.organisation));
        let model = policy.models.get(&req.model);
        Subject {
            policy,
            req,
            today: req.time.date(),
            who,
            org,
            model,
            controlled: model.is_some_and(|m| m.controlled()),
        }
    }
}

/// A check's verdict and its sentence.
pub(crate) type Judged = (Verdict, String);

/// The requester is a known person or workload of a known organisation.
pub(crate) fn identity(s: &Subject<'_>) -> Judged {
    match (s.who, s.org) {
        (Some(w), Some(o)) => (
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
        _ => (
            Fail,
            format!("{} is not a known person or workload", s.req.requester),
        ),
    }
}

/// The model is in the inventory, and what was sealed agrees with its entry; an uncertain
/// classification holds the request for review.
pub(crate) fn classification(s: &Subject<'_>) -> Judged {
    let Some(m) = s.model else {
        return (
            Fail,
            format!(
                "{} is not in the model inventory: unclassified models are never released",
                s.req.model
            ),
        );
    };
    let disagree = s.req.sealed_facts.as_ref().and_then(|f| {
        let why = classify::inventory_disagreements(f, m);
        (!why.is_empty()).then(|| why.join("; "))
    });
    let derived = match &m.derived_from {
        Some(p) => format!(
            "derived from {p} ({:e} operations of its own, {:e} in all); ",
            m.training_ops, m.total_ops
        ),
        None => String::new(),
    };
    let facts = match disagree {
        Some(why) => {
            return (
                Fail,
                format!(
                    "{}: sealed facts disagree with the inventory ({why}): treated as unclassified",
                    m.name
                ),
            )
        }
        None if m.controlled() => match &m.controlled_ancestor {
            Some(a) if m.total_ops < crate::data::CONTROL_THRESHOLD_OPS => format!(
                "{}: {derived}closed weights derived from the controlled model {a}: ECCN 4E091, controlled",
                m.name
            ),
            _ => format!(
                "{}: {derived}closed weights, {:e} training operations in all (>= 1e26): ECCN 4E091, controlled",
                m.name, m.total_ops
            ),
        },
        None => format!(
            "{}: {derived}{} ({}): not controlled under 4E091",
            m.name,
            if m.open_weights {
                "open (published) weights".to_string()
            } else {
                format!("{:e} training operations in all, below 1e26", m.total_ops)
            },
            m.eccn
        ),
    };
    match &m.uncertain {
        Some(why) => (
            Review,
            format!("{facts}; but its classification is uncertain ({why}): held for a compliance officer"),
        ),
        None => (Pass, facts),
    }
}

/// The attested country's tier on the day, and whether it bars a controlled model.
pub(crate) fn destination(s: &Subject<'_>) -> (Judged, Option<Tier>) {
    match s.policy.tiers.tier_of(&s.req.host.country, s.today) {
        Ok(t) => {
            let (v, why) = match (t.tier, s.controlled) {
                (Tier::Three, true) => (
                    Fail,
                    "Tier 3 (arms-embargoed or Macau): presumption of denial for 4E091",
                ),
                (Tier::Three, false) => (Pass, "Tier 3, but the model is not controlled"),
                (Tier::Two, _) => (Pass, "Tier 2: a licence is required for controlled models"),
                (Tier::One, _) => (Pass, "Tier 1"),
            };
            let mut why = format!(
                "host {} is in {} on {}: {why}",
                s.req.host.host_id, s.req.host.country, s.today
            );
            if let Some(a) = &t.same_as {
                why.push_str(&format!(" ({a})"));
            }
            if let Some((d, src)) = &t.last_change {
                why.push_str(&format!(" [since {d}: {src}]"));
            }
            ((v, why), Some(t.tier))
        }
        Err(e) => ((Fail, format!("attested country: {e}")), None),
    }
}

/// What the release may rely on: nothing needed, the Tier 1 licence exception, a reading
/// under which 4E091 licensing is not applied, a Validated End User authorisation, or a
/// licence with allocation left (which the release then consumes).
pub(crate) struct LicenceJudged {
    pub judged: Judged,
    pub authority: Option<Authority>,
    pub consume: Option<String>,
}

/// Whether the recipient is foreign for a named-model requirement: a person who is not a US
/// person, a workload of an organisation outside the US, or any host outside the US.
fn foreign_recipient(s: &Subject<'_>) -> bool {
    let host_abroad = s.req.host.country != "US";
    match (s.who, s.org) {
        (Some(w), _) if w.kind == RequesterKind::Person => {
            host_abroad || matches!(w.us_person(s.today), UsPerson::No(_))
        }
        (_, Some(o)) => host_abroad || o.country != "US",
        _ => true,
    }
}

/// The named-model ("is informed") requirement that applies to this release, if any.
fn informed<'a>(s: &Subject<'a>) -> Option<&'a crate::models::IsInformed> {
    let m = s.model?;
    let exempt = |i: &crate::models::IsInformed| {
        i.exempt
            .iter()
            .any(|e| s.who.is_some_and(|w| &w.id == e) || s.org.is_some_and(|o| &o.id == e))
    };
    m.is_informed
        .iter()
        .find(|i| i.applies_on(s.today) && !exempt(i) && foreign_recipient(s))
}

/// The VEU authorisation the release may go under, or why none does.
fn veu<'a>(s: &Subject<'a>, eccn: &str) -> Result<&'a crate::veu::Veu, Vec<String>> {
    let (Some(o), h) = (s.org, &s.req.host) else {
        return Err(vec![]);
    };
    let mut near = Vec::new();
    for v in s.policy.veu.iter().filter(|v| v.entity == o.id) {
        let covers = v.eccns.iter().any(|e| e == eccn);
        let facility = h.facility.as_deref();
        let listed = facility.is_some_and(|f| v.facilities.iter().any(|x| x.id == f));
        if !v.in_force(s.today) {
            near.push(match &v.revoked {
                Some((d, c)) if s.today >= *d => format!("VEU {} was revoked on {d} ({c})", v.id),
                _ => format!("VEU {} is not in force before {}", v.id, v.authorised),
            });
        } else if !covers {
            near.push(format!("VEU {} does not cover {eccn}", v.id));
        } else if v.country != h.country {
            near.push(format!(
                "VEU {} is for {}, not {}",
                v.id, v.country, h.country
            ));
        } else if !listed {
            near.push(format!(
                "VEU {} does not list the host's facility ({}): only {}",
                v.id,
                facility.unwrap_or("none attested"),
                v.facilities
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else {
            return Ok(v);
        }
    }
    Err(near)
}

/// A controlled model needs the Tier 1 exception, a VEU authorisation or a valid licence for
/// this destination; a named-model requirement needs a licence naming the model wherever it
/// goes.
pub(crate) fn licence(s: &Subject<'_>, tier: Option<Tier>) -> LicenceJudged {
    let plain = |v: Verdict, why: &str| LicenceJudged {
        judged: (v, why.to_string()),
        authority: None,
        consume: None,
    };
    let Some(m) = s.model else {
        return plain(Fail, "no classification, so no licence can be judged");
    };
    let informed = informed(s);
    if !s.controlled && informed.is_none() {
        return LicenceJudged {
            authority: Some(Authority::NotControlled),
            ..plain(NotApplicable, "not controlled: no licence needed")
        };
    }
    let (reading, reading_src) = s.policy.tiers.reading(s.today);
    let exception = &s.policy.tiers.tier1_exception;
    match (tier, informed) {
        (None, _) => return plain(Fail, "destination unknown, so no licence can be judged"),
        (Some(Tier::One), None) => {
            return LicenceJudged {
                judged: (
                    Pass,
                    format!(
                        "Tier 1 destination: relies on {exception} (4E091 licensing applied {})",
                        reading.words()
                    ),
                ),
                authority: Some(Authority::LicenceException {
                    name: exception.clone(),
                }),
                consume: None,
            }
        }
        (Some(Tier::Two), None) if reading == Reading::AsEnforced => {
            let src = reading_src.unwrap_or("").to_string();
            return LicenceJudged {
                judged: (
                    Pass,
                    format!("Tier 2 destination, but 4E091 licensing is applied as enforced, not as written ({src}): no licence needed"),
                ),
                authority: Some(Authority::NotEnforced { reading: src }),
                consume: None,
            };
        }
        _ => {}
    }
    let (Some(w), Some(o)) = (s.who, s.org) else {
        return plain(Fail, "unknown requester: no licence applies");
    };
    let mut near = Vec::new();
    if informed.is_none() && tier == Some(Tier::Two) {
        match veu(s, &m.eccn) {
            Ok(v) => {
                return LicenceJudged {
                    judged: (
                        Pass,
                        format!(
                            "Validated End User {} ({}, {}): {} may receive {} at facility {} ({}), authorised {} ({})",
                            v.id,
                            v.entity_type,
                            v.country,
                            o.name,
                            m.eccn,
                            s.req.host.facility.as_deref().unwrap_or(""),
                            v.facilities
                                .iter()
                                .find(|f| Some(f.id.as_str()) == s.req.host.facility.as_deref())
                                .map_or("", |f| f.address.as_str()),
                            v.authorised,
                            v.citation
                        ),
                    ),
                    authority: Some(Authority::Veu { id: v.id.clone() }),
                    consume: None,
                }
            }
            Err(why) => near = why,
        }
    }
    let req = s.req;
    let covering = Covering::of(m, informed.is_some());
    let requirement = informed.map_or(String::new(), |i| {
        format!(
            "{} needs a licence naming it for any foreign person ({}, from {}); ",
            m.name, i.reference, i.from
        )
    });
    match find_licence(
        s.policy,
        &o.id,
        &w.id,
        &req.host.country,
        s.today,
        req,
        &covering,
    ) {
        Ok(l) => {
            let u = licence_use(l, req);
            let bytes = match l.max_bytes {
                Some(max) => format!(
                    ", {} of {max} bytes used, {} more in this release",
                    u.bytes, req.size
                ),
                None => String::new(),
            };
            LicenceJudged {
                judged: (
                    Pass,
                    format!(
                        "{requirement}licence {} ({} to {}, valid {}..{}, {} of {} releases used{bytes})",
                        l.id,
                        l.licensee,
                        req.host.country,
                        l.valid_from,
                        l.valid_until,
                        u.releases,
                        l.max_releases
                    ),
                ),
                authority: Some(Authority::Licence { id: l.id.clone() }),
                consume: Some(l.id.clone()),
            }
        }
        Err(why) => {
            near.push(why.to_string());
            plain(Fail, &format!("{requirement}{}", near.join("; ")))
        }
    }
}

/// How one country a person's release is an export to is cleared: Tier 1, the reading, a
/// clearance on file, or a licence.
fn clear_country(s: &Subject<'_>, w: &Requester, m: &ModelEntry, n: &str) -> (Verdict, String) {
    match s.policy.tiers.tier_of(n, s.today) {
        Ok(t) if t.tier == Tier::One => (Pass, format!("{n}: Tier 1")),
        Ok(t) => {
            if let Some(cl) = w
                .clearances
                .iter()
                .find(|cl| cl.country == *n && cl.until >= s.today)
            {
                return (
                    Pass,
                    format!("{n}: clearance {} until {}", cl.reference, cl.until),
                );
            }
            let covering = Covering::of(m, false);
            if let Ok(l) = find_licence(
                s.policy,
                &w.organisation,
                &w.id,
                n,
                s.today,
                s.req,
                &covering,
            ) {
                return (Pass, format!("{n}: licence {}", l.id));
            }
            let (reading, src) = s.policy.tiers.reading(s.today);
            if t.tier == Tier::Two && reading == Reading::AsEnforced {
                return (
                    Pass,
                    format!(
                        "{n}: Tier 2, 4E091 licensing applied as enforced ({})",
                        src.unwrap_or("")
                    ),
                );
            }
            let alias = t.same_as.map_or(String::new(), |a| format!(", {a}"));
            (
                Fail,
                format!(
                    "{n}: Tier {}{alias}, no clearance or licence on file",
                    t.tier.number()
                ),
            )
        }
        Err(e) => (Fail, format!("{n}: {e}")),
    }
}

/// Releasing a controlled model to a foreign person is an export to the country the model's
/// regime names (EAR: the most recent citizenship or permanent residency; ITAR: every
/// citizenship held or ever held, and permanent residency); each must be Tier 1, cleared or
/// licensed. US citizens (dual nationals included), permanent residents and protected
/// individuals are not foreign persons.
pub(crate) fn deemed_export(s: &Subject<'_>) -> Judged {
    let Some(w) = s.who else {
        return (Fail, "unknown requester".into());
    };
    if w.kind != RequesterKind::Person {
        return (NotApplicable, "a workload has no nationality".into());
    }
    let Some(m) = s.model.filter(|_| s.controlled) else {
        return (NotApplicable, "model not controlled".into());
    };
    let why = match w.us_person(s.today) {
        UsPerson::Yes(why) => {
            return (
                Pass,
                format!(
                    "{} is {why}: not a foreign person, so no deemed export (15 CFR 734.13(b))",
                    w.id
                ),
            )
        }
        UsPerson::No(why) => why,
    };
    let ex = w.export_countries(m.regime, s.today);
    if ex.countries.is_empty() {
        return (Fail, format!("{} is {why}, and {}", w.id, ex.why));
    }
    let judged: Vec<(Verdict, String)> = ex
        .countries
        .iter()
        .map(|n| clear_country(s, w, m, n))
        .collect();
    let failed: Vec<&String> = judged
        .iter()
        .filter(|(v, _)| *v == Fail)
        .map(|(_, t)| t)
        .collect();
    let picked = if ex.tie {
        // The most restrictive of the countries acquired the same day: the first that fails,
        // else the one in the highest tier.
        let worst = judged
            .iter()
            .zip(&ex.countries)
            .max_by_key(|((v, _), n)| {
                (
                    *v == Fail,
                    s.policy.tiers.tier(n, s.today).map_or(3, |t| t.number()),
                )
            })
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        format!("; the tie rule picks {worst}")
    } else {
        String::new()
    };
    let all: Vec<&str> = judged.iter().map(|(_, t)| t.as_str()).collect();
    let text = format!(
        "{} is {why}; {}: an export to {}{picked}: {}",
        w.id,
        ex.why,
        ex.countries.join(", "),
        all.join(", ")
    );
    if failed.is_empty() {
        (Pass, text)
    } else {
        (Fail, text)
    }
}

/// Neither the organisation, nor (for a person) the end user, nor an end user of the licence
/// the release relies on (`licence`: the licence check's, when it found one) is on the
/// screening list.
pub(crate) fn restricted_parties(s: &Subject<'_>, licence: Option<&str>) -> Judged {
    use crate::screening::ScreenAction;
    let (Some(w), Some(o)) = (s.who, s.org) else {
        return (Fail, "unknown requester cannot be screened".into());
    };
    let index = &s.policy.screening;
    let mut screened: Vec<(&str, &str)> = vec![("organisation", o.name.as_str())];
    if w.kind == RequesterKind::Person {
        screened.push(("end user", w.name.as_str()));
    }
    let relied = licence.and_then(|id| {
        s.policy
            .licences
            .binary_search_by(|l| l.id.as_str().cmp(id))
            .ok()
            .map(|i| &s.policy.licences[i])
    });
    for id in relied.iter().flat_map(|l| &l.end_users) {
        let name = match (s.policy.organisations.get(id), s.policy.requesters.get(id)) {
            (Some(org), _) => Some(org.name.as_str()),
            (None, Some(r)) if r.kind == RequesterKind::Person => Some(r.name.as_str()),
            _ => None,
        };
        if let Some(n) = name.filter(|n| !screened.iter().any(|(_, x)| x == n)) {
            screened.push(("licence end user", n));
        }
    }
    let (mut deny, mut review) = (Vec::new(), Vec::new());
    for (role, name) in &screened {
        for h in index.screen(name) {
            match h.action {
                ScreenAction::Deny => deny.push(h.sentence(role, name)),
                ScreenAction::Review => review.push(h.sentence(role, name)),
            }
        }
    }
    // Enough to act on; the rest counted (a common name can be close to many listed ones).
    let say = |mut v: Vec<String>| {
        const SHOWN: usize = 5;
        if v.len() > SHOWN {
            let more = v.len() - SHOWN;
            v.truncate(SHOWN);
            v.push(format!("and {more} more"));
        }
        v.join("; ")
    };
    if !deny.is_empty() {
        deny.append(&mut review);
        (Fail, say(deny))
    } else if !review.is_empty() {
        (Review, say(review))
    } else {
        let names: Vec<&str> = screened.iter().map(|(_, n)| *n).collect();
        (
            Pass,
            format!(
                "{} match none of the {} listed parties (CSL of {}, {} hand-entered)",
                names.join(", "),
                index.len(),
                index
                    .list_date()
                    .map_or_else(|| "unknown date".to_string(), |d| d.to_string()),
                index.hand_entered()
            ),
        )
    }
}

/// The host's evidence is from a trusted attester, verifies, answers a fresh nonce and is
/// within its validity.
pub(crate) fn host_evidence(s: &Subject<'_>) -> Judged {
    let (req, h) = (s.req, &s.req.host);
    if req.dry_run {
        return (NotApplicable, "dry run: host evidence not evaluated".into());
    }
    let mut bad = Vec::new();
    if !s.policy.attesters.contains_key(&h.attester) {
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
        (
            Pass,
            format!("signed by {}, fresh, nonce unused", h.attester),
        )
    } else {
        (Fail, bad.join("; "))
    }
}

/// The connection comes from where the host says it is (or from a corporate VPN range), and
/// never from Tier 3. Also returns the origin country found (empty when none).
pub(crate) fn network_origin(s: &Subject<'_>, geo: &dyn GeoLookup) -> (Judged, String) {
    let (req, h) = (s.req, &s.req.host);
    let Some(ip) = req.source_ip else {
        let judged = if req.dry_run {
            (
                NotApplicable,
                "dry run without a source address: not evaluated".into(),
            )
        } else {
            (Fail, "source address unknown".into())
        };
        return (judged, String::new());
    };
    let network = &s.policy.network;
    let private = network.private.iter().find(|(n, _, _)| n.contains(&ip));
    let vpn = network.vpn.iter().find(|(n, _)| n.contains(&ip));
    let origin = match private {
        Some((_, cc, site)) => Some((cc.clone(), format!("private range of site {site}"))),
        None => geo.country(ip).map(|cc| (cc, "geolocation".to_string())),
    };
    let Some((cc, how)) = origin else {
        return (
            (
                Fail,
                format!(
                    "{ip}: not in a configured private range and not in the geolocation database"
                ),
            ),
            String::new(),
        );
    };
    let judged = match s.policy.tiers.tier(&cc, s.today) {
        Ok(Tier::Three) => (Fail, format!("{ip} is in {cc} ({how}): a Tier 3 origin")),
        Err(e) => (Fail, format!("{ip}: {e}")),
        Ok(_) if cc == h.country => (Pass, format!("{ip} is in {cc} ({how}), as attested")),
        Ok(_) => match vpn {
            Some((_, name)) => (
                Pass,
                format!(
                    "{ip} is in {cc} ({how}), not {}, but inside the corporate VPN range {name}",
                    h.country
                ),
            ),
            None => (
                Fail,
                format!(
                    "{ip} is in {cc} ({how}) but the host is attested in {}",
                    h.country
                ),
            ),
        },
    };
    (judged, cc)
}

/// The organisation's own rules (Cedar) permit this requester, model, host and origin.
pub(crate) fn org_rules(s: &Subject<'_>, tier: Option<Tier>, origin_country: &str) -> Judged {
    let (Some(w), Some(o), Some(m)) = (s.who, s.org, s.model) else {
        return (Fail, "requester or model unknown".into());
    };
    let h = &s.req.host;
    let v = s.policy.org_rules.decide(
        w,
        o,
        m,
        &cedar::OrgContext {
            host_id: &h.host_id,
            host_country: &h.country,
            host_region: &h.region,
            tier: tier.map_or(0, Tier::number),
            origin_country,
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
    (if v.allowed { Pass } else { Fail }, why)
}

/// Whether `name` is a listed party: an exact match on a list whose parties are denied (an
/// owner named only close to a listed one, or on a list that reviews, does not count).
fn listed(policy: &PolicyData, name: &str) -> Option<String> {
    use crate::screening::{MatchKind, ScreenAction};
    policy
        .screening
        .screen(name)
        .into_iter()
        .find(|h| h.kind == MatchKind::Exact && h.action == ScreenAction::Deny)
        .map(|h| format!("'{}' ({})", h.party.name, h.party.list_name()))
}

/// Every organisation's share owned by listed parties, with who holds it: computed once when
/// the policy is loaded (screening a name costs tens of microseconds; a decision must not
/// repeat it for every owner up a chain). Shares count directly, or through organisations
/// that are themselves listed or owned at or above the threshold.
pub(crate) fn listed_shares(policy: &PolicyData) -> crate::set::Ownership {
    let mut cache: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut out = crate::set::Ownership::new();
    for id in policy.organisations.keys() {
        let share = listed_share(policy, id, 0, &mut cache, &mut out);
        out.insert(id.clone(), share);
    }
    out
}

fn listed_share(
    policy: &PolicyData,
    id: &str,
    depth: usize,
    cache: &mut std::collections::HashMap<String, Option<String>>,
    done: &mut crate::set::Ownership,
) -> (f64, Vec<String>) {
    if let Some(d) = done.get(id) {
        return d.clone();
    }
    let Some(org) = policy.organisations.get(id) else {
        return (0.0, vec![]);
    };
    fn is_listed(
        policy: &PolicyData,
        cache: &mut std::collections::HashMap<String, Option<String>>,
        name: &str,
    ) -> Option<String> {
        cache
            .entry(name.to_string())
            .or_insert_with(|| listed(policy, name))
            .clone()
    }
    let threshold = policy.rules.affiliates.threshold_percent;
    let mut total = 0.0;
    let mut who = Vec::new();
    for o in &org.owners {
        match &o.owner {
            crate::people::OwnerRef::Party(name) => {
                if let Some(l) = is_listed(policy, cache, name) {
                    total += o.percent;
                    who.push(format!("{} % by {l}", o.percent));
                }
            }
            crate::people::OwnerRef::Organisation(sub_id) => {
                let Some(sub) = policy.organisations.get(sub_id) else {
                    continue;
                };
                if let Some(l) = is_listed(policy, cache, &sub.name) {
                    total += o.percent;
                    who.push(format!("{} % by {} {l}", o.percent, sub.id));
                } else if depth < 64 {
                    let (share, via) = listed_share(policy, sub_id, depth + 1, cache, done);
                    done.insert(sub_id.clone(), (share, via.clone()));
                    if share >= threshold {
                        total += o.percent;
                        who.push(format!(
                            "{} % by {} (itself {share} % owned by listed parties: {})",
                            o.percent,
                            sub.id,
                            via.join(", ")
                        ));
                    }
                }
            }
        }
    }
    (total, who)
}

/// An organisation owned 50 % or more by listed parties, directly or indirectly, alone or
/// added together, is treated as listed while the affiliates rule is in force (FR Doc
/// 2025-19001); while it is suspended, or for a material share under the threshold, the
/// request is held for review.
pub(crate) fn ownership(s: &Subject<'_>) -> Judged {
    let Some(o) = s.org else {
        return (
            Fail,
            "unknown requester: its organisation cannot be screened".into(),
        );
    };
    let a = &s.policy.rules.affiliates;
    let (share, who) = s.policy.ownership.get(&o.id).cloned().unwrap_or_default();
    if share == 0.0 {
        return (
            Pass,
            format!(
                "{}: no listed owner on file ({} owners recorded)",
                o.name,
                o.owners.len()
            ),
        );
    }
    let held = format!(
        "{} is {share} % owned by listed parties ({})",
        o.name,
        who.join("; ")
    );
    let period = a.period(s.today);
    if share >= a.threshold_percent {
        match period {
            None => (
                Pass,
                format!("{held}, but the affiliates rule is not in force before {}", a.periods.first().map_or("its first period".into(), |p| p.from.to_string())),
            ),
            Some(p) if p.status == RuleStatus::InForce => (
                Fail,
                format!("{held}: at least {} %, treated as listed under the affiliates rule ({})", a.threshold_percent, p.source),
            ),
            Some(p) => (
                Review,
                format!("{held}: at least {} %, but the affiliates rule is suspended ({}): held for review", a.threshold_percent, p.source),
            ),
        }
    } else if share >= a.review_percent {
        (
            Review,
            format!(
                "{held}: under {} % but at least {} %, a material share: held for review",
                a.threshold_percent, a.review_percent
            ),
        )
    } else {
        (
            Pass,
            format!("{held}: under the review share of {} %", a.review_percent),
        )
    }
}

/// Releases and bytes per requester and organisation per UTC day stay within the quotas.
/// Gives the counters an allowed release counts against.
pub(crate) fn quota(s: &Subject<'_>) -> (Judged, Vec<String>) {
    let (Some(w), Some(o)) = (s.who, s.org) else {
        return (
            (Fail, "unknown requester: no quota can be judged".into()),
            vec![],
        );
    };
    let quotas = &s.policy.rules.quotas;
    let own = quotas
        .iter()
        .find(|q| q.scope == QuotaScope::Requester(w.id.clone()))
        .or_else(|| quotas.iter().find(|q| q.scope == QuotaScope::EachRequester));
    let org = quotas
        .iter()
        .find(|q| q.scope == QuotaScope::Organisation(o.id.clone()));
    let applicable: Vec<_> = own.into_iter().chain(org).collect();
    if applicable.is_empty() {
        return (
            (NotApplicable, format!("no quota for {} or {}", w.id, o.id)),
            vec![],
        );
    }
    let mut counters = Vec::new();
    let mut notes = Vec::new();
    let mut over = Vec::new();
    for q in applicable {
        let key = q.scope.counter(&w.id, &o.id, s.today);
        let u = s.req.used.get(&key).copied().unwrap_or_default();
        let who = q.scope.describe();
        if let Some(max) = q.releases_per_day {
            let line = format!("{who}: {} of {max} releases on {}", u.releases, s.today);
            if u.releases >= max {
                over.push(format!("{line}, none left"));
            } else {
                notes.push(line);
            }
        }
        if let Some(max) = q.bytes_per_day {
            let line = format!(
                "{who}: {} of {max} bytes on {}, {} more in this release",
                u.bytes, s.today, s.req.size
            );
            if u.bytes.saturating_add(s.req.size) > max {
                over.push(format!("{line}: over the daily quota"));
            } else {
                notes.push(line);
            }
        }
        counters.push(key);
    }
    if over.is_empty() {
        ((Pass, notes.join("; ")), counters)
    } else {
        (
            (Fail, format!("quota used up: {}", over.join("; "))),
            counters,
        )
    }
}
