//! The release ledger: an append-only log of every decision, with RFC 6962 Merkle hashing,
//! signed checkpoints and an auditor's verifier. It must never hold a secret, and an append
//! that is not durable must never lead to a release (fail closed).
//!
//! Files in the ledger directory: `segments/` (framed canonical records in write-once
//! segments, see [`log`]) and `checkpoints.log` (one JSON line per signed checkpoint note, see
//! [`checkpoint`]).

pub use weightvault_ledger::{checkpoint, merkle, proof, record, review, usage, words};
pub use weightvault_ledger::{ConsistencyProof, InclusionProof};

pub mod backend;
pub mod log;
pub mod query;
pub mod spool;
pub mod tiles;

use checkpoint::Checkpoint;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the ledger as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The log.
    #[error(transparent)]
    Log(#[from] log::LogError),
    /// Checkpoint file I/O.
    #[error("ledger checkpoints {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Signing failed.
    #[error("signing a checkpoint: {0}")]
    Sign(#[source] SignError),
    /// Verification found a problem.
    #[error("ledger verification failed: {0}")]
    Verify(String),
    /// A ledger in a database that cannot be read or written (unreachable, or a batch not
    /// committed): nothing it was asked to append is in it.
    #[error("the ledger database cannot be written: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A record longer than an entry may be: refused before it had an index.
    #[error(transparent)]
    TooLong(#[from] record::TooLong),
}

impl From<proof::ProofError> for LedgerError {
    fn from(e: proof::ProofError) -> Self {
        LedgerError::Verify(e.to_string())
    }
}

pub use checkpoint::{LedgerSigner, SignError};

/// An open ledger.
pub struct Ledger {
    dir: PathBuf,
    log: log::Log,
    origin: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointLine {
    size: u64,
    note: String,
}

/// Where the log's segments are.
fn segments_dir(dir: &Path) -> PathBuf {
    dir.join("segments")
}

/// Discards a torn final checkpoint line (a crash while appending one); returns its length.
fn repair_checkpoints(dir: &Path) -> Result<u64, LedgerError> {
    let path = dir.join("checkpoints.log");
    let io = |e| LedgerError::Io {
        path: path.clone(),
        source: e,
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    if keep < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io)?;
        f.set_len(keep as u64)
            .and_then(|()| f.sync_all())
            .map_err(io)?;
    }
    Ok((text.len() - keep) as u64)
}

/// Every stored checkpoint line, in order (none when the file does not exist yet).
fn read_checkpoints(dir: &Path) -> Result<Vec<CheckpointLine>, LedgerError> {
    let path = dir.join("checkpoints.log");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LedgerError::Io { path, source: e }),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(LedgerError::Verify(format!(
            "{}: a torn final checkpoint line (a crash; opening the ledger discards it)",
            path.display()
        )));
    }
    text.lines()
        .enumerate()
        .map(|(k, line)| {
            serde_json::from_str(line)
                .map_err(|e| LedgerError::Verify(format!("checkpoint line {}: {e}", k + 1)))
        })
        .collect()
}

/// What `verify` checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries in the log.
    pub entries: u64,
    /// Closed (write-once) segments.
    pub closed_segments: u64,
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// Size of the latest checkpoint.
    pub latest_size: u64,
    /// Entries after the latest checkpoint (not yet covered by a signature).
    pub uncovered: u64,
}

impl Ledger {
    /// Licence usage counted from every record of the ledger in `dir` (a vault's `ledger`
    /// directory); a ledger not yet written counts nothing. Reads without taking the writer's
    /// lock.
    pub fn allocations(dir: &Path) -> Result<usage::Allocations, LedgerError> {
        let mut a = usage::Allocations::default();
        Self::entries(dir, &mut |i, e| Ok(a.add_entry(i, e)?))?;
        Ok(a)
    }

    /// Opens (or creates) the ledger in `dir`; reports torn-tail recovery.
    pub fn open(dir: &Path, origin: &str) -> Result<(Self, log::Recovery), LedgerError> {
        Self::open_with(dir, origin, log::DEFAULT_SEGMENT_BITS)
    }

