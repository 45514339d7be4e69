//! The ledger's sequencer: one task per process that takes every append and every release
//! decision waiting, and commits them as one transaction (group commit):
//!
//! 1. `SELECT size FROM wv_ledger_head FOR UPDATE`: the head row's lock orders every batch of
//!    every replica, so indices are gapless and each batch sees the counters the previous one
//!    committed (READ COMMITTED: each statement after the lock reads the latest commit);
//! 2. the licence counters are read;
//! 3. each waiting decision, in turn, is judged by its request under the counters as they
//!    stand after the entries before it (its own task runs the policy and hands the record
//!    back), and each record gets the next index and changes the counters as the ledger
//!    counts it (`Allocations`' rules: allowed decisions under a licence, stream ends);
//! 4. the entries, the counters and the head are written, and the transaction commits.
//!
//! Only then is any index answered; if anything fails, every request of the batch gets the
//! error and nothing of it exists: the ledger and the counters cannot disagree, and an
//! allocation is counted exactly once across replicas.

use super::{i64_of, u64_of, PgError};
use crate::ledger::merkle::leaf_hash;
use crate::ledger::record::Record;
use crate::ledger::words::{Kind, Outcome, RecordAuthority};
use deadpool_postgres::Pool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use weightvault_core::facts::Usage;

/// Requests waiting for the sequencer, at most.
pub(super) const QUEUE: usize = 8192;
/// Entries in one transaction, at most.
const MAX_BATCH: usize = 1024;
/// How long a decision's request may take to judge once its turn comes.
const JUDGE_TIMEOUT: Duration = Duration::from_secs(5);

/// An index, or why the batch was not committed.
pub(super) type Indexed = Result<u64, PgError>;

/// What the sequencer is asked to do.
pub(super) enum Work {
    /// Append a record.
    Append {
        record: Box<Record>,
        reply: oneshot::Sender<Indexed>,
    },
    /// Decide and append: the request is handed a [`Turn`] inside the transaction.
    Decide {
        turn: oneshot::Sender<Result<Turn, PgError>>,
    },
}

/// A decision's turn in a batch: the licence use to judge under, where to hand the record,
/// and where its index will come.
pub(super) struct Turn {
    pub used: BTreeMap<String, Usage>,
    pub verdict: oneshot::Sender<Record>,
    pub done: oneshot::Receiver<Indexed>,
}

/// The licence an allowed release decision's allocation uses, and its bytes (as
/// `Allocations::add` counts it).
pub(super) fn allocation_of(r: &Record) -> Option<(&str, u64)> {
    match r.kind {
        Kind::ReleaseDecision if r.outcome == Outcome::Allowed => r
            .authority
            .as_ref()
            .and_then(RecordAuthority::licence)
            .map(|id| (id, r.bytes.unwrap_or(0))),
        _ => None,
    }
}

/// The decision index a stream end counts its bytes towards.
fn stream_follows(r: &Record) -> Option<u64> {
    match r.kind {
        Kind::StreamEnd => r.follows,
        _ => None,
    }
}

#[derive(Default, Clone, Copy)]
struct Counter {
    releases: u64,
    bytes: u64,
    streamed: u64,
}

struct Entry {
    record: Vec<u8>,
    leaf: [u8; 32],
    alloc: Option<(String, u64)>,
    streamed: Option<(String, u64)>,
    reply: oneshot::Sender<Indexed>,
}

/// How long a batch waits for requests still on their way, at most.
const LINGER: Duration = Duration::from_micros(300);

/// Runs until every sender is gone. A batch is committed as soon as it holds as many requests
/// as the previous one did (the callers answered by that one are likely sending again), or
/// after [`LINGER`]: without the wait, the first caller back would take a commit (a flush of
/// the log, 2.6 ms on this machine's disk) for itself while the others queue behind it.
pub(super) async fn run(pool: Pool, mut rx: mpsc::Receiver<Work>) {
    let mut batch = Vec::new();
    let mut expect = 1;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let t = std::time::Instant::now();
        while batch.len() < expect.min(MAX_BATCH) && t.elapsed() < LINGER {
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
        }
        expect = batch.len();
        commit_batch(&pool, std::mem::take(&mut batch)).await;
    }
}

