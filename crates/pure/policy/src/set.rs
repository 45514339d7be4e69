//! Everything in a policy set, parsed and validated together from the texts of its files.

use crate::cedar;
use crate::data::*;
use crate::screening::ScreeningIndex;
use std::collections::{BTreeMap, HashMap};

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
}

impl PolicyData {
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
        let (organisations, requesters) = parse_people(&people)?;
        let mctx = get("models.toml")?;
        let (models, owners) = parse_models(&mctx)?;
        for o in owners {
            if !organisations.contains_key(o.get_ref()) {
                return Err(mctx.at(&o, format!("unknown owner organisation '{}'", o.get_ref())));
            }
        }
        let licences = parse_licences(&get("licences.toml")?, &organisations, &requesters)?;
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
        })
    }
}
