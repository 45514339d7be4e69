//! The release state and the ledger in a real PostgreSQL (Debian's, a private cluster on a free
//! port of 127.0.0.1 started by the test kit; one for the whole binary, one database per test),
//! with two `Database` connections standing for two replicas: nonces taken once across them,
//! decisions counted exactly once under a licence's allocation with the ledger and the counters
//! agreeing, withdrawals heard by the other replica, a stopped server failing closed and work
//! resuming when it is back, and migrations that can run any number of times.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use time::macros::datetime;
use time::OffsetDateTime;
use weightvault::database::DatabaseSection;
use weightvault::ledger::backend::LedgerBackend;
use weightvault::ledger::merkle;
use weightvault::ledger::record::Record;
use weightvault::ledger::usage::Allocations;
use weightvault::ledger::LedgerError;
use weightvault::policy::{Authority, HostClaims, ReleaseDecision, ReleaseRequest, Usage};
use weightvault::postgres::{Database, PgError};
use weightvault::release::engine::{Grant, Judged};
use weightvault::release::state::{DecideError, Reads, ReleaseState, Withdrawal};
use weightvault_testkit::postgres::TestPostgres;

const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

fn scratch_base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-scratch")
}

/// The binary's cluster (stopped and removed by its guardian when the binary exits).
fn cluster() -> &'static TestPostgres {
    static PG: OnceLock<TestPostgres> = OnceLock::new();
    PG.get_or_init(|| TestPostgres::start_in(&scratch_base()).expect("a test PostgreSQL"))
}

/// A new database of the binary's cluster, for one test.
fn database(name: &str) -> DatabaseSection {
    DatabaseSection::new(cluster().create_database(name).expect("createdb"))
}

fn connect(s: &DatabaseSection) -> Database {
    Database::connect(s).expect("connecting to the test database")
}

/// A decision under licence `L` of `size` bytes, allowed while fewer than `max` releases are
/// used (what `engine::judge` does with the policy's allocation, reduced to it).
fn judge_under(max: u64, size: u64) -> impl FnMut(&BTreeMap<String, Usage>) -> Judged + Send {
    move |used| {
        let allowed = used.get("L").map_or(0, |u| u.releases) < max;
        let mut record = Record::action(
            "2026-12-01T12:00:00Z",
            "release-decision",
            "r",
            "m",
            Some("1"),
            vec![],
            if allowed { "allowed" } else { "denied" },
        );
        record.authority = Some(weightvault::ledger::words::RecordAuthority::Licence(
            "L".into(),
        ));
        record.bytes = Some(size);
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
            request: request(used.clone(), size),
            files: vec![],
            codeword: None,
        }
    }
}

/// What `judge_under` reads: licence `L`.
fn reads_l() -> Reads {
    Reads {
        now: NOW,
        counters: vec!["L".into()],
    }
}

/// What `judge_quota` at `at` reads: requester `r`'s and organisation `o`'s counters of the
/// day, and licence `L`.
fn reads_quota(at: OffsetDateTime) -> Reads {
    Reads {
        now: at,
        counters: vec![
            format!("quota:requester:r:{}", day(at)),
            format!("quota:organisation:o:{}", day(at)),
            "L".into(),
        ],
    }
}

fn request(used: BTreeMap<String, Usage>, size: u64) -> ReleaseRequest {
    ReleaseRequest {
        requester: "r".into(),
        model: "m".into(),
        sealed_facts: None,
        host: HostClaims {
            host_id: "h".into(),
            country: "US".into(),
            region: "r1".into(),
            attester: "a".into(),
            issued_at: NOW,
            expires_at: NOW,
            signature_valid: true,
            nonce_fresh: true,
            facility: None,
        },
        source_ip: Some("127.0.0.1".parse().unwrap()),
        time: NOW,
        used,
        size,
        approvals: vec![],
        dry_run: false,
    }
}

