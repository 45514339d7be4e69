//! [`PgState`]: the release service's state in PostgreSQL, shared by every replica.
//!
//! - Nonces: a row per nonce not yet taken; [`ReleaseState::take_nonce`] is one
//!   `DELETE ... WHERE nonce = $1 AND client = $2 RETURNING expires_at`, so of any number of
//!   replicas taking it at once exactly one gets the row (and a nonce is spent by its own
//!   client whatever the answer, like `LocalState`).
//! - Decisions: [`ReleaseState::decide`] queues the request for the ledger sequencer
//!   (`sequencer.rs`), which judges it under the counters inside the transaction that appends
//!   its record and updates them: decide-and-record in one transaction. The judge may be
//!   called more than once (again when the decisions before it in its batch turned out
//!   otherwise than first assumed); the last judgement is the one recorded and returned.
//! - Releases: the [`Grant`] as JSON (`wv_releases`), readable by every replica so that a
//!   `Range` resume can land on any of them. A grant holds no secret (ids, the client's
//!   certificate fingerprint, the host's *public* key, the decision record, the request and
//!   the codeword id); the stream key is derived from the HSM-wrapped service key and the
//!   release id by the replica that serves it, and the watermark codeword from the service key
//!   and the codeword id.
//! - Withdrawals: a row per withdrawal with a sequence number taken from a counter row in the
//!   same transaction, then `NOTIFY wv_withdrawals`. Each process keeps one `LISTEN`
//!   connection and also polls `seq > last` every [`POLL`], so its subscribers hear of every
//!   withdrawal, in order, within a second even when a notification is lost.

use super::{i64_of, u64_of, Database, PgError};
use crate::ledger::backend::LedgerBackend;
use crate::ledger::record::Record;
use crate::release::approvals::ApprovalBook;
use crate::release::engine::{Grant, Judged};
use crate::release::state::{DecideError, Judge, Reads, ReleaseState, StateError, Withdrawal};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use time::OffsetDateTime;
use weightvault_core::facts::{TrainingFacts, Usage};

/// How often each process polls for withdrawals besides listening for notifications.
pub const POLL: Duration = Duration::from_millis(250);
/// The notification channel.
pub(super) const CHANNEL: &str = "wv_withdrawals";

/// The release state in PostgreSQL (see the module's documentation).
#[derive(Clone)]
pub struct PgState {
    db: Database,
    /// The approvals read from the shared ledger so far, and the index to read on from.
    book: Arc<std::sync::Mutex<(u64, ApprovalBook)>>,
}

impl PgState {
    pub(super) fn new(db: Database) -> Self {
        PgState {
            db,
            book: Arc::default(),
        }
    }

    /// Licence and daily quota use as the database counts it (every day's): releases and
    /// bytes, and bytes streamed (licences only; 0 for a quota counter).
    pub async fn counters(&self) -> Result<BTreeMap<String, (Usage, u64)>, PgError> {
        let pool = self.db.pool().clone();
        self.db
            .run(async move {
                let c = pool.get().await?;
                let mut out = BTreeMap::new();
                for r in c
                    .query(
                        "SELECT licence, releases, bytes, streamed FROM wv_licence_usage
                         UNION ALL SELECT counter, releases, bytes, 0 FROM wv_quota_usage",
                        &[],
                    )
                    .await?
                {
                    out.insert(
                        r.get::<_, String>(0),
                        (
                            Usage {
                                releases: u64_of(r.get(1)),
                                bytes: u64_of(r.get(2)),
                            },
                            u64_of(r.get(3)),
                        ),
                    );
                }
                Ok(out)
            })
            .await
    }
}

fn state_err(e: PgError) -> StateError {
    StateError(Box::new(e))
}

fn random_hex16() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

