//! [`PgLedger`]: the ledger of every replica, sequenced in PostgreSQL. An append is durable
//! (committed, with the entry's licence counts) before its index comes back, and appends from
//! concurrent callers share one transaction (`sequencer.rs`). The tree head and proofs are
//! computed here with the pure Merkle code from the entries' leaf hashes, kept in memory and
//! read on from the last one seen; a tile-based integrator will replace how the tree is stored.

use super::{i64_of, u64_of, Database, PgError};
use crate::ledger::backend::LedgerBackend;
use crate::ledger::checkpoint::Checkpoint;
use crate::ledger::merkle::{self, Hash, Levels};
use crate::ledger::record::Record;
use crate::ledger::{LedgerError, LedgerSigner};
use std::sync::{Arc, Mutex};

/// The ledger in PostgreSQL (see the module's documentation).
#[derive(Clone)]
pub struct PgLedger {
    db: Database,
    tree: Arc<Mutex<Levels>>,
    origin: Arc<Mutex<Option<String>>>,
}

fn unavailable(e: PgError) -> LedgerError {
    LedgerError::Unavailable(Box::new(e))
}

impl PgLedger {
    pub(super) fn new(db: Database) -> Self {
        PgLedger {
            db,
            tree: Arc::default(),
            origin: Arc::default(),
        }
    }

    /// Names the log in its checkpoints (the vault's `[ledger] origin`).
    pub fn with_origin(self, origin: &str) -> Self {
        *self.origin.lock().expect("origin lock") = Some(origin.to_string());
        self
    }

    /// Appends from an async context: the same as [`LedgerBackend::append`], awaited.
    pub async fn append_async(&self, r: &Record) -> Result<u64, LedgerError> {
        let bytes = r.entry()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let work = super::sequencer::Work::Append {
            record: Box::new(super::sequencer::Entry {
                record: r.clone(),
                bytes,
            }),
            reply,
        };
        self.db
            .inner
            .seq
            .send(work)
            .await
            .map_err(|_| unavailable(PgError::Stopped))?;
        rx.await
            .map_err(|_| unavailable(PgError::Stopped))?
            .map_err(unavailable)
    }

    /// The record at `index`, as stored (its canonical bytes, parsed).
    pub fn entry(&self, index: u64) -> Result<Option<Record>, LedgerError> {
        let pool = self.db.pool().clone();
        let bytes = self
            .db
            .wait(async move {
                let c = pool.get().await?;
                let row = c
                    .query_opt(
                        "SELECT record FROM wv_entries WHERE idx = $1",
                        &[&i64_of(index)],
                    )
                    .await?;
                Ok::<_, PgError>(row.map(|r| r.get::<_, Vec<u8>>(0)))
            })
            .and_then(|r| r)
            .map_err(unavailable)?;
        bytes
            .map(|b| Record::parse(&b))
            .transpose()
            .map_err(|e| LedgerError::Verify(format!("entry {index}: {e}")))
    }

    /// Every entry's canonical bytes in order, from `from` (for auditing and recounting).
    pub fn entries_from(&self, from: u64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let pool = self.db.pool().clone();
        self.db
            .wait(async move {
                let c = pool.get().await?;
                let rows = c
                    .query(
                        "SELECT record FROM wv_entries WHERE idx >= $1 ORDER BY idx",
                        &[&i64_of(from)],
                    )
                    .await?;
                Ok::<_, PgError>(rows.iter().map(|r| r.get(0)).collect())
            })
            .and_then(|r| r)
            .map_err(unavailable)
    }

