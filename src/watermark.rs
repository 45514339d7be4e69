//! Watermarks: marking, detection and tracing are pure (`weightvault-watermark`); this module
//! adds what reads files for them: a revision's tensors from the vault and a suspect copy
//! from disk.

pub use weightvault_watermark::*;

/// `weightvault trace` over files: the pure tracing of `weightvault_watermark::trace`, fed with
/// the original from an opened revision and the suspect from disk.
pub mod trace {
    use crate::keys::SymmetricKey;
    use crate::store::{OpenedRevision, StoreError};
    use safetensors::SafeTensors;
    use std::path::{Path, PathBuf};
    use weightvault_watermark::mark::MarkedTensor;
    pub use weightvault_watermark::trace::*;

    /// Why a copy on disk cannot be traced.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum TraceFilesError {
        /// The original or the suspect cannot be compared.
        #[error(transparent)]
        Trace(#[from] TraceError),
        /// The original's bytes cannot be read from the vault.
        #[error(transparent)]
        Store(#[from] StoreError),
        /// A suspect file or directory cannot be read.
        #[error("{}: {source}", path.display())]
        Read {
            /// The path.
            path: PathBuf,
            /// The OS error.
            #[source]
            source: std::io::Error,
        },
        /// A suspect file is not safetensors.
        #[error("{}: not safetensors: {why}", path.display())]
        NotSafetensors {
            /// The file.
            path: PathBuf,
            /// The parser's words.
            why: String,
        },
        /// A suspect directory holds no `.safetensors` file.
        #[error("{}: no .safetensors file", .0.display())]
        NoSuspectFiles(PathBuf),
    }

    fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> TraceFilesError + '_ {
        move |source| TraceFilesError::Read {
            path: path.into(),
            source,
        }
    }

    /// The watermarked tensors of every file of an opened revision, and its segment count.
    pub fn revision_tensors(
        rev: &OpenedRevision,
    ) -> Result<(Vec<Vec<MarkedTensor>>, u32), TraceError> {
        weightvault_watermark::trace::revision_tensors(rev.file_heads())
    }

    /// Suspect safetensors files: a file, or every `.safetensors` file under a directory.
    pub fn suspect_files(p: &Path) -> Result<Vec<PathBuf>, TraceFilesError> {
        fn walk(d: &Path, v: &mut Vec<PathBuf>) -> Result<(), TraceFilesError> {
            for e in std::fs::read_dir(d).map_err(read_err(d))? {
                let path = e.map_err(read_err(d))?.path();
                if path.is_dir() {
                    walk(&path, v)?;
                } else if path.extension().is_some_and(|x| x == "safetensors") {
                    v.push(path);
                }
            }
            Ok(())
        }
        if p.is_file() {
            return Ok(vec![p.into()]);
        }
        let mut v = Vec::new();
        walk(p, &mut v)?;
        if v.is_empty() {
            return Err(TraceFilesError::NoSuspectFiles(p.into()));
        }
        v.sort();
        Ok(v)
    }

    /// Traces the copy at `suspect` (a file or a directory) against the opened original
    /// revision and the candidate releases.
    pub fn trace(
        wm_key: &SymmetricKey,
        rev: &OpenedRevision,
        suspect: &Path,
        candidates: Vec<Candidate>,
        epsilon: f64,
    ) -> Result<TraceReport, TraceFilesError> {
        let (files, segments) = revision_tensors(rev)?;
        let originals: Vec<(MarkedTensor, zeroize::Zeroizing<Vec<u8>>)> = files
            .into_iter()
            .enumerate()
            .flat_map(|(i, ts)| ts.into_iter().map(move |t| (i, t)))
            .map(|(i, t)| {
                let b = rev.files[i].1.read_range(t.range.0, t.range.1)?;
                Ok((t, zeroize::Zeroizing::new(b)))
            })
            .collect::<Result<_, TraceFilesError>>()?;
        // The suspect, held in memory (its files are read once).
        let paths = suspect_files(suspect)?;
        let blobs: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).map_err(read_err(p)))
            .collect::<Result<_, _>>()?;
        let parsed: Vec<SafeTensors<'_>> = blobs
            .iter()
            .zip(&paths)
            .map(|(b, p)| {
                SafeTensors::deserialize(b).map_err(|e| TraceFilesError::NotSafetensors {
                    path: p.clone(),
                    why: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let suspects: Vec<_> = parsed.iter().flat_map(|s| s.tensors()).collect();
        Ok(weightvault_watermark::trace::trace(
            wm_key, &originals, segments, &suspects, candidates, epsilon,
        )?)
    }
}
