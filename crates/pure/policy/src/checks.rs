//! One function per check of the release decision. Each reads the request and the policy
//! through [`Subject`] (who, which organisation, which model: looked up once) and returns its
//! verdict and the sentence that explains it; [`crate::decide`] runs them all, in
//! [`CheckId::ALL`] order, and composes the decision.

use crate::data::{ModelEntry, Organisation, Requester, RequesterKind, Tier};
use crate::{
    cedar, classify, find_licence, licence_use, Authority, GeoLookup, PolicyData, ReleaseRequest,
    Verdict,
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

/// The model is in the inventory, and what was sealed agrees with its entry.
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
    match disagree {
        Some(why) => (
            Fail,
            format!(
                "{}: sealed facts disagree with the inventory ({why}): treated as unclassified",
                m.name
            ),
        ),
        None if m.controlled() => (
            Pass,
            format!(
                "{}: closed weights, {:e} training operations (>= 1e26): ECCN 4E091, controlled",
                m.name, m.training_ops
            ),
        ),
        None => (
            Pass,
            format!(
                "{}: {} ({}): not controlled under 4E091",
                m.name,
                if m.open_weights {
                    "open weights".to_string()
                } else {
                    format!("{:e} training operations, below 1e26", m.training_ops)
                },
                m.eccn
            ),
        ),
    }
}

/// The attested country's tier on the day, and whether it bars a controlled model.
pub(crate) fn destination(s: &Subject<'_>) -> (Judged, Option<Tier>) {
    match s.policy.tiers.tier(&s.req.host.country, s.today) {
        Ok(t) => {
            let (v, why) = match (t, s.controlled) {
                (Tier::Three, true) => (
                    Fail,
                    "Tier 3 (arms-embargoed or Macau): presumption of denial for 4E091",
                ),
                (Tier::Three, false) => (Pass, "Tier 3, but the model is not controlled"),
                (Tier::Two, _) => (Pass, "Tier 2: a licence is required for controlled models"),
                (Tier::One, _) => (Pass, "Tier 1"),
            };
            let why = format!(
                "host {} is in {} on {}: {why}",
                s.req.host.host_id, s.req.host.country, s.today
            );
            ((v, why), Some(t))
        }
        Err(e) => ((Fail, format!("attested country: {e}")), None),
    }
}

/// What the release may rely on: nothing needed, the Tier 1 licence exception, or a licence
/// with allocation left (which the release then consumes).
pub(crate) struct LicenceJudged {
    pub judged: Judged,
    pub authority: Option<Authority>,
    pub consume: Option<String>,
}

/// A controlled model needs the Tier 1 exception or a valid licence for this destination.
pub(crate) fn licence(s: &Subject<'_>, tier: Option<Tier>) -> LicenceJudged {
    let plain = |v: Verdict, why: &str| LicenceJudged {
        judged: (v, why.to_string()),
        authority: None,
        consume: None,
    };
    if s.model.is_none() {
        return plain(Fail, "no classification, so no licence can be judged");
    }
    if !s.controlled {
        return LicenceJudged {
            authority: Some(Authority::NotControlled),
            ..plain(NotApplicable, "not controlled: no licence needed")
        };
    }
    let exception = &s.policy.tiers.tier1_exception;
    match tier {
        Some(Tier::One) => LicenceJudged {
            judged: (Pass, format!("Tier 1 destination: relies on {exception}")),
            authority: Some(Authority::LicenceException {
                name: exception.clone(),
            }),
            consume: None,
        },
        None => plain(Fail, "destination unknown, so no licence can be judged"),
        Some(_) => {
            let (Some(w), Some(o)) = (s.who, s.org) else {
                return plain(Fail, "unknown requester: no licence applies");
            };
            let req = s.req;
            match find_licence(s.policy, &o.id, &w.id, &req.host.country, s.today, req) {
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
                                "licence {} ({} to {}, valid {}..{}, {} of {} releases used{bytes})",
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
                Err(why) => plain(Fail, &why.to_string()),
            }
        }
    }
}

/// A person receiving a controlled model is an export to each of their nationalities: each
/// must be Tier 1, cleared, or licensed.
pub(crate) fn deemed_export(s: &Subject<'_>) -> Judged {
    let Some(w) = s.who else {
        return (Fail, "unknown requester".into());
    };
    if w.kind != RequesterKind::Person {
        return (NotApplicable, "a workload has no nationality".into());
    }
    if !s.controlled {
        return (NotApplicable, "model not controlled".into());
    }
    let mut uncleared = Vec::new();
    let mut notes = Vec::new();
    for n in &w.nationalities {
        match s.policy.tiers.tier(n, s.today) {
            Ok(Tier::One) => notes.push(format!("{n}: Tier 1")),
            Ok(_) => {
                if let Some(cl) = w
                    .clearances
                    .iter()
                    .find(|cl| cl.country == *n && cl.until >= s.today)
                {
                    notes.push(format!(
                        "{n}: clearance {} until {}",
                        cl.reference, cl.until
                    ));
                } else if let Ok(l) =
                    find_licence(s.policy, &w.organisation, &w.id, n, s.today, s.req)
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
        (
            Pass,
            format!("every nationality cleared: {}", notes.join(", ")),
        )
    } else {
        (
            Fail,
            format!(
                "releasing to {} is an export to {}: no clearance or licence on file for {}",
                w.id,
                w.nationalities.join(", "),
                uncleared.join(", ")
            ),
        )
    }
}

/// Neither the organisation nor (for a person) the end user is on the screening list.
pub(crate) fn restricted_parties(s: &Subject<'_>) -> Judged {
    use crate::screening::ScreenAction;
    let (Some(w), Some(o)) = (s.who, s.org) else {
        return (Fail, "unknown requester cannot be screened".into());
    };
    let index = &s.policy.screening;
    // Who is screened: the organisation, the person, and the end users named by the licence
    // the release would rely on (found as the licence check finds it: a controlled model
    // outside Tier 1).
    let mut screened: Vec<(&str, &str)> = vec![("organisation", o.name.as_str())];
    if w.kind == RequesterKind::Person {
        screened.push(("end user", w.name.as_str()));
    }
    let req = s.req;
    let tier = s.policy.tiers.tier(&req.host.country, s.today);
    if s.controlled && matches!(tier, Ok(Tier::Two | Tier::Three)) {
        if let Ok(l) = find_licence(s.policy, &o.id, &w.id, &req.host.country, s.today, req) {
            for id in &l.end_users {
                let name = match (s.policy.organisations.get(id), s.policy.requesters.get(id)) {
                    (Some(org), _) => Some(org.name.as_str()),
                    (None, Some(r)) if r.kind == RequesterKind::Person => Some(r.name.as_str()),
                    _ => None,
                };
                if let Some(n) = name.filter(|n| !screened.iter().any(|(_, x)| x == n)) {
                    screened.push(("licence end user", n));
                }
            }
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
