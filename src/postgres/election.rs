//! One replica at a time integrates the shared ledger into its tiles and signs checkpoints:
//! the one holding a session-level advisory lock on a connection of its own. PostgreSQL
//! releases the lock when that session ends, so a replica that dies (or loses its database
//! connection) is replaced at the next replica's next try, with nothing to clean up.
//!
//! The lock alone cannot stop a replica that lost it without knowing from finishing a round it
//! began; what it writes is safe anyway: tiles are a function of the entries, so both write the
//! same bytes, and the checkpoint object is replaced only at the version the round read
//! (`TileLog::publish`'s compare-and-swap), so a late round cannot put an older head back.

use super::{Database, PgError};

/// The advisory lock key of the integrator ("wvintegr" in ASCII).
pub const INTEGRATOR_LOCK: i64 = 0x7776_696e_7465_6772;

/// This replica's candidacy: [`Election::held`] says whether it integrates now.
pub struct Election {
    db: Database,
    session: Option<tokio_postgres::Client>,
}

impl Database {
    /// A candidacy for the integrator's lock (not taken until [`Election::held`]).
    pub fn election(&self) -> Election {
        Election {
            db: self.clone(),
            session: None,
        }
    }
}

impl Election {
    /// Whether this replica holds the lock now: its session still answers, or a new session
    /// took the lock just now. Blocks (call it off the runtime's workers).
    pub fn held(&mut self) -> Result<bool, PgError> {
        if let Some(c) = self.session.take() {
            let alive = self.db.wait(async move {
                let ok = c.simple_query("SELECT 1").await.is_ok();
                (ok, c)
            })?;
            if alive.0 {
                self.session = Some(alive.1);
                return Ok(true);
            }
            tracing::warn!("the ledger integrator's database session ended: standing again");
        }
        let cfg = self.db.inner.cfg.clone();
        let got = self.db.wait(async move {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("integrator session: {e}");
                }
            });
            let won: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&INTEGRATOR_LOCK])
                .await?
                .get(0);
            Ok::<_, PgError>(won.then_some(client))
        })??;
        let won = got.is_some();
        if won {
            tracing::info!("elected the ledger integrator");
        }
        self.session = got;
        Ok(won)
    }
}
