//! Sealing a checkpoint directory into a new revision of the vault's store: every file, then
//! the manifest, then the store publishes it (a local staging directory renamed into place; in
//! a bucket the manifest, created last, is what makes the revision exist).

use super::*;

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
    /// Where the revision lives (a directory, or `s3://bucket/prefix/models/<model>/<rev>`).
    pub location: String,
    /// Plaintext bytes sealed.
    pub bytes: u64,
}

impl Vault {
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
        let store = self.sealed_store();
        let plan = checkpoint::plan(src)?;
        let total: u64 = plan.iter().map(|f| f.data_len).sum();
        let mut sink = store.begin_revision(&req.model, &req.revision)?;
        progress.start(total, plan.len());
        let threads = threads(self.config.seal.threads);
        let mut entries = Vec::with_capacity(plan.len());
        for f in &plan {
            progress.file(&f.rel);
            let summary = self.seal_one(f, req, kw, sink.as_mut(), threads, progress.bytes())?;
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
        interrupted()?;
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
            (sink.as_mut(), object::ObjectName::Manifest),
            &(),
        )?;
        sink.publish()?;
        progress.finish();
        Ok(SealReport {
            manifest,
            location: store.revision_location(&req.model, &req.revision),
            bytes: total,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn header_for(
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

    pub(crate) fn seal_one(
        &self,
        f: &CheckpointFile,
        req: &SealRequest,
        kw: &dyn KeyWrap,
        sink: &mut dyn object::RevisionSink,
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
            (sink, object::ObjectName::File(&f.rel)),
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
}

pub(super) fn tempfile_empty() -> Result<File, StoreError> {
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
