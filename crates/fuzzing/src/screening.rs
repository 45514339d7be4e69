//! The Consolidated Screening List as trade.gov publishes it: `import_csl` (crates/pure/policy
//! screening.rs), the vault's stored form of what it imports, and the index built from it.

use crate::mode;
use arbitrary::{Arbitrary, Unstructured};
use weightvault_policy::data::{repository_files, RestrictedParties};
use weightvault_policy::screening::{
    import_csl, MatchKind, ScreeningConfig, ScreeningIndex, ScreeningList,
};

const SOURCES: [&str; 6] = [
    "Entity List (EL) - Bureau of Industry and Security",
    "Denied Persons List (DPL) - Bureau of Industry and Security",
    "Unverified List (UVL) - Bureau of Industry and Security",
    "Specially Designated Nationals (SDN) - Treasury Department",
    "Foreign Sanctions Evaders (FSE) - Treasury Department",
    "Odd source without a code",
];

#[derive(Arbitrary, Debug)]
struct Party {
    name: String,
    aliases: Vec<String>,
    source: u8,
    individual: bool,
}

/// Mode byte even: the rest, read as UTF-8 with invalid sequences replaced, is the CSL's JSON.
/// Odd: a CSL built from [`arbitrary`] parties through `serde_json`. Whatever imports must
/// survive the stored form's round trip unchanged, and screening each listed name must find
/// its party exactly.
pub fn csl_import(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    let text = if m % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Ok(parties) = Vec::<Party>::arbitrary(&mut Unstructured::new(rest)) else {
            return;
        };
        let results: Vec<serde_json::Value> = parties
            .iter()
            .take(64)
            .map(|p| {
                serde_json::json!({
                    "source": SOURCES[usize::from(p.source) % SOURCES.len()],
                    "name": p.name,
                    "alt_names": p.aliases,
                    "type": if p.individual { "Individual" } else { "Entity" },
                })
            })
            .collect();
        serde_json::json!({
            "sources_used": [{"source": SOURCES[0], "source_last_updated": "2026-11-30T05:00:00Z"}],
            "results": results,
        })
        .to_string()
    };
    let Ok(mut list) = import_csl(&text) else {
        return;
    };
    list.list_date
        .get_or_insert(time::macros::date!(2026 - 11 - 30));
    let stored = list.to_stored().expect("a dated list stores");
    let back = ScreeningList::from_stored(&stored).expect("the stored form reads back");
    assert_eq!(back, list, "the stored form changed the list");
    let files = repository_files();
    let config = ScreeningConfig::from_toml(&files["screening.toml"]).expect("repository config");
    let index = ScreeningIndex::build(config, list.clone(), &RestrictedParties::default());
    for p in list.parties.iter().take(16) {
        let hits = index.screen(&p.name);
        assert!(
            hits.iter()
                .any(|h| h.party == p && h.kind == MatchKind::Exact),
            "listed name {:?} does not find its party exactly: {hits:?}",
            p.name
        );
    }
}