    /// [`Ledger::open`] with segments of `2^bits` entries (small ones for tests).
    pub fn open_with(
        dir: &Path,
        origin: &str,
        bits: u32,
    ) -> Result<(Self, log::Recovery), LedgerError> {
        Self::open_inner(dir, origin, bits, &mut |_, _| Ok(()))
    }

    /// [`Ledger::open`], calling `visit` with every entry read while opening (index, record
    /// bytes): one read of the log for a caller that also counts its records.
    pub fn open_visiting(
        dir: &Path,
        origin: &str,
        visit: &mut log::Visit<'_>,
    ) -> Result<(Self, log::Recovery), LedgerError> {
        Self::open_inner(dir, origin, log::DEFAULT_SEGMENT_BITS, visit)
    }

    fn open_inner(
        dir: &Path,
        origin: &str,
        bits: u32,
        visit: &mut log::Visit<'_>,
    ) -> Result<(Self, log::Recovery), LedgerError> {
        let (log, mut rec) = log::Log::open_visiting(&segments_dir(dir), bits, visit)?;
        rec.discarded_bytes += repair_checkpoints(dir)?;
        Ok((
            Self {
                dir: dir.into(),
                log,
                origin: origin.into(),
            },
            rec,
        ))
    }

    /// Whether a process holds the ledger in `dir` open for appending (a running service),
    /// judged by its lock; nothing is created or changed.
    pub fn is_held(dir: &Path) -> bool {
        log::Log::is_held(&segments_dir(dir))
    }

    /// Appends a record; the index comes back only once it is durable.
    pub fn append(&self, r: &record::Record) -> Result<u64, LedgerError> {
        Ok(self.log.append(&r.entry()?)?)
    }

    /// Signs a checkpoint of the current tree with `sign` (the HSM) and stores it.
    pub fn checkpoint(
        &self,
        key_name: &str,
        signer: &dyn LedgerSigner,
    ) -> Result<String, LedgerError> {
        let public = signer.public_key().map_err(LedgerError::Sign)?;
        let (size, root) = self.log.tree_head()?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            time: time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
        };
        let sig = signer
            .sign(cp.body().as_bytes())
            .map_err(LedgerError::Sign)?;
        let note = cp.signed_note(key_name, &public, &sig);
        let path = self.dir.join("checkpoints.log");
        let io = |e| LedgerError::Io {
            path: path.clone(),
            source: e,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut line = serde_json::to_vec(&CheckpointLine {
            size: cp.size,
            note: note.clone(),
        })
        .expect("json");
        line.push(b'\n');
        f.write_all(&line).map_err(io)?;
        f.sync_data().map_err(io)?;
        Ok(note)
    }

    /// Verifies a ledger directory offline with the checkpoint public key: every frame, every
    /// record's canonical form, every checkpoint's signature and root, and consistency between
    /// consecutive checkpoints. Names the first problem.
    pub fn verify(
        dir: &Path,
        key_name: &str,
        public: &[u8; 32],
    ) -> Result<VerifyReport, LedgerError> {
        let log = log::LogReader::read(&segments_dir(dir), true, &mut |i, e| {
            record::Record::parse(e)
                .map(|_| ())
                .map_err(|why| format!("entry {i} is not a canonical record: {why}").into())
        })?;
        let total = log.len();
        let mut prev: Option<Checkpoint> = None;
        let mut n = 0;
        for (k, cl) in read_checkpoints(dir)?.into_iter().enumerate() {
            let cp = Checkpoint::verify(&cl.note, key_name, public).map_err(|e| {
                LedgerError::Verify(format!("checkpoint {} (size {}): {e}", k + 1, cl.size))
            })?;
            if cp.size != cl.size {
                return Err(LedgerError::Verify(format!(
                    "checkpoint {}: size line disagrees with its note",
                    k + 1
                )));
            }
            if cp.size > total {
                return Err(LedgerError::Verify(format!(
                    "checkpoint {} covers {} entries but the log holds {}: entries were deleted or the log truncated",
                    k + 1,
                    cp.size,
                    total
                )));
            }
            let root = log.root(cp.size)?;
            if root != cp.root {
                let from = prev.as_ref().map_or(0, |p| p.size);
                return Err(LedgerError::Verify(format!(
                    "entries {from}..{} do not match checkpoint {} (size {}): an entry in that range was altered, removed or reordered",
                    cp.size,
                    k + 1,
                    cp.size
                )));
            }
            if let Some(p) = &prev {
                let proof = log.consistency_proof(p.size, cp.size)?.ok_or_else(|| {
                    LedgerError::Verify(format!(
                        "checkpoint {} is smaller than the one before",
                        k + 1
                    ))
                })?;
                if !merkle::verify_consistency(p.size, cp.size, &p.root, &cp.root, &proof) {
                    return Err(LedgerError::Verify(format!(
                        "checkpoints {} and {} are not consistent",
                        k,
                        k + 1
                    )));
                }
            }
            prev = Some(cp);
            n += 1;
        }
        let latest = prev.map_or(0, |p| p.size);
        Ok(VerifyReport {
            entries: total,
            closed_segments: log.closed_segments(),
            checkpoints: n,
            latest_size: latest,
            uncovered: total - latest,
        })
    }

