//! Records made while another process holds the ledger. One process appends at a time (the
//! log's lock); a running `weightvault serve` holds it for as long as it runs. An operator
//! command run beside it (`kek rotate`, `rewrap`, `kek retire`) leaves its record durably in
//! `<ledger>/spool/`, and whoever holds the ledger appends the spooled records in the order
//! they were left and removes each once it is durable in the log: the service about once a
//! second, any other process when it opens the ledger.

use super::{record::Record, Ledger, LedgerError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Appended at this index.
    Appended(u64),
    /// Left in the spool (this file) for the process holding the ledger.
    Spooled(PathBuf),
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recorded::Appended(i) => write!(f, "ledger entry {i}"),
            Recorded::Spooled(_) => write!(
                f,
                "ledger spool: the running service appends it within a second"
            ),
        }
    }
}

fn spool_dir(ledger: &Path) -> PathBuf {
    ledger.join("spool")
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> LedgerError + 'a {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(source.kind(), format!("{what}: {source}")),
    }
}

/// Records `r` in the ledger in `dir`: appended when no other process holds it (after what
/// the spool holds), otherwise left in the spool.
pub fn record(dir: &Path, origin: &str, r: &Record) -> Result<Recorded, LedgerError> {
    match Ledger::open(dir, origin) {
        Ok((l, _)) => {
            l.ingest_spool()?;
            Ok(Recorded::Appended(l.append(r)?))
        }
        Err(LedgerError::Log(super::log::LogError::Busy(_))) => {
            spool(dir, r).map(Recorded::Spooled)
        }
        Err(e) => Err(e),
    }
}

/// Leaves `r` in the spool: written whole to a hidden file, synced, renamed into place and the
/// directory synced, so a spooled record is either absent or complete. Names sort by time.
fn spool(dir: &Path, r: &Record) -> Result<PathBuf, LedgerError> {
    let d = spool_dir(dir);
    std::fs::create_dir_all(&d).map_err(io(&d, "creating the spool"))?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| LedgerError::Io {
        path: d.clone(),
        source: std::io::Error::other(format!("randomness: {e}")),
    })?;
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let name = format!("{nanos:024}-{}.json", hex::encode(nonce));
    let tmp = d.join(format!(".{name}"));
    let path = d.join(&name);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp, "creating"))?;
    f.write_all(&r.canonical())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp, "writing"))?;
    std::fs::rename(&tmp, &path).map_err(io(&path, "renaming"))?;
    super::log::sync_dir(&d)?;
    Ok(path)
}

/// The names of the records waiting in the spool of the ledger in `dir`, oldest first.
fn waiting(dir: &Path) -> Result<Vec<String>, LedgerError> {
    let d = spool_dir(dir);
    let mut names: Vec<String> = match std::fs::read_dir(&d) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(&d, "reading the spool")(e)),
    };
    names.sort();
    Ok(names)
}

/// The records waiting in the spool of the ledger in `dir`, oldest first, without appending
/// them (a reader that must not miss what a running service has not appended yet). A file
/// that is not a record is skipped (the holder sets it aside).
pub fn pending(dir: &Path) -> Result<Vec<Record>, LedgerError> {
    let d = spool_dir(dir);
    let mut out = Vec::new();
    for n in waiting(dir)? {
        let p = d.join(&n);
        match std::fs::read(&p) {
            Ok(bytes) => out.extend(Record::parse(&bytes).ok()),
            // Appended and removed by the holder meanwhile: it is in the log now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p, "reading")(e)),
        }
    }
    Ok(out)
}

impl Ledger {
    /// Appends every record waiting in the spool, oldest first, removing each once its entry
    /// is durable; returns their indices and records. A file that is not a canonical record is
    /// renamed `*.bad` and reported, never appended. A crash between an append and the removal
    /// appends that record once more on the next run (an identical record, visibly repeated).
    pub fn ingest_spool(&self) -> Result<Vec<(u64, Record)>, LedgerError> {
        let d = spool_dir(&self.dir);
        let mut out = Vec::new();
        for n in waiting(&self.dir)? {
            let p = d.join(&n);
            let bytes = std::fs::read(&p).map_err(io(&p, "reading"))?;
            match Record::parse(&bytes) {
                Ok(r) => {
                    let i = self.append(&r)?;
                    std::fs::remove_file(&p).map_err(io(&p, "removing"))?;
                    out.push((i, r));
                }
                Err(why) => {
                    tracing::error!(file = %p.display(), "not a ledger record, set aside: {why}");
                    let bad = d.join(format!("{n}.bad"));
                    std::fs::rename(&p, &bad).map_err(io(&p, "setting aside"))?;
                }
            }
        }
        if !out.is_empty() {
            super::log::sync_dir(&d)?;
        }
        Ok(out)
    }
}
