//! The ledger published as a C2SP tlog-tiles log in object storage (`docs/LEDGER.md`,
//! "Tiles"): full tiles and full entry bundles created once in a write-once bucket (S3 Object
//! Lock), the partial ones and the signed `checkpoint` replaced in a mutable one. The tile
//! arithmetic is the pure crate's (`weightvault_ledger::tiles`); this is its I/O: the
//! [`TileReader`] over the two buckets, and [`TileLog::publish`], which integrates the entries
//! a sequencer made durable and signs the new head. An auditor needs nothing else: the buckets
//! and the ledger's public key ([`TileLog::audit`], [`TileLog::prove`]).
//!
//! Publishing is idempotent: an integration is a function of the published head and the
//! entries, so a publish interrupted at any point (or run twice, or by two integrators) writes
//! the same bytes again; a full object that exists with *other* bytes is a fork and stops it.

use crate::store::bucket::{BucketConfig, Created, Objects, Swapped};
use crate::store::StoreError;
use bytes::Bytes;
use weightvault_ledger::checkpoint::{Checkpoint, LedgerSigner};
use weightvault_ledger::tiles::{self, TileError, TileReader, TlogPath, TreeHead};
use weightvault_ledger::{ConsistencyProof, InclusionProof};

/// What can go wrong publishing or auditing a tiled ledger.
#[derive(Debug, thiserror::Error)]
pub enum TileLogError {
    /// A bucket refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tiles do not add up (a deleted, replaced or forged object), named.
    #[error(transparent)]
    Tiles(#[from] TileError),
    /// A full tile or bundle exists with other bytes than this integration's: two histories.
    #[error("{0} in the write-once bucket differs from what this ledger integrates there: the published log has forked from this ledger; nothing more was published")]
    Fork(String),
    /// The signer failed.
    #[error("signing the tiles' checkpoint: {0}")]
    Sign(weightvault_ledger::checkpoint::SignError),
    /// Another integrator replaced the checkpoint while this one integrated: this one's
    /// checkpoint was not written (its tiles, the same bytes either's, may have been).
    #[error(
        "another integrator published a checkpoint at {0} meanwhile; this one's was not written"
    )]
    Raced(String),
}

/// A tiled ledger in two buckets (they may be two prefixes of one bucket in tests).
pub struct TileLog {
    worm: Objects,
    head: Objects,
}

impl TileReader for TileLog {
    fn read(&self, path: TlogPath) -> Result<Option<Vec<u8>>, tiles::ReadError> {
        let o = if path.is_immutable() {
            &self.worm
        } else {
            &self.head
        };
        o.get(&path.to_string())
            .map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| Box::new(e) as tiles::ReadError)
    }
}

/// What [`TileLog::publish`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// Tree size before and after.
    pub from: u64,
    /// Tree size now published.
    pub size: u64,
    /// Objects written (full ones created, partial ones and the checkpoint replaced).
    pub objects: usize,
}

/// What sees every entry of an audit (index, bytes); an `Err` stops it, named.
pub type EachEntry<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Gives up to `max` entries from index `from` on, in order (empty: no more).
pub type Batches<'a> = dyn FnMut(u64, usize) -> Result<Vec<Vec<u8>>, TileLogError> + 'a;

/// Entries integrated per batch: one segment, one full level-1 tile.
const BATCH: usize = 1 << 16;

impl TileLog {
    /// The log whose full objects are under `worm` and whose mutable ones are under `head`.
    pub fn new(worm: &BucketConfig, head: &BucketConfig) -> Result<Self, StoreError> {
        Ok(TileLog {
            worm: Objects::new(worm)?,
            head: Objects::new(head)?,
        })
    }

    /// Where it is, for messages.
    pub fn location(&self) -> String {
        format!("{} (mutable head: {})", self.worm.url(), self.head.url())
    }

