//! The release decision against the project's own `policies/` and the real IP-geolocation
//! database: a table of cases (one row each: inputs, expected outcome, expected failing
//! checks), loader errors with file and line, and property tests.

mod common;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use weightvault::local::PolicyDir;
use weightvault::policy::CheckId::{self, *};
use weightvault::policy::PolicyData;
use weightvault::policy::{decide, Authority, HostClaims, MaxMindGeo, ReleaseRequest, Verdict};
use weightvault::store::TrainingFacts;

fn policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn read_policy_files() -> BTreeMap<String, String> {
    weightvault::policy::data::FILES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(policy_dir().join(f)).unwrap(),
            )
        })
        .collect()
}

fn policy() -> &'static PolicyData {
    static P: OnceLock<PolicyData> = OnceLock::new();
    P.get_or_init(|| {
        PolicyDir::new(policy_dir())
            .load()
            .expect("policies/ loads")
    })
}

fn geo() -> &'static MaxMindGeo {
    static G: OnceLock<MaxMindGeo> = OnceLock::new();
    G.get_or_init(|| {
        let db = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-data/geoip/geo-whois-asn-country.mmdb");
        if !db.exists() {
            let st = std::process::Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-geoip"))
                .status()
                .unwrap();
            assert!(st.success(), "tools/fetch-geoip failed");
        }
        MaxMindGeo::from_bytes(std::fs::read(db).unwrap()).unwrap()
    })
}

/// Addresses the database places in each country (checked by `addresses_geolocate`).
fn ip_in(cc: &str) -> IpAddr {
    match cc {
        "US" => "8.8.8.8",
        "IN" => "49.44.0.1",
        "CN" => "114.114.114.114",
        "KP" => "175.45.176.1",
        "DE" => "31.253.230.1",
        "BR" => "200.160.0.1",
        "SG" => "43.81.130.1",
        "AE" => "91.74.212.1",
        "CY" => "82.102.102.1",
        "MO" => "202.175.53.1",
        "JP" => "202.12.27.33",
        "CA" => "142.119.176.1",
        "NL" => "145.100.0.1",
        _ => "41.78.0.1", // in no country
    }
    .parse()
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Ok,
    UntrustedAttester,
    BadSignature,
    ReusedNonce,
    Expired,
    FromTheFuture,
}

#[derive(Clone)]
struct Row {
    name: &'static str,
    who: &'static str,
    cc: &'static str,
    region: &'static str,
    model: &'static str,
    date: OffsetDateTime,
    ip: Option<IpAddr>,
    ev: Ev,
    facts: Option<TrainingFacts>,
    allow: bool,
    fail: Vec<CheckId>,
    /// (check, text its reason must contain)
    says: Option<(CheckId, &'static str)>,
    /// Bytes the release would let out.
    size: u64,
}

const D: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);
const ACME_WL: &str = "spiffe://acme.example/ns/serving/sa/llm";

fn row(name: &'static str, who: &'static str, cc: &'static str, model: &'static str) -> Row {
    Row {
        name,
        who,
        cc,
        region: "east",
        model,
        date: D,
        ip: Some(ip_in(cc)),
        ev: Ev::Ok,
        facts: None,
        allow: true,
        fail: vec![],
        says: None,
        size: 90_000_000,
    }
}

impl Row {
    fn deny(mut self, fail: &[CheckId]) -> Self {
        self.allow = false;
        self.fail = fail.to_vec();
        self
    }
    fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }
    fn on(mut self, d: OffsetDateTime) -> Self {
        self.date = d;
        self
    }
    fn source(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
    fn no_ip(mut self) -> Self {
        self.ip = None;
        self
    }
    fn region(mut self, r: &'static str) -> Self {
        self.region = r;
        self
    }
    fn ev(mut self, e: Ev) -> Self {
        self.ev = e;
        self
    }
    fn facts(mut self, open: bool, ops: f64) -> Self {
        self.facts = Some(TrainingFacts {
            eccn: None,
            training_ops: Some(ops),
            open_weights: open,
        });
        self
    }
    fn says(mut self, c: CheckId, text: &'static str) -> Self {
        self.says = Some((c, text));
        self
    }
    fn request(&self) -> ReleaseRequest {
        let (issued, expires) = match self.ev {
            Ev::Expired => (
                self.date - Duration::minutes(10),
                self.date - Duration::minutes(5),
            ),
            Ev::FromTheFuture => (
                self.date + Duration::minutes(1),
                self.date + Duration::minutes(6),
            ),
            _ => (
                self.date - Duration::minutes(1),
                self.date + Duration::minutes(4),
            ),
        };
        ReleaseRequest {
            requester: self.who.into(),
            model: self.model.into(),
            sealed_facts: self.facts.clone(),
            host: HostClaims {
                host_id: "host-1".into(),
                country: self.cc.into(),
                region: self.region.into(),
                attester: if matches!(self.ev, Ev::UntrustedAttester) {
                    "someone-else"
                } else {
                    "weightvault-test-attester"
                }
                .into(),
                issued_at: issued,
                expires_at: expires,
                signature_valid: !matches!(self.ev, Ev::BadSignature),
                nonce_fresh: !matches!(self.ev, Ev::ReusedNonce),
            },
            source_ip: self.ip,
            time: self.date,
            used: Default::default(),
            size: self.size,
            dry_run: false,
        }
    }
}

