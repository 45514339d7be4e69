//! Release decisions at scale: 10,000 people, 10,000 licences, a 100,000-party screening list
//! with aliases (generated in the CSL's JSON shape and imported), 1,000 restricted parties
//! hand-entered, 1,000 organisations with owners (listed parties and chains of organisations)
//! and 200 Cedar policies on top of `policies/`. Reports load time, decisions per second on one
//! core and latency percentiles. `cargo bench --bench policy` (under `cargo test` it runs a
//! small smoke version).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;
use weightvault::policy::data::FILES;
use weightvault::policy::PolicyData;
use weightvault::policy::{decide, GeoLookup, HostClaims, ReleaseRequest};

const COUNTRIES: [&str; 10] = ["IN", "BR", "SG", "AE", "MX", "ID", "TH", "VN", "PL", "PT"];

struct FixedGeo;
impl GeoLookup for FixedGeo {
    fn country(&self, ip: std::net::IpAddr) -> Option<String> {
        // The real database is exercised by the tests; here a constant keeps the benchmark
        // about the decision, not the lookup (measured separately below when available).
        // 1.0.0.k is in COUNTRIES[k].
        match ip {
            std::net::IpAddr::V4(v4) => COUNTRIES
                .get(v4.octets()[3] as usize)
                .map(|c| c.to_string()),
            _ => None,
        }
    }
}

