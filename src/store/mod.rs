//! The vault on disk: its configuration, the HSM it uses, and sealed revisions of models.
//!
//! ```text
//! <vault>/vault.toml                                   configuration
//! <vault>/hsm/{softhsm2.conf,tokens/,user.pin,token.lock}   embedded SoftHSM2 token
//! <vault>/models/<model>/<revision>/manifest.sealed    the revision's manifest
//! <vault>/models/<model>/<revision>/files/<path>.sealed one per checkpoint file
//! ```
//! A revision appears under its name only once every file and the manifest are written and
//! fsynced (staging directory, then rename), so an interrupted seal leaves nothing `list` shows.
//! Plaintext is written only by `open`, to the place the operator names.

pub mod checkpoint;
pub use weightvault_core::header_check;
pub mod mapped;
pub mod object;
pub mod output;
pub mod sealed;

use crate::format::{FileKind, FormatError, SealedHeader};
use crate::hsm::{HsmConfig, HsmError, KeyWrap, Pin, Pkcs11KeyWrap};
use crate::keys::DataKey;
use checkpoint::CheckpointFile;
mod rotation;
pub use rotation::{KekUse, RewrapReport, ShredReport};
use sealed::{OpenedFile, Progress, SealParams, SealedFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

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
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
            output::ScratchError::Io {
                action,
                path,
                source,
            } => StoreError::io(action, &path, source),
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
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// `[hsm]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token_label: String,
    /// KEK label prefix (versions are `<label>.v<N>`).
    pub kek_label: String,
    /// File holding the user PIN (relative paths are under the vault). `WEIGHTVAULT_HSM_PIN`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// SoftHSM2 configuration for an embedded token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softhsm2_conf: Option<PathBuf>,
    /// Lock file serialising PKCS#11 use across processes.
    pub lock_file: PathBuf,
}

/// `[seal]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSection {
    /// Chunk size in bytes (default 1 MiB).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: u32,
    /// Worker threads (0 = one per core).
    #[serde(default)]
    pub threads: usize,
}

fn default_chunk_size() -> u32 {
    crate::format::DEFAULT_CHUNK_SIZE
}

impl Default for SealSection {
    fn default() -> Self {
        Self {
            chunk_size: default_chunk_size(),
            threads: 0,
        }
    }
}

/// `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// HSM settings.
    pub hsm: HsmSection,
    /// Sealing settings.
    #[serde(default)]
    pub seal: SealSection,
    /// Ledger settings.
    #[serde(default)]
    pub ledger: LedgerSection,
}

/// `[ledger]` in `vault.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Checkpoint origin line and signing key name.
    #[serde(default = "default_origin")]
    pub origin: String,
}

fn default_origin() -> String {
    "weightvault.local/ledger".into()
}

impl Default for LedgerSection {
    fn default() -> Self {
        Self {
            origin: default_origin(),
        }
    }
}

pub use weightvault_core::facts::TrainingFacts;

/// One file of a revision, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the checkpoint root.
    pub path: String,
    /// Safetensors shard or other file.
    pub kind: FileKind,
    /// Shard index (safetensors) or 0.
    pub shard_index: u32,
    /// Shard count (safetensors) or 0.
    pub shard_count: u32,
    /// Length of the original file.
    pub original_len: u64,
    /// Length of the sealed file.
    pub sealed_len: u64,
    /// Number of tensors (safetensors) or 0.
    pub tensors: usize,
    /// Hex SHA-256 of the sealed file's prelude + header.
    pub header_hash: String,
}

/// The manifest of a revision: binds all its files together. Sealed like any other file
/// (its JSON is the authenticated clear metadata of `manifest.sealed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `weightvault-manifest/1`.
    pub format: String,
    /// Model name.
    pub model: String,
    /// Revision name.
    pub revision: String,
    /// RFC 3339 time of sealing.
    pub sealed_at: String,
    /// Chunk size used.
    pub chunk_size: u32,
    /// Training facts given at seal time.
    pub training: TrainingFacts,
    /// Files, sorted by path.
    pub files: Vec<ManifestEntry>,
}

/// The manifest format string.
pub const MANIFEST_FORMAT: &str = "weightvault-manifest/1";
/// File name of a revision's sealed manifest.
pub const MANIFEST_FILE: &str = "manifest.sealed";

/// The file that marks a revision as crypto-shredded (JSON: when, by whom).
pub const SHREDDED_FILE: &str = "SHREDDED";

/// `Some(" on <time>")` when the revision in `dir` was shredded.
fn shredded_at(dir: &Path) -> Option<String> {
    let b = std::fs::read(dir.join(SHREDDED_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
    Some(
        v["time"]
            .as_str()
            .map(|t| format!(" on {t}"))
            .unwrap_or_default(),
    )
}

/// `watermark.key` as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWrappedKey {
    kek_label: String,
    kek_version: u32,
    wrapped: String,
}
/// Path recorded in the manifest's own header.
pub const MANIFEST_PATH: &str = "MANIFEST";

/// Checks a model or revision name (see [`weightvault_core::names`]).
pub fn check_name(what: &'static str, s: &str) -> Result<(), StoreError> {
    weightvault_core::names::check_name(what, s).map_err(|e| StoreError::BadInput(e.to_string()))
}

/// `NAME@REV` (or `NAME` alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRef {
    /// Model.
    pub model: String,
    /// Revision, if given.
    pub revision: Option<String>,
}