    /// An inclusion proof of entry `index` against the latest stored checkpoint.
    pub fn prove(dir: &Path, index: u64) -> Result<InclusionProof, LedgerError> {
        let cl = read_checkpoints(dir)?.pop().ok_or_else(|| {
            LedgerError::Verify("no checkpoint yet: run `weightvault audit checkpoint`".into())
        })?;
        if index >= cl.size {
            return Err(LedgerError::Verify(format!(
                "entry {index} is not covered by the latest checkpoint (size {}); make a new checkpoint first",
                cl.size
            )));
        }
        let mut entry = None;
        let log = log::LogReader::read_with(&segments_dir(dir), false, true, &mut |i, e| {
            if i == index {
                entry = Some(String::from_utf8_lossy(e).into_owned());
            }
            Ok(())
        })?;
        let proof = log.inclusion_proof(index, cl.size)?.ok_or_else(|| {
            LedgerError::Verify(format!(
                "the latest checkpoint covers {} entries but the log holds {}",
                cl.size,
                log.len()
            ))
        })?;
        Ok(InclusionProof {
            index,
            entry: entry.expect("index < size <= entries"),
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: cl.note,
        })
    }

    /// A consistency proof from the tree of the first `old` entries to the latest checkpoint,
    /// for a witness holding an older checkpoint.
    pub fn prove_consistency(dir: &Path, old: u64) -> Result<ConsistencyProof, LedgerError> {
        let cl = read_checkpoints(dir)?.pop().ok_or_else(|| {
            LedgerError::Verify("no checkpoint yet: run `weightvault audit checkpoint`".into())
        })?;
        if old > cl.size {
            return Err(LedgerError::Verify(format!(
                "size {old} is beyond the latest checkpoint (size {})",
                cl.size
            )));
        }
        let log = log::LogReader::read_with(&segments_dir(dir), false, true, &mut |_, _| Ok(()))?;
        let proof = log.consistency_proof(old, cl.size)?.ok_or_else(|| {
            LedgerError::Verify(format!(
                "the latest checkpoint covers {} entries but the log holds {}",
                cl.size,
                log.len()
            ))
        })?;
        Ok(ConsistencyProof {
            old_size: old,
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: cl.note,
        })
    }

    /// Reads every entry of the ledger in `dir`, in order (for `audit show`; an append in
    /// progress at the end is not shown).
    pub fn entries(dir: &Path, visit: &mut log::Visit<'_>) -> Result<u64, LedgerError> {
        Ok(log::LogReader::read_with(&segments_dir(dir), false, true, visit)?.len())
    }

    /// Up to `max` entries of the ledger in `dir` from index `from` on (for publishing tiles).
    pub fn entries_from(dir: &Path, from: u64, max: usize) -> Result<Vec<Vec<u8>>, LedgerError> {
        Ok(log::read_range(&segments_dir(dir), from, max)?)
    }

    /// The underlying log (tree heads and proofs of the live ledger).
    pub fn log(&self) -> &log::Log {
        &self.log
    }

    /// Number of durable entries.
    pub fn len(&self) -> u64 {
        self.log.len()
    }

    /// Whether the ledger is empty.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}
