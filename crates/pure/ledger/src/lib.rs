//! weightvault's ledger, the pure part: what a record is and its canonical bytes (`record`),
//! RFC 6962 Merkle hashing (`merkle`), the frames of a log segment (`frames`), signed checkpoint notes (`checkpoint`), offline proofs
//! (`proof`), the tree as C2SP tlog-tiles for object storage (`tiles`) and licence usage
//! counted from records (`usage`). The log that stores entries durably is an adapter above
//! this crate (`weightvault::ledger::log` on local files).
//!
//! Nothing here does I/O or reads the clock: times are given by the caller.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod frames;
pub mod merkle;
pub mod proof;
pub mod record;
pub mod review;
pub mod tiles;
pub mod usage;
pub mod words;

pub use proof::{ConsistencyProof, InclusionProof};
