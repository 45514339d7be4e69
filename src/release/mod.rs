//! Key release: host evidence, the sealed stream to an attested host, the release service
//! (`weightvault serve`) and its client (`weightvault fetch`). The protocol is in
//! `docs/PROTOCOL.md`. The decisions are the pure release engine's ([`engine`]); the wire
//! types are shared by the service and the fetcher ([`wire`]).

pub use weightvault_core::{evidence, stream};
pub use weightvault_release::{approvals, engine, wire};
pub mod fetch;
pub mod ops;
pub mod service;
pub mod state;
pub mod tls;