/// A [`Grant`] as `wv_releases.grant_json` stores it. Every field is public information about
/// the release (see the module's documentation); none is a key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredGrant {
    id: String,
    client: String,
    host_key: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    decision_index: u64,
    record: Record,
    request: StoredRequest,
    model: String,
    revision: String,
    files: Vec<usize>,
    shards: Vec<String>,
    codeword: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRequest {
    requester: String,
    model: String,
    sealed_facts: Option<TrainingFacts>,
    host: StoredHost,
    source_ip: Option<std::net::IpAddr>,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    used: BTreeMap<String, (u64, u64)>,
    size: u64,
    dry_run: bool,
    #[serde(default)]
    approvals: Vec<crate::policy::Approval>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredHost {
    host_id: String,
    country: String,
    region: String,
    attester: String,
    #[serde(with = "time::serde::rfc3339")]
    issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    signature_valid: bool,
    nonce_fresh: bool,
    #[serde(default)]
    facility: Option<String>,
}

impl StoredGrant {
    fn of(g: &Grant) -> Self {
        let r = &g.request;
        StoredGrant {
            id: hex::encode(g.id),
            client: hex::encode(g.client),
            host_key: hex::encode(g.host_key),
            expires_at: g.expires_at,
            decision_index: g.decision_index,
            record: g.record.clone(),
            request: StoredRequest {
                requester: r.requester.clone(),
                model: r.model.clone(),
                sealed_facts: r.sealed_facts.clone(),
                host: StoredHost {
                    host_id: r.host.host_id.clone(),
                    country: r.host.country.clone(),
                    region: r.host.region.clone(),
                    attester: r.host.attester.clone(),
                    issued_at: r.host.issued_at,
                    expires_at: r.host.expires_at,
                    signature_valid: r.host.signature_valid,
                    nonce_fresh: r.host.nonce_fresh,
                    facility: r.host.facility.clone(),
                },
                source_ip: r.source_ip,
                time: r.time,
                used: r
                    .used
                    .iter()
                    .map(|(k, u)| (k.clone(), (u.releases, u.bytes)))
                    .collect(),
                size: r.size,
                dry_run: r.dry_run,
                approvals: r.approvals.clone(),
            },
            model: g.model.clone(),
            revision: g.revision.clone(),
            files: g.files.clone(),
            shards: g.shards.clone(),
            codeword: g.codeword.map(hex::encode),
        }
    }

    fn grant(self, withdrawn: Option<Vec<String>>) -> Result<Grant, String> {
        fn bytes<const N: usize>(what: &str, h: &str) -> Result<[u8; N], String> {
            hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{what} is not {N} bytes of hex"))
        }
        let r = self.request;
        Ok(Grant {
            id: bytes("id", &self.id)?,
            client: bytes("client", &self.client)?,
            host_key: bytes("host_key", &self.host_key)?,
            expires_at: self.expires_at,
            decision_index: self.decision_index,
            record: self.record,
            request: crate::policy::ReleaseRequest {
                requester: r.requester,
                model: r.model,
                sealed_facts: r.sealed_facts,
                host: crate::policy::HostClaims {
                    host_id: r.host.host_id,
                    country: r.host.country,
                    region: r.host.region,
                    attester: r.host.attester,
                    issued_at: r.host.issued_at,
                    expires_at: r.host.expires_at,
                    signature_valid: r.host.signature_valid,
                    nonce_fresh: r.host.nonce_fresh,
                    facility: r.host.facility,
                },
                source_ip: r.source_ip,
                time: r.time,
                used: r
                    .used
                    .into_iter()
                    .map(|(k, (releases, bytes))| (k, Usage { releases, bytes }))
                    .collect(),
                size: r.size,
                dry_run: r.dry_run,
                approvals: r.approvals,
            },
            model: self.model,
            revision: self.revision,
            files: self.files,
            shards: self.shards,
            codeword: self
                .codeword
                .as_deref()
                .map(|c| bytes("codeword", c))
                .transpose()?,
            withdrawn,
        })
    }
}

fn grant_of_row(r: &tokio_postgres::Row) -> Result<Grant, PgError> {
    let json: serde_json::Value = r.get("grant_json");
    let withdrawn: Option<serde_json::Value> = r.get("withdrawn");
    let corrupt = |detail: String| PgError::Corrupt {
        what: "wv_releases".into(),
        detail,
    };
    let stored: StoredGrant = serde_json::from_value(json).map_err(|e| corrupt(e.to_string()))?;
    let withdrawn = withdrawn
        .map(serde_json::from_value::<Vec<String>>)
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    stored.grant(withdrawn).map_err(corrupt)
}

#[async_trait::async_trait]
impl ReleaseState for PgState {
    async fn issue_nonce(
        &self,
        client: &[u8; 32],
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<String, StateError> {
        let nonce = random_hex16();
        let (pool, n, client) = (self.db.pool().clone(), nonce.clone(), client.to_vec());
        self.db
            .run(async move {
                let c = pool.get().await?;
                // Expired nonces go as new ones come (a bounded sweep, by the index).
                c.execute(
                    "WITH gone AS (
                         DELETE FROM wv_nonces WHERE nonce IN (
                             SELECT nonce FROM wv_nonces WHERE expires_at <= $4 LIMIT 64))
                     INSERT INTO wv_nonces (nonce, client, expires_at) VALUES ($1, $2, $3)",
                    &[&n, &client, &expires_at, &now],
                )
                .await?;
                Ok(())
            })
            .await
            .map_err(state_err)?;
        Ok(nonce)
    }

    async fn take_nonce(
        &self,
        nonce: &str,
        client: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<bool, StateError> {
        let (pool, n, client) = (self.db.pool().clone(), nonce.to_string(), client.to_vec());
        self.db
            .run(async move {
                let c = pool.get().await?;
                let row = c
                    .query_opt(
                        "DELETE FROM wv_nonces WHERE nonce = $1 AND client = $2
                         RETURNING expires_at",
                        &[&n, &client],
                    )
                    .await?;
                Ok(row.is_some_and(|r| r.get::<_, OffsetDateTime>(0) > now))
            })
            .await
            .map_err(state_err)
    }

    async fn decide(
        &self,
        judge: &mut Judge<'_>,
        _ledger: &Arc<dyn LedgerBackend>,
        reads: &Reads,
    ) -> Result<(Judged, u64), DecideError> {
        let unavailable =
            |e: PgError| DecideError::Ledger(crate::ledger::LedgerError::Unavailable(Box::new(e)));
        let (turns, mut asked) = tokio::sync::mpsc::unbounded_channel();
        let (reply, indexed) = tokio::sync::oneshot::channel();
        self.db
            .inner
            .seq
            .send(super::sequencer::Work::Decide {
                turns,
                reply,
                reads: reads.counters.clone(),
            })
            .await
            .map_err(|_| unavailable(PgError::Stopped))?;
        // Judged as often as the sequencer asks (the counters moved under an earlier
        // judgement: the decisions before it in its batch were judged meanwhile); the last
        // judgement is the one recorded.
        let mut judged = None;
        while let Some(turn) = asked.recv().await {
            let j = judge(&turn.used);
            let bytes = match j.record.entry() {
                Ok(b) => b,
                // Leaves the batch unrecorded (the sequencer takes an unanswered turn as a
                // request gone away, and judges the decisions after it again without it).
                Err(e) => return Err(DecideError::Ledger(e.into())),
            };
            let _ = turn.verdict.send(super::sequencer::Entry {
                record: j.record.clone(),
                bytes,
            });
            judged = Some(j);
        }
        let index = indexed
            .await
            .map_err(|_| unavailable(PgError::Stopped))?
            .map_err(unavailable)?;
        let judged = judged.ok_or_else(|| unavailable(PgError::Stopped))?;
        Ok((judged, index))
    }

    async fn count(&self, _index: u64, _record: &Record) -> Result<(), StateError> {
        // The sequencer counted it in the transaction that appended it.
        Ok(())
    }

    async fn approvals(
        &self,
        hours: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::policy::Approval>, StateError> {
        // Reads on from the last entry seen (any replica's, or `weightvault review`'s), by
        // the partial index of the entries that concern reviews: one short query, nothing
        // when no review was opened or decided since.
        let from = self.book.lock().expect("approvals lock").0;
        let pool = self.db.pool().clone();
        let rows = self
            .db
            .run(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT idx, record FROM wv_entries WHERE reviewing AND idx >= $1
                         ORDER BY idx",
                        &[&i64_of(from)],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| (u64_of(r.get(0)), r.get::<_, Vec<u8>>(1)))
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(state_err)?;
        let mut book = self.book.lock().expect("approvals lock");
        for (i, bytes) in rows {
            // Another request may have read the same entries meanwhile.
            if i < book.0 {
                continue;
            }
            let r = Record::parse(&bytes)
                .map_err(|e| StateError(format!("ledger entry {i} in the database: {e}").into()))?;
            book.1.add(i, &r);
            book.0 = i + 1;
        }
        Ok(book.1.in_force(hours, now))
    }

    async fn used_by_others(&self, index: u64) -> Result<BTreeMap<String, Usage>, StateError> {
        let pool = self.db.pool().clone();
        self.db
            .run(async move {
                let c = pool.get().await?;
                // Every licence's, and the quota counters the decision counted towards (those
                // its judge reads when it decides the same request again).
                let rows = c
                    .query(
                        "SELECT u.licence, u.releases - (e.idx IS NOT NULL)::int,
                                u.bytes - coalesce(e.alloc_bytes, 0)
                         FROM wv_licence_usage u
                         LEFT JOIN wv_entries e ON e.idx = $1 AND e.alloc_licence = u.licence
                         UNION ALL
                         SELECT q.counter, q.releases - 1, q.bytes - coalesce(e.alloc_bytes, 0)
                         FROM wv_entries e, unnest(e.alloc_quotas) AS c (counter),
                              wv_quota_usage q
                         WHERE e.idx = $1 AND q.day = right(c.counter, 10)
                           AND q.counter = c.counter",
                        &[&i64_of(index)],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            Usage {
                                releases: u64_of(r.get(1)),
                                bytes: u64_of(r.get(2)),
                            },
                        )
                    })
                    .collect())
            })
            .await
            .map_err(state_err)
    }

    fn ready(&self) -> Result<(), StateError> {
        // Called off the runtime's workers (the readiness check runs on a blocking thread).
        let pool = self.db.pool().clone();
        self.db
            .wait(async move {
                let c = pool.get().await?;
                c.simple_query("SELECT 1").await?;
                Ok::<_, PgError>(())
            })
            .map_err(state_err)?
            .map_err(state_err)
    }

    async fn put_release(&self, grant: Grant, now: OffsetDateTime) -> Result<(), StateError> {
        let json =
            serde_json::to_value(StoredGrant::of(&grant)).map_err(|e| StateError(Box::new(e)))?;
        let (pool, id, exp) = (self.db.pool().clone(), grant.id.to_vec(), grant.expires_at);
        self.db
            .run(async move {
                let c = pool.get().await?;
                c.execute(
                    "WITH gone AS (
                         DELETE FROM wv_releases WHERE id IN (
                             SELECT id FROM wv_releases WHERE expires_at <= $4 LIMIT 64))
                     INSERT INTO wv_releases (id, expires_at, grant_json) VALUES ($1, $2, $3)",
                    &[&id, &exp, &json, &now],
                )
                .await?;
                Ok(())
            })
            .await
            .map_err(state_err)
    }

    async fn release(&self, id: &[u8; 16]) -> Result<Option<Arc<Grant>>, StateError> {
        let (pool, id) = (self.db.pool().clone(), id.to_vec());
        self.db
            .run(async move {
                let c = pool.get().await?;
                let row = c
                    .query_opt(
                        "SELECT grant_json, withdrawn FROM wv_releases WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                row.map(|r| grant_of_row(&r).map(Arc::new)).transpose()
            })
            .await
            .map_err(state_err)
    }

    async fn live_releases(&self, now: OffsetDateTime) -> Result<Vec<Arc<Grant>>, StateError> {
        let pool = self.db.pool().clone();
        self.db
            .run(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT grant_json, withdrawn FROM wv_releases
                         WHERE withdrawn IS NULL AND expires_at >= $1",
                        &[&now],
                    )
                    .await?;
                rows.iter().map(|r| grant_of_row(r).map(Arc::new)).collect()
            })
            .await
            .map_err(state_err)
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<(), StateError> {
        let pool = self.db.pool().clone();
        let failed = serde_json::to_value(&w.failed).map_err(|e| StateError(Box::new(e)))?;
        let id = w.id.to_vec();
        self.db
            .run(async move {
                let mut c = pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(
                    "UPDATE wv_releases SET withdrawn = $2 WHERE id = $1",
                    &[&id, &failed],
                )
                .await?;
                let seq: i64 = tx
                    .query_one(
                        "UPDATE wv_withdrawal_head SET seq = seq + 1 RETURNING seq",
                        &[],
                    )
                    .await?
                    .get(0);
                tx.execute(
                    "INSERT INTO wv_withdrawals (seq, id, failed) VALUES ($1, $2, $3)",
                    &[&seq, &id, &failed],
                )
                .await?;
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])
                    .await?;
                tx.commit().await?;
                Ok(())
            })
            .await
            .map_err(state_err)
    }

    fn withdrawals(&self) -> tokio::sync::broadcast::Receiver<Withdrawal> {
        self.db.inner.withdrawn.subscribe()
    }
}

