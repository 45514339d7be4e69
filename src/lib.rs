//! weightvault: an encrypted vault for AI model weights whose keys are released only under policy.
//!
//! Pure cores (`format`, `keys`) never open a file, a socket or the HSM; the edges (`hsm`,
//! `store`, `cli`) do the I/O. `unsafe` is denied everywhere but `store::mapped`, which maps
//! files for `verify` and says why.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub use weightvault_core::{format, keys};
pub use weightvault_policy as policy;
pub mod hsm;
pub mod interrupt;
pub mod ledger;
pub mod local;
pub mod release;
pub mod store;
pub mod watermark;
