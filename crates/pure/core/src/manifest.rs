//! A revision's manifest: the JSON that binds its files together, kept as the authenticated
//! clear metadata of `manifest.sealed`, and the one way it is read ([`Manifest::parse`]).
//!
//! The manifest comes from a vault directory or a bucket, so it is outside input: `list` reads
//! it without the HSM (unauthenticated), and even an authenticated one names files by path.
//! [`Manifest::parse`] refuses what a seal never writes: paths that climb out of the revision
//! (`..`, absolute, empty components), a path listed twice, shard indexes and counts that do
//! not number the safetensors shards `0..count` once each, lengths whose sum overflows, a
//! header hash that is not one.

use crate::facts::TrainingFacts;
use crate::format::{FileKind, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::header_check::{check_rel_path, PathError};
use crate::names::{check_model_name, check_name, NameError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The manifest format string.
pub const MANIFEST_FORMAT: &str = "weightvault-manifest/1";

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

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON of a manifest.
    #[error("manifest JSON is invalid: {0}")]
    Json(String),
    /// Another format string.
    #[error("manifest format '{0}' is not {MANIFEST_FORMAT}")]
    Format(String),
    /// A model or revision name a vault never accepts.
    #[error("manifest: {0}")]
    Name(#[from] NameError),
    /// A chunk size outside what the container allows.
    #[error("manifest chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// A file path that is not an ordinary relative path (`..`, absolute, empty components).
    #[error("manifest file {path:?}: {source}")]
    Path {
        /// The path as listed.
        path: String,
        /// What is wrong with it.
        #[source]
        source: PathError,
    },
    /// The same path listed twice.
    #[error("manifest lists {0:?} twice")]
    DuplicatePath(String),
    /// An entry whose kind, shard fields or tensor count do not fit together.
    #[error("manifest file {path:?}: {why}")]
    Entry {
        /// The path as listed.
        path: String,
        /// What does not fit.
        why: String,
    },
    /// The safetensors shards are not numbered `0..count` once each.
    #[error("manifest shards: {0}")]
    Shards(String),
    /// The files' lengths add up past `u64::MAX`.
    #[error("manifest file lengths add up past 2^64 bytes")]
    Lengths,
}

impl Manifest {
    /// Reads a manifest's JSON and checks it with [`Manifest::validate`].
    pub fn parse(json: &[u8]) -> Result<Self, ManifestError> {
        let m: Self =
            serde_json::from_slice(json).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks what a seal always writes: the format string; model and revision names a vault
    /// accepts; a chunk size the container allows; each path an ordinary relative path, listed
    /// once; safetensors entries numbered `0..count` once each with the same count, other
    /// files with no shard fields and no tensors, no entry of kind manifest; a 64-digit
    /// lowercase hex header hash; original and sealed lengths whose sums fit in a `u64`.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(self.format.clone()));
        }
        check_model_name(&self.model)?;
        check_name("revision", &self.revision)?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        let mut paths = BTreeSet::new();
        let mut shards = BTreeSet::new();
        let mut shard_count = None;
        let (mut original, mut sealed) = (0u64, 0u64);
        for e in &self.files {
            let entry = |why: &str| ManifestError::Entry {
                path: e.path.clone(),
                why: why.into(),
            };
            check_rel_path(&e.path).map_err(|source| ManifestError::Path {
                path: e.path.clone(),
                source,
            })?;
            if !paths.insert(e.path.as_str()) {
                return Err(ManifestError::DuplicatePath(e.path.clone()));
            }
            match e.kind {
                FileKind::Manifest => return Err(entry("a manifest cannot list a manifest")),
                FileKind::File => {
                    if e.shard_index != 0 || e.shard_count != 0 || e.tensors != 0 {
                        return Err(entry(
                            "a file that is not a shard has shard fields or tensors",
                        ));
                    }
                }
                FileKind::Safetensors => {
                    if e.shard_index >= e.shard_count {
                        return Err(entry(&format!(
                            "shard index {} is not below the shard count {}",
                            e.shard_index, e.shard_count
                        )));
                    }
                    if *shard_count.get_or_insert(e.shard_count) != e.shard_count {
                        return Err(ManifestError::Shards(format!(
                            "{} gives a shard count of {}, another shard {}",
                            e.path,
                            e.shard_count,
                            shard_count.unwrap_or_default()
                        )));
                    }
                    if !shards.insert(e.shard_index) {
                        return Err(ManifestError::Shards(format!(
                            "shard index {} is listed twice",
                            e.shard_index
                        )));
                    }
                }
            }
            let hex_digit = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            if e.header_hash.len() != 64 || !e.header_hash.bytes().all(hex_digit) {
                return Err(entry("the header hash is not 64 lowercase hex digits"));
            }
            original = original
                .checked_add(e.original_len)
                .ok_or(ManifestError::Lengths)?;
            sealed = sealed
                .checked_add(e.sealed_len)
                .ok_or(ManifestError::Lengths)?;
        }
        if let Some(count) = shard_count {
            if shards.len() as u64 != u64::from(count) {
                return Err(ManifestError::Shards(format!(
                    "{} shards listed of {count}",
                    shards.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: FileKind, index: u32, count: u32) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind,
            shard_index: index,
            shard_count: count,
            original_len: 100,
            sealed_len: 4096,
            tensors: if kind == FileKind::Safetensors { 2 } else { 0 },
            header_hash: "ab".repeat(32),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            model: "acme".into(),
            revision: "r1".into(),
            sealed_at: "2026-12-01T12:00:00Z".into(),
            chunk_size: 1 << 20,
            training: TrainingFacts::default(),
            files: vec![
                entry("config.json", FileKind::File, 0, 0),
                entry(
                    "model-00001-of-00002.safetensors",
                    FileKind::Safetensors,
                    0,
                    2,
                ),
                entry(
                    "sub/model-00002-of-00002.safetensors",
                    FileKind::Safetensors,
                    1,
                    2,
                ),
            ],
        }
    }

    #[test]
    fn a_sealed_manifest_reads_back() {
        let m = manifest();
        let json = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&json).unwrap(), m);
    }

    /// One row per manifest a seal never writes, and the start of the error it must give.
    #[test]
    fn what_a_seal_never_writes_is_refused() {
        type Change = fn(&mut Manifest);
        let rows: &[(Change, &str)] = &[
            (
                |m| m.format = "weightvault-manifest/2".into(),
                "manifest format",
            ),
            (|m| m.model = "../x".into(), "manifest: model name"),
            (|m| m.revision = String::new(), "manifest: revision"),
            (|m| m.chunk_size = 0, "manifest chunk size 0"),
            (|m| m.chunk_size = u32::MAX, "manifest chunk size"),
            (
                |m| m.files[0].path = "../config.json".into(),
                "manifest file \"../config.json\"",
            ),
            (
                |m| m.files[0].path = "/etc/passwd".into(),
                "manifest file \"/etc/passwd\"",
            ),
            (
                |m| m.files[0].path = "a/./b".into(),
                "manifest file \"a/./b\"",
            ),
            (
                |m| m.files[0].path = "a//b".into(),
                "manifest file \"a//b\"",
            ),
            (|m| m.files[0].path = "a\\..\\b".into(), "manifest file"),
            (|m| m.files[0].path = String::new(), "manifest file \"\""),
            (|m| m.files[0].path = "x".repeat(4097), "manifest file"),
            (
                |m| m.files[0].path = m.files[1].path.clone(),
                "manifest lists \"model-00001-of-00002.safetensors\" twice",
            ),
            (
                |m| m.files[0].kind = FileKind::Manifest,
                "manifest file \"config.json\"",
            ),
            (
                |m| m.files[0].shard_count = 1,
                "manifest file \"config.json\"",
            ),
            (|m| m.files[0].tensors = 1, "manifest file \"config.json\""),
            (
                |m| m.files[1].shard_index = 2,
                "manifest file \"model-00001",
            ),
            (
                |m| m.files[1].shard_count = 0,
                "manifest file \"model-00001",
            ),
            (
                |m| m.files[1].shard_index = 1,
                "manifest shards: shard index 1",
            ),
            (
                |m| {
                    m.files[1].shard_count = 3;
                    m.files[2].shard_count = 3;
                },
                "manifest shards: 2 shards listed of 3",
            ),
            (|m| m.files[2].shard_count = 3, "manifest shards: sub/model"),
            (
                |m| m.files[0].header_hash = "AB".repeat(32),
                "manifest file \"config.json\"",
            ),
            (
                |m| m.files[0].header_hash = "ab".into(),
                "manifest file \"config.json\"",
            ),
            (
                |m| m.files[0].sealed_len = u64::MAX,
                "manifest file lengths",
            ),
            (
                |m| m.files[2].original_len = u64::MAX,
                "manifest file lengths",
            ),
        ];
        for (k, (change, want)) in rows.iter().enumerate() {
            let mut m = manifest();
            change(&mut m);
            let json = serde_json::to_vec(&m).unwrap();
            let err = Manifest::parse(&json).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "row {k}: {err:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn json_that_is_not_a_manifest_is_refused() {
        for bad in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"format":"weightvault-manifest/1"}"#,
        ] {
            let err = Manifest::parse(bad).unwrap_err();
            assert!(matches!(err, ManifestError::Json(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_manifest_of_other_files_only_is_accepted() {
        let mut m = manifest();
        m.files.retain(|e| e.kind == FileKind::File);
        assert!(m.validate().is_ok());
        m.files.clear();
        assert!(m.validate().is_ok());
    }
}
