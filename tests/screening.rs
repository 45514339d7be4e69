//! Restricted-party screening end to end: a generated 10,000-entry Consolidated Screening List
//! (crates/testkit's `csl::generate`, in the JSON shape trade.gov publishes) imported through
//! the real `weightvault policy import-csl`, loaded with the rest of the policy set, and
//! screened: an exact alias denies, a transliteration is held for review, an unrelated name
//! sharing a legal form passes, and the precision and recall of "flagged" (deny or review) at
//! the threshold in `policies/screening.toml` are measured on a labelled set built from the
//! list (printed; only sane floors asserted).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use weightvault::local::PolicyDir;
use weightvault::policy::data::RestrictedParties;
use weightvault::policy::names::normalise;
use weightvault::policy::screening::{MatchKind, ScreenAction, ScreeningIndex, ScreeningList};
use weightvault::policy::{
    decide, CheckId, HostClaims, NoGeo, PolicyData, ReleaseRequest, Verdict,
};
use weightvault_testkit::csl;

const LIST_DATE: &str = "2026-11-30";

/// A copy of the repository's policies/ in `tmp`, to import into.
fn policy_copy(tmp: &Path) -> PathBuf {
    let dir = tmp.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in weightvault::policy::data::FILES {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn import(csl_file: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weightvault"))
        .arg("--json")
        .args(["policy", "import-csl"])
        .arg(csl_file)
        .arg("--policies")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn request(who: &str) -> ReleaseRequest {
    let now = time::macros::datetime!(2026-12-01 12:00 UTC);
    ReleaseRequest {
        requester: who.into(),
        model: "all-minilm-l6-v2".into(),
        sealed_facts: None,
        host: HostClaims {
            host_id: "h".into(),
            country: "DE".into(),
            region: "r".into(),
            attester: "weightvault-test-attester".into(),
            issued_at: now,
            expires_at: now,
            signature_valid: true,
            nonce_fresh: true,
            facility: None,
        },
        source_ip: None,
        time: now,
        used: Default::default(),
        size: 0,
        approvals: vec![],
        dry_run: true,
    }
}

fn screening_verdict(p: &PolicyData, who: &str) -> (Verdict, String) {
    let d = decide(p, &NoGeo, &request(who));
    let c = d
        .checks
        .iter()
        .find(|c| c.check == CheckId::RestrictedParties)
        .unwrap();
    (c.verdict, c.reason.clone())
}

#[test]
fn a_generated_csl_imports_screens_and_is_measured() {
    let tmp = common::scratch();
    let dir = policy_copy(tmp.path());
    let text = csl::generate(10_000, 2026, LIST_DATE);
    let file = tmp.path().join("consolidated.json");
    std::fs::write(&file, &text).unwrap();

    // Import through the binary; the report is docs/CLI.md's shape.
    let out = import(&file, &dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = entries["results"].as_array().unwrap();
    let aliases: usize = results
        .iter()
        .map(|e| e["alt_names"].as_array().unwrap().len())
        .sum();
    assert_eq!(report["parties"], 10_000);
    assert_eq!(report["aliases"], aliases);
    assert_eq!(report["list_date"], LIST_DATE);
    assert_eq!(
        report["file"].as_str(),
        Some(dir.join("screening-list.json").to_str().unwrap())
    );
    let per_source: BTreeMap<String, u64> =
        serde_json::from_value(report["sources"].clone()).unwrap();
    assert_eq!(per_source.values().sum::<u64>(), 10_000);
    for code in ["EL", "DPL", "MEU", "UVL", "SDN"] {
        assert!(
            per_source.get(code).copied().unwrap_or(0) > 0,
            "{code}: {per_source:?}"
        );
    }
    assert!(!dir.join(".screening-list.json.tmp").exists());

    let p = PolicyDir::new(&dir)
        .load()
        .expect("the imported list loads");
    let hand = p.screening.hand_entered();
    assert_eq!(p.screening.len(), 10_000 + hand);
    assert_eq!(p.screening.list_date().unwrap().to_string(), LIST_DATE);

    // An exact alias of an Entity List or SDN party denies.
    let (alias, party) = results
        .iter()
        .filter(|e| {
            let s = e["source"].as_str().unwrap();
            s == csl::sources::EL || s == csl::sources::SDN
        })
        .find_map(|e| {
            let name = e["name"].as_str().unwrap();
            let a = e["alt_names"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| normalise(a) != normalise(name))?;
            Some((a.to_string(), name.to_string()))
        })
        .unwrap();
    let hits = p.screening.screen(&alias);
    let hit = hits.iter().find(|h| h.party.name == party).unwrap();
    assert_eq!(
        (hit.kind, hit.action),
        (MatchKind::Exact, ScreenAction::Deny)
    );
    assert!(hit.alias > 0, "{hit:?}");

    // A transliteration (another spelling of a listed name, equal to no listed name) is held
    // for review, never denied.
    let set = csl::labelled(&text, 300, 7);
    let translit = set
        .iter()
        .find(|l| {
            l.kind == "transliteration"
                && p.screening
                    .screen(&l.query)
                    .iter()
                    .all(|h| h.kind != MatchKind::Exact)
        })
        .unwrap();
    let hits = p.screening.screen(&translit.query);
    assert!(!hits.is_empty(), "{translit:?}");
    assert!(
        hits.iter().all(|h| h.action == ScreenAction::Review),
        "{translit:?}: {hits:?}"
    );

    // An unrelated name that shares a legal form and an industry word passes.
    for q in [
        "Azure Willow Ceramics Co., Ltd.",
        "Lantern Meadow Trading Limited",
        "OOO Rybdom",
    ] {
        assert!(
            p.screening.screen(q).is_empty(),
            "{q}: {:?}",
            p.screening.screen(q)
        );
    }

    // Precision and recall of "flagged" at the configured threshold.
    let threshold = p.screening.config().threshold;
    let mut by_kind: BTreeMap<(&str, bool), (usize, usize)> = BTreeMap::new();
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for l in &set {
        let flagged = !p.screening.screen(&l.query).is_empty();
        let e = by_kind.entry((l.kind, l.listed)).or_default();
        e.0 += usize::from(flagged);
        e.1 += 1;
        match (l.listed, flagged) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    let positives = set.iter().filter(|l| l.listed).count();
    println!(
        "labelled set: {positives} positives, {} negatives; threshold {threshold:.2}: precision {precision:.3}, recall {recall:.3}",
        set.len() - positives
    );
    for ((kind, listed), (flagged, n)) in &by_kind {
        println!(
            "  {:<9} {kind:<20} flagged {flagged:>4} of {n}",
            if *listed { "positive" } else { "negative" }
        );
    }
    // The same set at other thresholds (an index that reports every fuzzy score from 0.5 up),
    // for choosing the one in screening.toml.
    let mut low = p.screening.config().clone();
    low.threshold = 0.5;
    let stored = std::fs::read_to_string(dir.join("screening-list.json")).unwrap();
    let sweep = ScreeningIndex::build(
        low,
        ScreeningList::from_stored(&stored).unwrap(),
        &RestrictedParties::default(),
    );
    let best: Vec<(bool, f64)> = set
        .iter()
        .map(|l| {
            let top = sweep.screen(&l.query).into_iter().map(|h| match h.kind {
                MatchKind::Exact => 1.0,
                MatchKind::Fuzzy { score, .. } => score,
            });
            (l.listed, top.fold(0.0, f64::max))
        })
        .collect();
    let mut line = String::from("threshold sweep (precision/recall):");
    for t in [0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94] {
        let tp = best.iter().filter(|(l, s)| *l && *s >= t).count();
        let fp = best.iter().filter(|(l, s)| !*l && *s >= t).count();
        line.push_str(&format!(
            " {t:.2}: {:.3}/{:.3}",
            tp as f64 / (tp + fp).max(1) as f64,
            tp as f64 / positives as f64
        ));
    }
    println!("{line}");
    if std::env::var_os("SCREENING_MISSES").is_some() {
        for l in &set {
            let hits = p.screening.screen(&l.query);
            if l.listed == hits.is_empty() {
                println!(
                    "  miss: {:?} {:?} from {:?}: {:?}",
                    l.kind,
                    l.query,
                    l.from,
                    hits.first().map(|h| (h.party.name.clone(), h.kind))
                );
            }
        }
    }
    assert!(positives > 1000 && set.len() - positives > 1000);
    assert!(precision >= 0.9, "precision {precision:.3}");
    assert!(recall >= 0.9, "recall {recall:.3}");

    // Through the decision: a person named like a listed SDN individual fails the check, an
    // organisation named like an Unverified List party is held for review.
    let sdn_person = results
        .iter()
        .find(|e| e["source"] == csl::sources::SDN && e["type"] == "Individual")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let uvl_org = results
        .iter()
        .find(|e| e["source"] == csl::sources::UVL && e["type"] == "Entity")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let people = dir.join("people.toml");
    let mut t = std::fs::read_to_string(&people).unwrap();
    t.push_str(&format!(
        "\n[[organisation]]\nid = \"listed-uvl\"\nname = {uvl_org:?}\ncountry = \"DE\"\n\
         [[workload]]\nid = \"spiffe://uvl.example/sa\"\norganisation = \"listed-uvl\"\n\
         [[person]]\nid = \"listed@acme.example\"\nname = {sdn_person:?}\norganisation = \"acme\"\nus_status = \"none\"\ncitizenship = [{{ country = \"DE\", acquired = 1980-01-01 }}]\n"
    ));
    std::fs::write(&people, t).unwrap();
    let p = PolicyDir::new(&dir).load().unwrap();
    let (v, why) = screening_verdict(&p, "listed@acme.example");
    assert_eq!(v, Verdict::Fail, "{why}");
    assert!(
        why.contains("exactly: deny") && why.contains("Specially Designated Nationals"),
        "{why}"
    );
    let (v, why) = screening_verdict(&p, "spiffe://uvl.example/sa");
    assert_eq!(v, Verdict::Review, "{why}");
    assert!(
        why.contains("Unverified List") && why.ends_with(": review"),
        "{why}"
    );
    let (v, why) = screening_verdict(&p, "alice@acme.example");
    assert_eq!(v, Verdict::Pass, "{why}");
}

#[test]
fn import_csl_refuses_what_it_cannot_use_and_leaves_the_old_list() {
    let tmp = common::scratch();
    let dir = policy_copy(tmp.path());
    let before = std::fs::read(dir.join("screening-list.json")).unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "{\"results\": [{\"source\": \"Entity List (EL)\"}]}",
            &[],
            "results[0].name: missing",
        ),
        ("not json", &[], "not JSON"),
        ("{\"results\": []}", &[], "--list-date"),
        (
            "{\"results\": []}",
            &["--list-date", "30.11.2026"],
            "expected YYYY-MM-DD",
        ),
    ];
    for (body, extra, want) in cases {
        let f = tmp.path().join("bad.json");
        std::fs::write(&f, body).unwrap();
        let out = import(&f, &dir, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(err.contains(want), "{body}: {err}");
        assert_eq!(
            std::fs::read(dir.join("screening-list.json")).unwrap(),
            before
        );
    }
    // A file with no sources_used imports with --list-date.
    let f = tmp.path().join("dated.json");
    std::fs::write(
        &f,
        r#"{"results": [{"source": "Entity List (EL) - Bureau of Industry and Security", "name": "Kvantprom"}]}"#,
    )
    .unwrap();
    let out = import(&f, &dir, &["--list-date", "2026-12-24"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["parties"].as_u64(), r["list_date"].as_str()),
        (Some(1), Some("2026-12-24"))
    );
    let p = PolicyDir::new(&dir).load().unwrap();
    assert_eq!(
        p.screening.screen("KVANTPROM LLC")[0].action,
        ScreenAction::Deny
    );
}

/// The shipped list is what `import-csl` makes of the fixture: regenerate it with
/// `weightvault policy import-csl tests/fixtures/csl/sample.json --policies policies`.
#[test]
fn the_shipped_list_is_the_imported_fixture() {
    let tmp = common::scratch();
    let dir = policy_copy(tmp.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = import(&root.join("tests/fixtures/csl/sample.json"), &dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("screening-list.json")).unwrap(),
        std::fs::read_to_string(root.join("policies/screening-list.json")).unwrap(),
        "policies/screening-list.json is stale: import tests/fixtures/csl/sample.json again"
    );
}

/// The end users named by the licence a release relies on are screened too: a listed party
/// added as an end user of Globex's licence fails the check for Globex's requester.
#[test]
fn a_licence_end_user_is_screened() {
    let tmp = common::scratch();
    let dir = policy_copy(tmp.path());
    let lic = dir.join("licences.toml");
    let t = std::fs::read_to_string(&lic).unwrap();
    let from = "end_users = [\"globex\"]";
    assert!(t.contains(from));
    std::fs::write(
        &lic,
        t.replacen(from, "end_users = [\"globex\", \"shadow\"]", 1),
    )
    .unwrap();
    let p = PolicyDir::new(&dir).load().unwrap();
    let mut r = request("raj@globex.example");
    r.model = "acme-frontier".into();
    r.host.country = "IN".into();
    let d = decide(&p, &NoGeo, &r);
    let c = |id| d.checks.iter().find(|c| c.check == id).unwrap();
    assert_eq!(
        c(CheckId::Licence).verdict,
        Verdict::Pass,
        "{:?}",
        c(CheckId::Licence)
    );
    let s = c(CheckId::RestrictedParties);
    assert_eq!(s.verdict, Verdict::Fail, "{s:?}");
    assert!(
        s.reason
            .contains("licence end user Shadow Compute Ltd. matches"),
        "{}",
        s.reason
    );
    // Without the listed end user the same release passes the check.
    let p = PolicyDir::new(policy_copy(&tmp.path().join("again")).as_path())
        .load()
        .unwrap();
    let d = decide(&p, &NoGeo, &r);
    let s = d
        .checks
        .iter()
        .find(|c| c.check == CheckId::RestrictedParties)
        .unwrap();
    assert_eq!(s.verdict, Verdict::Pass, "{s:?}");
}
