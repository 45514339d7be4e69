//! The ledger's sequencer: one task per process that takes every append and every release
//! decision waiting, and commits them as one transaction (group commit). The ledger head's
//! row lock orders every batch of every replica, so indices are gapless and each batch sees
//! the counters the previous one committed; the lock is held from the moment a batch's
//! counters are read until its commit is durable, and nothing the client does between
//! statements may lengthen that more than it must, because every other replica waits for it:
//!
//! - A batch of appends alone is one statement in its own transaction ([`WRITE`]): it takes
//!   the head's lock, numbers the entries from the head, inserts them and adds what they
//!   count to the counters (`Allocations`' rules, `usage::counts_of`: allowed decisions count
//!   towards their licence and their daily quota counters, stream ends towards the licence of
//!   the decision they follow), in one round trip.
//! - A batch with decisions first takes the lock and reads the counters (`BEGIN`, the lock
//!   and the read pipelined, one round trip; READ COMMITTED: the read after the lock sees the
//!   last commit). Each decision must be judged under the counters as they stand after the
//!   entries before it; instead of handing the decisions their turns one at a time, every
//!   decision is judged at once ([`judge_in_order`]): each under the counters that the
//!   records judged so far would leave before it, again until every decision's counters are
//!   those its predecessors' final records leave (two rounds when every decision is allowed,
//!   three when a limit is reached in the batch). Then [`WRITE`] and `COMMIT`, pipelined.
//!
//! Only after the commit is any index answered; if anything fails, every request of the batch
//! gets the error and nothing of it exists: the ledger and the counters cannot disagree, and
//! an allocation is counted exactly once across replicas.

use super::{i64_of, u64_of, PgError};
use crate::ledger::merkle::leaf_hash;
use crate::ledger::record::Record;
use crate::ledger::review::concerns_reviews;
use crate::ledger::usage::{counts_of, Counts};
use crate::ledger::words::Kind;
use deadpool_postgres::Pool;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weightvault_core::facts::Usage;

/// Requests waiting for the sequencer, at most.
pub(super) const QUEUE: usize = 8192;
/// Entries in one transaction, at most.
const MAX_BATCH: usize = 1024;
/// How long the decisions of a batch may take to judge, all rounds together.
const JUDGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rounds in which every decision whose counters moved is judged again at once; after them,
/// only the first such decision per round (so a batch always ends: each round settles at
/// least one more decision, and a pathological judge costs a judgement per decision, as
/// judging them in turn would).
const PARALLEL_ROUNDS: usize = 3;

/// An index, or why the batch was not committed.
pub(super) type Indexed = Result<u64, PgError>;

/// What the sequencer is asked to do.
pub(super) enum Work {
    /// Append a record.
    Append {
        record: Box<Entry>,
        reply: oneshot::Sender<Indexed>,
    },
    /// Decide and append: the request is asked to judge on `turns` (once or more; the record
    /// of its last turn is the one appended), then `turns` closes and its index comes on
    /// `reply`.
    Decide {
        turns: mpsc::UnboundedSender<Turn>,
        reply: oneshot::Sender<Indexed>,
        /// The counters its judge reads (`Reads::counters`): it is given these alone.
        reads: Vec<String>,
    },
}

/// A request to judge a decision: the licence use to judge under, and where its record goes.
pub(super) struct Turn {
    pub used: BTreeMap<String, Usage>,
    pub verdict: oneshot::Sender<Entry>,
}

/// A record and its entry bytes ([`Record::entry`]: canonical, and checked to fit an entry
/// before it reaches the sequencer, which writes these bytes).
pub(super) struct Entry {
    pub record: Record,
    pub bytes: Vec<u8>,
}

/// The decision index a stream end counts its bytes towards.
fn stream_follows(r: &Record) -> Option<u64> {
    match r.kind {
        Kind::StreamEnd => r.follows,
        _ => None,
    }
}

/// A request of the batch being sequenced.
struct Item {
    /// Its record: an append's, or a decision's latest verdict (`None` until judged).
    record: Option<Entry>,
    /// A decision's, until it is judged for the last time.
    judging: Option<Judging>,
    reply: oneshot::Sender<Indexed>,
}

/// A decision being judged: where to ask, and the licence use its record was judged under.
struct Judging {
    turns: mpsc::UnboundedSender<Turn>,
    under: Option<BTreeMap<String, Usage>>,
    reads: Vec<String>,
}

