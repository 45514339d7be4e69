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
//!
//! One concern per file: `setup` (making and opening a vault, its SoftHSM2 token), `config`
//! (`vault.toml`), `manifest` (the manifest, names, the shred mark), `service_key`
//! (`watermark.key`), `seal`, `revision` (listing and opening revisions, with their integrity
//! rules), `remove`, `rotation` (KEK use, rewrap, retire, shred), `object` (the `SealedStore`
//! and `RangeRead` edges with the local directory), `sealed` (one sealed file), `output`
//! (plaintext outputs and scratch), `checkpoint` (a checkpoint directory to seal).

pub mod bucket;
pub mod checkpoint;
pub use weightvault_core::header_check;
pub mod mapped;
pub mod object;
pub mod output;
pub mod sealed;
pub mod worm;

mod config;
mod error;
mod inspect;
mod manifest;
mod remove;
mod revision;
mod seal;
mod service_key;
mod setup;
mod stream_out;
mod suggest;
pub use config::{
    HsmSection, LedgerSection, S3Endpoint, SealSection, ServeSection, StoreSection, TilesSection,
    VaultConfig, SERVE_KEYS,
};
pub use error::{ConfigError, RecordError, StoreError};
pub use inspect::{InspectedFile, InspectedTensor, Inspection};
use manifest::shredded_at;
pub use manifest::{
    check_name, Manifest, ManifestEntry, RevisionRef, MANIFEST_FILE, MANIFEST_FORMAT,
    MANIFEST_PATH, SHREDDED_FILE,
};
pub use remove::RemoveReport;
use revision::interrupted;
pub use revision::{check_output, describe, ListedRevision, OpenedRevision, TensorLocation};
pub use seal::{SealProgress, SealReport, SealRequest};
pub use suggest::did_you_mean;
pub use weightvault_core::facts::TrainingFacts;

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

fn io<'a>(a: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(a, p, e)
}
