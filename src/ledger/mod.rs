//! The release ledger: an append-only log of every decision, with RFC 6962 Merkle hashing,
//! signed checkpoints and an auditor's verifier. It must never hold a secret, and an append
//! that is not durable must never lead to a release (fail closed).
//!
//! Files in the ledger directory: `ledger.log` (framed canonical records, see [`log`]) and
//! `checkpoints.log` (one JSON line per signed checkpoint note, see [`checkpoint`]).

pub mod checkpoint;
pub mod log;
pub mod merkle;
pub mod record;

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
    Sign(String),
    /// Verification found a problem.
    #[error("ledger verification failed: {0}")]
    Verify(String),
}

/// Signs a checkpoint body with the ledger key (the HSM in production).
pub type Signer<'a> = dyn Fn(&[u8]) -> Result<[u8; 64], String> + 'a;

/// An open ledger.
pub struct Ledger {
    dir: PathBuf,
    log: log::LogFile,
    origin: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointLine {
    size: u64,
    note: String,
}

/// A self-contained inclusion proof, checkable offline with the public key alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InclusionProof {
    /// Entry index.
    pub index: u64,
    /// The record (canonical JSON).
    pub entry: String,
    /// Audit path, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint note it is against.
    pub checkpoint: String,
}

impl InclusionProof {
    /// Checks the checkpoint signature and the path; returns the checkpoint.
    pub fn verify(&self, key_name: &str, public: &[u8; 32]) -> Result<Checkpoint, LedgerError> {
        let cp = Checkpoint::verify(&self.checkpoint, key_name, public)
            .map_err(|e| LedgerError::Verify(e.to_string()))?;
        let proof: Vec<merkle::Hash> = self
            .proof
            .iter()
            .map(|h| hex::decode(h).ok().and_then(|v| v.try_into().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| LedgerError::Verify("proof node is not a 32-byte hex hash".into()))?;
        if merkle::verify_inclusion(
            self.index,
            cp.size,
            &merkle::leaf_hash(self.entry.as_bytes()),
            &proof,
            &cp.root,
        ) {
            Ok(cp)
        } else {
            Err(LedgerError::Verify(format!(
                "entry {} is not in the tree of checkpoint size {}",
                self.index, cp.size
            )))
        }
    }
}

/// Every stored checkpoint line, in order (none when the file does not exist yet).
fn read_checkpoints(dir: &Path) -> Result<Vec<CheckpointLine>, LedgerError> {
    let path = dir.join("checkpoints.log");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(LedgerError::Io { path, source: e }),
    };
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
    /// Checkpoints verified.
    pub checkpoints: usize,
    /// Size of the latest checkpoint.
    pub latest_size: u64,
    /// Entries after the latest checkpoint (not yet covered by a signature).
    pub uncovered: u64,
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`; reports torn-tail recovery.
    pub fn open(dir: &Path, origin: &str) -> Result<(Self, log::Recovery), LedgerError> {
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::Io {
            path: dir.into(),
            source: e,
        })?;
        let (log, rec) = log::LogFile::open(&dir.join("ledger.log"))?;
        Ok((
            Self {
                dir: dir.into(),
                log,
                origin: origin.into(),
            },
            rec,
        ))
    }

    /// Appends a record; the index comes back only once it is durable.
    pub fn append(&self, r: &record::Record) -> Result<u64, LedgerError> {
        Ok(self.log.append(&r.canonical())?)
    }

    /// Signs a checkpoint of the current tree with `sign` (the HSM) and stores it.
    pub fn checkpoint(
        &self,
        key_name: &str,
        public: &[u8; 32],
        sign: &Signer<'_>,
    ) -> Result<String, LedgerError> {
        let leaves = self.log.leaves();
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: leaves.len() as u64,
            root: merkle::root(&leaves),
            time: time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
        };
        let sig = sign(cp.body().as_bytes()).map_err(LedgerError::Sign)?;
        let note = cp.signed_note(key_name, public, &sig);
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
        let entries = log::LogFile::entries(&dir.join("ledger.log"))?;
        for (i, e) in entries.iter().enumerate() {
            record::Record::parse(e).map_err(|why| {
                LedgerError::Verify(format!("entry {i} is not a canonical record: {why}"))
            })?;
        }
        let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
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
            if cp.size > leaves.len() as u64 {
                return Err(LedgerError::Verify(format!(
                    "checkpoint {} covers {} entries but the log holds {}: entries were deleted or the log truncated",
                    k + 1,
                    cp.size,
                    leaves.len()
                )));
            }
            let root = merkle::root(&leaves[..cp.size as usize]);
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
                let proof = merkle::consistency_proof(&leaves[..cp.size as usize], p.size)
                    .ok_or_else(|| {
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
            entries: leaves.len() as u64,
            checkpoints: n,
            latest_size: latest,
            uncovered: leaves.len() as u64 - latest,
        })
    }

    /// An inclusion proof of entry `index` against the latest stored checkpoint.
    pub fn prove(dir: &Path, index: u64) -> Result<InclusionProof, LedgerError> {
        let entries = log::LogFile::entries(&dir.join("ledger.log"))?;
        let cl = read_checkpoints(dir)?.pop().ok_or_else(|| {
            LedgerError::Verify("no checkpoint yet: run `weightvault audit checkpoint`".into())
        })?;
        if index >= cl.size {
            return Err(LedgerError::Verify(format!(
                "entry {index} is not covered by the latest checkpoint (size {}); make a new checkpoint first",
                cl.size
            )));
        }
        let leaves: Vec<merkle::Hash> = entries[..cl.size as usize]
            .iter()
            .map(|e| merkle::leaf_hash(e))
            .collect();
        let proof = merkle::inclusion_proof(&leaves, index).expect("index < size");
        Ok(InclusionProof {
            index,
            entry: String::from_utf8_lossy(&entries[index as usize]).into_owned(),
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint: cl.note,
        })
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
