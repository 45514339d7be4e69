//! A revision's manifest (what binds its files together), names of models and revisions,
//! and the shred mark.

use super::*;

pub use weightvault_core::manifest::{Manifest, ManifestEntry, MANIFEST_FORMAT};

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