fn table() -> Vec<Row> {
    let d = |y, m, dd| {
        time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), dd)
            .unwrap()
            .with_hms(12, 0, 0)
            .unwrap()
            .assume_utc()
    };
    vec![
        // Tier 1 and the licence exception.
        row("tier-1 workload", ACME_WL, "US", "acme-frontier")
            .says(Licence, "License Exception AIA"),
        row("tier-1 person", "alice@acme.example", "US", "acme-frontier"),
        row(
            "tier-1 partner country",
            "alice@acme.example",
            "DE",
            "acme-frontier",
        ),
        row("tier-1 Japan", ACME_WL, "JP", "acme-frontier"),
        // Licences.
        row(
            "tier-2 licensee person",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .says(Licence, "D-2026-0001"),
        row(
            "tier-2 licensee workload",
            "spiffe://globex.example/ns/inference/sa/llm",
            "IN",
            "acme-frontier",
        ),
        row(
            "licence for another country",
            "spiffe://globex.example/ns/inference/sa/llm",
            "BR",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(Licence, "does not cover BR"),
        row(
            "licence on its last day",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .on(d(2029, 12, 31)),
        // D-2026-0001: 20,000,000,000 bytes, 270,000,000 used.
        row(
            "licence bytes: exactly what is left",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .size(19_730_000_000)
        .says(Licence, "19730000000 more in this release"),
        row(
            "licence bytes: one byte more than is left",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .size(19_730_000_001)
        .deny(&[Licence, DeemedExport])
        .says(
            Licence,
            "byte allocation used up (270000000 of 20000000000 bytes used",
        ),
        row(
            "licence the day after",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .on(d(2030, 1, 1))
        .deny(&[Licence, DeemedExport])
        .says(Licence, "expired"),
        row(
            "licence the day before",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .on(d(2025, 12, 31))
        .deny(&[Licence, DeemedExport]),
        row(
            "suspended licence",
            "spiffe://initech.example/sa/llm",
            "BR",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(Licence, "suspended"),
        row(
            "allocation used up",
            "spiffe://hooli.example/sa/llm",
            "SG",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(Licence, "5 of 5"),
        row(
            "expired licence, other for wrong ECCN",
            "spiffe://umbrella.example/sa/llm",
            "AE",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(Licence, "covers 5D002"),
        row(
            "licence valid then",
            "spiffe://umbrella.example/sa/llm",
            "AE",
            "acme-frontier",
        )
        .on(d(2025, 6, 1)),
        row("revoked licence", ACME_WL, "IN", "acme-frontier")
            .deny(&[Licence])
            .says(Licence, "revoked"),
        row("no licence at all", ACME_WL, "BR", "acme-frontier").deny(&[Licence]),
        // Restricted parties.
        row(
            "restricted organisation (Ltd. vs Limited)",
            "spiffe://shadow.example/sa/llm",
            "AE",
            "acme-frontier",
        )
        .deny(&[Licence, RestrictedParties])
        .says(RestrictedParties, "Shadow Compute Limited"),
        row(
            "restricted end user (case)",
            "ivan@globex.example",
            "IN",
            "acme-frontier",
        )
        .deny(&[RestrictedParties])
        .says(RestrictedParties, "IVAN PETROV"),
        row(
            "restricted organisation (accents, hyphen, GmbH)",
            "spiffe://nordlicht.example/sa/llm",
            "DE",
            "all-minilm-l6-v2",
        )
        .deny(&[RestrictedParties])
        .says(RestrictedParties, "Nordlicht Rechenzentrum GmbH"),
        row(
            "restricted party, open weights too",
            "spiffe://shadow.example/sa/llm",
            "AE",
            "all-minilm-l6-v2",
        )
        .deny(&[RestrictedParties]),
        // Deemed export.
        row(
            "dual national without clearance",
            "bob@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[DeemedExport])
        .says(DeemedExport, "CN"),
        row(
            "dual national with clearance",
            "carol@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "D-2026-DE-0042"),
        row(
            "clearance lapsed",
            "carol@acme.example",
            "US",
            "acme-frontier",
        )
        .on(d(2029, 7, 1))
        .deny(&[DeemedExport]),
        row(
            "tier-3 national in a tier-1 country",
            "dmitri@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[DeemedExport])
        .says(DeemedExport, "RU"),
        row(
            "tier-3 national, uncontrolled model",
            "dmitri@acme.example",
            "US",
            "acme-small",
        ),
        row(
            "workload has no nationality",
            ACME_WL,
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "workload"),
        // Organisation rules.
        row(
            "cedar forbid over a clean release",
            "mallory@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[OrgRules])
        .says(OrgRules, "mallory-access-suspended"),
        row(
            "cedar forbid on quarantine region",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .region("quarantine")
        .deny(&[OrgRules])
        .says(OrgRules, "no-quarantined-hosts"),
        row(
            "no permit for a partner's other model",
            "spiffe://globex.example/ns/inference/sa/llm",
            "IN",
            "acme-small",
        )
        .deny(&[OrgRules])
        .says(OrgRules, "no organisation rule permits"),
        row("owner permit", ACME_WL, "US", "acme-small")
            .says(OrgRules, "owners-fetch-their-models"),
        // Destinations and tiers.
        row("tier-3 China", "alice@acme.example", "CN", "acme-frontier").deny(&[
            Destination,
            Licence,
            NetworkOrigin,
        ]),
        row(
            "tier-3 North Korea",
            "alice@acme.example",
            "KP",
            "acme-frontier",
        )
        .deny(&[Destination, Licence, NetworkOrigin]),
        row(
            "Macau is tier 3",
            "alice@acme.example",
            "MO",
            "acme-frontier",
        )
        .deny(&[Destination, Licence, NetworkOrigin])
        .says(Destination, "Tier 3"),
        row(
            "Macau before the framework",
            "alice@acme.example",
            "MO",
            "acme-frontier",
        )
        .on(d(2025, 1, 14))
        .deny(&[Licence, DeemedExport]),
        row(
            "Cyprus the day before it left D:5",
            ACME_WL,
            "CY",
            "acme-frontier",
        )
        .on(d(2024, 5, 29))
        .deny(&[Destination, Licence, NetworkOrigin]),
        row("Cyprus the day it left D:5", ACME_WL, "CY", "acme-frontier")
            .on(d(2024, 5, 30))
            .deny(&[Licence])
            .says(Destination, "Tier 2"),
        row(
            "open weights to a tier-3 host",
            "alice@acme.example",
            "CN",
            "all-minilm-l6-v2",
        )
        .deny(&[NetworkOrigin])
        .says(Destination, "not controlled"),
        row(
            "open weights to a tier-3 host via private range",
            "alice@acme.example",
            "CN",
            "all-minilm-l6-v2",
        )
        .source("10.9.9.9")
        .deny(&[NetworkOrigin]),
        row(
            "unknown country code",
            "alice@acme.example",
            "XX",
            "acme-frontier",
        )
        .source("8.8.8.8")
        .deny(&[Destination, Licence, NetworkOrigin])
        .says(Destination, "unknown country code 'XX'"),
        row(
            "lower-case country code",
            "alice@acme.example",
            "us",
            "acme-frontier",
        )
        .source("8.8.8.8")
        .deny(&[Destination, Licence, NetworkOrigin]),
        // Classification.
        row(
            "exactly 1e26 operations is controlled",
            "alice@acme.example",
            "IN",
            "acme-threshold",
        )
        .source("49.44.0.1")
        .deny(&[Licence])
        .says(Classification, "4E091"),
        row(
            "exactly 1e26 to tier 1",
            "alice@acme.example",
            "US",
            "acme-threshold",
        ),
        row("below threshold, closed", ACME_WL, "IN", "acme-small")
            .says(Licence, "no licence needed"),
        row(
            "unclassified model",
            "alice@acme.example",
            "US",
            "acme-secret",
        )
        .deny(&[Classification, Licence, OrgRules])
        .says(Classification, "unclassified"),
        row(
            "sealed facts disagree",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .facts(true, 3.1e26)
        .deny(&[Classification]),
        row(
            "sealed facts agree",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .facts(false, 3.1e26),
        // Identity.
        row(
            "unknown requester",
            "eve@evil.example",
            "US",
            "acme-frontier",
        )
        .deny(&[Identity, DeemedExport, RestrictedParties, OrgRules]),
        // Host evidence.
        row(
            "untrusted attester",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .ev(Ev::UntrustedAttester)
        .deny(&[HostEvidence]),
        row("bad signature", "alice@acme.example", "US", "acme-frontier")
            .ev(Ev::BadSignature)
            .deny(&[HostEvidence]),
        row(
            "replayed nonce",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .ev(Ev::ReusedNonce)
        .deny(&[HostEvidence]),
        row(
            "expired evidence",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .ev(Ev::Expired)
        .deny(&[HostEvidence]),
        row(
            "evidence from the future",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .ev(Ev::FromTheFuture)
        .deny(&[HostEvidence]),
        // Network origin.
        row(
            "origin contradicts host",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .source("49.44.0.1")
        .deny(&[NetworkOrigin])
        .says(NetworkOrigin, "attested in US"),
        row(
            "origin in the corporate VPN",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .source("145.100.0.1")
        .says(NetworkOrigin, "acme-corporate-vpn-amsterdam"),
        row("tier-3 origin", "alice@acme.example", "US", "acme-frontier")
            .source("114.114.114.114")
            .deny(&[NetworkOrigin])
            .says(NetworkOrigin, "Tier 3 origin"),
        row(
            "origin not geolocated",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .source("41.78.0.1")
        .deny(&[NetworkOrigin]),
        row(
            "private range of a US site",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .source("10.1.2.3"),
        row(
            "private range, host elsewhere",
            "alice@acme.example",
            "DE",
            "acme-frontier",
        )
        .source("10.1.2.3")
        .deny(&[NetworkOrigin]),
        row("IPv6 origin", "alice@acme.example", "US", "acme-frontier")
            .source("2001:4860:4860::8888"),
        row(
            "no source address",
            "alice@acme.example",
            "US",
            "acme-frontier",
        )
        .no_ip()
        .deny(&[NetworkOrigin]),
        row(
            "everything wrong at once",
            "bob@acme.example",
            "CN",
            "acme-frontier",
        )
        .ev(Ev::Expired)
        .region("quarantine")
        .deny(&[
            Destination,
            Licence,
            DeemedExport,
            HostEvidence,
            NetworkOrigin,
            OrgRules,
        ]),
    ]
}

#[test]
fn addresses_geolocate() {
    for cc in [
        "US", "IN", "CN", "KP", "DE", "BR", "SG", "AE", "CY", "MO", "JP", "CA", "NL",
    ] {
        use weightvault::policy::GeoLookup;
        assert_eq!(geo().country(ip_in(cc)).as_deref(), Some(cc), "{cc}");
    }
}

#[test]
fn decision_table() {
    let rows = table();
    assert!(rows.len() >= 50, "{} rows", rows.len());
    let mut failures = Vec::new();
    for r in &rows {
        let d = decide(policy(), geo(), &r.request());
        let mut want = r.fail.clone();
        want.sort();
        let mut got = d.failed();
        got.sort();
        let said = r.says.map(|(c, text)| {
            d.checks
                .iter()
                .any(|x| x.check == c && x.reason.contains(text))
        });
        if d.allowed != r.allow || got != want || said == Some(false) {
            failures.push(format!(
                "{}: allowed {} (want {}), failed {:?} (want {:?}){}\n{}",
                r.name,
                d.allowed,
                r.allow,
                got,
                want,
                if said == Some(false) {
                    format!(", reason lacks {:?}", r.says)
                } else {
                    String::new()
                },
                d.checks
                    .iter()
                    .map(|c| format!("    {:?} {:?}: {}", c.check, c.verdict, c.reason))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        assert_eq!(d.checks.len(), 9, "{}", r.name);
        if d.allowed {
            assert!(
                d.authority.is_some() && d.obligations.is_some(),
                "{}",
                r.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn authority_is_named() {
    let d = decide(
        policy(),
        geo(),
        &row("x", ACME_WL, "US", "acme-frontier").request(),
    );
    assert!(
        matches!(d.authority, Some(Authority::LicenceException { ref name }) if name.contains("AIA"))
    );
    let d = decide(
        policy(),
        geo(),
        &row("x", "raj@globex.example", "IN", "acme-frontier").request(),
    );
    assert_eq!(
        d.authority,
        Some(Authority::Licence {
            id: "D-2026-0001".into()
        })
    );
    assert_eq!(
        d.obligations.unwrap().consume_licence.as_deref(),
        Some("D-2026-0001")
    );
    let d = decide(
        policy(),
        geo(),
        &row("x", "alice@acme.example", "CN", "all-minilm-l6-v2")
            .source("8.8.8.8")
            .request(),
    );
    assert!(!d.allowed && d.authority.is_none());
}

/// Loading refuses bad data with the file, the line and what is wrong.
#[test]
fn loader_errors_name_file_and_line() {
    let base = read_policy_files();
    let cases: Vec<(&str, &str, &str, &str, usize)> = vec![
        // (file, replace this, with this, message contains, line)
        (
            "people.toml",
            "country = \"IN\"",
            "country = \"XY\"",
            "unknown country code 'XY'",
            14,
        ),
        (
            "people.toml",
            "nationalities = [\"IN\"]\n\n[[person]]\nid = \"ivan",
            "nationalities = []\n\n[[person]]\nid = \"ivan",
            "has no nationality",
            0,
        ),
        (
            "people.toml",
            "id = \"bob@acme.example\"",
            "id = \"alice@acme.example\"",
            "duplicate requester",
            0,
        ),
        (
            "people.toml",
            "organisation = \"globex\"\nnationalities",
            "organisation = \"nobody\"\nnationalities",
            "unknown organisation 'nobody'",
            0,
        ),
        (
            "licences.toml",
            "valid_until = 2029-12-31\nstatus = \"active\"\nmax_releases = 50",
            "valid_until = 2025-12-31\nstatus = \"active\"\nmax_releases = 50",
            "ends (2025-12-31) before it starts",
            0,
        ),
        (
            "licences.toml",
            "id = \"D-2026-0002\"",
            "id = \"D-2026-0001\"",
            "duplicate licence",
            0,
        ),
        (
            "licences.toml",
            "destinations = [\"IN\"]",
            "destinations = [\"India\"]",
            "unknown country code 'India'",
            0,
        ),
        (
            "licences.toml",
            "status = \"suspended\"",
            "status = \"paused\"",
            "unknown variant",
            0,
        ),
        (
            "tiers.toml",
            "\"TW\", \"GB\"]",
            "\"TW\", \"UK\"]",
            "unknown country code 'UK'",
            0,
        ),
        (
            "tiers.toml",
            "tier = 1",
            "tier = 2",
            "only tier 1 and tier 3",
            0,
        ),
        (
            "models.toml",
            "eccn = \"4E091\"\ntraining_ops = 3.1e26",
            "eccn = \"EAR99\"\ntraining_ops = 3.1e26",
            "its ECCN is 4E091",
            0,
        ),
        (
            "models.toml",
            "owner = \"sbert\"",
            "owner = \"nobody\"",
            "unknown owner organisation",
            0,
        ),
        (
            "restricted-parties.csv",
            "IVAN PETROV,,",
            "IVAN PETROV,ZZ,",
            "unknown country code 'ZZ'",
            6,
        ),
        (
            "attesters.toml",
            "public_key = \"",
            "public_key = \"00",
            "64 hex digits",
            0,
        ),
        (
            "network.toml",
            "cidr = \"10.0.0.0/8\"",
            "cidr = \"10.0.0.0/33\"",
            "not an address range",
            0,
        ),
        (
            "org.cedar",
            "resource.open_weights",
            "resource.open_weight",
            "does not match the schema",
            0,
        ),
        (
            "org.cedar",
            "when { context.host_region == \"quarantine\" };",
            "when { context.host_region == 7 };",
            "does not match the schema",
            0,
        ),
        (
            "org.cedar",
            "@id(\"mallory-access-suspended\")",
            "@id(\"mallory-access-suspended\") garbage",
            "Cedar",
            0,
        ),
        (
            "org.cedarschema",
            "controlled: Bool,",
            "controlled: Boolean,",
            "schema",
            0,
        ),
    ];
    for (file, from, to, want, line) in cases {
        let mut files = base.clone();
        let text = files.get_mut(file).unwrap();
        assert!(text.contains(from), "{file} lacks '{from}'");
        let at_line = 1 + text[..text.find(from).unwrap()].matches('\n').count();
        *text = text.replacen(from, to, 1);
        let err = match PolicyData::parse(&files) {
            Ok(_) => panic!("{file}: '{to}' was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.file, file, "{err}");
        assert!(
            err.to_string().contains(want),
            "{file}: got '{err}', want '{want}'"
        );
        assert!(err.line > 0, "{file}: no line in '{err}'");
        if line > 0 {
            assert_eq!(err.line, line, "{err}");
        } else {
            // The error points at the edited line or near it (a record's start).
            assert!(
                err.line <= at_line + 3 && err.line + 12 >= at_line,
                "{file}: line {} for an edit at {at_line}: {err}",
                err.line
            );
        }
    }
    let mut files = base.clone();
    files.remove("licences.toml");
    assert!(PolicyData::parse(&files).is_err());
}

/// Entries of a TOML array of tables, shuffled: the decision must not depend on file order.
fn shuffle_tables(text: &str, header: &str, seed: u64) -> String {
    let mut parts: Vec<&str> = text.split(header).collect();
    let head = parts.remove(0);
    let mut x = seed | 1;
    for i in (1..parts.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        parts.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut out = head.to_string();
    for p in parts {
        out.push_str(header);
        out.push_str(p);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn pool() -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    (
        vec![
            "alice@acme.example",
            "bob@acme.example",
            "carol@acme.example",
            "dmitri@acme.example",
            "mallory@acme.example",
            "raj@globex.example",
            "ivan@globex.example",
            ACME_WL,
            "spiffe://globex.example/ns/inference/sa/llm",
            "spiffe://initech.example/sa/llm",
            "spiffe://hooli.example/sa/llm",
            "spiffe://umbrella.example/sa/llm",
            "spiffe://shadow.example/sa/llm",
            "spiffe://nordlicht.example/sa/llm",
            "nobody",
        ],
        vec![
            "acme-frontier",
            "acme-threshold",
            "acme-small",
            "all-minilm-l6-v2",
            "unknown-model",
        ],
        vec![
            "US", "IN", "CN", "KP", "DE", "BR", "SG", "AE", "CY", "MO", "JP", "XX",
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn deny_iff_a_check_fails_and_the_decision_is_pure(
        w in 0usize..64, m in 0usize..5, c in 0usize..12, ipc in 0usize..12,
        ev in 0usize..6, day in 0i64..1200, quarantine in any::<bool>(),
    ) {
        let (who, models, ccs) = pool();
        let evs = [Ev::Ok, Ev::UntrustedAttester, Ev::BadSignature, Ev::ReusedNonce, Ev::Expired, Ev::FromTheFuture];
        let mut r = row("prop", who[w % who.len()], ccs[c], models[m])
            .on(datetime!(2024-01-01 12:00 UTC) + Duration::days(day))
            .ev(evs[ev]);
        r.ip = Some(ip_in(ccs[ipc]));
        if quarantine { r = r.region("quarantine"); }
        let req = r.request();
        let d = decide(policy(), geo(), &req);
        let fails = d.checks.iter().filter(|x| x.verdict == Verdict::Fail).count();
        prop_assert_eq!(d.allowed, fails == 0);
        if !d.allowed { prop_assert!(!d.failed().is_empty()); }
        prop_assert_eq!(d.checks.iter().map(|x| x.check).collect::<Vec<_>>(), weightvault::policy::CheckId::ALL.to_vec());
        prop_assert_eq!(&decide(policy(), geo(), &req), &d);
    }

    #[test]
    fn file_order_does_not_change_decisions(seed in any::<u64>()) {
        let mut files = read_policy_files();
        for (f, h) in [("licences.toml", "\n[[licence]]"), ("models.toml", "\n[[model]]"), ("tiers.toml", "\n[[change]]")] {
            let t = shuffle_tables(&files[f], h, seed);
            files.insert(f.into(), t);
        }
        let shuffled = PolicyData::parse(&files).unwrap();
        let (who, models, ccs) = pool();
        for (i, w) in who.iter().enumerate() {
            let r = row("order", w, ccs[(i + seed as usize) % ccs.len()], models[i % models.len()]);
            prop_assert_eq!(decide(&shuffled, geo(), &r.request()), decide(policy(), geo(), &r.request()));
        }
    }

    #[test]
    fn no_input_makes_the_loader_or_decision_panic(
        file in 0usize..weightvault::policy::data::FILES.len(), junk in ".{0,300}",
        who in ".{0,40}", model in ".{0,40}", cc in ".{0,4}", region in ".{0,10}",
    ) {
        let mut files = read_policy_files();
        let name = weightvault::policy::data::FILES[file];
        files.insert(name.into(), junk.clone());
        let _ = PolicyData::parse(&files);
        let mut files = read_policy_files();
        let t = files[name].clone();
        let cut = junk.len() % (t.len() + 1);
        let cut = (0..=cut).rev().find(|&i| t.is_char_boundary(i)).unwrap_or(0);
        files.insert(name.into(), format!("{}{}", &t[..cut], junk));
        let _ = PolicyData::parse(&files);
        let mut r = row("junk", "x", "US", "x");
        let mut req = r.request();
        req.requester = who; req.model = model; req.host.country = cc; req.host.region = region;
        r.ev = Ev::Ok;
        let _ = decide(policy(), geo(), &req);
    }
}

#[test]
fn a_failed_reload_keeps_the_policy_in_force() {
    let tmp = common::scratch();
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    for (f, t) in read_policy_files() {
        std::fs::write(dir.join(f), t).unwrap();
    }
    let h = PolicyDir::new(&dir).handle().unwrap();
    let raj = row("reload", "raj@globex.example", "IN", "acme-frontier").request();
    assert!(decide(&h.current(), geo(), &raj).allowed);
    // The licence is suspended, but the file also has an error: the reload is refused and
    // the old policy (licence active) stays in force.
    let lic = std::fs::read_to_string(dir.join("licences.toml")).unwrap();
    let suspended = lic.replacen("status = \"active\"", "status = \"suspended\"", 1);
    std::fs::write(
        dir.join("licences.toml"),
        suspended.replacen("destinations = [\"IN\"]", "destinations = [\"IQQ\"]", 1),
    )
    .unwrap();
    let e = h.reload().unwrap_err();
    assert!(
        e.to_string().contains("licences.toml") && e.to_string().contains("IQQ"),
        "{e}"
    );
    assert!(
        decide(&h.current(), geo(), &raj).allowed,
        "an invalid reload changed the policy"
    );
    // A valid reload takes effect at once.
    std::fs::write(dir.join("licences.toml"), suspended).unwrap();
    h.reload().unwrap();
    let d = decide(&h.current(), geo(), &raj);
    assert!(
        !d.allowed && d.failed().contains(&Licence),
        "{:?}",
        d.failed()
    );
}

#[test]
fn policy_commands() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(args)
            .arg("--policies")
            .arg(policy_dir())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["policy", "lint"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("valid"), "{out}");
    let check = [
        "policy",
        "check",
        "--date",
        "2026-06-01",
        "--model",
        "acme-frontier",
        "--json",
    ];
    let (code, out, _) = run(&[
        &check[..],
        &["--requester", "raj@globex.example", "--host-country", "IN"],
    ]
    .concat());
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["authority"]["id"], "D-2026-0001");
    assert_eq!(v["checks"].as_array().unwrap().len(), 9);
    let (code, out, _) = run(&[
        &check[..],
        &["--requester", "alice@acme.example", "--host-country", "CN"],
    ]
    .concat());
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], false);
    let failed: Vec<_> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .map(|c| c["check"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, ["destination", "licence"]);
    let (code, _, err) = run(&[
        &check[..],
        &[
            "--requester",
            "alice@acme.example",
            "--host-country",
            "US",
            "--source-ip",
            "8.8.8.8",
            "--geoip",
            "/nonexistent.mmdb",
        ],
    ]
    .concat());
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent.mmdb"), "{err}");
    // A broken policy directory: one line naming file and line.
    let tmp = common::scratch();
    for (f, t) in read_policy_files() {
        let t = if f == "people.toml" {
            t.replacen("nationalities = [\"US\"]", "nationalities = [\"USA\"]", 1)
        } else {
            t
        };
        std::fs::write(tmp.path().join(f), t).unwrap();
    }
    let out = std::process::Command::new(common::bin())
        .args(["policy", "lint", "--policies"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("people.toml:") && err.contains("unknown country code 'USA'"),
        "{err}"
    );
}
