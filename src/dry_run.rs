//! A what-if release decision (`weightvault policy check`): the request a compliance officer
//! describes, with what the vault knows about the model — the training facts recorded when
//! its newest revision was sealed, the size a release of it would let out, and the licences'
//! use counted from the vault's ledger as the release service counts it. Host evidence is
//! not evaluated in a dry run (the service verifies it); nothing is recorded.

use crate::ledger::{Ledger, LedgerError};
use crate::policy::{HostClaims, ReleaseRequest, Usage};
use crate::store::{ListedRevision, Vault};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use time::OffsetDateTime;

/// The newest sealed revision (by seal time) of `model` in `vault`, if it has one: the
/// training facts in its manifest must agree with the inventory. A vault whose revisions
/// cannot be listed has none.
pub fn newest_sealed(vault: Option<&Vault>, model: &str) -> Option<ListedRevision> {
    vault.and_then(|v| v.list().ok()).and_then(|revs| {
        revs.into_iter()
            .filter(|r| r.manifest.model == model)
            .max_by(|a, b| a.manifest.sealed_at.cmp(&b.manifest.sealed_at))
    })
}

/// The vault's ledger could not be counted.
#[derive(Debug, thiserror::Error)]
#[error("counting licence use in {}: {error}", dir.display())]
pub struct UsageError {
    /// The ledger directory.
    pub dir: PathBuf,
    /// Why.
    pub error: LedgerError,
}

/// Releases and bytes used so far under each licence, counted in the ledger of `vault` as
/// the release service counts them; nothing without a vault or before its ledger exists.
pub fn licence_use(vault: Option<&Vault>) -> Result<BTreeMap<String, Usage>, UsageError> {
    match vault.map(|v| v.ledger_dir()).filter(|l| l.exists()) {
        Some(dir) => match Ledger::allocations(&dir) {
            Ok(a) => Ok(a.used),
            Err(error) => Err(UsageError { dir, error }),
        },
        None => Ok(Default::default()),
    }
}

/// A what-if release: who asks for which model, for a host where, as on which day.
#[derive(Debug, Clone)]
pub struct WhatIf {
    /// Requester id (e-mail of a person, URI of a workload).
    pub requester: String,
    /// Model name.
    pub model: String,
    /// Host id.
    pub host_id: String,
    /// Country of the host (ISO 3166-1 alpha-2).
    pub host_country: String,
    /// Region of the host.
    pub host_region: String,
    /// Source address of the request, for the network-origin check.
    pub source_ip: Option<IpAddr>,
    /// The time to decide as of.
    pub time: OffsetDateTime,
}

impl WhatIf {
    /// The dry-run request: host claims unsigned and not fresh (not evaluated); the release
    /// would cover every file of `sealed` ([`newest_sealed`]) and be judged with the licence
    /// use `used` ([`licence_use`]).
    pub fn request(
        self,
        sealed: Option<&ListedRevision>,
        used: BTreeMap<String, Usage>,
    ) -> ReleaseRequest {
        let size = sealed.map_or(0, |r| r.manifest.files.iter().map(|f| f.original_len).sum());
        ReleaseRequest {
            requester: self.requester,
            model: self.model,
            sealed_facts: sealed.map(|r| r.manifest.training.clone()),
            host: HostClaims {
                host_id: self.host_id,
                country: self.host_country,
                region: self.host_region,
                attester: String::new(),
                issued_at: self.time,
                expires_at: self.time,
                signature_valid: false,
                nonce_fresh: false,
                facility: None,
            },
            source_ip: self.source_ip,
            time: self.time,
            used,
            size,
            approvals: vec![],
            dry_run: true,
        }
    }
}
