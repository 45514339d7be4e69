//! Tables: CSL import (accepted and refused), the configuration's errors with their lines, the
//! stored form's round trip, and screening decisions on a small list; then property tests.

use super::*;
use crate::data::Ctx;
use proptest::prelude::*;

/// The repository's own configuration: the tests below use its source actions, and say which
/// threshold they screen at where it matters.
const REPO_CONFIG: &str = include_str!("../../../../../policies/screening.toml");

fn config(text: &str) -> Result<ScreeningConfig, PolicyError> {
    ScreeningConfig::parse(&Ctx {
        file: "screening.toml",
        text,
    })
}

/// The repository's configuration with the fuzzy threshold set to `t`, so that these tables
/// test the matcher, not the tuned number.
fn config_at(t: f64) -> ScreeningConfig {
    let mut c = config(REPO_CONFIG).expect("policies/screening.toml is valid");
    c.threshold = t;
    c
}

const FIXTURE: &str = r#"{
  "total": 8,
  "sources_used": [
    {"source": "Entity List (EL) - Bureau of Industry and Security", "source_last_updated": "2026-11-30T05:01:00-05:00", "import_rate": "Hourly"},
    {"source": "Specially Designated Nationals (SDN) - Treasury Department", "last_imported": "2026-11-29T09:00:00+00:00"}
  ],
  "results": [
    {"id": "a1", "source": "Entity List (EL) - Bureau of Industry and Security", "entity_number": null, "type": null,
     "name": "Shenzhen Hengtai Electronics Technology Co., Ltd.",
     "alt_names": ["Hengtai Electronics", "HT Electronics Shenzhen"],
     "addresses": [{"address": "12 Keji Road", "city": "Shenzhen", "state": "Guangdong", "postal_code": "518057", "country": "CN"}],
     "programs": [], "start_date": "2024-03-01", "end_date": null, "ids": [],
     "federal_register_notice": "89 FR 12345", "source_list_url": "https://example.invalid", "remarks": null},
    {"source": "Specially Designated Nationals (SDN) - Treasury Department", "entity_number": 36123, "type": "Individual",
     "name": "PETROV, Ivan", "alt_names": null, "addresses": [{"country": "Russia"}], "programs": ["RUSSIA-EO14024"],
     "ids": [{"type": "Passport", "number": "7201234", "country": "RU"}]},
    {"source": "Specially Designated Nationals (SDN) - Treasury Department", "entity_number": "36124", "type": "Individual",
     "name": "SOKOLOV, Aleksandr Ivanovich", "alt_names": ["SOKOLOV, Alexander"], "addresses": []},
    {"source": "Unverified List (UVL) - Bureau of Industry and Security", "name": "Nordwind Trading FZE",
     "addresses": [{"country": "AE"}]},
    {"source": "Military End User (MEU) List - Bureau of Industry and Security", "name": "OOO Aviastar Inzhiniring",
     "alt_names": ["Aviastar Engineering JSC"]},
    {"source": "Denied Persons List (DPL) - Bureau of Industry and Security", "name": "Mohammed Al-Rashid", "type": "Individual"},
    {"source": "Entity List (EL) - Bureau of Industry and Security", "name": "Shadow Compute Limited", "addresses": [{"country": "AE"}]},
    {"source": "Non-SDN Menu-Based Sanctions List (NS-MBS List) - Treasury Department", "name": "Karavan Shipping Company",
     "alt_names": "Karavan Line; Caravan Shipping", "unknown_field": {"nested": [1, 2]}}
  ]
}"#;

fn index_at(t: f64) -> ScreeningIndex {
    ScreeningIndex::build(
        config_at(t),
        import_csl(FIXTURE).unwrap(),
        &RestrictedParties::default(),
    )
}

