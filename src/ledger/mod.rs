//! The release ledger (issue 4, in progress): an append-only log of every decision with
//! RFC 6962 Merkle hashing. So far: the pure Merkle tree, proofs and their verification.

pub mod checkpoint;
pub mod log;
pub mod merkle;
