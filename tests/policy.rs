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
use weightvault::policy::{
    decide, Authority, DecisionOutcome, HostClaims, MaxMindGeo, ReleaseRequest, Verdict,
};
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
        "KH" => "36.37.128.1",
        "HK" => "203.198.0.1",
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
    outcome: DecisionOutcome,
    fail: Vec<CheckId>,
    /// Checks that hold the request for review.
    held: Vec<CheckId>,
    /// The facility the host is attested in.
    facility: Option<&'static str>,
    /// Counters already used (licence ids, quota counters): (key, releases, bytes).
    used: Vec<(String, u64, u64)>,
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
        outcome: DecisionOutcome::Allow,
        fail: vec![],
        held: vec![],
        facility: None,
        used: vec![],
        says: None,
        size: 90_000_000,
    }
}

impl Row {
    fn deny(mut self, fail: &[CheckId]) -> Self {
        self.outcome = DecisionOutcome::Deny;
        self.fail = fail.to_vec();
        self
    }
    /// Held for a compliance officer because of these checks (and denied if `deny` is also
    /// given: deny wins).
    fn review(mut self, held: &[CheckId]) -> Self {
        if self.outcome == DecisionOutcome::Allow {
            self.outcome = DecisionOutcome::Review;
        }
        self.held = held.to_vec();
        self
    }
    fn facility(mut self, f: &'static str) -> Self {
        self.facility = Some(f);
        self
    }
    fn used(mut self, key: &str, releases: u64, bytes: u64) -> Self {
        self.used.push((key.to_string(), releases, bytes));
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
                facility: self.facility.map(str::to_string),
            },
            source_ip: self.ip,
            time: self.date,
            used: self
                .used
                .iter()
                .map(|(k, r, b)| {
                    (
                        k.clone(),
                        weightvault::policy::Usage {
                            releases: *r,
                            bytes: *b,
                        },
                    )
                })
                .collect(),
            size: self.size,
            approvals: vec![],
            dry_run: false,
        }
    }
}