    /// Brings the in-memory tree up to the committed size; returns that size.
    fn sync_tree(&self) -> Result<u64, LedgerError> {
        let have = self.tree.lock().expect("tree lock").len();
        let pool = self.db.pool().clone();
        let (size, leaves) = self
            .db
            .wait(async move {
                let mut c = pool.get().await?;
                // One snapshot for the head and the leaves: a prefix, whole batches only.
                let tx = c
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let size: i64 = tx
                    .query_one("SELECT size FROM wv_ledger_head", &[])
                    .await?
                    .get(0);
                let rows = tx
                    .query(
                        "SELECT leaf FROM wv_entries WHERE idx >= $1 ORDER BY idx",
                        &[&i64_of(have)],
                    )
                    .await?;
                tx.commit().await?;
                let leaves: Vec<Vec<u8>> = rows.iter().map(|r| r.get(0)).collect();
                Ok::<_, PgError>((u64_of(size), leaves))
            })
            .and_then(|r| r)
            .map_err(unavailable)?;
        let mut tree = self.tree.lock().expect("tree lock");
        // Another caller may have synced meanwhile: push only what is new to it.
        let skip = (tree.len() - have) as usize;
        for leaf in leaves.iter().skip(skip) {
            let h: Hash = leaf
                .as_slice()
                .try_into()
                .map_err(|_| LedgerError::Verify("a stored leaf hash is not 32 bytes".into()))?;
            tree.push(h);
        }
        if tree.len() != size {
            return Err(LedgerError::Verify(format!(
                "the database's ledger head says {size} entries but {} leaves were read",
                tree.len()
            )));
        }
        Ok(size)
    }
}

impl LedgerBackend for PgLedger {
    fn append(&self, r: &Record) -> Result<u64, LedgerError> {
        let me = self.clone();
        let r = r.clone();
        self.db
            .wait(async move { me.append_async(&r).await })
            .map_err(unavailable)?
    }

    fn len(&self) -> u64 {
        let pool = self.db.pool().clone();
        let got = self
            .db
            .wait(async move {
                let c = pool.get().await?;
                let n: i64 = c
                    .query_one("SELECT size FROM wv_ledger_head", &[])
                    .await?
                    .get(0);
                Ok::<_, PgError>(u64_of(n))
            })
            .and_then(|r| r);
        match got {
            Ok(n) => n,
            Err(e) => {
                // The trait has no error here; the last size seen is what is known.
                tracing::warn!("reading the ledger's size: {e}");
                self.tree.lock().expect("tree lock").len()
            }
        }
    }

    fn entries(&self, from: u64, max: usize) -> Result<Vec<Vec<u8>>, LedgerError> {
        let pool = self.db.pool().clone();
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.db
            .wait(async move {
                let c = pool.get().await?;
                // Entries are committed with the head, whole batches at a time: every row
                // here is durable, and there is no gap below the last.
                let rows = c
                    .query(
                        "SELECT record FROM wv_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                        &[&i64_of(from), &max],
                    )
                    .await?;
                Ok::<_, PgError>(rows.iter().map(|r| r.get(0)).collect())
            })
            .and_then(|r| r)
            .map_err(unavailable)
    }

    fn tree_head(&self) -> Result<(u64, Hash), LedgerError> {
        self.sync_tree()?;
        let tree = self.tree.lock().expect("tree lock");
        Ok((tree.len(), tree.root()))
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError> {
        let n = self.sync_tree()?;
        if size > n || index >= size {
            return Ok(None);
        }
        Ok(merkle::inclusion_proof_in(
            &*self.tree.lock().expect("tree lock"),
            index,
            size,
        ))
    }

    fn consistency_proof(&self, old: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError> {
        let n = self.sync_tree()?;
        if size > n || old > size {
            return Ok(None);
        }
        Ok(merkle::consistency_proof_in(
            &*self.tree.lock().expect("tree lock"),
            old,
            size,
        ))
    }

    fn checkpoint(&self, key_name: &str, signer: &dyn LedgerSigner) -> Result<String, LedgerError> {
        let public = signer.public_key().map_err(LedgerError::Sign)?;
        let (size, root) = self.tree_head()?;
        let origin = self
            .origin
            .lock()
            .expect("origin lock")
            .clone()
            .unwrap_or_else(|| key_name.to_string());
        let cp = Checkpoint {
            origin,
            size,
            root,
            time: time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
        };
        let sig = signer
            .sign(cp.body().as_bytes())
            .map_err(LedgerError::Sign)?;
        let note = cp.signed_note(key_name, &public, &sig);
        let (pool, n) = (self.db.pool().clone(), note.clone());
        self.db
            .wait(async move {
                let c = pool.get().await?;
                c.execute(
                    "INSERT INTO wv_checkpoints (size, note) VALUES ($1, $2)",
                    &[&i64_of(size), &n],
                )
                .await?;
                Ok::<_, PgError>(())
            })
            .and_then(|r| r)
            .map_err(unavailable)?;
        Ok(note)
    }
}
