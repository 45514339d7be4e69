//! A revision's manifest (what binds its files together), names of models and revisions,
//! and the shred mark.

use super::*;

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
pub(crate) fn shredded_at(dir: &Path) -> Option<String> {
    std::fs::read(dir.join(SHREDDED_FILE))
        .ok()
        .map(|b| shred_mark_time(&b))
}

/// When a shred mark says the revision was shredded (`" on <time>"`, or `""` when it names no
/// time).
pub(crate) fn shred_mark_time(mark: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(mark).unwrap_or_default();
    v["time"]
        .as_str()
        .map(|t| format!(" on {t}"))
        .unwrap_or_default()
}

/// Path recorded in the manifest's own header.
pub const MANIFEST_PATH: &str = "MANIFEST";

/// Checks a model or revision name (see [`weightvault_core::names`]).
pub fn check_name(what: &'static str, s: &str) -> Result<(), StoreError> {
    match what {
        "model name" => weightvault_core::names::check_model_name(s),
        _ => weightvault_core::names::check_name(what, s),
    }
    .map_err(|e| StoreError::BadInput(e.to_string()))
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