impl From<Work> for Item {
    fn from(w: Work) -> Item {
        match w {
            Work::Append { record, reply } => Item {
                record: Some(*record),
                judging: None,
                reply,
            },
            Work::Decide {
                turns,
                reply,
                reads,
            } => Item {
                record: None,
                judging: Some(Judging {
                    turns,
                    under: None,
                    reads,
                }),
                reply,
            },
        }
    }
}

/// How long a batch waits for requests still on their way, at most.
const LINGER: Duration = Duration::from_micros(300);

/// Runs until every sender is gone. A batch is committed as soon as it holds as many requests
/// as the previous one did (the callers answered by that one are likely sending again), or
/// after [`LINGER`]: without the wait, the first caller back would take a commit for itself
/// while the others queue behind it.
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
        commit_batch(&pool, batch.drain(..).map(Item::from).collect()).await;
    }
}

fn fail_all(items: Vec<Item>, e: &PgError) {
    let msg = e.to_string();
    for it in items {
        let _ = it.reply.send(Err(PgError::Batch(msg.clone())));
    }
}

const LOCK_HEAD: &str = "SELECT size FROM wv_ledger_head FOR UPDATE";
/// The counters a batch's decisions read (`$1`, their `reads` together): licences' and daily
/// quota counters, each found by its key (a quota counter's day is the end of its key), so
/// that a batch reads what its decisions ask and not what the tables have grown to.
const COUNTERS: &str = "SELECT licence, releases, bytes FROM wv_licence_usage
        WHERE licence = ANY($1::text[])
    UNION ALL SELECT counter, releases, bytes FROM wv_quota_usage
        WHERE (day, counter) IN (SELECT right(k, 10), k FROM unnest($1::text[]) AS k)";
/// A batch's entries numbered from the head, and what they count added to the counters, in
/// one statement: the head's `UPDATE` comes first (everything else reads its result), so its
/// row lock is taken before any counter's. An allowed decision counts towards its licence and
/// its daily quota counters (`$7`, `$8`: the counters, each with its entry's ordinal in the
/// batch). A stream end counts towards the licence of the decision it follows: an entry
/// committed before (a stream end follows a decision whose index was answered, so committed
/// before this statement's snapshot) or one earlier in this batch, looked up by its index.
/// Written so that the plan stays cheap whatever the planner believes of the tables (one
/// head row, however many dead versions it counts; no scan of `wv_entries`): a plan
/// estimated as expensive is JIT-compiled, which took half a second on every execution here.
const WRITE: &str = "WITH h AS (
        UPDATE wv_ledger_head SET size = size + cardinality($1::bytea[])
        RETURNING size - cardinality($1::bytea[]) AS first
    ), n AS (
        SELECT h.first + b.ord - 1 AS idx, b.ord, b.record, b.leaf, b.alloc_licence,
               b.alloc_bytes, b.follows, b.bytes, b.reviewing
        FROM (SELECT first FROM h LIMIT 1) AS h,
             unnest($1::bytea[], $2::bytea[], $3::text[], $4::int8[], $5::int8[],
                    $6::int8[], $9::bool[]) WITH ORDINALITY
                AS b (record, leaf, alloc_licence, alloc_bytes, follows, bytes, reviewing, ord)
    ), q AS (
        SELECT n.idx, c.counter, n.alloc_bytes
        FROM unnest($7::int8[], $8::text[]) AS c (ord, counter) JOIN n ON n.ord = c.ord
    ), qa AS (
        SELECT idx, array_agg(counter) AS counters FROM q GROUP BY idx
    ), s AS (
        SELECT n.*, qa.counters, coalesce(
                   (SELECT f.alloc_licence FROM wv_entries f WHERE f.idx = n.follows),
                   p.alloc_licence) AS streamed_licence
        FROM n LEFT JOIN n AS p ON p.idx = n.follows AND p.idx < n.idx
               LEFT JOIN qa ON qa.idx = n.idx
    ), e AS (
        INSERT INTO wv_entries (idx, record, leaf, alloc_licence, alloc_bytes, alloc_quotas,
                                streamed_licence, streamed_bytes, reviewing)
        SELECT idx, record, leaf, alloc_licence, alloc_bytes, counters, streamed_licence,
               CASE WHEN streamed_licence IS NOT NULL THEN coalesce(bytes, 0) END, reviewing
        FROM s
        RETURNING alloc_licence, alloc_bytes, streamed_licence, streamed_bytes
    ), u AS (
        INSERT INTO wv_licence_usage AS c (licence, releases, bytes, streamed)
        SELECT licence, sum(releases), sum(bytes), sum(streamed) FROM (
            SELECT alloc_licence, 1, alloc_bytes, 0 FROM e WHERE alloc_licence IS NOT NULL
            UNION ALL
            SELECT streamed_licence, 0, 0, streamed_bytes FROM e
            WHERE streamed_licence IS NOT NULL
        ) AS d (licence, releases, bytes, streamed)
        GROUP BY licence
        ON CONFLICT (licence) DO UPDATE SET releases = c.releases + excluded.releases,
            bytes = c.bytes + excluded.bytes, streamed = c.streamed + excluded.streamed
    ), qu AS (
        INSERT INTO wv_quota_usage AS c (day, counter, releases, bytes)
        SELECT right(counter, 10), counter, count(*), sum(alloc_bytes) FROM q GROUP BY counter
        ON CONFLICT (day, counter) DO UPDATE SET releases = c.releases + excluded.releases,
            bytes = c.bytes + excluded.bytes
    )
    SELECT first FROM h";

