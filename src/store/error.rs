//! Everything that can go wrong in the vault, each with what and where.

use super::*;

/// Everything that can go wrong in the vault, each with what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No vault at that directory.
    #[error("no vault at {0} (run `weightvault init --vault {0}`, or set WEIGHTVAULT_HOME)")]
    NoVault(PathBuf),
    /// The vault config is invalid.
    #[error("vault config {path}: {why}")]
    Config {
        /// Config path.
        path: PathBuf,
        /// What is wrong.
        #[source]
        why: ConfigError,
    },
    /// Input that is not acceptable, with the reason.
    #[error("{0}")]
    BadInput(String),
    /// A file that should be safetensors is not.
    #[error("{path}: not a valid safetensors file: {source}")]
    NotSafetensors {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: checkpoint::SafetensorsError,
    },
    /// The revision exists already.
    #[error("{model}@{revision} is already sealed in this vault (revisions are immutable; choose a new revision name)")]
    AlreadySealed {
        /// Model.
        model: String,
        /// Revision.
        revision: String,
    },
    /// No such model or revision.
    #[error("{0}")]
    NotFound(String),
    /// The revision was crypto-shredded: its data keys are destroyed.
    #[error(
        "{0} was crypto-shredded{1}: its data keys are destroyed and it can never be opened again"
    )]
    Shredded(String, String),
    /// A sealed file is damaged or does not belong where it is.
    #[error("{what}: {source}")]
    Format {
        /// Which file, shard, model.
        what: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// A revision's files do not match its manifest.
    #[error("{0}")]
    Mismatch(String),
    /// The HSM refused or failed.
    #[error("{what}: {source}")]
    Hsm {
        /// Which file (or "HSM").
        what: String,
        /// What the HSM said.
        #[source]
        source: HsmError,
    },
    /// The disk is full.
    #[error(
        "disk full while {action} {path} — free space and try again; nothing partial was kept"
    )]
    DiskFull {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
    },
    /// The ledger record an action waits for (`record` of [`Vault::remove`], [`Vault::shred`],
    /// [`Vault::retire_kek`]) could not be made, so the action was not done: the record's own
    /// error.
    #[error(transparent)]
    Unrecorded(RecordError),
    /// SIGINT or SIGTERM asked the command to stop; nothing partial was kept.
    #[error("{0}; nothing partial was kept")]
    Interrupted(#[from] crate::interrupt::Interrupted),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(crate::durable::PathIoError),
    /// Object storage refused or failed.
    #[error("{action} {key} in the bucket: {source}")]
    Bucket {
        /// What was being done.
        action: &'static str,
        /// The object's key.
        key: String,
        /// What the store said.
        #[source]
        source: Box<object_store::Error>,
    },
}

/// What is wrong with a vault's `vault.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not TOML, or not the fields of a vault config.
    #[error("line {line}: {}", .error.message().trim())]
    Parse {
        /// The line the error is on (0 when the parser names none).
        line: usize,
        /// The parser's error. Not a `source`: its `Display` is a multi-line excerpt of the
        /// file, and the line and message above already say it. Boxed: it is large.
        error: Box<toml::de::Error>,
    },
    /// `seal.chunk_size` outside what the sealed format allows.
    #[error("seal.chunk_size {0} is out of range")]
    ChunkSize(u32),
}

/// Why the ledger record an action waits for could not be made (the caller's own error): see
/// [`StoreError::Unrecorded`].
pub type RecordError = Box<dyn std::error::Error + Send + Sync>;

impl From<output::ScratchError> for StoreError {
    fn from(e: output::ScratchError) -> Self {
        match e {
            output::ScratchError::Io(e) => StoreError::io(e.action, &e.path, e.source),
            other => StoreError::BadInput(other.to_string()),
        }
    }
}

impl StoreError {
    /// Wraps an I/O error with what was being done where; a full disk gets its own message.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(28)
            || source.raw_os_error() == Some(122)
        {
            return StoreError::DiskFull {
                action,
                path: path.into(),
            };
        }
        StoreError::Io(crate::durable::PathIoError {
            action,
            path: path.into(),
            source,
        })
    }
}