    /// The published checkpoint note, unverified, or `None`.
    fn note(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .head
            .get("checkpoint")?
            .map(|n| String::from_utf8_lossy(&n).into_owned()))
    }

    fn unpublished(&self) -> StoreError {
        StoreError::NotFound(format!("no checkpoint published at {}", self.head.url()))
    }

    /// The published checkpoint, verified under `key_name` and `public`: `None` when
    /// nothing is published yet.
    pub fn published(
        &self,
        key_name: &str,
        public: &[u8; 32],
    ) -> Result<Option<(String, Checkpoint)>, TileLogError> {
        let Some(note) = self.note()? else {
            return Ok(None);
        };
        let cp = tiles::verify_checkpoint(&note, key_name, public, self)?;
        Ok(Some((note, cp)))
    }

    /// Integrates the ledger's entries from the published size on (`entries(from)` gives up to
    /// a batch of them, in order, starting at index `from`; an empty batch ends) and publishes
    /// a checkpoint signed by `signer` as `key_name`, with `origin` and `time` (Unix seconds).
    pub fn publish(
        &self,
        origin: &str,
        key_name: &str,
        signer: &dyn LedgerSigner,
        time: u64,
        entries: &mut Batches<'_>,
    ) -> Result<Published, TileLogError> {
        let public = signer.public_key().map_err(TileLogError::Sign)?;
        // The checkpoint is replaced only at the version read here (a compare-and-swap): an
        // integrator that lost its election and still runs cannot put an older head back.
        let (note, mut version) = match self.head.get_versioned("checkpoint")? {
            Some((b, v)) => (Some(String::from_utf8_lossy(&b).into_owned()), Some(v)),
            None => (None, None),
        };
        let old = match note {
            Some(n) => TreeHead::from(&tiles::verify_checkpoint(&n, key_name, &public, self)?),
            None => TreeHead::empty(),
        };
        let mut head = old;
        let mut objects = 0;
        loop {
            let batch = entries(head.size, BATCH)?;
            if batch.is_empty() {
                break;
            }
            let integration = tiles::integrate(head, self, &batch)?;
            for o in integration.objects() {
                let path = o.path.to_string();
                if o.path.is_immutable() {
                    match self.worm.create(&path, Bytes::from(o.bytes.clone()))? {
                        Created::Now => {}
                        // A retry of an interrupted publish: the same bytes, nothing to do.
                        Created::Already(b) if b[..] == o.bytes[..] => {}
                        Created::Already(_) => return Err(TileLogError::Fork(path)),
                    }
                } else {
                    self.head.replace(&path, Bytes::from(o.bytes))?;
                }
                objects += 1;
            }
            head = integration.new;
            if head.size > old.size {
                // Sign after every batch: a long first publish shows progress and resumes.
                let cp = Checkpoint {
                    origin: origin.into(),
                    size: head.size,
                    root: head.root,
                    time,
                };
                let sig = signer
                    .sign(cp.body().as_bytes())
                    .map_err(TileLogError::Sign)?;
                let note = cp.signed_note(key_name, &public, &sig);
                match self
                    .head
                    .swap("checkpoint", Bytes::from(note), version.take())?
                {
                    Swapped::Done(v) => version = Some(v),
                    Swapped::Lost => {
                        return Err(TileLogError::Raced(format!(
                            "{}/checkpoint",
                            self.head.url()
                        )))
                    }
                }
                objects += 1;
            }
        }
        Ok(Published {
            from: old.size,
            size: head.size,
            objects,
        })
    }

    /// Audits the published log from the buckets and the public key alone: the checkpoint's
    /// signature and root, every full tile against the level above, every entry against its
    /// leaf; `each` sees every entry in order. Returns the checkpoint and the report.
    pub fn audit(
        &self,
        key_name: &str,
        public: &[u8; 32],
        each: &mut EachEntry<'_>,
    ) -> Result<(Checkpoint, tiles::AuditReport), TileLogError> {
        let Some((_, cp)) = self.published(key_name, public)? else {
            return Err(self.unpublished().into());
        };
        let report = tiles::audit(TreeHead::from(&cp), self, |i, e| each(i, e))?;
        Ok((cp, report))
    }

    /// An inclusion proof of entry `index` in the published tree, built from the buckets and
    /// checked before it is returned (the same JSON as `audit prove`).
    pub fn prove(
        &self,
        key_name: &str,
        public: &[u8; 32],
        index: u64,
    ) -> Result<InclusionProof, TileLogError> {
        let note = self.note()?.ok_or_else(|| self.unpublished())?;
        Ok(tiles::prove_inclusion(
            &note, key_name, public, index, self,
        )?)
    }

    /// A consistency proof from tree size `old` to the published tree.
    pub fn consistency(
        &self,
        key_name: &str,
        public: &[u8; 32],
        old: u64,
    ) -> Result<ConsistencyProof, TileLogError> {
        let note = self.note()?.ok_or_else(|| self.unpublished())?;
        Ok(tiles::prove_consistency(
            &note, key_name, public, old, self,
        )?)
    }
}
