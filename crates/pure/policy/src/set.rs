//! Everything in a policy set, parsed and validated together from the texts of its files.

use crate::cedar;
use crate::data::*;
use crate::screening::ScreeningIndex;
use std::collections::{BTreeMap, HashMap};

/// Per organisation id: the per cent owned by listed parties and who holds it.
pub(crate) type Ownership = HashMap<String, (f64, Vec<String>)>;

/// Everything in `policies/`, validated.
pub struct PolicyData {
    /// Country tiers with history.
    pub tiers: CountryTiers,
    /// Model inventory.
    pub models: BTreeMap<String, ModelEntry>,
    /// Organisations.
    pub organisations: BTreeMap<String, Organisation>,
    /// Persons and workloads.
    pub requesters: BTreeMap<String, Requester>,
    /// Licences, sorted by id.
    pub licences: Vec<Licence>,
    /// Licence indexes by licensee.
    pub licences_by_licensee: HashMap<String, Vec<usize>>,
    /// Restricted-party screening: the CSL (`screening-list.json`, `screening.toml`) and the
    /// hand-entered `restricted-parties.csv`, indexed.
    pub screening: ScreeningIndex,
    /// Trusted attesters.
    pub attesters: BTreeMap<String, Attester>,
    /// Network ranges.
    pub network: NetworkRules,
    /// Organisation rules (Cedar).
    pub org_rules: cedar::OrgRules,
    /// How ties between a person's statuses acquired the same day are broken.
    pub tie: TieRule,
    /// The affiliates rule, approvals and quotas.
    pub rules: crate::rules::Rules,
    /// Validated End User authorisations.
    pub veu: Vec<crate::veu::Veu>,
    /// Each organisation's share owned by listed parties (computed at load).
    pub(crate) ownership: Ownership,
}

impl PolicyData {
    fn with_ownership(mut self) -> Self {
        self.ownership = crate::checks::listed_shares(&self);
        self
    }

    /// Parses and validates every file. `files` maps each name in [`FILES`] to its text; a
    /// missing file is an error.
    pub fn parse(files: &BTreeMap<String, String>) -> Result<Self, PolicyError> {
        let get = |name: &'static str| -> Result<Ctx<'_>, PolicyError> {
            files
                .get(name)
                .map(|t| Ctx {
                    file: name,
                    text: t,
                })
                .ok_or(PolicyError {
                    file: name.into(),
                    line: 0,
                    message: "missing".into(),
                })
        };
        let tiers = CountryTiers::parse(&get("tiers.toml")?)?;
        let people = get("people.toml")?;
        let People {
            organisations,
            requesters,
            tie,
        } = parse_people(&people)?;
        let mctx = get("models.toml")?;
        let crate::models::Models {
            models,
            owners,
            exempt,
        } = parse_models(&mctx)?;
        let known =
            |ctx: &Ctx<'_>, s: &toml::Spanned<String>, orgs: bool, reqs: bool, what: &str| {
                let id = s.get_ref();
                if (orgs && organisations.contains_key(id)) || (reqs && requesters.contains_key(id))
                {
                    Ok(())
                } else {
                    Err(ctx.at(s, format!("unknown {what} '{id}'")))
                }
            };
        for o in &owners {
            known(&mctx, o, true, false, "owner organisation")?;
        }
        for e in &exempt {
            known(
                &mctx,
                e,
                true,
                true,
                "exempted party (an organisation or requester id)",
            )?;
        }
        let lctx = get("licences.toml")?;
        let (licences, licence_models) = parse_licences(&lctx, &organisations, &requesters)?;
        for m in &licence_models {
            if !models.contains_key(m.get_ref()) {
                return Err(lctx.at(m, format!("unknown model '{}'", m.get_ref())));
            }
        }
        let rctx = get("rules.toml")?;
        let (rules, quota_reqs, quota_orgs) = crate::rules::parse_rules(&rctx)?;
        for r in &quota_reqs {
            known(&rctx, r, false, true, "requester")?;
        }
        for o in &quota_orgs {
            known(&rctx, o, true, false, "organisation")?;
        }
        let vctx = get("veu.toml")?;
        let (veu, entities) = crate::veu::parse_veu(&vctx)?;
        for e in &entities {
            known(&vctx, e, true, false, "VEU entity organisation")?;
        }
        let mut licences_by_licensee: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, l) in licences.iter().enumerate() {
            licences_by_licensee
                .entry(l.licensee.clone())
                .or_default()
                .push(i);
        }
        let screening = ScreeningIndex::parse(
            &get("screening.toml")?,
            &get("screening-list.json")?,
            &RestrictedParties::parse(&get("restricted-parties.csv")?)?,
        )?;
        let attesters = parse_attesters(&get("attesters.toml")?)?;
        let network = parse_network(&get("network.toml")?)?;
        let org_rules = cedar::OrgRules::parse(&get("org.cedarschema")?, &get("org.cedar")?)?;
        Ok(Self {
            tiers,
            models,
            organisations,
            requesters,
            licences,
            licences_by_licensee,
            screening,
            attesters,
            network,
            org_rules,
            tie,
            rules,
            veu,
            ownership: Ownership::new(),
        }
        .with_ownership())
    }
}
