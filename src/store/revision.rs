//! Reading revisions: listing them, and opening one — its manifest authenticated, the files
//! present exactly those it lists, every header matching its entry — through the
//! [`SealedStore`](super::object::SealedStore).

use super::*;

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

impl Vault {
    /// Revisions of a model, sorted by name.
    pub fn revisions(&self, model: &str) -> Result<Vec<String>, StoreError> {
        self.store
            .revisions(model)?
            .ok_or_else(|| self.no_model(model))
    }

    /// "No such model", with the closest model the vault has.
    fn no_model(&self, model: &str) -> StoreError {
        let models = self.store.models().unwrap_or_default();
        StoreError::NotFound(format!(
            "no model '{model}' in this vault{}",
            super::did_you_mean(model, models.iter().map(String::as_str))
        ))
    }

    pub(crate) fn resolve_revision(&self, r: &RevisionRef) -> Result<String, StoreError> {
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
            object::RevisionState::Absent { model: false } => Err(self.no_model(&r.model)),
            object::RevisionState::Absent { model: true } => {
                let revs = self.store.revisions(&r.model)?.unwrap_or_default();
                Err(StoreError::NotFound(format!(
                    "no revision {}@{rev} in this vault{}",
                    r.model,
                    super::did_you_mean(&rev, revs.iter().map(String::as_str))
                )))
            }
        }
    }

    /// Opens one sealed file of a revision again as an object to read from (what
    /// [`crate::store::sealed::FileKeys::attach`] checks against the file first opened).
    pub fn open_file_object(
        &self,
        model: &str,
        rev: &str,
        path: &str,
    ) -> Result<std::sync::Arc<dyn super::object::RangeRead>, StoreError> {
        let (obj, _) = self
            .store
            .open(model, rev, object::ObjectName::File(path))?;
        Ok(obj.into())
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
        let manifest =
            Manifest::parse(&h.meta).map_err(|e| StoreError::Mismatch(format!("{label}: {e}")))?;
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
                let manifest = Manifest::parse(&sf.head.header.meta)
                    .map_err(|e| StoreError::Mismatch(format!("{model}@{rev}: {e}")))?;
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
    /// Each file's path, kind and header bytes (a safetensors header), in manifest order: what
    /// the watermark reads to find the tensors that carry a mark.
    pub fn file_heads(&self) -> impl Iterator<Item = (&str, FileKind, &[u8])> {
        self.files
            .iter()
            .map(|(e, f)| (e.path.as_str(), e.kind, f.header().meta.as_slice()))
    }

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
        let mut names = Vec::new();
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
            names.extend(md.offset_keys());
        }
        Err(StoreError::NotFound(format!(
            "{} has no tensor named '{name}'{}",
            self.label,
            super::did_you_mean(name, names.iter().map(String::as_str))
        )))
    }

    /// Where tensor `name` is, for a single-tensor safetensors file of it.
    pub(crate) fn single_tensor(&self, name: &str) -> Result<SingleTensor, StoreError> {
        let TensorLocation {
            file,
            dtype,
            shape,
            offsets: (s, e),
        } = self.find_tensor(name)?;
        Ok(SingleTensor {
            file,
            head: tensor_head(name, &dtype, &shape, e - s),
            data: (s, e),
        })
    }

    /// Writes one tensor as a single-tensor safetensors file at `out` (which must not exist).
    /// Returns the bytes written.
    pub fn open_tensor_to(&self, name: &str, out: &Path) -> Result<u64, StoreError> {
        let SingleTensor {
            file: i,
            head,
            data: (s, e),
        } = self.single_tensor(name)?;
        check_output(out, true)?;
        let f = &self.files[i].1;
        // Unnamed until complete, then linked straight to its name: no window at all.
        let scratch = output::Scratch::for_output(out, "tensor", false)?;
        let plain = output::PlaintextFile::create_in(scratch.path())
            .map_err(|err| StoreError::io("creating", out, err))?;
        let file = plain.file();
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

/// A tensor as a single-tensor safetensors file: [`OpenedRevision::single_tensor`].
pub(crate) struct SingleTensor {
    /// Its file's index in [`OpenedRevision::files`].
    pub(crate) file: usize,
    /// The single-tensor file's header.
    pub(crate) head: Vec<u8>,
    /// Its data's offsets in its file's data.
    pub(crate) data: (usize, usize),
}

/// The header of a safetensors file holding one tensor of `len` bytes: the length prefix
/// and the JSON, padded with spaces to a multiple of 8 bytes.
pub(crate) fn tensor_head(name: &str, dtype: &str, shape: &[usize], len: usize) -> Vec<u8> {
    let mut tensors = serde_json::Map::new();
    tensors.insert(
        name.to_string(),
        serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [0, len]}),
    );
    let mut json = serde_json::to_vec(&tensors).expect("json");
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut head = (json.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&json);
    head
}

/// `Err(Interrupted)` once SIGINT or SIGTERM asked this command to stop.
pub(crate) fn interrupted() -> Result<(), StoreError> {
    crate::interrupt::check().map_err(StoreError::Interrupted)
}

/// Writes `b` at the start of `file` (the clear safetensors header before the tensor data).
pub(crate) fn write_head(file: &File, b: &[u8], p: &Path) -> Result<(), StoreError> {
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
