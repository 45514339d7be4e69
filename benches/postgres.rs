//! PostgreSQL benchmarks, on a private cluster of Debian's PostgreSQL (the test kit's, fsync on,
//! 127.0.0.1): ledger appends per second through `PgLedger` with 16 writer threads (group
//! commit: each append answered only once its batch is committed), against the baseline of 16
//! writers committing one row each in the same run; and release-decision latency (decide and
//! record in one transaction, `PgState::decide`) at 200 concurrent requests from two replicas'
//! connections, p50 and p99. The judge is a one-licence stand-in (microseconds), so the figures
//! are the state's and the database's, not the policy's. `cargo bench --bench postgres` (under
//! `cargo test` a small smoke run).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weightvault::database::DatabaseSection;
use weightvault::ledger::backend::LedgerBackend;
use weightvault::ledger::record::Record;
use weightvault::policy::{Authority, HostClaims, ReleaseDecision, ReleaseRequest, Usage};
use weightvault::postgres::Database;
use weightvault::release::engine::Judged;
use weightvault::release::state::{Reads, ReleaseState};
use weightvault_testkit::postgres::TestPostgres;

fn record(i: u64) -> Record {
    // About the size of a real decision record (~600 bytes), as benches/ledger.rs.
    let mut r = Record::action(
        "2026-11-22T12:00:00Z",
        "release-decision",
        &format!("spiffe://acme.example/ns/serving/sa/llm-{}", i % 97),
        "acme-frontier",
        Some("2026-11-01"),
        (1..=8)
            .map(|k| format!("model-{k:05}-of-00008.safetensors"))
            .collect(),
        "allowed",
    );
    // Counted by its requester's and its organisation's daily quota counters, as a real one.
    r.organisation = Some("acme".into());
    r.host_id = Some(format!("host-{:06}", i % 5000));
    r.host_country = Some("US".into());
    r.source = Some("10.1.2.3".into());
    r.codeword = Some(format!("{:032x}", i.wrapping_mul(0x9e3779b97f4a7c15)));
    r
}

fn judge(max: u64) -> impl FnMut(&BTreeMap<String, Usage>) -> Judged + Send {
    move |used| {
        let allowed = used.get("L").map_or(0, |u| u.releases) < max;
        let mut record = record(used.get("L").map_or(0, |u| u.releases));
        record.outcome = if allowed { "allowed" } else { "denied" }.into();
        record.authority = Some(weightvault::ledger::words::RecordAuthority::Licence(
            "L".into(),
        ));
        record.bytes = Some(1 << 30);
        let t = time::OffsetDateTime::UNIX_EPOCH;
        Judged {
            decision: ReleaseDecision {
                allowed,
                outcome: if allowed {
                    weightvault::policy::DecisionOutcome::Allow
                } else {
                    weightvault::policy::DecisionOutcome::Deny
                },
                checks: vec![],
                authority: Some(Authority::Licence { id: "L".into() }),
                obligations: None,
                tier: None,
                dry_run: false,
                review_key: None,
                approved_by: None,
            },
            record,
            request: ReleaseRequest {
                requester: "r".into(),
                model: "m".into(),
                sealed_facts: None,
                host: HostClaims {
                    host_id: "h".into(),
                    country: "US".into(),
                    region: "r".into(),
                    attester: "a".into(),
                    issued_at: t,
                    expires_at: t,
                    signature_valid: true,
                    nonce_fresh: true,
                    facility: None,
                },
                source_ip: None,
                time: t,
                used: used.clone(),
                size: 1 << 30,
                approvals: vec![],
                dry_run: false,
            },
            files: vec![],
            codeword: None,
        }
    }
}

/// Appends per second with `writers` threads, `per` appends each.
fn appends(l: &Arc<dyn LedgerBackend>, writers: u64, per: u64) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..per {
                    l.append(&record(w * per + i)).unwrap();
                }
            });
        }
    });
    (writers * per) as f64 / t.elapsed().as_secs_f64()
}

/// Commits per second of one single-row INSERT each, `writers` connections (the baseline: what
/// PostgreSQL does here without sequencing or batching).
fn baseline(url: &str, writers: u64, per: u64) -> f64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.batch_execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial, record bytea)")
            .await
            .unwrap();
        let bytes = record(1).canonical();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (url, bytes) = (url.to_string(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                for _ in 0..per {
                    c.execute("INSERT INTO bench_rows (record) VALUES ($1)", &[&bytes])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (writers * per) as f64 / t.elapsed().as_secs_f64()
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latencies of `rounds` waves of `concurrent` decisions, alternating two replicas' states.
fn decisions(dbs: &[Database; 2], concurrent: usize, rounds: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let states = [dbs[0].state(), dbs[1].state()];
    let ledgers: [Arc<dyn LedgerBackend>; 2] =
        [Arc::new(dbs[0].ledger()), Arc::new(dbs[1].ledger())];
    let mut all = Vec::new();
    // The records' day: each decision reads the licence and that day's quota counters of
    // its organisation and of one requester, as a real one does.
    let now = time::macros::datetime!(2026-11-22 12:00 UTC);
    rt.block_on(async {
        for _ in 0..rounds {
            let mut tasks = Vec::new();
            for k in 0..concurrent {
                let (st, l) = (states[k % 2].clone(), ledgers[k % 2].clone());
                let reads = Reads {
                    now,
                    counters: vec![
                        "L".into(),
                        "quota:organisation:acme:2026-11-22".into(),
                        format!(
                            "quota:requester:spiffe://acme.example/ns/serving/sa/llm-{}:2026-11-22",
                            k % 97
                        ),
                    ],
                };
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    st.decide(&mut judge(u64::MAX), &l, &reads).await.unwrap();
                    t.elapsed()
                }));
            }
            for t in tasks {
                all.push(t.await.unwrap());
            }
        }
    });
    all.sort();
    all
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-postgres");
    let pg = TestPostgres::start_in(&base).expect("a PostgreSQL cluster (tools/setup)");
    let (per, rounds) = if full { (2_000, 20) } else { (20, 1) };

    let url = pg.create_database("appends").unwrap();
    let db = Database::connect(&DatabaseSection::new(&url)).unwrap();
    let l: Arc<dyn LedgerBackend> = Arc::new(db.ledger());
    appends(&l, 16, per / 10); // warm the pool and the statement caches
    let rate = appends(&l, 16, per);
    let base_rate = baseline(&url, 16, per / 2);
    println!(
        "PgLedger appends, 16 writers: {rate:.0}/s; baseline (16 connections, one INSERT \
         committed each): {base_rate:.0}/s; ratio {:.2}",
        rate / base_rate
    );
    let one = appends(&l, 1, per / 4);
    println!("PgLedger appends, 1 writer: {one:.0}/s");
    let many = appends(&l, 64, per / 2);
    println!("PgLedger appends, 64 writers: {many:.0}/s");

    let url = pg.create_database("decisions").unwrap();
    let s = DatabaseSection::new(&url);
    let dbs = [
        Database::connect(&s).unwrap(),
        Database::connect(&s).unwrap(),
    ];
    decisions(&dbs, 200, 1); // warm
    let lat = decisions(&dbs, 200, rounds);
    println!(
        "decide-and-record, 200 concurrent over two replicas ({} decisions): p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    let lat = decisions(&dbs, 1, if full { 500 } else { 5 });
    println!(
        "decide-and-record, one at a time: p50 {:.2} ms, p99 {:.2} ms",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3
    );
}
