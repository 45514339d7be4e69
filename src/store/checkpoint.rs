//! Reading a checkpoint from disk before sealing: which files, which are safetensors shards,
//! and whether each shard's header tells the truth about its length and offsets.

use super::StoreError;
use crate::format::FileKind;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use weightvault_core::header_check::HeaderError;
pub use weightvault_core::header_check::{check_rel_path, parse_safetensors_meta};

/// Largest safetensors JSON header accepted (the `safetensors` crate's own limit).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Why a file is not a safetensors file the vault can seal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// Too short for the 8-byte header length.
    #[error("{0} bytes is too short for a header")]
    TooShort(u64),
    /// The header length is larger than any accepted.
    #[error("header length {0} exceeds {MAX_SAFETENSORS_HEADER}")]
    HeaderTooLong(u64),
    /// The header length runs past the end of the file.
    #[error("header length {header} runs past the end of the {len}-byte file")]
    PastEnd {
        /// The header length.
        header: u64,
        /// The file's length.
        len: u64,
    },
    /// The header is not UTF-8, not a safetensors header, or does not describe exactly the
    /// bytes after it.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A single file given to seal that is not named `.safetensors`.
    #[error("a single file to seal must be a .safetensors file (or give a checkpoint directory)")]
    NotNamedSafetensors,
}

/// One file of a checkpoint, ready to seal.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    /// Absolute or caller-relative source path.
    pub src: PathBuf,
    /// Path relative to the checkpoint root, `/`-separated.
    pub rel: String,
    /// Safetensors shard or other file.
    pub kind: FileKind,
    /// Clear metadata: for safetensors, the 8-byte length prefix and the JSON header.
    pub meta: Vec<u8>,
    /// Where the sealed data starts in the source file.
    pub data_start: u64,
    /// Length of the sealed data.
    pub data_len: u64,
    /// Source file length when planned (checked again after sealing).
    pub src_len: u64,
    /// Shard index among the safetensors files (0 for others).
    pub shard_index: u32,
    /// Number of safetensors files (0 for others).
    pub shard_count: u32,
    /// Number of tensors (safetensors only).
    pub tensors: usize,
}