fn table() -> Vec<Row> {
    let d = |y: i32, m: u8, dd: u8| {
        time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), dd)
            .unwrap()
            .with_hms(12, 0, 0)
            .unwrap()
            .assume_utc()
    };
    let mut rows = vec![
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
        // Changed with the EAR's own rule (15 CFR 734.13(b)): bob was a US and Chinese
        // citizen, denied as an export to "every nationality"; a US dual national is a US
        // person (ben now), and bob is Canadian and Chinese from birth: the tie rule picks CN.
        row(
            "dual national without clearance",
            "bob@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[DeemedExport])
        .says(DeemedExport, "the tie rule picks CN"),
        row(
            "US dual national is a US person",
            "ben@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "US dual national is a US person"),
        row(
            "Chinese national with a clearance on file",
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
        // Changed with the EAR's rule: alice is a US citizen, so no deemed export; the row
        // also failed deemed export because the US was not yet Tier 1 on that day.
        row(
            "Macau before the framework",
            "alice@acme.example",
            "MO",
            "acme-frontier",
        )
        .on(d(2025, 1, 14))
        .deny(&[Licence]),
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
        .deny(&[
            Identity,
            DeemedExport,
            RestrictedParties,
            Ownership,
            OrgRules,
            Quota,
        ]),
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
    ];
    rows.extend(second_edition(d));
    rows
}

/// The rows of the second edition of the policy (issue 17): the EAR's deemed-export rule, the
/// review outcome, ownership, VEU data centres, dated country data, derived models, named-model
/// requirements and quotas. Each on both sides of its date or threshold.
fn second_edition(d: impl Fn(i32, u8, u8) -> OffsetDateTime) -> Vec<Row> {
    const HOOLI: &str = "spiffe://hooli.example/sa/llm";
    const UMBRELLA: &str = "spiffe://umbrella.example/sa/llm";
    const GLOBEX: &str = "spiffe://globex.example/ns/inference/sa/llm";
    const MINILM: &str = "all-minilm-l6-v2";
    let raj_today = |k: &str| format!("quota:{k}:2026-06-01");
    vec![
        // Deemed export as the EAR states it.
        row(
            "green-card holder",
            "hana@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "lawful permanent resident"),
        row(
            "protected individual (asylee)",
            "farid@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "protected individual"),
        row(
            "protected individual, the day before the protection lapses",
            "farid@acme.example",
            "US",
            "acme-frontier",
        )
        .on(d(2027, 4, 30)),
        row(
            "protected individual, lapsed: not naturalised within two years",
            "farid@acme.example",
            "US",
            "acme-frontier",
        )
        .on(d(2027, 5, 1))
        .deny(&[DeemedExport])
        .says(DeemedExport, "lapsed"),
        row(
            "most recent citizenship: German since 2016, Russian renounced",
            "lena@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "an export to DE"),
        row(
            "permanent residency acquired after the citizenship is the most recent",
            "sofia@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[DeemedExport])
        .says(DeemedExport, "CN permanent residency acquired 2019-09-01"),
        row(
            "most recent is a Tier 1 residency, not the Chinese citizenship",
            "mei@acme.example",
            "US",
            "acme-frontier",
        )
        .says(DeemedExport, "an export to CA"),
        row(
            "the same Chinese citizen before the Canadian residency",
            "mei@acme.example",
            "US",
            "acme-frontier",
        )
        .on(d(2020, 4, 30))
        .deny(&[Licence, DeemedExport]),
        row(
            "two citizenships acquired at once: the most restrictive",
            "yusuf@acme.example",
            "US",
            "acme-frontier",
        )
        .deny(&[DeemedExport])
        .says(DeemedExport, "the tie rule picks IR"),
        row(
            "ITAR model: every citizenship ever held",
            "lena@acme.example",
            "US",
            "acme-defense",
        )
        .deny(&[DeemedExport])
        .says(
            DeemedExport,
            "RU citizenship acquired 1987-06-02, ended 2017-03-01",
        ),
        row(
            "ITAR model, US citizen",
            "alice@acme.example",
            "US",
            "acme-defense",
        ),
        row(
            "ITAR model, dual national is a US person too",
            "ben@acme.example",
            "US",
            "acme-defense",
        ),
        row(
            "a person abroad: deemed export to India and an export to Singapore",
            "raj@globex.example",
            "SG",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(DeemedExport, "IN: licence D-2026-0001"),
        row(
            "a US person abroad: only the destination's licence",
            "alice@acme.example",
            "IN",
            "acme-frontier",
        )
        .deny(&[Licence])
        .says(DeemedExport, "not a foreign person"),
        // Screening outcomes other than deny.
        row(
            "a close but not exact name: review",
            "elena@globex.example",
            "US",
            MINILM,
        )
        .review(&[RestrictedParties])
        .says(RestrictedParties, "fuzzy"),
        row(
            "a party on the Unverified List: review",
            "spiffe://crescent.example/sa/llm",
            "US",
            MINILM,
        )
        .review(&[RestrictedParties])
        .says(RestrictedParties, "Unverified List"),
        // Ownership (the affiliates rule): added across two listed owners.
        row(
            "55 % owned by two listed parties, the rule suspended on the day",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .review(&[Ownership])
        .says(Ownership, "55 % owned by listed parties"),
        row(
            "55 % owned, the day before the rule took effect",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2025, 9, 28)),
        row(
            "55 % owned, the day the rule took effect",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2025, 9, 29))
        .deny(&[Ownership]),
        row(
            "55 % owned, the first day of the suspension: review",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2025, 11, 10))
        .review(&[Ownership])
        .says(Ownership, "suspended"),
        row(
            "55 % owned, the last day of the suspension: review",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2026, 11, 9))
        .review(&[Ownership]),
        row(
            "55 % owned, in force again",
            "spiffe://kestrel.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2026, 11, 10))
        .deny(&[Ownership]),
        row(
            "owned through an intermediate company treated as listed",
            "spiffe://heron.example/sa/llm",
            "US",
            MINILM,
        )
        .on(d(2026, 11, 10))
        .deny(&[Ownership])
        .says(Ownership, "60 % by kestrel"),
        row(
            "30 % owned: material, under the threshold: review",
            "spiffe://osprey.example/sa/llm",
            "US",
            MINILM,
        )
        .review(&[Ownership])
        .says(Ownership, "material share"),
        row(
            "10 % owned: under the review share",
            "spiffe://wren.example/sa/llm",
            "US",
            MINILM,
        )
        .says(Ownership, "under the review share"),
        // Validated End User data centres.
        row("VEU: a listed facility", HOOLI, "SG", "acme-frontier")
            .facility("hooli-sg-jurong-1")
            .says(Licence, "Validated End User VEU-SG-0001"),
        row(
            "VEU: the same company's other site",
            HOOLI,
            "SG",
            "acme-frontier",
        )
        .facility("hooli-sg-changi-2")
        .deny(&[Licence])
        .says(
            Licence,
            "does not list the host's facility (hooli-sg-changi-2)",
        ),
        row("VEU: no facility attested", HOOLI, "SG", "acme-frontier").deny(&[Licence]),
        row(
            "VEU: before its authorisation",
            HOOLI,
            "SG",
            "acme-frontier",
        )
        .facility("hooli-sg-jurong-1")
        .on(d(2026, 2, 9))
        .deny(&[Licence]),
        row(
            "VEU: the day before revocation",
            UMBRELLA,
            "AE",
            "acme-frontier",
        )
        .facility("umbrella-dxb-1")
        .on(d(2026, 4, 30)),
        row("VEU: revoked", UMBRELLA, "AE", "acme-frontier")
            .facility("umbrella-dxb-1")
            .deny(&[Licence])
            .says(Licence, "revoked on 2026-05-01"),
        // Country data that is true today.
        row(
            "Cambodia the day before it left D:5",
            ACME_WL,
            "KH",
            "acme-frontier",
        )
        .on(d(2026, 2, 2))
        .deny(&[Destination, Licence, NetworkOrigin]),
        row(
            "Cambodia the day it left D:5 (EAR)",
            ACME_WL,
            "KH",
            "acme-frontier",
        )
        .on(d(2026, 2, 3))
        .deny(&[Licence])
        .says(Destination, "Conforming Change for Cambodia"),
        row(
            "Cambodia between the ITAR and the EAR changes: the EAR is followed",
            ACME_WL,
            "KH",
            "acme-frontier",
        )
        .on(d(2025, 12, 1))
        .deny(&[Destination, Licence, NetworkOrigin]),
        row(
            "Hong Kong is treated as China",
            ACME_WL,
            "HK",
            "acme-frontier",
        )
        .deny(&[Destination, Licence, NetworkOrigin])
        .says(Destination, "HK is treated as CN"),
        row("Hong Kong, open weights", ACME_WL, "HK", MINILM)
            .deny(&[NetworkOrigin])
            .says(Destination, "not controlled"),
        row("Macau stays Tier 3", ACME_WL, "MO", "acme-frontier").deny(&[
            Destination,
            Licence,
            NetworkOrigin,
        ]),
        row("the reading is named", ACME_WL, "US", "acme-frontier")
            .says(Licence, "applied as written"),
        // Classification of derived models.
        row(
            "derived from a controlled model stays controlled",
            ACME_WL,
            "IN",
            "acme-frontier-ft",
        )
        .deny(&[Licence])
        .says(Classification, "derived from acme-frontier"),
        row(
            "derived: 1.01e26 in all is over the threshold",
            ACME_WL,
            "IN",
            "acme-small-ft",
        )
        .deny(&[Licence])
        .says(Classification, "training operations in all (>= 1e26)"),
        row(
            "derived: 5.4e25 in all is under the threshold",
            ACME_WL,
            "IN",
            "acme-small-ft-lite",
        )
        .says(Classification, "below 1e26"),
        row(
            "uncertain classification: review",
            ACME_WL,
            "US",
            "acme-uncertain",
        )
        .review(&[Classification])
        .says(Classification, "GPU-hours"),
        row(
            "uncertain classification and a failure: deny wins",
            "mallory@acme.example",
            "US",
            "acme-uncertain",
        )
        .review(&[Classification])
        .deny(&[OrgRules]),
        // Named-model ("is informed") requirements.
        row(
            "named model, foreign person, no licence naming it",
            "dmitri@acme.example",
            "US",
            "acme-informed",
        )
        .deny(&[Licence])
        .says(Licence, "needs a licence naming it"),
        row(
            "named model, the day before the letter",
            "dmitri@acme.example",
            "US",
            "acme-informed",
        )
        .on(d(2026, 3, 1)),
        row(
            "named model, exempted person",
            "carol@acme.example",
            "US",
            "acme-informed",
        )
        .says(Licence, "not controlled"),
        row(
            "named model, a US person in the US",
            "alice@acme.example",
            "US",
            "acme-informed",
        ),
        row(
            "named model, the licensee with a licence naming it",
            GLOBEX,
            "IN",
            "acme-informed",
        )
        .deny(&[OrgRules])
        .says(Licence, "D-2026-0011"),
        // Quotas, counted like licence allocations.
        row(
            "quota: the last release of the day",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .used(&raj_today("requester:raj@globex.example"), 2, 0)
        .says(Quota, "2 of 3 releases"),
        row(
            "quota: used up",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .used(&raj_today("requester:raj@globex.example"), 3, 0)
        .deny(&[Quota])
        .says(
            Quota,
            "requester raj@globex.example: 3 of 3 releases on 2026-06-01",
        ),
        row(
            "quota: yesterday's use does not count today",
            "raj@globex.example",
            "IN",
            "acme-frontier",
        )
        .used("quota:requester:raj@globex.example:2026-05-31", 3, 0),
        row(
            "organisation byte quota: exactly what is left",
            GLOBEX,
            "IN",
            "acme-frontier",
        )
        .used(&raj_today("organisation:globex"), 5, 49_910_000_000),
        row(
            "organisation byte quota: one byte over",
            GLOBEX,
            "IN",
            "acme-frontier",
        )
        .used(&raj_today("organisation:globex"), 5, 49_910_000_001)
        .deny(&[Quota])
        .says(Quota, "organisation globex"),
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

/// A release state gives each decision only the counters `counters_read` names: every row of
/// the table decides the same with those alone as with every licence's and every party's
/// quota counters of the day set to used up (so a counter the policy reads but
/// `counters_read` leaves out would change a decision).
#[test]
fn every_row_decides_the_same_given_only_the_counters_it_reads() {
    let p = policy();
    for r in &table() {
        let mut full = r.request();
        let day = full.time.date();
        let used_up = weightvault::policy::Usage {
            releases: 1 << 40,
            bytes: 1 << 60,
        };
        let everyone = p
            .requesters
            .keys()
            .map(|id| weightvault::policy::rules::quota_counter("requester", id, day))
            .chain(
                p.organisations
                    .keys()
                    .map(|id| weightvault::policy::rules::quota_counter("organisation", id, day)),
            )
            .chain(p.licences.iter().map(|l| l.id.clone()));
        for k in everyone {
            full.used.entry(k).or_insert(used_up);
        }
        let reads = weightvault::policy::counters_read(p, &full.requester, full.time);
        let mut narrow = full.clone();
        narrow.used.retain(|k, _| reads.contains(k));
        assert_eq!(
            decide(p, geo(), &narrow),
            decide(p, geo(), &full),
            "{}: reads {reads:?}",
            r.name
        );
    }
}

#[test]
fn decision_table() {
    let rows = table();
    assert!(rows.len() >= 100, "{} rows", rows.len());
    let mut failures = Vec::new();
    for r in &rows {
        let d = decide(policy(), geo(), &r.request());
        let mut want = r.fail.clone();
        want.sort();
        let mut got = d.failed();
        got.sort();
        let mut want_held = r.held.clone();
        want_held.sort();
        let mut held = d.held();
        held.sort();
        let said = r.says.map(|(c, text)| {
            d.checks
                .iter()
                .any(|x| x.check == c && x.reason.contains(text))
        });
        if d.outcome != r.outcome || got != want || held != want_held || said == Some(false) {
            failures.push(format!(
                "{}: {:?} (want {:?}), failed {:?} (want {:?}), held {held:?} (want {want_held:?}){}\n{}",
                r.name,
                d.outcome,
                r.outcome,
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
        assert_eq!(d.checks.len(), CheckId::ALL.len(), "{}", r.name);
        assert_eq!(d.allowed, d.outcome == DecisionOutcome::Allow, "{}", r.name);
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
            32,
        ),
        (
            "people.toml",
            "citizenship = [{ country = \"IN\", acquired = 1982-08-15 }]",
            "citizenship = []",
            "has no citizenship",
            0,
        ),
        (
            "people.toml",
            "us_status = \"citizen\"\ncitizenship = [{ country = \"US\", acquired = 1988-04-12 }]",
            "us_status = \"none\"\ncitizenship = [{ country = \"US\", acquired = 1988-04-12 }]",
            "makes us_status \"citizen\"",
            0,
        ),
        (
            "people.toml",
            "us_status = \"permanent_resident\"",
            "us_status = \"protected_individual\"",
            "needs a [person.protected] table",
            0,
        ),
        (
            "people.toml",
            "{ country = \"RU\", acquired = 1987-06-02, ended = 2017-03-01 }",
            "{ country = \"RU\", acquired = 1987-06-02, ended = 1987-03-01 }",
            "ended (1987-03-01) before it was acquired",
            0,
        ),
        (
            "people.toml",
            "party = \"IVAN PETROV\"\npercent = 25",
            "party = \"IVAN PETROV\"\npercent = 75",
            "add up to 105 %, over 100 %",
            0,
        ),
        (
            "people.toml",
            "name = \"Heron Data Centres Pte. Ltd.\"\ncountry = \"SG\"\n[[organisation.owner]]\norganisation = \"kestrel\"",
            "name = \"Heron Data Centres Pte. Ltd.\"\ncountry = \"SG\"\n[[organisation.owner]]\norganisation = \"heron\"",
            "ownership cycle: heron is owned by heron",
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
            "organisation = \"globex\"\nus_status",
            "organisation = \"nobody\"\nus_status",
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
            "id = \"D-2026-0002\"",
            "id = \"quota:requester:x:2026-06-01\"",
            "may not start with 'quota:'",
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
            "models.toml",
            "derived_from = \"acme-small\"",
            "derived_from = \"acme-tiny\"",
            "derives from 'acme-tiny', which is not in the inventory",
            0,
        ),
        (
            "models.toml",
            "eccn = \"EAR99\"\ntraining_ops = 5.0e25",
            "eccn = \"4E091\"\ntraining_ops = 5.0e25",
            "is not a 4E091 model",
            0,
        ),
        (
            "models.toml",
            "eccn = \"4E091\"\ntraining_ops = 2.0e24",
            "eccn = \"EAR99\"\ntraining_ops = 2.0e24",
            "3.12e26 operations in all (>= 1e26): its ECCN is 4E091",
            0,
        ),
        (
            "models.toml",
            "exempt = [\"carol@acme.example\"]",
            "exempt = [\"zed@acme.example\"]",
            "unknown exempted party",
            0,
        ),
        (
            "licences.toml",
            "models = [\"acme-informed\"]",
            "models = [\"acme-informd\"]",
            "unknown model 'acme-informd'",
            0,
        ),
        (
            "tiers.toml",
            "as = \"CN\"",
            "as = \"HK\"",
            "cannot be treated as itself",
            0,
        ),
        (
            "tiers.toml",
            "ai_diffusion = \"as_written\"",
            "ai_diffusion = \"loosely\"",
            "unknown variant",
            0,
        ),
        (
            "rules.toml",
            "review_percent = 25",
            "review_percent = 60",
            "at most threshold_percent",
            0,
        ),
        (
            "rules.toml",
            "approval_hours = 24",
            "approval_hours = 0",
            "an approval is bounded in time",
            0,
        ),
        (
            "rules.toml",
            "requester = \"raj@globex.example\"",
            "requester = \"raj@globex.exampel\"",
            "unknown requester 'raj@globex.exampel'",
            0,
        ),
        (
            "veu.toml",
            "entity = \"hooli\"",
            "entity = \"hoolie\"",
            "unknown VEU entity organisation 'hoolie'",
            0,
        ),
        (
            "veu.toml",
            "revoked_citation = ",
            "revoked_note = ",
            "unknown field",
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
            "ben@acme.example",
            "hana@acme.example",
            "farid@acme.example",
            "lena@acme.example",
            "sofia@acme.example",
            "mei@acme.example",
            "yusuf@acme.example",
            "spiffe://kestrel.example/sa/llm",
            "spiffe://heron.example/sa/llm",
            "spiffe://osprey.example/sa/llm",
            "spiffe://wren.example/sa/llm",
        ],
        vec![
            "acme-frontier",
            "acme-threshold",
            "acme-small",
            "all-minilm-l6-v2",
            "unknown-model",
            "acme-frontier-ft",
            "acme-small-ft",
            "acme-small-ft-lite",
            "acme-defense",
            "acme-uncertain",
            "acme-informed",
        ],
        vec![
            "US", "IN", "CN", "KP", "DE", "BR", "SG", "AE", "CY", "MO", "JP", "XX", "KH", "HK",
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn deny_iff_a_check_fails_and_the_decision_is_pure(
        w in 0usize..64, m in 0usize..11, c in 0usize..14, ipc in 0usize..14,
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
        let held = d.checks.iter().filter(|x| x.verdict == Verdict::Review).count();
        let want = if fails > 0 { DecisionOutcome::Deny } else if held > 0 { DecisionOutcome::Review } else { DecisionOutcome::Allow };
        prop_assert_eq!(d.outcome, want);
        prop_assert_eq!(d.allowed, want == DecisionOutcome::Allow);
        prop_assert_eq!(d.review_key.is_some(), want == DecisionOutcome::Review);
        if !d.allowed { prop_assert!(!d.failed().is_empty() || !d.held().is_empty()); }
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
    assert_eq!(
        v["checks"].as_array().unwrap().len(),
        weightvault::policy::CheckId::ALL.len()
    );
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
            t.replacen(
                "{ country = \"US\", acquired = 1988-04-12 }",
                "{ country = \"USA\", acquired = 1988-04-12 }",
                1,
            )
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

/// The reading of the AI Diffusion rule is data: as enforced, a Tier 2 destination needs no
/// 4E091 licence (and the authority says so), Tier 3 stays denied, and the decision names the
/// reading; before the reading's date the rule applies as written.
#[test]
fn the_reading_as_enforced_needs_no_licence_for_tier_2() {
    let mut files = read_policy_files();
    let t = files.get_mut("tiers.toml").unwrap();
    t.push_str(
        "\n[[reading]]\neffective = 2026-04-01\nai_diffusion = \"as_enforced\"\nsource = \"test: applied as enforced from 2026-04-01\"\n",
    );
    let p = PolicyData::parse(&files).unwrap();
    let d = decide(
        &p,
        geo(),
        &row("x", ACME_WL, "IN", "acme-frontier").request(),
    );
    assert!(d.allowed, "{:?}", d.checks);
    assert!(
        matches!(&d.authority, Some(Authority::NotEnforced { reading }) if reading.contains("2026-04-01"))
    );
    let lic = d.checks.iter().find(|c| c.check == Licence).unwrap();
    assert!(
        lic.reason.contains("as enforced, not as written"),
        "{}",
        lic.reason
    );
    // A foreign person whose most recent country is Tier 2 needs no deemed-export licence.
    let d = decide(
        &p,
        geo(),
        &row("x", "ivan@globex.example", "US", "acme-frontier").request(),
    );
    assert!(!d.failed().contains(&DeemedExport), "{:?}", d.checks);
    // Tier 3 is still a presumption of denial; before the date the rule applies as written.
    let d = decide(
        &p,
        geo(),
        &row("x", ACME_WL, "CN", "acme-frontier").request(),
    );
    assert!(d.failed().contains(&Destination) && d.failed().contains(&Licence));
    let d = decide(
        &p,
        geo(),
        &row("x", ACME_WL, "IN", "acme-frontier")
            .on(datetime!(2026-03-31 12:00 UTC))
            .request(),
    );
    assert!(d.failed().contains(&Licence), "{:?}", d.checks);
}

/// An approval lets a held request through only with the same review key and before it
/// expires; the decision names it.
#[test]
fn an_approval_matches_the_review_key_and_expires() {
    use weightvault::policy::Approval;
    let held = row(
        "x",
        "spiffe://osprey.example/sa/llm",
        "US",
        "all-minilm-l6-v2",
    );
    let d = decide(policy(), geo(), &held.request());
    assert_eq!(d.outcome, DecisionOutcome::Review);
    let key = d
        .review_key
        .clone()
        .expect("a held decision has a review key");
    let approval = |key: &str, until: OffsetDateTime| Approval {
        review: 7,
        key: key.into(),
        by: "officer".into(),
        until,
    };
    let with = |a: Approval, r: &Row| {
        let mut req = r.request();
        req.approvals = vec![a];
        decide(policy(), geo(), &req)
    };
    let d = with(approval(&key, D + Duration::hours(1)), &held);
    assert!(
        d.allowed && d.outcome == DecisionOutcome::Allow,
        "{:?}",
        d.checks
    );
    assert_eq!(d.approved_by.as_ref().map(|a| a.review), Some(7));
    assert!(d.authority.is_some() && d.obligations.is_some());
    // Expired, another key, another host country: still held.
    assert_eq!(
        with(approval(&key, D - Duration::seconds(1)), &held).outcome,
        DecisionOutcome::Review
    );
    assert_eq!(
        with(approval(&"0".repeat(64), D + Duration::hours(1)), &held).outcome,
        DecisionOutcome::Review
    );
    let elsewhere = row(
        "x",
        "spiffe://osprey.example/sa/llm",
        "DE",
        "all-minilm-l6-v2",
    )
    .source("31.253.230.1");
    let d = with(approval(&key, D + Duration::hours(1)), &elsewhere);
    assert_eq!(d.outcome, DecisionOutcome::Review, "{:?}", d.checks);
    // An approval never lifts a denial.
    let denied = row(
        "x",
        "spiffe://osprey.example/sa/llm",
        "US",
        "all-minilm-l6-v2",
    )
    .ev(Ev::BadSignature);
    let d = with(approval(&key, D + Duration::hours(1)), &denied);
    assert_eq!(d.outcome, DecisionOutcome::Deny);
}
