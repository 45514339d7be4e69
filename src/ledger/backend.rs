//! Where ledger entries go, behind one trait: [`LedgerBackend`]. The local [`super::Ledger`]
//! (write-once segment files with group commit, a single writer by file lock, a spool for
//! records written beside a running service) is the embedded default; a ledger in a database
//! or in tiles on WORM storage is another implementation. The Merkle tree, the records'
//! canonical bytes, checkpoint notes and proofs stay pure (`weightvault-ledger`), so every
//! backend hashes and proves the same way.

use super::merkle::Hash;
use super::record::Record;
use super::{LedgerError, LedgerSigner};

/// An append-only, verifiable log of records.
pub trait LedgerBackend: Send + Sync {
    /// Appends a record; its index comes back only once it is durable (no record, no
    /// release). Concurrent appends may share one commit.
    fn append(&self, r: &Record) -> Result<u64, LedgerError>;

    /// Number of durable entries.
    fn len(&self) -> u64;

    /// Up to `max` durable entries' bytes from index `from` on, in order (empty past the end):
    /// what the tiles are integrated from.
    fn entries(&self, from: u64, max: usize) -> Result<Vec<Vec<u8>>, LedgerError>;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size and root hash of the tree of every durable entry.
    fn tree_head(&self) -> Result<(u64, Hash), LedgerError>;

    /// Inclusion proof of entry `index` in the tree of the first `size` entries (`None` when
    /// the log does not hold that many).
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError>;

    /// Consistency proof from the first `old` to the first `size` entries.
    fn consistency_proof(&self, old: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError>;

    /// Signs a checkpoint of the current tree by `signer` as the ledger key named `key_name`
    /// and keeps it; returns the signed note.
    fn checkpoint(&self, key_name: &str, signer: &dyn LedgerSigner) -> Result<String, LedgerError>;

    /// Appends the records other processes left for this backend while it was held (the
    /// local spool); returns their indices. A backend every process can append to has none.
    fn take_pending(&self) -> Result<Vec<(u64, Record)>, LedgerError> {
        Ok(vec![])
    }
}

impl LedgerBackend for super::Ledger {
    fn append(&self, r: &Record) -> Result<u64, LedgerError> {
        super::Ledger::append(self, r)
    }

    fn len(&self) -> u64 {
        super::Ledger::len(self)
    }

    fn entries(&self, from: u64, max: usize) -> Result<Vec<Vec<u8>>, LedgerError> {
        // Never past what is durable: the segment files may hold a write being flushed.
        let max = max.min(self.len().saturating_sub(from) as usize);
        if max == 0 {
            return Ok(Vec::new());
        }
        super::Ledger::entries_from(&self.dir, from, max)
    }

    fn tree_head(&self) -> Result<(u64, Hash), LedgerError> {
        Ok(self.log().tree_head()?)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError> {
        Ok(self.log().inclusion_proof(index, size)?)
    }

    fn consistency_proof(&self, old: u64, size: u64) -> Result<Option<Vec<Hash>>, LedgerError> {
        Ok(self.log().consistency_proof(old, size)?)
    }

    fn checkpoint(&self, key_name: &str, signer: &dyn LedgerSigner) -> Result<String, LedgerError> {
        super::Ledger::checkpoint(self, key_name, signer)
    }

    fn take_pending(&self) -> Result<Vec<(u64, Record)>, LedgerError> {
        self.ingest_spool()
    }
}