/// The sequence number of the last withdrawal committed (subscribers hear of those after it).
pub(super) async fn last_withdrawal(pool: Pool) -> Result<i64, PgError> {
    let c = pool.get().await?;
    Ok(c.query_one("SELECT seq FROM wv_withdrawal_head", &[])
        .await?
        .get(0))
}

/// Withdrawals after `after`, in order.
async fn withdrawals_after(pool: &Pool, after: i64) -> Result<Vec<(i64, Withdrawal)>, PgError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT seq, id, failed FROM wv_withdrawals WHERE seq > $1 ORDER BY seq",
            &[&after],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let id: Vec<u8> = r.get(1);
            let failed: serde_json::Value = r.get(2);
            let corrupt = |detail: String| PgError::Corrupt {
                what: format!("wv_withdrawals seq {}", r.get::<_, i64>(0)),
                detail,
            };
            Ok((
                r.get(0),
                Withdrawal {
                    id: id
                        .try_into()
                        .map_err(|_| corrupt("id is not 16 bytes".into()))?,
                    failed: serde_json::from_value(failed).map_err(|e| corrupt(e.to_string()))?,
                },
            ))
        })
        .collect()
}

/// Hears of withdrawals and of new policy versions (a `LISTEN` connection, reconnected when it drops, plus a poll every
/// [`POLL`]) and tells this process's subscribers, withdrawals in order, each once. Stops when the
/// database handle is gone.
pub(super) async fn listen(
    cfg: tokio_postgres::Config,
    pool: Pool,
    tx: tokio::sync::broadcast::Sender<Withdrawal>,
    policy: tokio::sync::watch::Sender<i64>,
    mut last: i64,
    alive: Weak<super::Inner>,
) {
    let (note_tx, mut note_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if alive.strong_count() == 0 {
            break;
        }
        if listener.as_ref().is_none_or(|h| h.is_finished()) {
            listener = Some(tokio::spawn(listen_once(cfg.clone(), note_tx.clone())));
        }
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = note_rx.recv() => {}
        }
        match withdrawals_after(&pool, last).await {
            Ok(ws) => {
                for (seq, w) in ws {
                    last = seq;
                    // No subscriber (no stream running) is fine.
                    let _ = tx.send(w);
                }
            }
            Err(e) => tracing::warn!("reading withdrawals: {e}"),
        }
        match super::policy::policy_head(&pool).await {
            Ok(v) => {
                policy.send_if_modified(|seen| {
                    let newer = v > *seen;
                    if newer {
                        *seen = v;
                    }
                    newer
                });
            }
            Err(e) => tracing::warn!("reading the policy version: {e}"),
        }
    }
    if let Some(h) = listener {
        h.abort();
    }
}

/// One `LISTEN` connection: a unit on `notes` per notification, until the connection ends.
async fn listen_once(cfg: tokio_postgres::Config, notes: tokio::sync::mpsc::UnboundedSender<()>) {
    let (client, mut conn) = match cfg.connect(tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("withdrawal listener: {e}");
            tokio::time::sleep(POLL).await;
            return;
        }
    };
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(m)) => {
                    if msg_tx.send(m).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("withdrawal listener connection: {e}");
                    return;
                }
                None => return,
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        tracing::debug!("withdrawal listener: {e}");
        driver.abort();
        return;
    }
    // A notification may have come between the last poll and LISTEN: look once now.
    let _ = notes.send(());
    while let Some(m) = msg_rx.recv().await {
        if matches!(m, tokio_postgres::AsyncMessage::Notification(_)) && notes.send(()).is_err() {
            break;
        }
    }
    driver.abort();
    drop(client);
}