fn fail_all(batch: Vec<Work>, e: &PgError) {
    let msg = e.to_string();
    for w in batch {
        match w {
            Work::Append { reply, .. } => {
                let _ = reply.send(Err(PgError::Batch(msg.clone())));
            }
            Work::Decide { turn } => {
                let _ = turn.send(Err(PgError::Batch(msg.clone())));
            }
        }
    }
}

const LOCK_HEAD: &str = "SELECT size FROM wv_ledger_head FOR UPDATE";
const COUNTERS: &str = "SELECT licence, releases, bytes, streamed FROM wv_licence_usage";
const FOLLOWED: &str = "SELECT idx, alloc_licence FROM wv_entries
                        WHERE idx = ANY($1) AND alloc_licence IS NOT NULL";
/// Entries, counters and head in one statement (one round trip).
const WRITE: &str = "WITH e AS (
        INSERT INTO wv_entries (idx, record, leaf, alloc_licence, alloc_bytes,
                                streamed_licence, streamed_bytes)
        SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[], $4::text[], $5::int8[],
                             $6::text[], $7::int8[])
    ), u AS (
        INSERT INTO wv_licence_usage (licence, releases, bytes, streamed)
        SELECT * FROM unnest($8::text[], $9::int8[], $10::int8[], $11::int8[])
        ON CONFLICT (licence) DO UPDATE SET releases = excluded.releases,
            bytes = excluded.bytes, streamed = excluded.streamed
    )
    UPDATE wv_ledger_head SET size = $12";