#[test]
fn the_fixture_imports_with_every_field_kept() {
    let l = import_csl(FIXTURE).unwrap();
    assert_eq!(l.list_date, Some(time::macros::date!(2026 - 11 - 30)));
    assert_eq!(l.sources.len(), 2);
    assert_eq!(l.parties.len(), 8);
    let codes: Vec<&str> = l.parties.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(
        codes,
        ["EL", "SDN", "SDN", "UVL", "MEU", "DPL", "EL", "NS-MBS"]
    );
    let h = &l.parties[0];
    assert_eq!(
        h.aliases,
        ["Hengtai Electronics", "HT Electronics Shenzhen"]
    );
    assert_eq!(h.countries, ["CN"]);
    assert_eq!(h.start_date.as_deref(), Some("2024-03-01"));
    assert_eq!(h.list_name(), "Entity List");
    let p = &l.parties[1];
    assert_eq!(p.entity_number.as_deref(), Some("36123"));
    assert_eq!(p.ids, ["Passport 7201234 (RU)"]);
    assert_eq!(p.programs, ["RUSSIA-EO14024"]);
    assert_eq!(p.countries, ["Russia"], "kept as listed, not guessed");
    assert_eq!(
        l.parties[7].aliases,
        ["Karavan Line", "Caravan Shipping"],
        "a '; '-joined alias string is split"
    );
}

#[test]
fn the_stored_form_round_trips() {
    let l = import_csl(FIXTURE).unwrap();
    let text = l.to_stored().unwrap();
    assert_eq!(
        text.lines().count(),
        l.parties.len() + 2,
        "a head line, one line per party, a closing line"
    );
    let back = ScreeningList::parse_stored(&Ctx {
        file: "screening-list.json",
        text: &text,
    })
    .unwrap();
    assert_eq!(back, l);
    let mut undated = l.clone();
    undated.list_date = None;
    assert_eq!(undated.to_stored(), Err(CslError::NoListDate));
}

#[test]
fn refused_csl_files_say_where() {
    let cases: &[(&str, &str)] = &[
        ("", "not JSON (line 1"),
        ("[1, 2]", "not an object with \"results\""),
        ("{\"total\": 0}", "no \"results\" array"),
        ("{\"results\": {}}", "\"results\" is not an array"),
        ("{\"results\": [1]}", "results[0].: not an object"),
        (
            r#"{"results": [{"source": "Entity List (EL)"}]}"#,
            "results[0].name: missing or empty",
        ),
        (
            r#"{"results": [{"source": "Entity List (EL)", "name": "A"}, {"name": "B"}]}"#,
            "results[1].source: missing or empty",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "  "}]}"#,
            "results[0].name: missing or empty",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "--"}]}"#,
            "results[0].name: '--' has no letters or digits",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": 7}]}"#,
            "results[0].name: expected a string, found a number",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "alt_names": [1]}]}"#,
            "results[0].alt_names[0]: expected a string, found a number",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "alt_names": true}]}"#,
            "results[0].alt_names: expected an array of strings, found a boolean",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "addresses": ["Moscow"]}]}"#,
            "results[0].addresses[0]: expected an object, found a string",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "addresses": [{"country": 1}]}]}"#,
            "results[0].addresses[0].country: expected a string",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "programs": "RUSSIA"}]}"#,
            "results[0].programs: expected an array, found a string",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "entity_number": []}]}"#,
            "results[0].entity_number: expected a number or string",
        ),
        (
            r#"{"results": [{"source": "X (EL)", "name": "A", "start_date": 20240301}]}"#,
            "results[0].start_date: expected a string, found a number",
        ),
        (
            r#"{"sources_used": [{"source": "X", "source_last_updated": "yesterday"}], "results": []}"#,
            "sources_used[0].source_last_updated: 'yesterday' does not start with a date",
        ),
        (
            r#"{"sources_used": 3, "results": []}"#,
            "\"sources_used\" is not an array",
        ),
    ];
    for (input, want) in cases {
        let err = import_csl(input).expect_err(input).to_string();
        assert!(err.contains(want), "{input}: got '{err}', want '{want}'");
    }
}

