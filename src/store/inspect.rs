//! `inspect`: what a revision holds, read from clear headers alone (no HSM, nothing
//! decrypted). The manifest and the safetensors headers are the sealed files' clear,
//! authenticated metadata: read here without the key, so unauthenticated until `verify`.

use super::*;

/// One tensor, as its shard's header states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedTensor {
    /// Name.
    pub name: String,
    /// Safetensors dtype (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes of its data.
    pub bytes: u64,
}

/// One file of a revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectedFile {
    /// Path in the checkpoint directory.
    pub path: String,
    /// Safetensors shard or other file.
    pub kind: FileKind,
    /// Its size in clear.
    pub bytes: u64,
    /// Its sealed size.
    pub sealed_bytes: u64,
    /// Its tensors in file order (safetensors shards; none for other files).
    pub tensors: Vec<InspectedTensor>,
}

/// What [`Vault::inspect`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    /// `model@rev`.
    pub revision: String,
    /// When it was sealed (RFC 3339).
    pub sealed_at: String,
    /// The training facts recorded at seal time.
    pub training: TrainingFacts,
    /// Its files, as the manifest lists them.
    pub files: Vec<InspectedFile>,
    /// When it was crypto-shredded (it can no longer be opened).
    pub shredded: Option<String>,
}

impl Vault {
    /// Lists a revision's files and tensors from its manifest and its shards' headers,
    /// without the HSM.
    pub fn inspect(&self, r: &RevisionRef) -> Result<Inspection, StoreError> {
        let rev = self.resolve_revision(r)?;
        let label = format!("{}@{rev}", r.model);
        let head = |name: object::ObjectName<'_>| -> Result<SealedFile, StoreError> {
            let (obj, path) = self.store.open(&r.model, &rev, name)?;
            SealedFile::from_object(path.into(), obj)
        };
        let m = head(object::ObjectName::Manifest)?;
        let manifest = Manifest::parse(&m.head.header.meta)
            .map_err(|e| StoreError::Mismatch(format!("{label}: {e}")))?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for e in &manifest.files {
            let mut tensors = Vec::new();
            if e.kind == FileKind::Safetensors {
                let f = head(object::ObjectName::File(&e.path))?;
                let md = checkpoint::parse_safetensors_meta(&f.head.header.meta)
                    .map_err(|w| StoreError::Mismatch(format!("{}: {w}", describe(&label, e))))?;
                for name in md.offset_keys() {
                    let info = md.info(&name).expect("a key of the metadata");
                    tensors.push(InspectedTensor {
                        dtype: info.dtype.to_string(),
                        shape: info.shape.clone(),
                        bytes: (info.data_offsets.1 - info.data_offsets.0) as u64,
                        name,
                    });
                }
            }
            files.push(InspectedFile {
                path: e.path.clone(),
                kind: e.kind,
                bytes: e.original_len,
                sealed_bytes: e.sealed_len,
                tensors,
            });
        }
        Ok(Inspection {
            revision: label,
            sealed_at: manifest.sealed_at,
            training: manifest.training,
            files,
            shredded: self.store.shredded(&r.model, &rev)?,
        })
    }
}
