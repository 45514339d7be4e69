//! Restricted-party screening at scale: a generated 100,000-entry Consolidated Screening List
//! (crates/testkit `csl::generate`, aliases included) on top of `policies/`. Reports what a user
//! feels: the import of the CSL's JSON (`import_csl` and the stored form), the whole policy
//! set's load with it (against the same set with the shipped list, in the same process), the
//! screening of one name (p50/p99 over the labelled queries, one core) and a whole release
//! decision that screens (p50/p99). `cargo bench --bench screening` (under `cargo test` a
//! 5,000-entry smoke run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weightvault::policy::data::FILES;
use weightvault::policy::screening::import_csl;
use weightvault::policy::{decide, HostClaims, NoGeo, PolicyData, ReleaseRequest};
use weightvault_testkit::csl;

fn files() -> BTreeMap<String, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    FILES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read_to_string(root.join(f)).unwrap(),
            )
        })
        .collect()
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
}

fn median_load(files: &BTreeMap<String, String>, runs: usize) -> (PolicyData, f64) {
    let mut t = Vec::new();
    let mut p = None;
    for _ in 0..runs {
        let s = Instant::now();
        p = Some(PolicyData::parse(files).expect("the policy set loads"));
        t.push(s.elapsed());
    }
    t.sort();
    (p.unwrap(), t[t.len() / 2].as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, per_kind, runs) = if full {
        (100_000, 500, 3)
    } else {
        (5_000, 40, 1)
    };
    let t = Instant::now();
    let text = csl::generate(n, 2026, "2026-11-30");
    println!(
        "generated a {n}-entry CSL ({:.1} MB) in {:.2} s",
        text.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let list = import_csl(&text).expect("the generated CSL imports");
    let stored = list.to_stored().unwrap();
    let import = t.elapsed();
    let aliases: usize = list.parties.iter().map(|p| p.aliases.len()).sum();
    println!(
        "import: {} parties, {aliases} aliases in {:.2} s (stored form {:.1} MB)",
        list.parties.len(),
        import.as_secs_f64(),
        stored.len() as f64 / 1e6
    );

    let mut set = files();
    let (_, shipped_ms) = median_load(&set, runs);
    set.insert("screening-list.json".into(), stored);
    let (p, load_ms) = median_load(&set, runs);
    println!(
        "policy load: {load_ms:.0} ms with {} listed parties (the shipped list: {shipped_ms:.0} ms)",
        p.screening.len()
    );

    let queries: Vec<String> = csl::labelled(&text, per_kind, 7)
        .into_iter()
        .map(|l| l.query)
        .collect();
    let rounds = if full { 10 } else { 2 };
    let mut lat = Vec::with_capacity(queries.len() * rounds);
    let mut flagged = 0usize;
    let mut slowest: Vec<(Duration, &str)> = Vec::new();
    for _ in 0..rounds {
        for q in &queries {
            let s = Instant::now();
            let hits = p.screening.screen(q);
            let e = s.elapsed();
            lat.push(e);
            slowest.push((e, q));
            flagged += usize::from(!hits.is_empty());
        }
    }
    slowest.sort_by_key(|b| std::cmp::Reverse(b.0));
    slowest.dedup_by(|a, b| a.1 == b.1);
    let slow: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(d, q)| format!("{q:?} {:.0} µs", d.as_secs_f64() * 1e6))
        .collect();
    let max = lat.iter().max().unwrap().as_secs_f64() * 1e6;
    println!(
        "screening one name on one core ({} queries x {rounds}, {flagged} flagged): p50 {:.1} µs, p99 {:.1} µs, max {max:.0} µs",
        queries.len(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!("slowest: {}", slow.join(", "));

    let now = time::macros::datetime!(2026-12-01 12:00 UTC);
    let who = [
        "raj@globex.example",
        "alice@acme.example",
        "ivan@globex.example",
        "spiffe://acme.example/ns/serving/sa/llm",
        "spiffe://shadow.example/sa/llm",
    ];
    let reqs: Vec<ReleaseRequest> = who
        .iter()
        .map(|w| ReleaseRequest {
            requester: w.to_string(),
            model: "acme-frontier".into(),
            sealed_facts: None,
            host: HostClaims {
                host_id: "h".into(),
                country: "IN".into(),
                region: "r".into(),
                attester: "weightvault-test-attester".into(),
                issued_at: now - time::Duration::minutes(1),
                expires_at: now + time::Duration::minutes(4),
                signature_valid: true,
                nonce_fresh: true,
                facility: None,
            },
            source_ip: None,
            time: now,
            used: Default::default(),
            size: 0,
            approvals: vec![],
            dry_run: false,
        })
        .collect();
    let k = if full { 20_000 } else { 500 };
    let mut lat = Vec::with_capacity(k);
    for i in 0..k {
        let s = Instant::now();
        let d = decide(&p, &NoGeo, &reqs[i % reqs.len()]);
        lat.push(s.elapsed());
        std::hint::black_box(d);
    }
    println!(
        "whole decisions (screening organisation, person and licence end users): p50 {:.1} µs, p99 {:.1} µs",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}