impl std::str::FromStr for RevisionRef {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let (m, r) = match s.split_once('@') {
            Some((m, r)) => (m, Some(r.to_string())),
            None => (s, None),
        };
        check_name("model name", m)?;
        if let Some(r) = &r {
            check_name("revision", r)?;
        }
        Ok(Self {
            model: m.into(),
            revision: r,
        })
    }
}

/// What `seal` was asked to do.
#[derive(Debug, Clone)]
pub struct SealRequest {
    /// Model name.
    pub model: String,
    /// Revision name.
    pub revision: String,
    /// Training facts.
    pub training: TrainingFacts,
}

/// What `seal` did.
#[derive(Debug, Clone)]
pub struct SealReport {
    /// The manifest written.
    pub manifest: Manifest,
    /// Where the revision lives.
    pub dir: PathBuf,
    /// Plaintext bytes sealed.
    pub bytes: u64,
}

/// A revision as `list` shows it (read without the HSM, so not authenticated).
#[derive(Debug, Clone)]
pub struct ListedRevision {
    /// The manifest as found in the clear header.
    pub manifest: Manifest,
    /// Total size of the sealed files.
    pub sealed_bytes: u64,
    /// When it was crypto-shredded (it can no longer be opened).
    pub shredded: Option<String>,
}

/// What `remove` did.
#[derive(Debug, Clone)]
pub struct RemoveReport {
    /// `model@rev`.
    pub label: String,
    /// Sealed files deleted.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Where the ledger record went.
    pub recorded: String,
}

/// A vault directory.
pub struct Vault {
    dir: PathBuf,
    config: VaultConfig,
    /// Where its sealed revisions are read from (the `models` directory).
    store: Box<dyn object::SealedStore>,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("OS randomness");
    hex::encode(b)
}

/// Writes `bytes` to a new file at `path` and syncs it (the caller links or renames it into
/// place, then syncs the directory).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    std::fs::write(path, bytes)
        .and_then(|()| std::fs::File::open(path)?.sync_all())
        .map_err(|e| StoreError::io("writing", path, e))
}

fn sync_dir(p: &Path) -> Result<(), StoreError> {
    output::sync_dir(p).map_err(|e| StoreError::io("syncing directory", p, e))
}

/// The current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    weightvault_core::facts::rfc3339(time::OffsetDateTime::now_utc())
}

/// Number of worker threads: the configured number, or one per core.
pub fn threads(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Where `init` puts the embedded token's SoftHSM2 configuration, under the vault (it writes
/// the file beside the token directory, `hsm/tokens/`).
const EMBEDDED_SOFTHSM2_CONF: &str = "hsm/softhsm2.conf";

/// A path of the vault config: relative paths are under the vault directory `dir`.
fn resolve_in(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.into()
    } else {
        dir.join(p)
    }
}

