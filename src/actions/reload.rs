//! Asking the running `weightvault serve` of a vault to read its policy directory again: the
//! service leaves its pid in `<vault>/serve.pid` ([`ServePidFile`]); a reload checks that the
//! pid is a service holding this vault's ledger, sends it SIGHUP and waits for the
//! `policy-reload` record the service writes, which says whether the new policy was applied
//! and which live releases it withdrew. With a shared database (`[database]`), the signalled
//! replica publishes the directory as the next policy version, every replica applies it and
//! records its own reload in the shared ledger, and the first of those records is the answer.

use crate::ledger::record::Record;
use crate::ledger::words::Kind;
use crate::ledger::{Ledger, LedgerError};
use crate::store::Vault;
use crate::vault_ledger::LedgerReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the service did with its policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyReload {
    /// The new policy is in force; these live releases (the ledger entries of their
    /// decisions) were withdrawn and their streams cut.
    Applied {
        /// Ledger entries of the withdrawn releases' decisions.
        withdrawn: Vec<u64>,
    },
    /// The directory was invalid: the old policy stays in force.
    Refused {
        /// Why, as the service recorded it.
        reason: String,
    },
}

/// Why no reload was seen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// No pid file: no service runs for the vault.
    #[error("no `weightvault serve` runs for {} (no {}): start one, or signal yours with kill -HUP", vault.display(), pid_file.display())]
    NoService {
        /// The vault.
        vault: PathBuf,
        /// Its pid file.
        pid_file: PathBuf,
    },
    /// The pid file names a process that is not this vault's service.
    #[error("{} names process {pid}, which is not a running `weightvault serve` of this vault (a stale file from a service that was killed, or a copied vault?)", pid_file.display())]
    Stale {
        /// The pid file.
        pid_file: PathBuf,
        /// The process it names.
        pid: i32,
    },
    /// The pid is not one a signal can be sent to.
    #[error("a pid")]
    NotAPid,
    /// The signal could not be sent.
    #[error("signalling process {pid}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        #[source]
        source: rustix::io::Errno,
    },
    /// The service recorded no reload in time.
    #[error("process {pid} was signalled but recorded no reload within {} s", wait.as_secs())]
    NoRecord {
        /// The process.
        pid: i32,
        /// How long it was given.
        wait: Duration,
    },
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Makes the running service of `v` reload its policy and waits up to `wait` for its record.
pub fn reload(v: &Vault, wait: Duration) -> Result<PolicyReload, ReloadError> {
    let pid_file = v.serve_pid_file();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| ReloadError::NoService {
            vault: v.dir().to_path_buf(),
            pid_file: pid_file.clone(),
        })?;
    let reader = v.ledger_reader()?;
    let shared = matches!(reader, LedgerReader::Shared(_));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // A service on a shared database does not hold the vault's local ledger.
    let holds = shared || Ledger::is_held(&v.ledger_dir());
    if !(String::from_utf8_lossy(&cmdline).contains("serve") && holds) {
        return Err(ReloadError::Stale { pid_file, pid });
    }
    let before = reader.entry_count()?;
    let target = rustix::process::Pid::from_raw(pid).ok_or(ReloadError::NotAPid)?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|source| ReloadError::Signal { pid, source })?;
    let t = Instant::now();
    let (r, withdrawn) = loop {
        if let Some(found) = first_reload(&reader, before)? {
            break found;
        }
        if t.elapsed() >= wait {
            return Err(ReloadError::NoRecord { pid, wait });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(match r.rejection() {
        Some(reason) => PolicyReload::Refused { reason },
        None => PolicyReload::Applied { withdrawn },
    })
}

/// The first `policy-reload` record from entry `from` on, and every withdrawal it recorded:
/// its own and those of the `withdrawal` parts it follows (back along `follows`, which skips
/// whatever other writers appended between them).
pub fn first_reload(
    reader: &LedgerReader,
    from: u64,
) -> Result<Option<(Record, Vec<u64>)>, LedgerError> {
    let mut parts = std::collections::BTreeMap::new();
    let mut found = None;
    reader.visit(from, &mut |i, e| {
        if found.is_some() {
            return Ok(());
        }
        let r = Record::parse(e)?;
        match r.kind {
            Kind::Withdrawal => {
                parts.insert(i, r);
            }
            Kind::PolicyReload => found = Some(r),
            _ => {}
        }
        Ok(())
    })?;
    Ok(found.map(|r| {
        let mut withdrawn = r.withdrawals();
        let mut prev = r.follows;
        while let Some(part) = prev.and_then(|i| parts.remove(&i)) {
            withdrawn.splice(0..0, part.withdrawals());
            prev = part.follows;
        }
        (r, withdrawn)
    }))
}

/// The running service's pid in `<vault>/serve.pid`, for [`reload`]; removed when dropped.
#[derive(Debug)]
pub struct ServePidFile(PathBuf);

/// The pid file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {}", path.display())]
pub struct PidFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl ServePidFile {
    /// Writes this process's id as the service of `v`.
    pub fn write(v: &Vault) -> Result<Self, PidFileError> {
        let path = v.serve_pid_file();
        match std::fs::write(&path, format!("{}\n", std::process::id())) {
            Ok(()) => Ok(ServePidFile(path)),
            Err(source) => Err(PidFileError { path, source }),
        }
    }
}

impl Drop for ServePidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