/// One batch (see the module's documentation). A connection that saw any error is closed
/// rather than returned to the pool (the server rolls its transaction back).
async fn commit_batch(pool: &Pool, mut items: Vec<Item>) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => return fail_all(items, &PgError::Pool(e)),
    };
    let broken = |client, items, e: &PgError| {
        drop(deadpool_postgres::Object::take(client));
        fail_all(items, e);
    };
    let prepared = async {
        tokio::try_join!(
            client.prepare_cached(LOCK_HEAD),
            client.prepare_cached(COUNTERS),
            client.prepare_cached(WRITE),
        )
    };
    let (lock_head, read_counters, write_stmt) = match prepared.await {
        Ok(s) => s,
        Err(e) => return broken(client, items, &PgError::Db(e)),
    };
    let reads: Option<std::collections::BTreeSet<&str>> = items
        .iter()
        .filter_map(|it| it.judging.as_ref())
        .map(|j| j.reads.iter().map(String::as_str))
        .fold(None, |all, r| {
            let mut all = all.unwrap_or_default();
            all.extend(r);
            Some(all)
        });
    let began = reads.is_some();
    if let Some(reads) = reads {
        let reads: Vec<&str> = reads.into_iter().collect();
        let reads: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&reads];
        let read = async {
            // Sent together; the server runs them in order, so the read after the lock sees
            // the counters the previous holder committed.
            let (_, _head, rows) = tokio::try_join!(
                client.batch_execute("BEGIN"),
                client.query_one(&lock_head, &[]),
                client.query(&read_counters, &reads),
            )?;
            let used: BTreeMap<String, Usage> = rows
                .iter()
                .map(|r| {
                    let usage = Usage {
                        releases: u64_of(r.get(1)),
                        bytes: u64_of(r.get(2)),
                    };
                    (r.get::<_, String>(0), usage)
                })
                .collect();
            Ok::<_, PgError>(used)
        };
        let used = match read.await {
            Ok(x) => x,
            Err(e) => return broken(client, items, &e),
        };
        judge_in_order(&mut items, &used).await;
    }
    items.retain(|it| it.record.is_some());
    if items.is_empty() {
        if began && client.batch_execute("ROLLBACK").await.is_err() {
            drop(deadpool_postgres::Object::take(client));
        }
        return;
    }
    let n = items.len();
    let write = async {
        let entries = items.iter().filter_map(|it| it.record.as_ref());
        let records: Vec<&[u8]> = entries.clone().map(|e| e.bytes.as_slice()).collect();
        let leaves: Vec<Vec<u8>> = records.iter().map(|r| leaf_hash(r).to_vec()).collect();
        let recs = entries.map(|e| &e.record);
        let counts: Vec<Option<Counts>> = recs.clone().map(counts_of).collect();
        let alloc_licence: Vec<Option<&str>> = counts
            .iter()
            .map(|c| c.as_ref()?.licence.as_deref())
            .collect();
        let alloc_bytes: Vec<Option<i64>> = counts
            .iter()
            .map(|c| c.as_ref().map(|c| i64_of(c.bytes)))
            .collect();
        // Each quota counter with its entry's ordinal (from 1, as `WITH ORDINALITY` numbers).
        let (quota_of, quotas): (Vec<i64>, Vec<&str>) = counts
            .iter()
            .zip(1..)
            .flat_map(|(c, ord)| {
                let qs = c.as_ref().map(|c| c.quotas.as_slice()).unwrap_or_default();
                qs.iter().map(move |q| (ord, q.as_str()))
            })
            .unzip();
        let reviewing: Vec<bool> = recs.clone().map(concerns_reviews).collect();
        let follows: Vec<Option<i64>> = recs
            .clone()
            .map(|r| stream_follows(r).map(i64_of))
            .collect();
        let bytes: Vec<Option<i64>> = recs.map(|r| r.bytes.map(i64_of)).collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
            &records,
            &leaves,
            &alloc_licence,
            &alloc_bytes,
            &follows,
            &bytes,
            &quota_of,
            &quotas,
            &reviewing,
        ];
        // Sent together (after `BEGIN` too when the head is not locked yet). The index comes
        // back only with the answer to `COMMIT`, which the server sends once the commit is
        // durable. Should the write fail, the server takes the COMMIT of the aborted
        // transaction as a ROLLBACK, and the write's error is what is answered.
        let begin = async {
            match began {
                true => Ok(()),
                false => client.batch_execute("BEGIN").await,
            }
        };
        let (begun, written, committed) = tokio::join!(
            begin,
            client.query_one(&write_stmt, &params),
            client.batch_execute("COMMIT"),
        );
        begun?;
        let first = written?.get::<_, i64>(0);
        committed?;
        Ok::<_, PgError>(u64_of(first))
    };
    match write.await {
        Ok(first) => {
            for (k, it) in items.into_iter().enumerate() {
                let _ = it.reply.send(Ok(first + k as u64));
            }
        }
        Err(e) => {
            tracing::error!("ledger batch of {n} entries not committed: {e}");
            broken(client, items, &e);
        }
    }
}

