//! The durable, append-only log file behind the ledger: group commit, crash recovery, and
//! fail-closed appends.
//!
//! Frame: `u32 BE length || entry || SHA-256 leaf hash of entry` (the RFC 6962 leaf hash,
//! which doubles as the frame's checksum). Appenders queue frames; whichever finds no write in
//! progress writes every queued frame with one `write` and one `fdatasync`, then wakes the
//! others. [`LogFile::append`] returns an entry's index only after it is durable; after any
//! write or sync failure every append is refused (fail closed) until the log is reopened.

use super::merkle::{leaf_hash, Hash};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// Largest entry accepted (1 MiB).
pub const MAX_ENTRY: usize = 1 << 20;

/// Ledger storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// I/O failure; nothing may be released.
    #[error(
        "ledger {path}: {action}: {source} — releases are refused until the ledger is writable"
    )]
    Io {
        /// Log path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier write failed: the log refuses appends until reopened.
    #[error("ledger {0}: an earlier write failed ({1}); releases are refused until the ledger is reopened")]
    FailedClosed(PathBuf, String),
    /// An entry inside the log (not at its end) is damaged.
    #[error("ledger {path}: entry {index} at byte {offset} is damaged — the log was altered")]
    Corrupt {
        /// Log path.
        path: PathBuf,
        /// Entry index.
        index: u64,
        /// Byte offset of its frame.
        offset: u64,
    },
    /// The final write is incomplete (a crash; reopening the log discards it).
    #[error("ledger {path}: a torn final write of {bytes} bytes after entry {index} — a crash; reopening the ledger discards it")]
    Torn {
        /// Log path.
        path: PathBuf,
        /// Entries before it.
        index: u64,
        /// Bytes of the torn write.
        bytes: u64,
    },
    /// Entry too large.
    #[error("ledger entry of {0} bytes exceeds {MAX_ENTRY}")]
    TooLarge(usize),
}

/// The frames of a log file: each entry's byte range and leaf hash, and where the valid frames
/// end. A bad frame followed by more data is alteration (an error); an incomplete or
/// mismatching final frame is a torn write, left after `end`.
struct Scan {
    frames: Vec<(std::ops::Range<usize>, Hash)>,
    end: usize,
}

fn scan(path: &Path, bytes: &[u8]) -> Result<Scan, LogError> {
    let corrupt = |index: usize, offset: usize| LogError::Corrupt {
        path: path.into(),
        index: index as u64,
        offset: offset as u64,
    };
    let n = bytes.len();
    let mut frames = Vec::new();
    let mut off = 0usize;
    while n - off >= 4 {
        let len = u32::from_be_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
        let end = off + 4 + len + 32;
        if len > MAX_ENTRY || end > n {
            // An incomplete final frame (or a length field torn mid-write) is a torn tail,
            // unless a plausible frame continues after it, which means alteration.
            if len > MAX_ENTRY && end <= n {
                return Err(corrupt(frames.len(), off));
            }
            break;
        }
        let entry = off + 4..off + 4 + len;
        let h = leaf_hash(&bytes[entry.clone()]);
        if h[..] != bytes[off + 4 + len..end] {
            if end == n {
                break; // the last frame was torn: its bytes are not all there
            }
            return Err(corrupt(frames.len(), off));
        }
        frames.push((entry, h));
        off = end;
    }
    Ok(Scan { frames, end: off })
}

/// What reopening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries recovered.
    pub entries: u64,
    /// Bytes of a torn (incompletely written) final frame that were discarded.
    pub discarded_bytes: u64,
}

struct State {
    queued: Vec<u8>,
    queued_leaves: Vec<Hash>,
    next_index: u64,
    durable: u64,
    flushing: bool,
    failed: Option<String>,
    leaves: Vec<Hash>,
    bytes: u64,
}

/// An open log file.
pub struct LogFile {
    path: PathBuf,
    file: File,
    state: Mutex<State>,
    flushed: Condvar,
}