fn grant(id: u8, decision_index: u64, record: Record) -> Grant {
    Grant {
        id: [id; 16],
        client: [7; 32],
        host_key: [9; 32],
        expires_at: NOW + time::Duration::hours(1),
        decision_index,
        record,
        request: request(
            BTreeMap::from([(
                "L".to_string(),
                Usage {
                    releases: 3,
                    bytes: 30,
                },
            )]),
            10,
        ),
        model: "m".into(),
        revision: "1".into(),
        files: vec![0, 2],
        shards: vec!["a.safetensors".into(), "c.safetensors".into()],
        codeword: Some([5; 16]),
        withdrawn: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_nonce_issued_at_one_replica_is_taken_once_at_either_never_twice() {
    let s = database("nonces");
    let (a, b) = (connect(&s).state(), connect(&s).state());
    let (me, other) = ([1u8; 32], [2u8; 32]);
    let later = NOW + time::Duration::minutes(1);
    runtime().block_on(async {
        // Table: who takes, when, and what it must answer, in order, for one nonce each.
        let n = a.issue_nonce(&me, NOW, later).await.unwrap();
        assert!(
            !b.take_nonce(&n, &other, NOW).await.unwrap(),
            "another client's"
        );
        assert!(
            b.take_nonce(&n, &me, NOW).await.unwrap(),
            "at the other replica"
        );
        assert!(
            !a.take_nonce(&n, &me, NOW).await.unwrap(),
            "replayed at the first"
        );
        assert!(
            !b.take_nonce(&n, &me, NOW).await.unwrap(),
            "replayed at the second"
        );
        let m = a.issue_nonce(&me, NOW, later).await.unwrap();
        assert_ne!(m, n);
        let late = later + time::Duration::seconds(1);
        assert!(!b.take_nonce(&m, &me, late).await.unwrap(), "expired");
        assert!(
            !b.take_nonce(&m, &me, NOW).await.unwrap(),
            "spent by the late try"
        );
        assert!(!b.take_nonce("00", &me, NOW).await.unwrap(), "never issued");

        // Concurrency: 40 nonces from A, each taken by 8 requests at once, half at each
        // replica: exactly one of the 8 gets each nonce.
        let mut nonces = Vec::new();
        for _ in 0..40 {
            nonces.push(a.issue_nonce(&me, NOW, later).await.unwrap());
        }
        let mut tasks = Vec::new();
        for n in &nonces {
            for k in 0..8 {
                let (st, n) = (if k % 2 == 0 { a.clone() } else { b.clone() }, n.clone());
                tasks.push(tokio::spawn(async move {
                    (n.clone(), st.take_nonce(&n, &me, NOW).await.unwrap())
                }));
            }
        }
        let mut wins: BTreeMap<String, u32> = BTreeMap::new();
        for t in tasks {
            let (n, ok) = t.await.unwrap();
            *wins.entry(n).or_default() += u32::from(ok);
        }
        assert_eq!(wins.len(), 40);
        assert!(wins.values().all(|&w| w == 1), "{wins:?}");
    });
}

#[test]
fn a_hundred_decisions_at_two_replicas_against_ten_left_allow_exactly_ten() {
    let s = database("allocations");
    let (da, db) = (connect(&s), connect(&s));
    let (a, b) = (da.state(), db.state());
    let la: Arc<dyn LedgerBackend> = Arc::new(da.ledger());
    let lb: Arc<dyn LedgerBackend> = Arc::new(db.ledger());
    // Entries already in the ledger are sequenced before the decisions, and a stream end
    // counts towards its decision's licence.
    assert_eq!(
        la.append(&Record::policy_reload("t", &[], None)).unwrap(),
        0
    );
    let results = runtime().block_on(async {
        let mut tasks = Vec::new();
        for k in 0..100 {
            let (st, l) = if k % 2 == 0 {
                (a.clone(), la.clone())
            } else {
                (b.clone(), lb.clone())
            };
            tasks.push(tokio::spawn(async move {
                let (j, i) = st
                    .decide(&mut judge_under(10, 100), &l, &reads_l())
                    .await
                    .unwrap();
                (j.decision.allowed, i, j.record)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let allowed: Vec<_> = results.iter().filter(|r| r.0).collect();
    assert_eq!(allowed.len(), 10, "exactly the ten left are allowed");
    let mut indices: Vec<u64> = results.iter().map(|r| r.1).collect();
    indices.sort();
    assert_eq!(indices, (1..=100).collect::<Vec<_>>(), "gapless, each once");
    // What each decision was told is what the ledger holds at its index.
    let ledger = da.ledger();
    for (_, i, rec) in &results {
        assert_eq!(ledger.entry(*i).unwrap().as_ref(), Some(rec), "entry {i}");
    }
    // A stream end after the first allowed decision counts its bytes to the licence.
    let mut end = Record::action("t", "stream-end", "r", "m", Some("1"), vec![], "completed");
    end.follows = Some(allowed[0].1);
    end.bytes = Some(64);
    assert_eq!(lb.append(&end).unwrap(), 101);

    // The counters, and a recount of the ledger's entries by the pure counting rules, agree.
    let counters = runtime().block_on(b.counters()).unwrap();
    let mut recount = Allocations::default();
    for (i, e) in ledger.entries_from(0).unwrap().iter().enumerate() {
        recount.add_entry(i as u64, e).unwrap();
    }
    let want = Usage {
        releases: 10,
        bytes: 1000,
    };
    assert_eq!(counters["L"], (want, 64));
    assert_eq!(recount.used["L"], want);
    assert_eq!(recount.streamed["L"], 64);
    // And another decision at either replica is denied.
    let (j, _) = runtime()
        .block_on(a.decide(&mut judge_under(10, 100), &la, &reads_l()))
        .unwrap();
    assert!(!j.decision.allowed);
    // A live release is judged again without its own allocation.
    let others = runtime().block_on(b.used_by_others(allowed[0].1)).unwrap();
    assert_eq!(
        others["L"],
        Usage {
            releases: 9,
            bytes: 900
        }
    );
    let denied = results.iter().find(|r| !r.0).unwrap();
    assert_eq!(
        runtime().block_on(b.used_by_others(denied.1)).unwrap()["L"],
        want
    );
}

/// A record of `kind` with `outcome`, under licence `licence` if any, of `bytes`, following
/// the entry `follows` if any.
fn entry(
    kind: &str,
    outcome: &str,
    licence: Option<&str>,
    bytes: u64,
    follows: Option<u64>,
) -> Record {
    let mut r = Record::action("t", kind, "r", "m", Some("1"), vec![], outcome);
    r.authority =
        licence.map(|l| weightvault::ledger::words::RecordAuthority::Licence(l.to_string()));
    r.bytes = Some(bytes);
    r.follows = follows;
    r
}

#[test]
fn the_counters_are_what_the_counting_rules_make_of_the_entries_in_any_batches() {
    let s = database("counting");
    let (da, db) = (connect(&s), connect(&s));
    let ls: [Arc<dyn LedgerBackend>; 2] = [Arc::new(da.ledger()), Arc::new(db.ledger())];
    // Table: the entries that stream ends may follow, and whether they count a release.
    let followed = [
        entry("release-decision", "allowed", Some("L"), 100, None),
        entry("release-decision", "allowed", Some("M"), 7, None),
        entry("release-decision", "denied", Some("L"), 100, None),
        entry("release-decision", "allowed", None, 100, None),
        entry("open", "allowed", Some("L"), 100, None),
    ];
    let at: Vec<u64> = followed.iter().map(|r| ls[0].append(r).unwrap()).collect();
    // Stream ends after each of them, after nothing yet appended, and more decisions, from
    // 8 threads at both replicas at once (so that batches mix them).
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (l, at) = (ls[(t % 2) as usize].clone(), &at);
            sc.spawn(move || {
                for k in 0..20u64 {
                    let r = match k % 4 {
                        0 => entry("release-decision", "allowed", Some("L"), 10, None),
                        1 => entry(
                            "stream-end",
                            "completed",
                            None,
                            k + t,
                            Some(at[(k / 4) as usize]),
                        ),
                        2 => entry("stream-end", "completed", None, 5, Some(1_000_000)),
                        _ => entry("stream-end", "failed", None, 3, Some(at[(t % 5) as usize])),
                    };
                    l.append(&r).unwrap();
                }
            });
        }
    });
    let counters = runtime().block_on(da.state().counters()).unwrap();
    let mut recount = Allocations::default();
    let entries = da.ledger().entries_from(0).unwrap();
    assert_eq!(entries.len(), 5 + 8 * 20, "every append, once");
    for (i, e) in entries.iter().enumerate() {
        recount.add_entry(i as u64, e).unwrap();
    }
    let want: BTreeMap<String, (Usage, u64)> = recount
        .used
        .iter()
        .map(|(id, u)| {
            (
                id.clone(),
                (*u, recount.streamed.get(id).copied().unwrap_or(0)),
            )
        })
        .collect();
    assert_eq!(counters, want);
    assert_eq!(
        counters["L"].0.releases,
        1 + 8 * 5,
        "L: the first and the 40 appended"
    );
    assert!(
        counters["M"].1 > 0,
        "stream ends after M's decision count for M"
    );
}

#[test]
fn the_tree_head_and_proofs_are_those_of_the_entries_leaf_hashes() {
    let s = database("tree");
    let (da, db) = (connect(&s), connect(&s));
    let (la, lb) = (da.ledger(), db.ledger());
    let mut leaves = Vec::new();
    for i in 0..37u64 {
        let mut r = Record::action("t", "open", "op", "m", None, vec![], "allowed");
        r.bytes = Some(i);
        let l = if i % 3 == 0 { &la } else { &lb };
        assert_eq!(l.append(&r).unwrap(), i);
        leaves.push(merkle::leaf_hash(&r.canonical()));
    }
    // The other replica's appends are in this one's tree.
    let (size, root) = la.tree_head().unwrap();
    assert_eq!((size, root), (37, merkle::root(&leaves)));
    assert_eq!(lb.tree_head().unwrap(), (37, merkle::root(&leaves)));
    for (index, size) in [(0u64, 1u64), (5, 37), (36, 37), (16, 17)] {
        let p = la.inclusion_proof(index, size).unwrap().unwrap();
        let root = merkle::root(&leaves[..size as usize]);
        assert!(merkle::verify_inclusion(
            index,
            size,
            &leaves[index as usize],
            &p,
            &root
        ));
    }
    assert_eq!(la.inclusion_proof(37, 37).unwrap(), None);
    assert_eq!(la.inclusion_proof(0, 38).unwrap(), None);
    let p = lb.consistency_proof(10, 37).unwrap().unwrap();
    assert!(merkle::verify_consistency(
        10,
        37,
        &merkle::root(&leaves[..10]),
        &merkle::root(&leaves),
        &p
    ));
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let note = la.checkpoint("test.example/ledger", &key).unwrap();
    let cp = weightvault::ledger::checkpoint::Checkpoint::verify(
        &note,
        "test.example/ledger",
        &key.verifying_key().to_bytes(),
    )
    .unwrap();
    assert_eq!((cp.size, cp.root), (37, merkle::root(&leaves)));
}

/// The next withdrawal a subscriber hears. The timeout is a hang guard, not a latency check
/// (latencies are printed, never asserted).
async fn recv(rx: &mut tokio::sync::broadcast::Receiver<Withdrawal>) -> Withdrawal {
    tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
        .await
        .expect("a withdrawal heard")
        .expect("no withdrawal missed")
}

#[test]
fn a_release_and_its_withdrawal_reach_the_other_replica() {
    let s = database("withdrawals");
    let (a, b) = (connect(&s).state(), connect(&s).state());
    let rec = Record::action(
        "t",
        "release-decision",
        "r",
        "m",
        Some("1"),
        vec![],
        "allowed",
    );
    runtime().block_on(async {
        for id in 1..=20u8 {
            a.put_release(grant(id, u64::from(id), rec.clone()), NOW)
                .await
                .unwrap();
        }
        // Stored at A, read whole at B (a Range resume may land on either).
        let got = b.release(&[1; 16]).await.unwrap().expect("at B");
        assert_eq!(
            format!("{:?}", *got),
            format!("{:?}", grant(1, 1, rec.clone()))
        );
        assert!(b.release(&[99; 16]).await.unwrap().is_none());
        assert_eq!(b.live_releases(NOW).await.unwrap().len(), 20);

        let (mut rx, mut rx_a) = (b.withdrawals(), a.withdrawals());
        let mut latencies = Vec::new();
        for id in 1..=10u8 {
            let w = Withdrawal {
                id: [id; 16],
                failed: vec!["licence".into()],
            };
            let t0 = std::time::Instant::now();
            a.withdraw(w.clone()).await.unwrap();
            let heard = recv(&mut rx).await;
            latencies.push(t0.elapsed());
            assert_eq!(heard, w);
        }
        latencies.sort();
        eprintln!(
            "withdrawal at A heard at B: median {:?}, max {:?} (of 10)",
            latencies[5], latencies[9]
        );
        let got = b.release(&[1; 16]).await.unwrap().unwrap();
        assert_eq!(got.withdrawn.as_deref(), Some(&["licence".to_string()][..]));
        assert_eq!(b.live_releases(NOW).await.unwrap().len(), 10);

        // A's own withdrawals reach A's subscribers the same way.
        for id in 1..=10u8 {
            assert_eq!(recv(&mut rx_a).await.id, [id; 16]);
        }
        // Many at once from both replicas: each heard once, at both, in the same (commit)
        // order.
        let mut tasks = Vec::new();
        for id in 11..=20u8 {
            let st = if id % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                st.withdraw(Withdrawal {
                    id: [id; 16],
                    failed: vec![format!("check-{id}")],
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut orders = Vec::new();
        for rx in [&mut rx, &mut rx_a] {
            let mut ids = Vec::new();
            for _ in 11..=20 {
                let w = recv(rx).await;
                assert_eq!(w.failed, [format!("check-{}", w.id[0])]);
                ids.push(w.id[0]);
            }
            orders.push(ids);
        }
        assert_eq!(orders[0], orders[1], "the same order at both replicas");
        orders[0].sort();
        assert_eq!(orders[0], (11..=20).collect::<Vec<u8>>());
        assert!(b.live_releases(NOW).await.unwrap().is_empty());
    });
    // A withdrawal whose notification never came (written without NOTIFY) is still heard:
    // the poll finds it.
    let mut rx = b.withdrawals();
    cluster()
        .psql(
            "withdrawals",
            "BEGIN; UPDATE wv_withdrawal_head SET seq = seq + 1;
             INSERT INTO wv_withdrawals (seq, id, failed)
               SELECT seq, '\\x2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a'::bytea, '[\"silent\"]'
               FROM wv_withdrawal_head; COMMIT;",
        )
        .unwrap();
    let w = runtime().block_on(recv(&mut rx));
    assert_eq!(
        w,
        Withdrawal {
            id: [42; 16],
            failed: vec!["silent".into()]
        }
    );
}

#[test]
fn postgres_stopped_refuses_decisions_and_appends_and_they_resume_when_it_is_back() {
    // Its own cluster: stopping the binary's would fail the other tests.
    let mut pg = TestPostgres::start_in(&scratch_base()).unwrap();
    let s = DatabaseSection::new(pg.url());
    let db = connect(&s);
    let (st, ledger) = (db.state(), db.ledger());
    let l: Arc<dyn LedgerBackend> = Arc::new(ledger.clone());
    let rt = runtime();
    let r = Record::policy_reload("t", &[], None);
    assert_eq!(ledger.append(&r).unwrap(), 0);
    let (j, i) = rt
        .block_on(st.decide(&mut judge_under(5, 1), &l, &reads_l()))
        .unwrap();
    assert!(j.decision.allowed && i == 1);

    pg.stop().unwrap();
    for what in 0..3 {
        let e = ledger.append(&r).unwrap_err();
        assert!(
            matches!(e, LedgerError::Unavailable(_)),
            "append {what}: {e}"
        );
        let e = rt
            .block_on(st.decide(&mut judge_under(5, 1), &l, &reads_l()))
            .unwrap_err();
        assert!(
            matches!(e, DecideError::Ledger(LedgerError::Unavailable(_))),
            "decide {what}: {e}"
        );
        assert!(rt.block_on(st.issue_nonce(&[1; 32], NOW, NOW)).is_err());
        assert!(rt.block_on(st.take_nonce("00", &[1; 32], NOW)).is_err());
        assert!(ledger.tree_head().is_err());
    }

    pg.start().unwrap();
    // The pool drops the connections the stop closed; the first request after the restart
    // may still meet one of them, so a few tries are allowed (the service answers 503 and the
    // client retries).
    let mut next = None;
    for _ in 0..5 {
        if let Ok(i) = ledger.append(&r) {
            next = Some(i);
            break;
        }
    }
    assert_eq!(next, Some(2), "nothing refused was written; appends resume");
    let (j, i) = rt
        .block_on(st.decide(&mut judge_under(5, 1), &l, &reads_l()))
        .unwrap();
    assert!(j.decision.allowed);
    assert_eq!(i, 3);
    let counters = rt.block_on(st.counters()).unwrap();
    assert_eq!(
        counters["L"].0.releases, 2,
        "only the committed decisions count"
    );
    assert_eq!(ledger.tree_head().unwrap().0, 4);
}

#[test]
fn the_schema_is_created_once_by_replicas_starting_together_and_again_is_a_no_op() {
    let s = database("migrations");
    let both: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4).map(|_| sc.spawn(|| Database::connect(&s))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(both.iter().all(Result::is_ok));
    let again = connect(&s);
    let l = again.ledger();
    assert_eq!(l.append(&Record::policy_reload("t", &[], None)).unwrap(), 0);
    drop(again);
    let again = connect(&s);
    assert_eq!(again.ledger().len(), 1, "data survives a second start");
    let versions = cluster()
        .psql(
            "migrations",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM wv_schema_version",
        )
        .unwrap();
    let want: Vec<String> = weightvault::postgres::schema::MIGRATIONS
        .iter()
        .map(|m| m.0.to_string())
        .collect();
    assert_eq!(versions, want.join(","));
    // A database migrated by a newer weightvault is refused, not written to.
    cluster()
        .psql(
            "migrations",
            "INSERT INTO wv_schema_version (version) VALUES (9999)",
        )
        .unwrap();
    match Database::connect(&s) {
        Err(PgError::SchemaTooNew { found: 9999, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

/// A record longer than a tile bundle holds is refused by the shared ledger before it has an
/// index: an append, and a decision judged in a batch with others, which are decided without
/// it (its allocation is not counted).
#[test]
fn a_record_too_long_for_a_tile_is_refused_and_its_batch_decided_without_it() {
    let s = database("too-long");
    let (da, db) = (connect(&s), connect(&s));
    let (a, b) = (da.state(), db.state());
    let la: Arc<dyn LedgerBackend> = Arc::new(da.ledger());
    let lb: Arc<dyn LedgerBackend> = Arc::new(db.ledger());
    let long_names: Vec<String> = (0..3000)
        .map(|i| format!("model-{i:05}-of-03000.safetensors"))
        .collect();
    let mut long = Record::action(
        "t",
        "seal",
        "op",
        "m",
        Some("1"),
        long_names.clone(),
        "sealed",
    );
    long.bytes = Some(1);
    match la.append(&long) {
        Err(LedgerError::TooLong(e)) => assert!(e.to_string().contains("`seal` record"), "{e}"),
        other => panic!("taken: {other:?}"),
    }
    assert!(la.is_empty(), "nothing was sequenced");
    let results = runtime().block_on(async {
        let mut tasks = Vec::new();
        for k in 0..12 {
            let (st, l) = if k % 2 == 0 {
                (a.clone(), la.clone())
            } else {
                (b.clone(), lb.clone())
            };
            let names = long_names.clone();
            tasks.push(tokio::spawn(async move {
                let mut judge = judge_under(3, 100);
                // Decision 0 names 3,000 files: its record cannot be an entry.
                let mut judge = move |used: &BTreeMap<String, Usage>| {
                    let mut j = judge(used);
                    if k == 0 {
                        j.record.shards = names.clone();
                    }
                    j
                };
                st.decide(&mut judge, &l, &reads_l())
                    .await
                    .map(|(j, i)| (j.decision.allowed, i))
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    match &results[0] {
        Err(DecideError::Ledger(LedgerError::TooLong(_))) => {}
        other => panic!("the long decision: {other:?}"),
    }
    let rest: Vec<(bool, u64)> = results[1..].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(
        rest.iter().filter(|r| r.0).count(),
        3,
        "the three left, without it"
    );
    let mut indices: Vec<u64> = rest.iter().map(|r| r.1).collect();
    indices.sort();
    assert_eq!(
        indices,
        (0..11).collect::<Vec<_>>(),
        "gapless, the long one not among them"
    );
}

/// An append is answered only once its batch's commit is flushed. On a cluster of its own
/// whose WAL writer flushes only every 10 s, 20 appends in turn, each answered before the next
/// is sent, cost the server at least 20 WAL fsyncs (`pg_stat_wal.wal_sync`): a batch
/// committed without waiting for its flush (`synchronous_commit = off`, tried for speed) would
/// be answered before any flush, and cost one or two.
#[test]
fn every_answered_append_was_flushed_before_its_answer() {
    let pg = TestPostgres::start_in(&scratch_base()).expect("a test PostgreSQL");
    pg.psql("postgres", "ALTER SYSTEM SET wal_writer_delay = '10s'")
        .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    let s = DatabaseSection::new(pg.create_database("durable").unwrap());
    let rec = |i: u64| {
        let mut r = Record::action("t", "open", "op", "m", None, vec![], "allowed");
        r.bytes = Some(i);
        r
    };
    // Connections end (and report their statistics) when the database is dropped.
    let appended = |from: u64, n: u64| {
        let db = connect(&s);
        let l = db.ledger();
        for i in from..from + n {
            assert_eq!(l.append(&rec(i)).unwrap(), i);
        }
        drop((l, db));
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let syncs = || -> u64 {
        pg.psql("postgres", "SELECT wal_sync FROM pg_stat_wal")
            .unwrap()
            .parse()
            .unwrap()
    };
    appended(0, 1); // the schema, and the new delay in force
    let before = syncs();
    appended(1, 20);
    let after = syncs();
    assert!(
        after - before >= 20,
        "20 answered appends in turn, {} WAL fsyncs",
        after - before
    );
    eprintln!("20 answered appends in turn: {} WAL fsyncs", after - before);
}

/// `YYYY-MM-DD` of `t` (UTC).
fn day(t: OffsetDateTime) -> String {
    t.date().to_string()
}

/// A decision at `at` by requester `r` of organisation `o` (no licence: the authority does
/// not matter to a quota), allowed while fewer than `max` releases of the requester's quota
/// counter of that day are used (what `engine::judge` does with a `[[quota]]` rule, reduced
/// to it).
fn judge_quota(
    max: u64,
    at: OffsetDateTime,
) -> impl FnMut(&BTreeMap<String, Usage>) -> Judged + Send {
    move |used| {
        let mine = format!("quota:requester:r:{}", day(at));
        let allowed = used.get(&mine).map_or(0, |u| u.releases) < max;
        let mut j = judge_under(u64::MAX, 100)(used);
        j.record.time = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        j.record.organisation = Some("o".into());
        j.record.authority = None;
        j.record.outcome =
            weightvault::ledger::words::Outcome::parse(if allowed { "allowed" } else { "denied" });
        j.decision.allowed = allowed;
        j.decision.authority = None;
        j
    }
}

/// The daily quotas in the database: decisions at two replicas against a quota count it
/// exactly (as the licence allocation is), each day apart, the counters agree with the pure
/// counting rules' recount of the ledger, and a live release is judged again without its own.
#[test]
fn a_daily_quota_at_two_replicas_allows_exactly_its_count_and_each_day_apart() {
    let s = database("quotas");
    let (da, db) = (connect(&s), connect(&s));
    let (a, b) = (da.state(), db.state());
    let la: Arc<dyn LedgerBackend> = Arc::new(da.ledger());
    let lb: Arc<dyn LedgerBackend> = Arc::new(db.ledger());
    let now = OffsetDateTime::now_utc();
    let two_days_ago = now - time::Duration::days(2);
    let results = runtime().block_on(async {
        let mut tasks = Vec::new();
        for k in 0..60 {
            let (st, l) = if k % 2 == 0 {
                (a.clone(), la.clone())
            } else {
                (b.clone(), lb.clone())
            };
            // Every sixth decision is dated two days ago: another day's counter.
            let at = if k % 6 == 5 { two_days_ago } else { now };
            tasks.push(tokio::spawn(async move {
                let (j, i) = st
                    .decide(&mut judge_quota(7, at), &l, &reads_quota(at))
                    .await
                    .unwrap();
                (j.decision.allowed, i, at)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let allowed_on = |t: OffsetDateTime| results.iter().filter(|r| r.0 && r.2 == t).count();
    assert_eq!(allowed_on(now), 7, "exactly the quota, today");
    assert_eq!(allowed_on(two_days_ago), 7, "and the other day's, apart");
    let counters = runtime().block_on(b.counters()).unwrap();
    let mut recount = Allocations::default();
    for (i, e) in da.ledger().entries_from(0).unwrap().iter().enumerate() {
        recount.add_entry(i as u64, e).unwrap();
    }
    let recounted: BTreeMap<String, (Usage, u64)> = recount
        .used
        .iter()
        .map(|(k, u)| (k.clone(), (*u, 0)))
        .collect();
    assert_eq!(counters, recounted);
    let today = Usage {
        releases: 7,
        bytes: 700,
    };
    assert_eq!(
        counters[&format!("quota:requester:r:{}", day(now))].0,
        today
    );
    assert_eq!(
        counters[&format!("quota:organisation:o:{}", day(now))].0,
        today
    );
    // Another decision today is refused at either replica.
    let (j, _) = runtime()
        .block_on(a.decide(&mut judge_quota(7, now), &la, &reads_quota(now)))
        .unwrap();
    assert!(!j.decision.allowed);
    // A live release is judged again without its own allocation.
    let first = results.iter().find(|r| r.0 && r.2 == now).unwrap();
    let others = runtime().block_on(a.used_by_others(first.1)).unwrap();
    assert_eq!(
        others[&format!("quota:requester:r:{}", day(now))],
        Usage {
            releases: 6,
            bytes: 600
        }
    );
}

/// A held decision and its review at `follows`, as the service and `weightvault review`
/// write them.
fn held_and_review(key: &str, at: &str) -> (Record, impl Fn(u64, &str) -> Record) {
    let mut held = Record::action(at, "release-decision", "r", "m", Some("1"), vec![], "held");
    held.reason = Some(format!(
        "{}{key}: ownership: 30 %",
        weightvault::ledger::review::KEY_PREFIX
    ));
    let at = at.to_string();
    let review = move |follows: u64, outcome: &str| {
        let mut r = Record::action(&at, "review", "officer", "m", Some("1"), vec![], outcome);
        r.follows = Some(follows);
        r.reason = Some("checked".into());
        r
    };
    (held, review)
}

/// An approval recorded through one connection (`weightvault review approve` on a shared
/// database) is in force at every replica before its next decision, for its hours; the
/// first decision of a review stands.
#[test]
fn an_approval_recorded_anywhere_is_in_force_at_every_replica_for_its_hours() {
    let s = database("approvals");
    let (da, db, officer) = (connect(&s), connect(&s), connect(&s));
    let (a, b) = (da.state(), db.state());
    let rt = runtime();
    let at = datetime!(2026-12-01 13:00 UTC);
    let (k1, k2) = ("ab".repeat(32), "cd".repeat(32));
    let (h1, review) = held_and_review(&k1, "2026-12-01T12:00:00Z");
    let (h2, _) = held_and_review(&k2, "2026-12-01T12:00:00Z");
    let la = da.ledger();
    let i1 = la.append(&h1).unwrap();
    let i2 = la.append(&h2).unwrap();
    for _ in 0..50 {
        la.append(&Record::policy_reload("t", &[], None)).unwrap();
    }
    assert!(rt.block_on(b.approvals(24, at)).unwrap().is_empty());
    let ol = officer.ledger();
    let mut approve = review(i1, "approved");
    approve.time = "2026-12-01T13:00:00Z".into();
    ol.append(&approve).unwrap();
    ol.append(&review(i1, "rejected")).unwrap();
    ol.append(&review(i2, "rejected")).unwrap();
    ol.append(&review(i2, "approved")).unwrap();
    for st in [&a, &b] {
        let f = rt
            .block_on(st.approvals(24, at + time::Duration::hours(1)))
            .unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].review, f[0].key.as_str()), (i1, k1.as_str()));
        assert_eq!(f[0].by, "officer");
        assert_eq!(f[0].until, at + time::Duration::hours(24));
        let later = at + time::Duration::hours(25);
        assert!(rt.block_on(st.approvals(24, later)).unwrap().is_empty());
    }
    // Only the entries concerning reviews are read.
    let reviewing = cluster()
        .psql(
            "approvals",
            "SELECT count(*) FROM wv_entries WHERE reviewing",
        )
        .unwrap();
    assert_eq!(reviewing, "6");
}

/// A database written before quotas and reviews were counted in it (schema version 2) is
/// counted by the migration from its records: the quota counters of its allowed decisions,
/// and its held decisions and reviews.
#[test]
fn entries_written_before_schema_version_3_are_counted_by_its_migration() {
    let name = "before-v3";
    let url = cluster().create_database(name).unwrap();
    let pg = |sql: &str| cluster().psql(name, sql).unwrap();
    pg(
        "CREATE TABLE wv_schema_version (version integer PRIMARY KEY,
                                        applied_at timestamptz NOT NULL DEFAULT now())",
    );
    for (v, sql) in &weightvault::postgres::schema::MIGRATIONS[..2] {
        pg(sql);
        pg(&format!(
            "INSERT INTO wv_schema_version (version) VALUES ({v})"
        ));
    }
    let now = OffsetDateTime::now_utc();
    let today = day(now);
    let time = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut allowed = judge_quota(7, now)(&BTreeMap::new()).record;
    allowed.authority = Some(weightvault::ledger::words::RecordAuthority::Licence(
        "L".into(),
    ));
    let (held, review) = held_and_review(&"ef".repeat(32), &time);
    // A denied decision whose unsigned evidence carried a NUL (PostgreSQL's jsonb refuses
    // one): the migration reads records as records, not as jsonb.
    let mut odd = allowed.clone();
    odd.outcome = weightvault::ledger::words::Outcome::parse("denied");
    odd.host_id = Some("host\u{0}-x".into());
    let records = [allowed.clone(), allowed, held, review(2, "approved"), odd];
    for (i, r) in records.iter().enumerate() {
        let bytes = r.canonical();
        let leaf = merkle::leaf_hash(&bytes);
        let licence = if i < 2 { "'L', 100" } else { "NULL, NULL" };
        pg(&format!(
            "INSERT INTO wv_entries (idx, record, leaf, alloc_licence, alloc_bytes)
             VALUES ({i}, '\\x{}', '\\x{}', {licence})",
            hex::encode(&bytes),
            hex::encode(leaf)
        ));
    }
    pg("UPDATE wv_ledger_head SET size = 5");
    pg("INSERT INTO wv_licence_usage VALUES ('L', 2, 200, 0)");

    let db = connect(&DatabaseSection::new(url));
    let st = db.state();
    let counters = runtime().block_on(st.counters()).unwrap();
    let two = Usage {
        releases: 2,
        bytes: 200,
    };
    assert_eq!(counters[&format!("quota:requester:r:{today}")], (two, 0));
    assert_eq!(counters[&format!("quota:organisation:o:{today}")], (two, 0));
    assert_eq!(counters["L"], (two, 0));
    assert_eq!(counters.len(), 3, "{counters:?}");
    let f = runtime().block_on(st.approvals(24, now)).unwrap();
    assert_eq!(f.len(), 1, "the approval of review 2: {f:?}");
    assert_eq!(f[0].review, 2);
    // And what is appended now counts on from them.
    let l: Arc<dyn LedgerBackend> = Arc::new(db.ledger());
    let (j, i) = runtime()
        .block_on(st.decide(&mut judge_quota(3, now), &l, &reads_quota(now)))
        .unwrap();
    assert!(j.decision.allowed && i == 5);
    let (j, _) = runtime()
        .block_on(st.decide(&mut judge_quota(3, now), &l, &reads_quota(now)))
        .unwrap();
    assert!(
        !j.decision.allowed,
        "the quota of 3 counts the two from before"
    );
    // A replica of the previous version, still running, cannot write entries that would go
    // uncounted: its insert (without `reviewing`) is refused.
    let old = cluster().psql(
        name,
        "INSERT INTO wv_entries (idx, record, leaf) VALUES (1000, '\\x00', '\\x00')",
    );
    assert!(old.is_err(), "{old:?}");
}