/// Judges every decision of `items` under the counters `base` (those the batch's decisions
/// read) plus what the records before it count, in the order of `items`, each given the
/// counters it reads; a decision that goes away, or is not judged by
/// the deadline, leaves the batch (the latter answered with an error).
///
/// Every decision whose counters are not yet those its predecessors' current records leave is
/// asked at once; the first such decision's predecessors are settled, so it is settled after
/// its round, and the rounds end when none is left.
async fn judge_in_order(items: &mut Vec<Item>, base: &BTreeMap<String, Usage>) {
    let deadline = Instant::now() + JUDGE_TIMEOUT;
    for round in 0.. {
        // The batch's counters after the records before each item; each decision is given
        // the ones it reads.
        let mut used = base.clone();
        let mut asks = Vec::new();
        for (k, it) in items.iter().enumerate() {
            if let Some(judging) = &it.judging {
                let mine: BTreeMap<String, Usage> = judging
                    .reads
                    .iter()
                    .filter_map(|c| Some((c.clone(), *used.get(c)?)))
                    .collect();
                if judging.under.as_ref() != Some(&mine) {
                    asks.push((k, mine));
                    if round >= PARALLEL_ROUNDS {
                        break;
                    }
                }
            }
            if let Some(c) = it.record.as_ref().and_then(|e| counts_of(&e.record)) {
                for k in c.licence.iter().chain(&c.quotas) {
                    let u = used.entry(k.clone()).or_default();
                    u.releases += 1;
                    u.bytes = u.bytes.saturating_add(c.bytes);
                }
            }
        }
        if asks.is_empty() {
            break;
        }
        let mut waiting = Vec::with_capacity(asks.len());
        for (k, used) in asks {
            let (verdict, rx) = oneshot::channel();
            let Some(Judging { turns, .. }) = &items[k].judging else {
                continue;
            };
            let turn = Turn {
                used: used.clone(),
                verdict,
            };
            waiting.push((k, used, turns.send(turn).ok().map(|()| rx)));
        }
        // Those leaving the batch, and what they are answered (nothing: they went away).
        let mut gone: Vec<(usize, Option<PgError>)> = Vec::new();
        for (k, used, rx) in waiting {
            let Some(rx) = rx else {
                gone.push((k, None)); // went away before its turn: nothing to record
                continue;
            };
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(record)) => {
                    items[k].record = Some(record);
                    if let Some(judging) = &mut items[k].judging {
                        judging.under = Some(used);
                    }
                }
                Ok(Err(_)) => gone.push((k, None)), // went away while judging
                Err(_) => {
                    let e = PgError::Batch("the decision was not judged in time".into());
                    gone.push((k, Some(e)));
                }
            }
        }
        for (k, answer) in gone.into_iter().rev() {
            let it = items.remove(k);
            if let Some(e) = answer {
                let _ = it.reply.send(Err(e));
            }
        }
    }
    // Judged: the requests wait for their indices now.
    for it in items.iter_mut() {
        it.judging = None;
    }
}