impl LogFile {
    /// Opens (or creates) the log, checks every frame, and discards a torn final frame.
    pub fn open(path: &Path) -> Result<(Self, Recovery), LogError> {
        let io = |action, source| LogError::Io {
            path: path.into(),
            action,
            source,
        };
        // Not O_APPEND: with it, Linux pwrite ignores the offset.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(false)
            .create(true)
            .open(path)
            .map_err(|e| io("opening", e))?;
        let bytes = std::fs::read(path).map_err(|e| io("reading", e))?;
        let scan = scan(path, &bytes)?;
        let leaves: Vec<Hash> = scan.frames.iter().map(|(_, h)| *h).collect();
        let (n, off) = (bytes.len(), scan.end);
        let discarded = (n - off) as u64;
        if discarded > 0 {
            file.flush().map_err(|e| io("flushing", e))?;
            file.set_len(off as u64)
                .map_err(|e| io("truncating the torn tail", e))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
        }
        let count = leaves.len() as u64;
        Ok((
            Self {
                path: path.into(),
                file,
                state: Mutex::new(State {
                    queued: Vec::new(),
                    queued_leaves: Vec::new(),
                    next_index: count,
                    durable: count,
                    flushing: false,
                    failed: None,
                    leaves,
                    bytes: off as u64,
                }),
                flushed: Condvar::new(),
            },
            Recovery {
                entries: count,
                discarded_bytes: discarded,
            },
        ))
    }

    /// Appends an entry; returns its index once it is on disk. An error means it may not be:
    /// the caller must not release anything.
    pub fn append(&self, entry: &[u8]) -> Result<u64, LogError> {
        if entry.len() > MAX_ENTRY {
            return Err(LogError::TooLarge(entry.len()));
        }
        let mut st = self.state.lock().expect("ledger lock");
        if let Some(f) = &st.failed {
            return Err(LogError::FailedClosed(self.path.clone(), f.clone()));
        }
        let index = st.next_index;
        st.next_index += 1;
        st.queued
            .extend_from_slice(&(entry.len() as u32).to_be_bytes());
        st.queued.extend_from_slice(entry);
        let h = leaf_hash(entry);
        st.queued.extend_from_slice(&h);
        st.queued_leaves.push(h);
        loop {
            if st.durable > index {
                return Ok(index);
            }
            if let Some(f) = &st.failed {
                return Err(LogError::FailedClosed(self.path.clone(), f.clone()));
            }
            if !st.flushing {
                // Become the writer for everything queued so far.
                st.flushing = true;
                let batch = std::mem::take(&mut st.queued);
                let batch_leaves = std::mem::take(&mut st.queued_leaves);
                let upto = st.next_index;
                let at = st.bytes;
                drop(st);
                let r = self
                    .file
                    .write_all_at(&batch, at)
                    .and_then(|()| self.file.sync_data());
                st = self.state.lock().expect("ledger lock");
                st.flushing = false;
                match r {
                    Ok(()) => {
                        st.bytes += batch.len() as u64;
                        st.leaves.extend(batch_leaves);
                        st.durable = upto;
                    }
                    Err(e) => {
                        st.failed = Some(e.to_string());
                    }
                }
                self.flushed.notify_all();
            } else {
                st = self.flushed.wait(st).expect("ledger lock");
            }
        }
    }

    /// Leaf hashes of every durable entry, in order.
    pub fn leaves(&self) -> Vec<Hash> {
        self.state.lock().expect("ledger lock").leaves.clone()
    }

    /// Number of durable entries.
    pub fn len(&self) -> u64 {
        self.state.lock().expect("ledger lock").durable
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every entry back (for verification and `audit show`). A torn final write (a
    /// crash the log was not reopened after) is reported, not skipped.
    pub fn entries(path: &Path) -> Result<Vec<Vec<u8>>, LogError> {
        let bytes = std::fs::read(path).map_err(|e| LogError::Io {
            path: path.into(),
            action: "reading",
            source: e,
        })?;
        let scan = scan(path, &bytes)?;
        if scan.end < bytes.len() {
            return Err(LogError::Torn {
                path: path.into(),
                index: scan.frames.len() as u64,
                bytes: (bytes.len() - scan.end) as u64,
            });
        }
        Ok(scan
            .frames
            .into_iter()
            .map(|(r, _)| bytes[r].to_vec())
            .collect())
    }
}