fn data(
    n_people: usize,
    n_licences: usize,
    n_parties: usize,
    n_cedar: usize,
    n_csl: usize,
    n_owned: usize,
) -> BTreeMap<String, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: BTreeMap<String, String> = FILES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(root.join(f)).unwrap(),
            )
        })
        .collect();
    let countries = COUNTRIES;
    // The Consolidated Screening List, generated in its published JSON shape with aliases and
    // imported as `policy import-csl` does.
    let t = Instant::now();
    let csl = weightvault::policy::screening::import_csl(&weightvault_testkit::csl::generate(
        n_csl,
        2026,
        "2026-11-30",
    ))
    .expect("the generated CSL imports");
    println!(
        "screening list: {} parties, {} aliases, generated and imported in {:.2} s",
        csl.parties.len(),
        csl.parties.iter().map(|p| p.aliases.len()).sum::<usize>(),
        t.elapsed().as_secs_f64()
    );
    let listed: Vec<String> = csl.parties.iter().map(|p| p.name.clone()).collect();
    files.insert("screening-list.json".into(), csl.to_stored().unwrap());
    let people = files.get_mut("people.toml").unwrap();
    for i in 0..n_people / 10 {
        let c = countries[i % countries.len()];
        writeln!(people, "[[organisation]]\nid = \"org{i}\"\nname = \"Generated Org {i} Ltd.\"\ncountry = \"{c}\"").unwrap();
        // The first n_owned organisations have owners: a listed party (a share from 5 to 59
        // per cent) and, in chains of five, the next organisation (40 per cent).
        if i < n_owned && !listed.is_empty() {
            let party = &listed[(i * 7919) % listed.len()];
            writeln!(
                people,
                "[[organisation.owner]]\nparty = {party:?}\npercent = {}",
                5 + (i * 11) % 55
            )
            .unwrap();
            if (i + 1) % 5 != 0 {
                writeln!(
                    people,
                    "[[organisation.owner]]\norganisation = \"org{}\"\npercent = 40",
                    i + 1
                )
                .unwrap();
            }
        }
    }
    for i in 0..n_people {
        let c = countries[(i / 10) % countries.len()];
        writeln!(
            people,
            "[[person]]\nid = \"p{i}@org{}.example\"\nname = \"Person {i}\"\norganisation = \"org{}\"\nus_status = \"none\"\ncitizenship = [{{ country = \"{c}\", acquired = 1990-01-01 }}]\nresidency = [{{ country = \"GB\", acquired = 1990-01-01 }}]",
            i / 10,
            i / 10
        )
        .unwrap();
    }
    let lic = files.get_mut("licences.toml").unwrap();
    for i in 0..n_licences {
        let org = (i * 7) % (n_people / 10);
        let c = countries[org % countries.len()];
        writeln!(
            lic,
            "[[licence]]\nid = \"G-{i}\"\nlicensee = \"org{org}\"\neccn = \"4E091\"\ndestinations = [\"{c}\"]\nend_users = [\"org{org}\"]\nvalid_from = 2026-01-01\nvalid_until = 2029-12-31\nstatus = \"active\"\nmax_releases = 1000\nreleases_used = {}",
            i % 900
        )
        .unwrap();
    }
    let rp = files.get_mut("restricted-parties.csv").unwrap();
    for i in 0..n_parties {
        writeln!(rp, "Listed Company Number {i} Limited,CN,Entity List").unwrap();
    }
    let cedar = files.get_mut("org.cedar").unwrap();
    for i in 0..n_cedar {
        writeln!(
            cedar,
            "@id(\"rule-{i}\")\npermit (principal, action == WeightVault::Action::\"fetch\", resource == WeightVault::Model::\"acme-frontier\")\nwhen {{ principal.organisation == \"org{i}\" && context.tier <= 2 }};"
        )
        .unwrap();
        if i % 10 == 0 {
            writeln!(cedar, "@id(\"deny-{i}\")\nforbid (principal, action, resource)\nwhen {{ context.host_region == \"blocked-{i}\" }};").unwrap();
        }
    }
    files
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (people, licences, parties, cedar, csl, owned, n) = if full {
        (10_000, 10_000, 1_000, 200, 100_000, 1_000, 50_000)
    } else {
        (100, 100, 10, 5, 500, 10, 200)
    };
    let files = data(people, licences, parties, cedar, csl, owned);
    let mut loads = Vec::new();
    let mut p = None;
    for _ in 0..if full { 5 } else { 1 } {
        let t = Instant::now();
        p = Some(PolicyData::parse(&files).expect("generated policy loads"));
        loads.push(t.elapsed());
    }
    let p = p.unwrap();
    loads.sort();
    println!(
        "policy: {} requesters, {} licences, {} restricted parties, {} owned organisations, {} Cedar policies; load median {:.1} ms",
        p.requesters.len(),
        p.licences.len(),
        p.screening.len(),
        p.organisations.values().filter(|o| !o.owners.is_empty()).count(),
        p.org_rules.len(),
        loads[loads.len() / 2].as_secs_f64() * 1e3
    );
    let now = time::macros::datetime!(2026-06-01 12:00 UTC);
    let countries = COUNTRIES;
    let reqs: Vec<ReleaseRequest> = (0..1000)
        .map(|i| {
            // People of the first 200 organisations, whom the generated Cedar rules permit.
            let person = (i * 37) % people.min(2000);
            ReleaseRequest {
                requester: format!("p{person}@org{}.example", person / 10),
                model: if i % 5 == 0 {
                    "acme-small"
                } else {
                    "acme-frontier"
                }
                .into(),
                sealed_facts: None,
                host: HostClaims {
                    host_id: format!("h{i}"),
                    country: countries[(person / 10) % countries.len()].into(),
                    region: "r".into(),
                    attester: "weightvault-test-attester".into(),
                    issued_at: now - time::Duration::minutes(1),
                    expires_at: now + time::Duration::minutes(4),
                    signature_valid: true,
                    nonce_fresh: true,
                    facility: None,
                },
                source_ip: Some(std::net::IpAddr::from([
                    1,
                    0,
                    0,
                    ((person / 10) % countries.len()) as u8,
                ])),
                time: now,
                used: Default::default(),
                size: 0,
                approvals: vec![],
                dry_run: false,
            }
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    let mut allowed = 0;
    let mut held = 0;
    let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let d = decide(&p, &FixedGeo, &reqs[i % reqs.len()]);
        lat.push(t.elapsed());
        allowed += usize::from(d.allowed);
        held += usize::from(d.outcome == weightvault::policy::DecisionOutcome::Review);
        for c in d.failed() {
            *failed.entry(c.name()).or_default() += 1;
        }
    }
    let total = t0.elapsed();
    lat.sort();
    let pct =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{n} decisions on one core: {:.0}/s; latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; {allowed} allowed, {held} held for review",
        n as f64 / total.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1].as_secs_f64() * 1e6
    );
    println!("failing checks over the run: {failed:?}");
    let db = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-data/geoip/geo-whois-asn-country.mmdb");
    if let Ok(bytes) = std::fs::read(&db) {
        let g = weightvault::policy::MaxMindGeo::from_bytes(bytes).unwrap();
        let t = Instant::now();
        let k = if full { 200_000 } else { 1000 };
        let mut hits = 0;
        for i in 0..k {
            let ip =
                std::net::IpAddr::from([(i % 223 + 1) as u8, (i >> 8) as u8, (i * 7) as u8, 1]);
            hits += usize::from(g.country(ip).is_some());
        }
        println!(
            "geolocation lookups: {:.2} µs each ({hits} of {k} found)",
            t.elapsed().as_secs_f64() * 1e6 / k as f64
        );
    }
}