#[test]
fn accepted_csl_variants() {
    let cases: &[(&str, usize, Option<&str>)] = &[
        (r#"{"results": []}"#, 0, None),
        (r#"{"results": [], "sources_used": null}"#, 0, None),
        (
            r#"{"results": [{"source": "Entity List (EL) - BIS", "name": "A", "whatever": {"x": 1}}]}"#,
            1,
            None,
        ),
        (
            r#"{"sources_used": [{"source": "a", "last_imported": "2026-01-02"}, {"source": "b", "source_last_updated": "2026-03-04T00:00:00Z"}], "results": []}"#,
            0,
            Some("2026-03-04"),
        ),
    ];
    for (input, n, date) in cases {
        let l = import_csl(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(l.parties.len(), *n, "{input}");
        assert_eq!(l.list_date.map(|d| d.to_string()).as_deref(), *date);
    }
}

#[test]
fn source_codes() {
    let cases = [
        ("Entity List (EL) - Bureau of Industry and Security", "EL"),
        (
            "Denied Persons List (DPL) - Bureau of Industry and Security",
            "DPL",
        ),
        (
            "Military End User (MEU) List - Bureau of Industry and Security",
            "MEU",
        ),
        (
            "Unverified List (UVL) - Bureau of Industry and Security",
            "UVL",
        ),
        (
            "Specially Designated Nationals (SDN) - Treasury Department",
            "SDN",
        ),
        (
            "Non-SDN Menu-Based Sanctions List (NS-MBS List) - Treasury Department",
            "NS-MBS",
        ),
        (
            "Non-SDN Chinese Military-Industrial Complex Companies List (CMIC)",
            "CMIC",
        ),
        ("A list without a code", "A list without a code"),
        ("Broken (", "Broken ("),
    ];
    for (source, code) in cases {
        assert_eq!(source_code(source), code, "{source}");
    }
}

#[test]
fn configuration_errors_name_the_line() {
    let cases: &[(&str, &str, &str, usize)] = &[
        (
            "UVL = \"review\"",
            "UVL = \"allow\"",
            "'allow' is not an action",
            0,
        ),
        (
            "UVL = \"review\"",
            "uvl = \"review\"",
            "source code 'uvl'",
            0,
        ),
        (
            "threshold = ",
            "threshold = 1.5 #",
            "threshold must be above 0",
            0,
        ),
        (
            "threshold = ",
            "threshold = 0 #",
            "threshold must be above 0",
            0,
        ),
        (
            "common_word_names = ",
            "common_word_names = 0 #",
            "at least 1",
            0,
        ),
        (
            "phonetic_similarity = ",
            "phonetic_similarity = 0.1 #",
            "below word_floor",
            0,
        ),
        ("[fuzzy]", "[fuzzy]\nspeed = 3", "unknown field `speed`", 0),
        ("other_sources", "others", "unknown field `others`", 0),
    ];
    for (from, to, want, _) in cases {
        assert!(REPO_CONFIG.contains(from), "{from}");
        let text = REPO_CONFIG.replacen(from, to, 1);
        let err = config(&text).expect_err(to);
        let line = 1 + text[..text.find(to).unwrap()].matches('\n').count();
        assert!(err.message.contains(want), "{to}: got '{err}'");
        assert_eq!(err.file, "screening.toml");
        if !want.starts_with("unknown field") {
            assert_eq!(err.line, line, "{to}: {err}");
        }
    }
}

/// What a screening should find: the party's name, exact or fuzzy, and the action.
type Want = Option<(&'static str, bool, ScreenAction)>;

#[test]
fn screening_decisions() {
    use ScreenAction::*;
    // At 0.88 (the repository's tuned value may differ; this table tests the matcher).
    let idx = index_at(0.88);
    let cases: &[(&str, &str, Want)] = &[
        (
            "exact name, legal form spelled out",
            "Shenzhen Hengtai Electronics Technology Company Limited",
            Some((
                "Shenzhen Hengtai Electronics Technology Co., Ltd.",
                true,
                Deny,
            )),
        ),
        (
            "exact alias",
            "HENGTAI ELECTRONICS",
            Some((
                "Shenzhen Hengtai Electronics Technology Co., Ltd.",
                true,
                Deny,
            )),
        ),
        (
            "typo: transposed letters",
            "Hnegtai Electronics",
            Some((
                "Shenzhen Hengtai Electronics Technology Co., Ltd.",
                false,
                Review,
            )),
        ),
        (
            "typo: a letter dropped",
            "Hengtai Electroncs",
            Some((
                "Shenzhen Hengtai Electronics Technology Co., Ltd.",
                false,
                Review,
            )),
        ),
        (
            "SDN individual, given name first",
            "Ivan Petrov",
            Some(("PETROV, Ivan", true, Deny)),
        ),
        (
            "SDN individual, as listed",
            "Petrov, Ivan",
            Some(("PETROV, Ivan", true, Deny)),
        ),
        (
            "SDN alias, transliterated differently",
            "Aleksandr Sokolov",
            Some(("SOKOLOV, Aleksandr Ivanovich", false, Review)),
        ),
        (
            "SDN alias exactly",
            "Alexander Sokolov",
            Some(("SOKOLOV, Aleksandr Ivanovich", true, Deny)),
        ),
        (
            "Unverified List: exact only reviews",
            "Nordwind Trading",
            Some(("Nordwind Trading FZE", true, Review)),
        ),
        (
            "MEU: leading legal form dropped",
            "Aviastar Inzhiniring",
            Some(("OOO Aviastar Inzhiniring", true, Deny)),
        ),
        (
            "DPL: transliteration",
            "Muhammad Al Rashid",
            Some(("Mohammed Al-Rashid", false, Review)),
        ),
        (
            "DPL: word order is fuzzy, never exact",
            "Al-Rashid Mohammed",
            Some(("Mohammed Al-Rashid", false, Review)),
        ),
        (
            "other source (NS-MBS): other_sources",
            "Caravan Shipping",
            Some(("Karavan Shipping Company", true, Review)),
        ),
        (
            "legal form changed",
            "Shadow Compute Ltd.",
            Some(("Shadow Compute Limited", true, Deny)),
        ),
        (
            "shares a legal form and a common word",
            "Sunrise Compute Ltd",
            None,
        ),
        (
            "shares only the legal form",
            "Acme Electronics Co., Ltd.",
            None,
        ),
        (
            "shares the industry words only",
            "Electronics Technology",
            None,
        ),
        ("same given name, another surname", "Ivan Smirnov", None),
        ("same surname, another given name", "Sergei Petrov", None),
        ("unrelated", "Alice Anderson", None),
        ("nothing to screen", " -- ", None),
    ];
    for (why, query, want) in cases {
        let hits = idx.screen(query);
        let got = hits
            .first()
            .map(|h| (h.party.name.as_str(), h.kind == MatchKind::Exact, h.action));
        assert_eq!(got, *want, "{why}: '{query}' gave {hits:#?}");
    }
}

#[test]
fn sentences_say_what_matched_and_why() {
    let idx = index_at(0.88);
    let h = &idx.screen("Hengtai Electronics")[0];
    assert_eq!(
        h.sentence("organisation", "Hengtai Electronics"),
        "organisation Hengtai Electronics matches alias 'Hengtai Electronics' of Shenzhen Hengtai Electronics Technology Co., Ltd. (Entity List, CSL of 2026-11-30) exactly: deny"
    );
    let h = &idx.screen("Muhammad Al Rashid")[0];
    let s = h.sentence("end user", "Muhammad Al Rashid");
    assert!(
        s.starts_with("end user Muhammad Al Rashid matches 'Mohammed Al-Rashid' (Denied Persons List, CSL of 2026-11-30) fuzzy 0.")
            && s.ends_with(" >= 0.88: review"),
        "{s}"
    );
}

#[test]
fn hand_entered_parties_deny_on_an_exact_match() {
    let csv = "name,country,list\nGlobex Shadow Labs,AE,Entity List (example)\n";
    let hand = RestrictedParties::parse(&Ctx {
        file: "restricted-parties.csv",
        text: csv,
    })
    .unwrap();
    let idx = ScreeningIndex::build(config_at(0.88), import_csl(FIXTURE).unwrap(), &hand);
    assert_eq!((idx.len(), idx.hand_entered()), (9, 1));
    let h = &idx.screen("Globex Shadow Labs Ltd")[0];
    assert_eq!((h.kind, h.action), (MatchKind::Exact, ScreenAction::Deny));
    assert_eq!(h.provenance, "hand-entered list");
    let h = &idx.screen("Globex Shadow Lab")[0];
    assert_eq!(h.action, ScreenAction::Review, "fuzzy only reviews");
}

#[test]
fn the_threshold_decides_fuzzy_hits() {
    // The same near miss is held at a low threshold and passes at a high one.
    let q = "Hengtai Electroncs";
    let score = match index_at(0.5).screen(q)[0].kind {
        MatchKind::Fuzzy { score, .. } => score,
        k => panic!("{k:?}"),
    };
    assert!(score < 1.0);
    assert!(!index_at(score).screen(q).is_empty());
    assert!(index_at((score + 0.01).min(1.0)).screen(q).is_empty());
}

#[test]
fn a_stored_list_refused_names_the_line() {
    let l = import_csl(FIXTURE).unwrap();
    let good = l.to_stored().unwrap();
    let cases: &[(&str, &str, &str, usize)] = &[
        (
            "\"name\":\"Nordwind Trading FZE\"",
            "\"name\":\"..\"",
            "party 3: name",
            5,
        ),
        (
            "\"name\":\"Nordwind Trading FZE\"",
            "\"nom\":\"x\"",
            "unknown field `nom`",
            5,
        ),
        (
            "\"list_date\":\"2026-11-30\"",
            "\"list_date\":\"30/11/2026\"",
            "is not a date",
            0,
        ),
        (
            "weightvault-screening-list/1",
            "weightvault-screening-list/9",
            "import the list again",
            0,
        ),
        ("\n]}", "\n", "EOF", 11),
    ];
    for (from, to, want, line) in cases {
        assert!(good.contains(from), "{from}");
        let text = good.replacen(from, to, 1);
        let err = ScreeningList::parse_stored(&Ctx {
            file: "screening-list.json",
            text: &text,
        })
        .expect_err(to);
        assert!(err.message.contains(want), "{to}: {err}");
        if *line > 0 {
            assert_eq!(err.line, *line, "{to}: {err}");
        }
    }
}

fn json_ish() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("name"),
                        Just("source"),
                        Just("alt_names"),
                        Just("addresses"),
                        Just("country"),
                        Just("ids"),
                        Just("programs"),
                        Just("entity_number"),
                        Just("results"),
                        Just("sources_used"),
                        Just("last_imported"),
                        Just("x"),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|v| format!(
                "{{{}}}",
                v.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

fn word() -> impl Strategy<Value = String> {
    "[A-Za-zà-öø-ÿ]{1,9}"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..4).prop_map(|w| w.join(" "))
}

fn listed() -> impl Strategy<Value = (String, Vec<String>, usize)> {
    (name(), prop::collection::vec(name(), 0..3), 0usize..6)
}

const SOURCES: [&str; 6] = [
    "Entity List (EL) - Bureau of Industry and Security",
    "Denied Persons List (DPL) - Bureau of Industry and Security",
    "Military End User (MEU) List - Bureau of Industry and Security",
    "Unverified List (UVL) - Bureau of Industry and Security",
    "Specially Designated Nationals (SDN) - Treasury Department",
    "Foreign Sanctions Evaders (FSE) - Treasury Department",
];

proptest! {
    #[test]
    fn import_never_panics(body in json_ish(), raw in ".{0,200}") {
        let _ = import_csl(&body);
        let _ = import_csl(&format!("{{\"results\":[{body}]}}"));
        let _ = import_csl(&format!("{{\"results\":{body},\"sources_used\":{body}}}"));
        let _ = import_csl(&raw);
    }

    #[test]
    fn a_listed_name_or_alias_always_hits_its_party_exactly(
        parties in prop::collection::vec(listed(), 1..12),
        pick in any::<prop::sample::Index>(),
        alias in any::<prop::sample::Index>(),
    ) {
        let results: Vec<serde_json::Value> = parties
            .iter()
            .map(|(n, a, s)| serde_json::json!({"source": SOURCES[*s], "name": n, "alt_names": a}))
            .collect();
        let text = serde_json::json!({"results": results}).to_string();
        let list = import_csl(&text).unwrap();
        let cfg = config_at(0.88);
        let idx = ScreeningIndex::build(cfg.clone(), list.clone(), &RestrictedParties::default());
        let p = pick.get(&list.parties);
        let names: Vec<&String> = std::iter::once(&p.name).chain(&p.aliases).collect();
        let query = alias.get(&names);
        let hits = idx.screen(query);
        let hit = hits.iter().find(|h| h.party == p);
        prop_assert!(hit.is_some(), "{query}: {hits:?}");
        let hit = hit.unwrap();
        prop_assert_eq!(hit.kind, MatchKind::Exact);
        prop_assert_eq!(hit.action, cfg.exact_action(&p.code));
        let want = match p.code.as_str() {
            "EL" | "DPL" | "MEU" | "SDN" => ScreenAction::Deny,
            _ => ScreenAction::Review,
        };
        prop_assert_eq!(hit.action, want);
    }
}
