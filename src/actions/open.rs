//! An operator's decryption of a revision, recorded: its start is in the ledger before any
//! plaintext is written (when the ledger cannot be written nothing is opened: fail closed),
//! and its end after, as completed, failed or interrupted. The ledger stays held meanwhile,
//! so an open that dies unrecorded (SIGKILL) is found and recorded by the next holder.

use super::{error_line, operator_record};
use crate::ledger::record::{OpenOutcome, Record};
use crate::ledger::words::{Kind, Outcome};
use crate::ledger::LedgerError;
use crate::store::sealed::Progress;
use crate::store::{OpenedRevision, StoreError, Vault};
use std::path::{Path, PathBuf};

/// What an open writes.
#[derive(Clone, Copy)]
pub enum OpenTarget<'a> {
    /// Every file of the revision, into a new directory, on `threads` workers.
    Files {
        /// Worker threads.
        threads: usize,
        /// Told of the bytes written.
        progress: &'a dyn Progress,
    },
    /// One tensor, as a new single-tensor safetensors file.
    Tensor(&'a str),
}

/// What an open writes to a stream.
#[derive(Clone, Copy)]
pub enum StreamTarget<'a> {
    /// One tensor, as a single-tensor safetensors file.
    Tensor(&'a str),
    /// One file of the revision as it was sealed, or bytes `[start, end)` of it.
    File {
        /// Its path in the checkpoint directory.
        path: &'a str,
        /// The range (an absent end: to the end of the file).
        range: (Option<u64>, Option<u64>),
    },
}

/// A completed, recorded open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedOpen {
    /// Plaintext bytes written.
    pub bytes: u64,
    /// The ledger entry of its start (`operator-open`).
    pub start: u64,
    /// The ledger entry of its end (`open-end`, completed).
    pub end: u64,
}

/// Why a recorded open failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The output place is refused, or writing the files failed (nothing was kept).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the one tensor failed (nothing was kept).
    #[error("writing tensor {name}")]
    Tensor {
        /// The tensor.
        name: String,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The ledger could not be opened: nothing was opened.
    #[error("opening the ledger (nothing was opened)")]
    Ledger(#[source] LedgerError),
    /// The start could not be recorded: nothing was opened.
    #[error("recording the open in the ledger (nothing was opened)")]
    NotRecorded(#[source] LedgerError),
    /// The plaintext was written, but the end of the open was not recorded.
    #[error("{} was written but the end of the open (ledger entry {start}) could not be recorded", out.display())]
    EndNotRecorded {
        /// What was written.
        out: PathBuf,
        /// The ledger entry of the open's start.
        start: u64,
        /// Why the end was not recorded.
        #[source]
        source: LedgerError,
    },
}

impl Vault {
    /// Writes `what` of `rev` to `out` as `operator`'s open, recorded in the ledger: an
    /// `operator-open` record (of every file, or `tensor:NAME`) before anything is written,
    /// an `open-end` after with the outcome — `completed` with the bytes, `interrupted` (a
    /// signal, [`crate::interrupt`]) or `failed` with the reason; nothing of a failed open
    /// is kept.
    pub fn open_recorded(
        &self,
        rev: &OpenedRevision,
        what: OpenTarget<'_>,
        out: &Path,
        operator: &str,
    ) -> Result<RecordedOpen, OpenError> {
        crate::store::check_output(out, matches!(what, OpenTarget::Tensor(_)))?;
        let shards: Vec<String> = match what {
            OpenTarget::Tensor(t) => vec![format!("tensor:{t}")],
            OpenTarget::Files { .. } => rev.manifest.files.iter().map(|f| f.path.clone()).collect(),
        };
        self.recorded(rev, shards, out, operator, || match what {
            OpenTarget::Tensor(name) => {
                rev.open_tensor_to(name, out)
                    .map_err(|source| OpenError::Tensor {
                        name: name.to_string(),
                        source: Box::new(source),
                    })
            }
            OpenTarget::Files { threads, progress } => {
                rev.open_to(out, threads, progress).map_err(OpenError::from)
            }
        })
    }

    /// [`Vault::open_recorded`] of `what` to a stream (`open --out -`: standard output),
    /// recorded the same way (`tensor:NAME`, or `file:PATH` with `[START:END]` for a range).
    pub fn open_to_stream_recorded(
        &self,
        rev: &OpenedRevision,
        what: StreamTarget<'_>,
        out: &mut dyn std::io::Write,
        operator: &str,
    ) -> Result<RecordedOpen, OpenError> {
        let shard = match what {
            StreamTarget::Tensor(t) => format!("tensor:{t}"),
            StreamTarget::File {
                path,
                range: (None, None),
            } => format!("file:{path}"),
            StreamTarget::File {
                path,
                range: (a, b),
            } => format!(
                "file:{path}[{}:{}]",
                a.map(|a| a.to_string()).unwrap_or_default(),
                b.map(|b| b.to_string()).unwrap_or_default()
            ),
        };
        self.recorded(
            rev,
            vec![shard],
            Path::new("standard output"),
            operator,
            || match what {
                StreamTarget::Tensor(name) => {
                    rev.write_tensor(name, out)
                        .map_err(|source| OpenError::Tensor {
                            name: name.to_string(),
                            source: Box::new(source),
                        })
                }
                StreamTarget::File { path, range } => rev
                    .write_file_range(path, range, out)
                    .map_err(OpenError::from),
            },
        )
    }

    /// The ledger around an open: its start recorded before `write` runs (nothing written
    /// when that fails), its end after, with the outcome.
    fn recorded(
        &self,
        rev: &OpenedRevision,
        shards: Vec<String>,
        out: &Path,
        operator: &str,
        write: impl FnOnce() -> Result<u64, OpenError>,
    ) -> Result<RecordedOpen, OpenError> {
        let (ledger, _) = self.ledger().map_err(OpenError::Ledger)?;
        let start = operator_record(
            Kind::OperatorOpen,
            operator,
            &rev.manifest.model,
            Some(&rev.manifest.revision),
            shards,
            Outcome::Started,
        );
        let index = ledger.append(&start).map_err(OpenError::NotRecorded)?;
        let result = write();
        let (outcome, bytes, reason) = match &result {
            Ok(n) => (OpenOutcome::Completed, Some(*n), None),
            Err(_) if crate::interrupt::requested().is_some() => (
                OpenOutcome::Interrupted,
                None,
                crate::interrupt::requested().map(|s| format!("{s}; nothing was kept")),
            ),
            Err(e) => (
                OpenOutcome::Failed,
                None,
                Some(format!("{}; nothing was kept", error_line(e))),
            ),
        };
        let end = Record::open_end(
            index,
            &start,
            &crate::store::now_rfc3339(),
            outcome,
            bytes,
            reason,
        );
        let end_index = ledger.append(&end);
        let bytes = result?;
        let end = end_index.map_err(|source| OpenError::EndNotRecorded {
            out: out.to_path_buf(),
            start: index,
            source,
        })?;
        Ok(RecordedOpen {
            bytes,
            start: index,
            end,
        })
    }
}