/// One batch, in two round trips besides the commit's flush: `BEGIN`, the head's lock and the
/// reads pipelined; then the write and `COMMIT` pipelined. A connection that saw any error is
/// closed rather than returned to the pool (the server rolls its transaction back).
async fn commit_batch(pool: &Pool, batch: Vec<Work>) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail_all(batch, &PgError::Pool(e)),
    };
    let prepared = async {
        tokio::try_join!(
            client.prepare_cached(LOCK_HEAD),
            client.prepare_cached(COUNTERS),
            client.prepare_cached(FOLLOWED),
            client.prepare_cached(WRITE),
        )
    };
    let (lock_head, read_counters, followed, write_stmt) = match prepared.await {
        Ok(s) => s,
        Err(e) => {
            drop(deadpool_postgres::Object::take(client));
            return fail_all(batch, &PgError::Db(e));
        }
    };
    // Phase 1: the head's lock, the counters, and the licences of decisions that stream
    // ends follow.
    let follows: Vec<i64> = batch
        .iter()
        .filter_map(|w| match w {
            Work::Append { record, .. } => stream_follows(record).map(i64_of),
            Work::Decide { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let read = async {
        // Sent together; the server runs them in order, so the reads after the lock see the
        // counters the previous holder committed.
        let follows_param: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&follows];
        let (_, head, rows, followed) = tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.query_one(&lock_head, &[]),
            client.query(&read_counters, &[]),
            client.query(&followed, &follows_param),
        )?;
        let next: i64 = head.get(0);
        let mut counters = BTreeMap::new();
        for r in rows {
            counters.insert(
                r.get::<_, String>(0),
                Counter {
                    releases: u64_of(r.get(1)),
                    bytes: u64_of(r.get(2)),
                    streamed: u64_of(r.get(3)),
                },
            );
        }
        let mut licence_of = HashMap::new();
        for r in followed {
            licence_of.insert(u64_of(r.get(0)), r.get::<_, String>(1));
        }
        Ok::<_, PgError>((u64_of(next), counters, licence_of))
    };
    let (first, mut counters, mut licence_of) = match read.await {
        Ok(x) => x,
        Err(e) => {
            drop(deadpool_postgres::Object::take(client));
            return fail_all(batch, &e);
        }
    };
    // Phase 2: each request's record, in order, under the counters as they stand.
    let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
    let mut touched = BTreeSet::new();
    for w in batch {
        let (record, reply) = match w {
            Work::Append { record, reply } => (*record, reply),
            Work::Decide { turn } => {
                let used = counters
                    .iter()
                    .map(|(id, c)| {
                        (
                            id.clone(),
                            Usage {
                                releases: c.releases,
                                bytes: c.bytes,
                            },
                        )
                    })
                    .collect();
                let (verdict, verdict_rx) = oneshot::channel();
                let (reply, done) = oneshot::channel();
                if turn
                    .send(Ok(Turn {
                        used,
                        verdict,
                        done,
                    }))
                    .is_err()
                {
                    continue; // the request went away before its turn: nothing to record
                }
                match tokio::time::timeout(JUDGE_TIMEOUT, verdict_rx).await {
                    Ok(Ok(record)) => (record, reply),
                    Ok(Err(_)) => continue, // went away while judging
                    Err(_) => {
                        let _ = reply.send(Err(PgError::Batch(
                            "the decision was not judged in time".into(),
                        )));
                        continue;
                    }
                }
            }
        };
        let index = first + entries.len() as u64;
        let alloc = allocation_of(&record).map(|(id, size)| (id.to_string(), size));
        if let Some((id, size)) = &alloc {
            let c = counters.entry(id.clone()).or_default();
            c.releases += 1;
            c.bytes = c.bytes.saturating_add(*size);
            touched.insert(id.clone());
            licence_of.insert(index, id.clone());
        }
        let streamed = stream_follows(&record)
            .and_then(|f| licence_of.get(&f).cloned())
            .map(|id| (id, record.bytes.unwrap_or(0)));
        if let Some((id, n)) = &streamed {
            let c = counters.entry(id.clone()).or_default();
            c.streamed = c.streamed.saturating_add(*n);
            touched.insert(id.clone());
        }
        let bytes = record.canonical();
        entries.push(Entry {
            leaf: leaf_hash(&bytes),
            record: bytes,
            alloc,
            streamed,
            reply,
        });
    }
    if entries.is_empty() {
        if client.batch_execute("ROLLBACK").await.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
        return;
    }
    // Phase 3: write and commit.
    let n = entries.len() as u64;
    let write = async {
        let idx: Vec<i64> = (first..first + n).map(i64_of).collect();
        let records: Vec<&[u8]> = entries.iter().map(|e| e.record.as_slice()).collect();
        let leaves: Vec<&[u8]> = entries.iter().map(|e| e.leaf.as_slice()).collect();
        let alloc_licence: Vec<Option<&str>> = entries
            .iter()
            .map(|e| e.alloc.as_ref().map(|a| a.0.as_str()))
            .collect();
        let alloc_bytes: Vec<Option<i64>> = entries
            .iter()
            .map(|e| e.alloc.as_ref().map(|a| i64_of(a.1)))
            .collect();
        let streamed_licence: Vec<Option<&str>> = entries
            .iter()
            .map(|e| e.streamed.as_ref().map(|a| a.0.as_str()))
            .collect();
        let streamed_bytes: Vec<Option<i64>> = entries
            .iter()
            .map(|e| e.streamed.as_ref().map(|a| i64_of(a.1)))
            .collect();
        let ids: Vec<&str> = touched.iter().map(String::as_str).collect();
        let c: Vec<Counter> = touched.iter().map(|id| counters[id]).collect();
        let releases: Vec<i64> = c.iter().map(|c| i64_of(c.releases)).collect();
        let bytes: Vec<i64> = c.iter().map(|c| i64_of(c.bytes)).collect();
        let streamed: Vec<i64> = c.iter().map(|c| i64_of(c.streamed)).collect();
        let size = i64_of(first + n);
        // Sent together. Should the write fail, the server takes the COMMIT of the aborted
        // transaction as a ROLLBACK, and the write's error is what is answered.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &idx,
            &records,
            &leaves,
            &alloc_licence,
            &alloc_bytes,
            &streamed_licence,
            &streamed_bytes,
            &ids,
            &releases,
            &bytes,
            &streamed,
            &size,
        ];
        let (written, committed) = tokio::join!(
            client.execute(&write_stmt, &params),
            client.batch_execute("COMMIT"),
        );
        written?;
        committed?;
        Ok::<_, PgError>(())
    };
    match write.await {
        Ok(()) => {
            for (k, e) in entries.into_iter().enumerate() {
                let _ = e.reply.send(Ok(first + k as u64));
            }
        }
        Err(e) => {
            drop(deadpool_postgres::Object::take(client));
            tracing::error!("ledger batch of {n} entries not committed: {e}");
            let msg = e.to_string();
            for e in entries {
                let _ = e.reply.send(Err(PgError::Batch(msg.clone())));
            }
        }
    }
}