impl Vault {
    /// The default vault directory: `$WEIGHTVAULT_HOME`, else `./vault`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("WEIGHTVAULT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("vault"))
    }

    /// The SoftHSM2 configuration that a process working on the vault at `dir` must be started
    /// with, as `SOFTHSM2_CONF` (see [`crate::hsm`] for why it cannot be set later): the one
    /// its `vault.toml` names or, with no `vault.toml` yet, the one [`Vault::init`]`(dir,
    /// module)` makes. `None` when the vault uses another HSM, or when its config cannot be
    /// read (opening the vault then says why). Reads only `vault.toml`.
    pub fn softhsm2_conf_for(dir: &Path, module: Option<&Path>) -> Option<PathBuf> {
        match std::fs::read_to_string(dir.join("vault.toml")) {
            Ok(text) => toml::from_str::<VaultConfig>(&text)
                .ok()?
                .hsm
                .softhsm2_conf
                .map(|p| resolve_in(dir, &p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                module.is_none().then(|| dir.join(EMBEDDED_SOFTHSM2_CONF))
            }
            Err(_) => None,
        }
    }

    /// Makes a vault at `dir` with an embedded SoftHSM2 token and KEK, keeping whatever is
    /// already there. Returns the vault and a line per thing created.
    pub fn init(dir: &Path, module: Option<&Path>) -> Result<(Self, Vec<String>), StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut done = Vec::new();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("models"))
            .map_err(io("creating", dir))?;
        let cfg_path = dir.join("vault.toml");
        if !cfg_path.exists() {
            let config = VaultConfig {
                hsm: HsmSection {
                    module: module
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from(crate::hsm::SOFTHSM2_MODULE)),
                    token_label: "weightvault".into(),
                    kek_label: "weightvault-kek".into(),
                    pin_file: Some("hsm/user.pin".into()),
                    softhsm2_conf: module.is_none().then(|| EMBEDDED_SOFTHSM2_CONF.into()),
                    lock_file: "hsm/token.lock".into(),
                },
                seal: SealSection::default(),
                ledger: LedgerSection::default(),
            };
            let text = format!(
                "# weightvault vault configuration (made by `weightvault init`).\n\
                 # Relative paths are under this directory. WEIGHTVAULT_HSM_PIN overrides pin_file.\n{}",
                toml::to_string_pretty(&config).expect("config serialises")
            );
            std::fs::write(&cfg_path, text).map_err(io("writing", &cfg_path))?;
            done.push(format!("wrote {}", cfg_path.display()));
        }
        let vault = Self::open(dir)?;
        let hsm_dir = dir.join("hsm");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&hsm_dir)
            .map_err(io("creating", &hsm_dir))?;
        let write_pin = |p: &Path, pin: &Pin| -> Result<(), StoreError> {
            use std::io::Write;
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .map_err(io("writing", p))?;
            writeln!(f, "{}", pin.expose()).map_err(io("writing", p))
        };
        if vault.config.hsm.softhsm2_conf.is_some() {
            let user_pin_path = vault.resolve(
                vault
                    .config
                    .hsm
                    .pin_file
                    .as_deref()
                    .unwrap_or(Path::new("hsm/user.pin")),
            );
            let load_or_create = |path: &Path| -> Result<(Pin, bool), StoreError> {
                if path.exists() {
                    let pin = Pin::from_file(path).map_err(|e| StoreError::Hsm {
                        what: "init".into(),
                        source: e,
                    })?;
                    return Ok((pin, false));
                }
                let pin = Pin::random();
                write_pin(path, &pin)?;
                Ok((pin, true))
            };
            let (user_pin, created) = load_or_create(&user_pin_path)?;
            if created {
                done.push(format!(
                    "wrote the user PIN to {} (mode 0600)",
                    user_pin_path.display()
                ));
            }
            let (so_pin, _) = load_or_create(&hsm_dir.join("so.pin"))?;
            crate::hsm::init_softhsm2_token(
                &hsm_dir,
                &vault.config.hsm.module,
                &vault.config.hsm.token_label,
                &vault.config.hsm.kek_label,
                &so_pin,
                &user_pin,
                &vault.resolve(&vault.config.hsm.lock_file),
            )
            .map_err(|e| StoreError::Hsm {
                what: "init".into(),
                source: e,
            })?;
        } else {
            crate::hsm::ensure_kek(&vault.hsm_config()?).map_err(|e| StoreError::Hsm {
                what: "init".into(),
                source: e,
            })?;
        }
        // Prove the token, PIN and KEK work before saying so.
        let kw = vault.key_wrap()?;
        kw.ensure_ledger_key().map_err(|e| StoreError::Hsm {
            what: "init".into(),
            source: e,
        })?;
        done.push(format!(
            "token '{}' ready with KEK '{}' versions {:?} and ledger signing key '{}' (Ed25519)",
            vault.config.hsm.token_label,
            vault.config.hsm.kek_label,
            kw.kek_versions(),
            crate::hsm::LEDGER_KEY_LABEL
        ));
        Ok((vault, done))
    }

    /// Opens an existing vault.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let cfg_path = dir.join("vault.toml");
        if !cfg_path.is_file() {
            return Err(StoreError::NoVault(dir.into()));
        }
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| StoreError::io("reading", &cfg_path, e))?;
        let config: VaultConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].lines().count().max(1))
                .unwrap_or(0);
            StoreError::Config {
                path: cfg_path.clone(),
                why: ConfigError::Parse {
                    line,
                    error: Box::new(e),
                },
            }
        })?;
        if !(crate::format::MIN_CHUNK_SIZE..=crate::format::MAX_CHUNK_SIZE)
            .contains(&config.seal.chunk_size)
        {
            return Err(StoreError::Config {
                path: cfg_path,
                why: ConfigError::ChunkSize(config.seal.chunk_size),
            });
        }
        Ok(Self {
            dir: dir.into(),
            config,
            store: Box::new(object::LocalDir::new(dir.join("models"))),
        })
    }

    /// Where the vault's sealed revisions are read from.
    pub fn sealed_store(&self) -> &dyn object::SealedStore {
        self.store.as_ref()
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Overrides the number of worker threads (0 = one per core).
    pub fn set_threads(&mut self, n: usize) {
        self.config.seal.threads = n;
    }

    /// Overrides the chunk size (tests and benchmarks).
    pub fn set_chunk_size(&mut self, cs: u32) {
        self.config.seal.chunk_size = cs;
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        resolve_in(&self.dir, p)
    }

    /// The HSM settings, with the PIN from `WEIGHTVAULT_HSM_PIN` or the PIN file.
    pub fn hsm_config(&self) -> Result<HsmConfig, StoreError> {
        let h = &self.config.hsm;
        let hsm = |e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        };
        let pin = match std::env::var("WEIGHTVAULT_HSM_PIN") {
            Ok(p) if !p.is_empty() => Pin::new(p),
            _ => match &h.pin_file {
                Some(f) => Pin::from_file(&self.resolve(f)).map_err(hsm)?,
                None => return Err(hsm(HsmError::NoPin)),
            },
        };
        Ok(HsmConfig {
            module: std::env::var_os("WEIGHTVAULT_HSM_MODULE")
                .map(PathBuf::from)
                .unwrap_or_else(|| h.module.clone()),
            token_label: std::env::var("WEIGHTVAULT_HSM_TOKEN")
                .unwrap_or_else(|_| h.token_label.clone()),
            kek_label: h.kek_label.clone(),
            pin,
            softhsm2_conf: h.softhsm2_conf.as_deref().map(|p| self.resolve(p)),
            lock_file: self.resolve(&h.lock_file),
        })
    }

    /// The watermark key: made on first use, kept only wrapped by the KEK in
    /// `<vault>/watermark.key` (JSON: KEK label, version, RFC 5649 wrapped bytes in hex).
    pub fn watermark_key(&self, kw: &dyn KeyWrap) -> Result<crate::keys::SymmetricKey, StoreError> {
        let path = self.watermark_key_path();
        let hsm = |e| StoreError::Hsm {
            what: path.display().to_string(),
            source: e,
        };
        if let Some(w) = self.wrapped_watermark_key()? {
            return kw.unwrap(&w).map_err(hsm);
        }
        let key = crate::keys::SymmetricKey::random()
            .map_err(|e| StoreError::BadInput(format!("randomness: {e}")))?;
        let w = kw.wrap(&key).map_err(hsm)?;
        let tmp = self.write_wrapped_watermark_tmp(&w)?;
        // Another process may have made it meanwhile: keep the first.
        if std::fs::hard_link(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
            return self.watermark_key(kw);
        }
        let _ = std::fs::remove_file(&tmp);
        sync_dir(&self.dir)?;
        Ok(key)
    }

    /// Where the wrapped watermark key is kept.
    pub fn watermark_key_path(&self) -> PathBuf {
        self.dir.join("watermark.key")
    }

    /// The wrapped watermark key, if the vault has one.
    pub fn wrapped_watermark_key(&self) -> Result<Option<crate::hsm::WrappedKey>, StoreError> {
        let path = self.watermark_key_path();
        let b = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        let st: StoredWrappedKey = serde_json::from_slice(&b).map_err(|e| {
            StoreError::Mismatch(format!(
                "{}: not a wrapped watermark key: {e}",
                path.display()
            ))
        })?;
        Ok(Some(crate::hsm::WrappedKey {
            kek_label: st.kek_label,
            kek_version: st.kek_version,
            wrapped: hex::decode(&st.wrapped)
                .map_err(|e| StoreError::Mismatch(format!("{}: {e}", path.display())))?,
        }))
    }

    /// Writes a wrapped watermark key to a fresh, synced temporary file in the vault; returns
    /// its path (the caller links or renames it into place).
    fn write_wrapped_watermark_tmp(
        &self,
        w: &crate::hsm::WrappedKey,
    ) -> Result<PathBuf, StoreError> {
        let text = serde_json::to_vec_pretty(&StoredWrappedKey {
            kek_label: w.kek_label.clone(),
            kek_version: w.kek_version,
            wrapped: hex::encode(&w.wrapped),
        })
        .expect("json");
        let tmp = self.dir.join(format!(".watermark.key.{}", random_hex(6)));
        write_synced(&tmp, &text)?;
        Ok(tmp)
    }

    /// Replaces the wrapped watermark key atomically (rename, then the directory synced).
    pub(crate) fn replace_wrapped_watermark_key(
        &self,
        w: &crate::hsm::WrappedKey,
    ) -> Result<(), StoreError> {
        let tmp = self.write_wrapped_watermark_tmp(w)?;
        let path = self.watermark_key_path();
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("replacing", &path, e))?;
        sync_dir(&self.dir)
    }

    /// Where a running `weightvault serve` of this vault leaves its process id.
    pub fn serve_pid_file(&self) -> PathBuf {
        self.dir.join("serve.pid")
    }

    /// Where the ledger lives.
    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// Logs in to the HSM.
    pub fn key_wrap(&self) -> Result<Pkcs11KeyWrap, StoreError> {
        Pkcs11KeyWrap::open(self.hsm_config()?).map_err(|e| StoreError::Hsm {
            what: "HSM".into(),
            source: e,
        })
    }

    fn model_dir(&self, model: &str) -> PathBuf {
        self.dir.join("models").join(model)
    }

    /// Seals a checkpoint (a `.safetensors` file or a directory) as `model@revision`.
    pub fn seal(
        &self,
        src: &Path,
        req: &SealRequest,
        kw: &dyn KeyWrap,
        progress: &dyn SealProgress,
    ) -> Result<SealReport, StoreError> {
        check_name("model name", &req.model)?;
        check_name("revision", &req.revision)?;
        let target = self.model_dir(&req.model).join(&req.revision);
        if target.exists() {
            return Err(StoreError::AlreadySealed {
                model: req.model.clone(),
                revision: req.revision.clone(),
            });
        }
        let plan = checkpoint::plan(src)?;
        let total: u64 = plan.iter().map(|f| f.data_len).sum();
        progress.start(total, plan.len());
        let model_dir = self.model_dir(&req.model);
        std::fs::create_dir_all(&model_dir)
            .map_err(|e| StoreError::io("creating", &model_dir, e))?;
        // Abandoned seals of this revision (a crash, or an earlier version's `.staging-*`).
        for prefix in [
            format!(".{}.weightvault-", req.revision),
            format!(".staging-{}-", req.revision),
        ] {
            let _ = output::sweep(&model_dir, &prefix, false);
        }
        let scratch = output::Scratch::beside(&target, "staging", false)?;
        let staging = scratch.path().join("revision");
        std::fs::create_dir(&staging).map_err(|e| StoreError::io("creating", &staging, e))?;
        let threads = threads(self.config.seal.threads);
        let mut entries = Vec::with_capacity(plan.len());
        let mut dirs = vec![staging.clone()];
        for f in &plan {
            progress.file(&f.rel);
            let out = staging.join("files").join(format!("{}.sealed", f.rel));
            let parent = out.parent().expect("has a parent");
            if !dirs.iter().any(|d| d == parent) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::io("creating", parent, e))?;
                dirs.push(parent.to_path_buf());
            }
            let summary = self.seal_one(f, req, kw, &out, threads, progress.bytes())?;
            entries.push(ManifestEntry {
                path: f.rel.clone(),
                kind: f.kind,
                shard_index: f.shard_index,
                shard_count: f.shard_count,
                original_len: f.src_len,
                sealed_len: summary.file_len,
                tensors: f.tensors,
                header_hash: hex::encode(summary.header_hash),
            });
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            model: req.model.clone(),
            revision: req.revision.clone(),
            sealed_at: now_rfc3339(),
            chunk_size: self.config.seal.chunk_size,
            training: req.training.clone(),
            files: entries,
        };
        let meta = serde_json::to_vec(&manifest).expect("manifest serialises");
        let header = self.header_for(FileKind::Manifest, req, MANIFEST_PATH, 0, 0, 0, meta);
        let dek =
            DataKey::random().map_err(|e| StoreError::BadInput(format!("OS randomness: {e}")))?;
        let wrapped = kw.wrap(&dek).map_err(|e| StoreError::Hsm {
            what: "wrapping the manifest key".into(),
            source: e,
        })?;
        let empty = tempfile_empty()?;
        sealed::seal_file(
            crate::format::aead::AwsLc,
            SealParams {
                header,
                dek: &dek,
                wrapped,
                threads: 1,
            },
            &empty,
            0,
            &staging.join(MANIFEST_FILE),
            &(),
        )?;
        for d in dirs.iter().rev() {
            sync_dir(d)?;
        }
        interrupted()?;
        match scratch.publish(&staging, &target) {
            Ok(()) => {}
            Err(e) if target.exists() => {
                let _ = e;
                return Err(StoreError::AlreadySealed {
                    model: req.model.clone(),
                    revision: req.revision.clone(),
                });
            }
            Err(e) => return Err(StoreError::io("renaming into place", &target, e)),
        }
        progress.finish();
        Ok(SealReport {
            manifest,
            dir: target,
            bytes: total,
        })
    }

    /// Takes `model@rev` out of the vault: `record(label, files)` first (nothing is removed if
    /// it fails), then the revision is moved into a scratch directory and deleted, so an
    /// interruption leaves either the revision whole or a leftover `gc` removes.
    pub fn remove(
        &self,
        r: &RevisionRef,
        record: impl FnOnce(&str, &[String]) -> Result<String, RecordError>,
    ) -> Result<RemoveReport, StoreError> {
        let (label, dir) = self.named_revision(r, "remove")?;
        let mut files = Vec::new();
        rotation::walk_sealed(&dir, &mut files)?;
        files.sort();
        let bytes = files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let names: Vec<String> = files.iter().map(|p| self.relative(p)).collect();
        let recorded = record(&label, &names).map_err(StoreError::Unrecorded)?;
        let scratch = output::Scratch::beside(&dir, "removed", false)?;
        let moved = scratch.path().join("revision");
        std::fs::rename(&dir, &moved).map_err(|e| StoreError::io("removing", &dir, e))?;
        sync_dir(&self.model_dir(&r.model))?;
        drop(scratch);
        Ok(RemoveReport {
            label,
            files: files.len(),
            bytes,
            recorded,
        })
    }

    /// `model@rev` and its directory, for a command (`verb`) that must be given the revision
    /// by name (no default to the only one).
    pub(crate) fn named_revision(
        &self,
        r: &RevisionRef,
        verb: &str,
    ) -> Result<(String, PathBuf), StoreError> {
        let Some(rev) = &r.revision else {
            return Err(StoreError::BadInput(format!(
                "name the revision to {verb}: {}@REV",
                r.model
            )));
        };
        check_name("model name", &r.model)?;
        check_name("revision", rev)?;
        let label = format!("{}@{rev}", r.model);
        let dir = self.model_dir(&r.model).join(rev);
        if !dir.join(MANIFEST_FILE).is_file() {
            return Err(StoreError::NotFound(format!(
                "no revision {label} in this vault"
            )));
        }
        Ok((label, dir))
    }

    /// The vault's own directories where scratch is made (each model's directory).
    pub fn scratch_places(&self) -> Vec<PathBuf> {
        let models = self.dir.join("models");
        std::fs::read_dir(&models)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn header_for(
        &self,
        kind: FileKind,
        req: &SealRequest,
        path: &str,
        shard_index: u32,
        shard_count: u32,
        len: u64,
        meta: Vec<u8>,
    ) -> SealedHeader {
        let mut file_id = [0u8; 16];
        getrandom::fill(&mut file_id).expect("OS randomness");
        SealedHeader {
            file_id,
            kind,
            model: req.model.clone(),
            revision: req.revision.clone(),
            path: path.into(),
            shard_index,
            shard_count,
            chunk_size: self.config.seal.chunk_size,
            plaintext_len: len,
            key_check: [0; 32],
            meta,
        }
    }

    fn seal_one(
        &self,
        f: &CheckpointFile,
        req: &SealRequest,
        kw: &dyn KeyWrap,
        out: &Path,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<sealed::SealedSummary, StoreError> {
        let header = self.header_for(
            f.kind,
            req,
            &f.rel,
            f.shard_index,
            f.shard_count,
            f.data_len,
            f.meta.clone(),
        );
        let dek =
            DataKey::random().map_err(|e| StoreError::BadInput(format!("OS randomness: {e}")))?;
        let wrapped = kw.wrap(&dek).map_err(|e| StoreError::Hsm {
            what: format!("wrapping the data key of {}", f.rel),
            source: e,
        })?;
        let src = File::open(&f.src).map_err(|e| StoreError::io("opening", &f.src, e))?;
        let summary = sealed::seal_file(
            crate::format::aead::AwsLc,
            SealParams {
                header,
                dek: &dek,
                wrapped,
                threads,
            },
            &src,
            f.data_start,
            out,
            progress,
        )?;
        let now = src
            .metadata()
            .map_err(|e| StoreError::io("reading", &f.src, e))?
            .len();
        if now != f.src_len {
            return Err(StoreError::BadInput(format!(
                "{}: the file changed size while it was being sealed ({} -> {now} bytes); seal it again once it is complete",
                f.src.display(),
                f.src_len
            )));
        }
        Ok(summary)
    }

    /// Revisions of a model, sorted by name.
    pub fn revisions(&self, model: &str) -> Result<Vec<String>, StoreError> {
        self.store
            .revisions(model)?
            .ok_or_else(|| StoreError::NotFound(format!("no model '{model}' in this vault")))
    }

    fn resolve_revision(&self, r: &RevisionRef) -> Result<String, StoreError> {
        let rev = match &r.revision {
            Some(rev) => rev.clone(),
            None => {
                let revs = self.revisions(&r.model)?;
                match revs.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(StoreError::NotFound(format!(
                            "model '{}' has no sealed revision",
                            r.model
                        )))
                    }
                    _ => {
                        return Err(StoreError::BadInput(format!(
                            "model '{}' has several revisions ({}): name one as {}@REV",
                            r.model,
                            revs.join(", "),
                            r.model
                        )))
                    }
                }
            }
        };
        match self.store.state(&r.model, &rev)? {
            object::RevisionState::Sealed => Ok(rev),
            object::RevisionState::NoManifest => Err(StoreError::Mismatch(format!(
                "{}@{rev}: the manifest is missing — revision damaged",
                r.model
            ))),
            object::RevisionState::Absent { model: false } => Err(StoreError::NotFound(format!(
                "no model '{}' in this vault",
                r.model
            ))),
            object::RevisionState::Absent { model: true } => Err(StoreError::NotFound(format!(
                "no revision {}@{rev} in this vault",
                r.model
            ))),
        }
    }

    /// Opens a revision: authenticates its manifest, checks that the files present are exactly
    /// the ones it lists, and authenticates every file's header against it. Chunks are not read.
    pub fn open_revision(
        &self,
        r: &RevisionRef,
        kw: &dyn KeyWrap,
    ) -> Result<OpenedRevision, StoreError> {
        let rev = self.resolve_revision(r)?;
        let label = format!("{}@{rev}", r.model);
        if let Some(t) = self.store.shredded(&r.model, &rev)? {
            return Err(StoreError::Shredded(label, t));
        }
        let (obj, name) = self
            .store
            .open(&r.model, &rev, object::ObjectName::Manifest)?;
        let mfile = SealedFile::from_object(name.into(), obj)?;
        let m = mfile.unlock(kw, &format!("{label} manifest"))?;
        let h = m.header();
        if h.kind != FileKind::Manifest {
            return Err(StoreError::Mismatch(format!(
                "{label}: manifest.sealed is not a manifest"
            )));
        }
        if h.model != r.model || h.revision != rev {
            return Err(StoreError::Mismatch(format!(
                "{label}: the manifest belongs to {}@{} — revision rolled back or swapped",
                h.model, h.revision
            )));
        }
        m.verify(1, &())?;
        let manifest: Manifest = serde_json::from_slice(&h.meta)
            .map_err(|e| StoreError::Mismatch(format!("{label}: manifest JSON is invalid: {e}")))?;
        if manifest.format != MANIFEST_FORMAT
            || manifest.model != h.model
            || manifest.revision != h.revision
        {
            return Err(StoreError::Mismatch(format!(
                "{label}: manifest contents disagree with its header"
            )));
        }
        // The files present must be exactly those listed.
        let present = self.store.files(&r.model, &rev)?;
        let listed: BTreeMap<&str, &ManifestEntry> = manifest
            .files
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        for p in &present {
            if !listed.contains_key(p.as_str()) {
                return Err(StoreError::Mismatch(format!(
                    "{label}: {p}.sealed is not in the manifest — file added or spliced in"
                )));
            }
        }
        let mut files = Vec::with_capacity(manifest.files.len());
        for e in &manifest.files {
            let what = describe(&label, e);
            if present.binary_search(&e.path).is_err() {
                return Err(StoreError::Mismatch(format!(
                    "{what}: missing — shard dropped"
                )));
            }
            let sf = self
                .store
                .open(&r.model, &rev, object::ObjectName::File(&e.path))
                .and_then(|(obj, name)| SealedFile::from_object(name.into(), obj))
                .map_err(|err| match err {
                    StoreError::Format { source, .. } => StoreError::Format {
                        what: what.clone(),
                        source,
                    },
                    other => other,
                })?;
            let hh = hex::encode(crate::format::header_hash(&sf.head.encoded_header));
            let sh = &sf.head.header;
            if sh.model != r.model || sh.revision != rev {
                return Err(StoreError::Mismatch(format!(
                    "{what}: this sealed file belongs to {}@{} — swapped in from another model or revision",
                    sh.model, sh.revision
                )));
            }
            if sh.path != e.path
                || sh.kind != e.kind
                || sh.shard_index != e.shard_index
                || sh.shard_count != e.shard_count
            {
                return Err(StoreError::Mismatch(format!(
                    "{what}: the sealed file is {} (shard index {} of {}) — files swapped",
                    sh.path, sh.shard_index, sh.shard_count
                )));
            }
            if hh != e.header_hash {
                return Err(StoreError::Mismatch(format!(
                    "{what}: header hash differs from the manifest — header altered or file replaced"
                )));
            }
            files.push((e.clone(), sf.unlock(kw, &what)?));
        }
        Ok(OpenedRevision {
            label,
            manifest,
            files,
        })
    }

    /// Every sealed revision, read from the clear (unauthenticated) manifest headers.
    pub fn list(&self) -> Result<Vec<ListedRevision>, StoreError> {
        let mut out = Vec::new();
        for model in self.store.models()? {
            for rev in self.revisions(&model)? {
                let (obj, name) = self
                    .store
                    .open(&model, &rev, object::ObjectName::Manifest)?;
                let sf = SealedFile::from_object(name.into(), obj)?;
                let manifest: Manifest =
                    serde_json::from_slice(&sf.head.header.meta).map_err(|e| {
                        StoreError::Mismatch(format!(
                            "{model}@{rev}: manifest JSON is invalid: {e}"
                        ))
                    })?;
                let sealed_bytes = manifest.files.iter().map(|f| f.sealed_len).sum::<u64>()
                    + sf.head.layout.file_len();
                out.push(ListedRevision {
                    manifest,
                    sealed_bytes,
                    shredded: self.store.shredded(&model, &rev)?,
                });
            }
        }
        Ok(out)
    }
}

