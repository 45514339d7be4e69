//! The policy set replicas share: a reload on any replica publishes its policy directory as a
//! new numbered version in the database (after it parsed and checked it), and every replica —
//! the publisher included — hears of the version (NOTIFY on the listener's channel, or the
//! listener's poll of the head row) and applies it: it reads that version's files through
//! [`PgPolicy`], decides its live releases again and withdraws those that fail. A replica that
//! starts applies the version in force; only when the database has none yet does it publish
//! its own directory. A replica restarted with an older directory therefore cannot roll a
//! suspension back: its directory reaches the database only through a reload.

use super::{Database, PgError};
use crate::policy::data::PolicyError;
use crate::policy::PolicySource;
use crate::policy::PolicyVersion;
use std::collections::BTreeMap;

/// A policy set's files: name to text.
pub type PolicyFiles = BTreeMap<String, String>;

/// A published version of the policy set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its number (1, 2, ...: the highest is in force).
    pub version: i64,
    /// Its digest ([`PolicyVersion`] of its files).
    pub digest: PolicyVersion,
    /// Who published it (a replica's host and pid, or the CLI).
    pub by: String,
}

impl Database {
    /// Publishes `files` as the next version and tells every replica (in one transaction:
    /// the number is taken under the head row's lock). The caller has checked that they parse.
    pub fn publish_policy(
        &self,
        files: &BTreeMap<String, String>,
        by: &str,
    ) -> Result<Published, PgError> {
        let digest = PolicyVersion::of(files);
        let json = serde_json::to_value(files).expect("strings serialise");
        let (pool, by) = (self.pool().clone(), by.to_string());
        self.wait(async move {
            let mut c = pool.get().await?;
            let tx = c.transaction().await?;
            let version: i64 = tx
                .query_one(
                    "UPDATE wv_policy_head SET version = version + 1 RETURNING version",
                    &[],
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO wv_policies (version, digest, files, published_by)
                 VALUES ($1, $2, $3, $4)",
                &[&version, &digest.0.as_slice(), &json, &by],
            )
            .await?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&super::state::CHANNEL, &format!("policy {version}")],
            )
            .await?;
            tx.commit().await?;
            Ok(Published {
                version,
                digest,
                by,
            })
        })?
    }

    /// The version in force, if any was published.
    pub fn policy_in_force(&self) -> Result<Option<Published>, PgError> {
        Ok(self.policy_files(None)?.map(|(p, _)| p))
    }

    /// Version `version` (the one in force when `None`) and its files.
    pub fn policy_files(
        &self,
        version: Option<i64>,
    ) -> Result<Option<(Published, PolicyFiles)>, PgError> {
        let pool = self.pool().clone();
        self.wait(async move {
            let c = pool.get().await?;
            let row = c
                .query_opt(
                    "SELECT p.version, p.digest, p.files, p.published_by
                     FROM wv_policies p, wv_policy_head h
                     WHERE p.version = coalesce($1, h.version)",
                    &[&version],
                )
                .await?;
            let Some(r) = row else { return Ok(None) };
            let version: i64 = r.get(0);
            let corrupt = |detail: String| PgError::Corrupt {
                what: format!("wv_policies version {version}"),
                detail,
            };
            let digest: Vec<u8> = r.get(1);
            let files: BTreeMap<String, String> =
                serde_json::from_value(r.get(2)).map_err(|e| corrupt(format!("files: {e}")))?;
            let digest = PolicyVersion(
                digest
                    .try_into()
                    .map_err(|_| corrupt("digest is not 32 bytes".into()))?,
            );
            if PolicyVersion::of(&files) != digest {
                return Err(corrupt("the files do not have the recorded digest".into()));
            }
            Ok(Some((
                Published {
                    version,
                    digest,
                    by: r.get(3),
                },
                files,
            )))
        })?
    }

    /// The number of the version in force, as this process last heard (0: none yet); changes
    /// within a NOTIFY's latency of a publish anywhere, or a poll at the latest.
    pub fn policy_versions(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.policy.subscribe()
    }

    /// The policy source that reads the version in force.
    pub fn policy_source(&self) -> PgPolicy {
        PgPolicy { db: self.clone() }
    }
}

/// The number of the version in force.
pub(super) async fn policy_head(pool: &deadpool_postgres::Pool) -> Result<i64, PgError> {
    let c = pool.get().await?;
    Ok(c.query_one("SELECT version FROM wv_policy_head", &[])
        .await?
        .get(0))
}

/// The policy set in force in the database, as a [`PolicySource`]: every read is of the
/// version in force at that moment.
#[derive(Clone)]
pub struct PgPolicy {
    db: Database,
}

impl PolicySource for PgPolicy {
    fn read(&self) -> Result<BTreeMap<String, String>, PolicyError> {
        let err = |message: String| PolicyError {
            file: format!("the database's policy ({})", self.db.redacted_url()),
            line: 0,
            message,
        };
        match self.db.policy_files(None) {
            Ok(Some((_, files))) => Ok(files),
            Ok(None) => Err(err("no policy was published yet".into())),
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn location(&self, file: &str) -> String {
        format!("{file} (as published in the database)")
    }
}