/// Reads and validates a safetensors file's header: returns (meta bytes, data start, data
/// length, tensor count). The header must describe exactly the bytes that follow it.
pub fn read_safetensors_header(path: &Path) -> Result<(Vec<u8>, u64, u64, usize), StoreError> {
    let bad = |source: SafetensorsError| StoreError::NotSafetensors {
        path: path.into(),
        source,
    };
    let f = File::open(path).map_err(|e| StoreError::io("opening", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| StoreError::io("reading", path, e))?
        .len();
    if len < 8 {
        return Err(bad(SafetensorsError::TooShort(len)));
    }
    let mut n8 = [0u8; 8];
    f.read_exact_at(&mut n8, 0)
        .map_err(|e| StoreError::io("reading", path, e))?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_SAFETENSORS_HEADER {
        return Err(bad(SafetensorsError::HeaderTooLong(n)));
    }
    if 8 + n > len {
        return Err(bad(SafetensorsError::PastEnd { header: n, len }));
    }
    let mut meta = vec![0u8; 8 + n as usize];
    f.read_exact_at(&mut meta, 0)
        .map_err(|e| StoreError::io("reading", path, e))?;
    let json = std::str::from_utf8(&meta[8..]).map_err(|_| bad(HeaderError::NotUtf8.into()))?;
    super::header_check::check(json, Some(len - 8 - n)).map_err(|e| bad(e.into()))?;
    let md = parse_safetensors_meta(&meta).map_err(|e| bad(e.into()))?;
    let data_len = md.data_len() as u64;
    Ok((meta, 8 + n, data_len, md.tensors().len()))
}

/// How deep a checkpoint directory may nest (also stops symlink loops).
const MAX_DEPTH: usize = 32;

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<(), StoreError> {
    if depth > MAX_DEPTH {
        return Err(StoreError::BadInput(format!(
            "{}: nested more than {MAX_DEPTH} directories deep (a symlink loop?)",
            dir.display()
        )));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        let p = entry.path();
        // Follow symlinks: Hugging Face cache snapshots are symlinks to blobs.
        let md = std::fs::metadata(&p).map_err(|e| StoreError::io("reading", &p, e))?;
        if md.is_dir() {
            walk(root, &p, depth + 1, out)?;
        } else if md.is_file() {
            let rel = p
                .strip_prefix(root)
                .expect("walk stays under root")
                .to_str()
                .ok_or_else(|| {
                    StoreError::BadInput(format!("{}: file name is not UTF-8", p.display()))
                })?
                .to_string();
            out.push((p, rel));
        } else {
            return Err(StoreError::BadInput(format!(
                "{}: not a regular file or directory",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Plans the sealing of `src`: a `.safetensors` file, or a checkpoint directory (shards, their
/// `model.safetensors.index.json`, config and tokenizer files; every regular file is sealed).
pub fn plan(src: &Path) -> Result<Vec<CheckpointFile>, StoreError> {
    let md = std::fs::metadata(src).map_err(|e| StoreError::io("reading", src, e))?;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if md.is_dir() {
        walk(src, src, 0, &mut files)?;
        if files.is_empty() {
            return Err(StoreError::BadInput(format!(
                "{}: directory is empty",
                src.display()
            )));
        }
    } else if md.is_file() {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| StoreError::BadInput(format!("{}: bad file name", src.display())))?;
        if !name.ends_with(".safetensors") {
            return Err(StoreError::NotSafetensors {
                path: src.into(),
                source: SafetensorsError::NotNamedSafetensors,
            });
        }
        files.push((src.to_path_buf(), name.to_string()));
    } else {
        return Err(StoreError::BadInput(format!(
            "{}: not a file or directory",
            src.display()
        )));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let shard_count = files
        .iter()
        .filter(|(_, r)| r.ends_with(".safetensors"))
        .count() as u32;
    let mut out = Vec::with_capacity(files.len());
    let mut shard = 0u32;
    for (p, rel) in files {
        check_rel_path(&rel).map_err(|e| StoreError::BadInput(e.to_string()))?;
        let src_len = std::fs::metadata(&p)
            .map_err(|e| StoreError::io("reading", &p, e))?
            .len();
        if rel.ends_with(".safetensors") {
            let (meta, data_start, data_len, tensors) = read_safetensors_header(&p)?;
            out.push(CheckpointFile {
                src: p,
                rel,
                kind: FileKind::Safetensors,
                meta,
                data_start,
                data_len,
                src_len,
                shard_index: shard,
                shard_count,
                tensors,
            });
            shard += 1;
        } else {
            out.push(CheckpointFile {
                src: p,
                rel,
                kind: FileKind::File,
                meta: Vec::new(),
                data_start: 0,
                data_len: src_len,
                src_len,
                shard_index: 0,
                shard_count: 0,
                tensors: 0,
            });
        }
    }
    if shard_count == 0 {
        return Err(StoreError::BadInput(format!(
            "{}: no .safetensors file found — nothing that holds weights",
            src.display()
        )));
    }
    check_indexes(&out)?;
    Ok(out)
}

/// Every `*.safetensors.index.json` must name only shards that are present, and each tensor it
/// maps must be in the shard it names.
fn check_indexes(files: &[CheckpointFile]) -> Result<(), StoreError> {
    let shards: BTreeMap<&str, &CheckpointFile> = files
        .iter()
        .filter(|f| f.kind == FileKind::Safetensors)
        .map(|f| (f.rel.as_str(), f))
        .collect();
    for f in files
        .iter()
        .filter(|f| f.rel.ends_with(".safetensors.index.json"))
    {
        let bad = |why: String| StoreError::BadInput(format!("{}: {why}", f.src.display()));
        let text = std::fs::read(&f.src).map_err(|e| StoreError::io("reading", &f.src, e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no weight_map object".into()))?;
        let dir = f
            .rel
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        let mut tensors_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| bad(format!("weight_map entry {tensor} is not a string")))?;
            let rel = format!("{dir}{shard}");
            let sf = shards.get(rel.as_str()).ok_or_else(|| {
                bad(format!(
                    "names shard {shard} (tensor {tensor}), which is missing"
                ))
            })?;
            let names = tensors_of.entry(rel.clone()).or_insert_with(|| {
                parse_safetensors_meta(&sf.meta)
                    .map(|m| m.tensors().into_keys().collect())
                    .unwrap_or_default()
            });
            if !names.contains(tensor) {
                return Err(bad(format!(
                    "maps tensor {tensor} to {shard}, which does not hold it"
                )));
            }
        }
    }
    Ok(())
}