/// "acme@r1 shard 2 of 3 (model-00002-of-00003.safetensors)" or "acme@r1 config.json".
pub fn describe(label: &str, e: &ManifestEntry) -> String {
    match e.kind {
        FileKind::Safetensors => format!(
            "{label} shard {} of {} ({})",
            e.shard_index + 1,
            e.shard_count,
            e.path
        ),
        _ => format!("{label} {}", e.path),
    }
}

fn io<'a>(a: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(a, p, e)
}

fn tempfile_empty() -> Result<File, StoreError> {
    File::open("/dev/null").map_err(|e| StoreError::io("opening", Path::new("/dev/null"), e))
}

/// Progress reporting for `seal`.
pub trait SealProgress: Sync {
    /// Sealing starts: total bytes and number of files.
    fn start(&self, _total: u64, _files: usize) {}
    /// Now sealing this file.
    fn file(&self, _rel: &str) {}
    /// Byte counter.
    fn bytes(&self) -> &dyn Progress;
    /// Done.
    fn finish(&self) {}
}

impl SealProgress for () {
    fn bytes(&self) -> &dyn Progress {
        &()
    }
}

/// Where a tensor is: which file of the revision, its dtype, shape and data offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLocation {
    /// Index into [`OpenedRevision::files`].
    pub file: usize,
    /// Safetensors dtype name (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// `[start, end)` within the shard's data region.
    pub offsets: (usize, usize),
}

