//! weightvault's release engine and the wire types of its protocol (`docs/PROTOCOL.md`).
//!
//! [`engine`] holds every decision the release service makes — which evidence opens, which
//! shards a request names, the policy decision and the ledger record that carries it, what a
//! release grants, whether a shard request may use it, how a stream's end is recorded, and
//! which live releases a new policy withdraws — as functions from values to values. [`wire`]
//! holds the bodies the service and the fetcher exchange and the one [`wire::ApiCode`] enum
//! that meets HTTP in one place.
//!
//! Nothing here opens a file or a socket, reads the clock or the environment, or draws
//! randomness: times and ids are given by the caller, and the service's axum handlers (in the
//! `weightvault` crate) only parse, call the engine and the edges (`ReleaseState`, the
//! ledger, the store), and map errors. `clippy.toml` beside this crate keeps it so.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod approvals;
pub mod engine;
pub mod wire;
