//! weightvault: an encrypted vault for AI model weights whose keys are released only under policy.
//!
//! This crate is the I/O layer and the CLI: the pure crates of the workspace (`format`, `keys`,
//! `policy`, the ledger's records and proofs, the watermark, the release engine and wire types;
//! re-exported here under their old paths) never open a file, a socket or the HSM; `hsm`,
//! `store`, `local`, `ledger`'s log, `release` and `cli` do, each behind the edge traits listed
//! in `docs/ARCHITECTURE.md`. `actions` are an operator's actions on a vault with the ledger
//! records they leave, and `dry_run` a what-if release decision from what a vault knows: the
//! CLI's commands call them, and so can any other front end. `unsafe` is denied everywhere but
//! `store::mapped`, which maps files for `verify` and says why.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod actions;
pub mod cli;
pub mod clock;
pub mod database;
pub mod dry_run;
pub mod durable;
pub use weightvault_core::{format, keys};
pub use weightvault_policy as policy;
pub mod hsm;
pub mod interrupt;
pub mod ledger;
pub mod local;
pub mod postgres;
pub mod release;
pub mod store;
pub mod vault_ledger;
pub mod watermark;