/// A revision whose manifest and file headers are authenticated.
pub struct OpenedRevision {
    /// `model@revision`.
    pub label: String,
    /// The authenticated manifest.
    pub manifest: Manifest,
    /// Files in manifest order.
    pub files: Vec<(ManifestEntry, OpenedFile<crate::format::aead::AwsLc>)>,
}

impl OpenedRevision {
    /// Total plaintext bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|(_, f)| f.header().plaintext_len)
            .sum()
    }

    /// Authenticates every chunk of every file.
    pub fn verify(&self, threads: usize, progress: &dyn Progress) -> Result<(), StoreError> {
        for (_, f) in &self.files {
            f.verify(threads, progress)?;
        }
        Ok(())
    }

    /// Writes the original files, byte for byte, into a new directory `out` (which must not
    /// exist, or be empty). Every file is written unnamed ([`output::PlaintextFile`]) and gets
    /// its name only when all are written, authenticated and synced; then the directory is
    /// renamed into place. On error or interruption nothing is left (SIGKILL included, on a
    /// filesystem with `O_TMPFILE`). Returns the bytes written.
    pub fn open_to(
        &self,
        out: &Path,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<u64, StoreError> {
        check_output(out, false)?;
        let scratch = output::Scratch::for_output(out, "partial", false)?;
        let mut done = Vec::with_capacity(self.files.len());
        let mut bytes = 0;
        for (e, f) in &self.files {
            // Named in messages by where it will appear.
            let dst = out.join(&e.path);
            let plain = output::PlaintextFile::create_in(scratch.path())
                .map_err(|err| StoreError::io("creating", &dst, err))?;
            let file = plain.file();
            let meta = &f.header().meta;
            write_head(file, meta, &dst)?;
            f.decrypt_into(file, &dst, meta.len() as u64, threads, progress)?;
            let len = meta.len() as u64 + f.header().plaintext_len;
            file.set_len(len)
                .map_err(|err| StoreError::io("writing", &dst, err))?;
            bytes += len;
            done.push((e.path.as_str(), plain));
        }
        interrupted()?;
        scratch.publish_files(done, out)?;
        Ok(bytes)
    }

    /// Finds a tensor in the authenticated shard headers.
    pub fn find_tensor(&self, name: &str) -> Result<TensorLocation, StoreError> {
        for (i, (e, f)) in self.files.iter().enumerate() {
            if e.kind != FileKind::Safetensors {
                continue;
            }
            let md = checkpoint::parse_safetensors_meta(&f.header().meta)
                .map_err(|w| StoreError::Mismatch(format!("{}: {w}", describe(&self.label, e))))?;
            if let Some(info) = md.info(name) {
                return Ok(TensorLocation {
                    file: i,
                    dtype: info.dtype.to_string(),
                    shape: info.shape.clone(),
                    offsets: info.data_offsets,
                });
            }
        }
        Err(StoreError::NotFound(format!(
            "{} has no tensor named '{name}'",
            self.label
        )))
    }

    /// Writes one tensor as a single-tensor safetensors file at `out` (which must not exist).
    /// Returns the bytes written.
    pub fn open_tensor_to(&self, name: &str, out: &Path) -> Result<u64, StoreError> {
        let TensorLocation {
            file: i,
            dtype,
            shape,
            offsets: (s, e),
        } = self.find_tensor(name)?;
        check_output(out, true)?;
        let f = &self.files[i].1;
        let mut tensors = serde_json::Map::new();
        tensors.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [0, e - s]}),
        );
        let mut json = serde_json::to_vec(&tensors).expect("json");
        while !(8 + json.len()).is_multiple_of(8) {
            json.push(b' ');
        }
        // Unnamed until complete, then linked straight to its name: no window at all.
        let scratch = output::Scratch::for_output(out, "tensor", false)?;
        let plain = output::PlaintextFile::create_in(scratch.path())
            .map_err(|err| StoreError::io("creating", out, err))?;
        let file = plain.file();
        let mut head = (json.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&json);
        write_head(file, &head, out)?;
        f.copy_range_into(s as u64, e as u64, file, out, head.len() as u64)?;
        interrupted()?;
        plain
            .link_to(out)
            .map_err(|err| StoreError::io("naming", out, err))?;
        sync_dir(output::parent_of(out))?;
        drop(scratch);
        Ok(head.len() as u64 + (e - s) as u64)
    }
}

/// `Err(Interrupted)` once SIGINT or SIGTERM asked this command to stop.
fn interrupted() -> Result<(), StoreError> {
    crate::interrupt::check().map_err(StoreError::Interrupted)
}

/// Writes `b` at the start of `file` (the clear safetensors header before the tensor data).
fn write_head(file: &File, b: &[u8], p: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(b, 0)
        .map_err(|e| StoreError::io("writing", p, e))
}

/// Checks that `out` can receive an `open`: for a directory, absent or empty; for a single
/// file (`--tensor`), absent.
pub fn check_output(out: &Path, single_file: bool) -> Result<(), StoreError> {
    if single_file {
        if out.exists() {
            return Err(StoreError::BadInput(format!(
                "{} exists already; give a new file name",
                out.display()
            )));
        }
        return Ok(());
    }
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| StoreError::io("listing", out, e))?
                .next()
                .is_none();
        if !empty {
            return Err(StoreError::BadInput(format!(
                "{} exists and is not an empty directory; give a new output directory",
                out.display()
            )));
        }
    }
    Ok(())
}
