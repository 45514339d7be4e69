//! Inclusion and consistency proofs as an auditor receives them: self-contained, checked
//! offline against a signed checkpoint and the ledger's public key.

use crate::checkpoint::Checkpoint;
use crate::merkle;

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofError(pub String);

/// A self-contained inclusion proof, checkable offline with the public key alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InclusionProof {
    /// Entry index.
    pub index: u64,
    /// The record (canonical JSON).
    pub entry: String,
    /// Audit path, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint note it is against.
    pub checkpoint: String,
}

impl InclusionProof {
    /// Checks the checkpoint signature and the path; returns the checkpoint.
    pub fn verify(&self, key_name: &str, public: &[u8; 32]) -> Result<Checkpoint, ProofError> {
        let cp = Checkpoint::verify(&self.checkpoint, key_name, public)
            .map_err(|e| ProofError(e.to_string()))?;
        let proof = decode_hashes(&self.proof)?;
        if merkle::verify_inclusion(
            self.index,
            cp.size,
            &merkle::leaf_hash(self.entry.as_bytes()),
            &proof,
            &cp.root,
        ) {
            Ok(cp)
        } else {
            Err(ProofError(format!(
                "entry {} is not in the tree of checkpoint size {}",
                self.index, cp.size
            )))
        }
    }
}

/// A consistency proof from an older tree size to a signed checkpoint (RFC 6962 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub old_size: u64,
    /// Proof nodes, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint note it leads to.
    pub checkpoint: String,
}

impl ConsistencyProof {
    /// Checks the checkpoint signature and that the tree (`old_size`, `old_root`) is a prefix
    /// of it; returns the checkpoint.
    pub fn verify(
        &self,
        old_root: &merkle::Hash,
        key_name: &str,
        public: &[u8; 32],
    ) -> Result<Checkpoint, ProofError> {
        let cp = Checkpoint::verify(&self.checkpoint, key_name, public)
            .map_err(|e| ProofError(e.to_string()))?;
        let proof = decode_hashes(&self.proof)?;
        if merkle::verify_consistency(self.old_size, cp.size, old_root, &cp.root, &proof) {
            Ok(cp)
        } else {
            Err(ProofError(format!(
                "the tree of size {} is not a prefix of checkpoint size {}",
                self.old_size, cp.size
            )))
        }
    }
}

fn decode_hashes(hexes: &[String]) -> Result<Vec<merkle::Hash>, ProofError> {
    hexes
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|v| v.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| ProofError("proof node is not a 32-byte hex hash".into()))
}
