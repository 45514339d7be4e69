//! Key release: host evidence, the sealed stream to an attested host, the release service
//! (`weightvault serve`) and its client (`weightvault fetch`). The protocol is in
//! `docs/PROTOCOL.md`.

pub use weightvault_core::{evidence, stream};
pub mod fetch;
pub mod service;
pub mod tls;
pub mod wire;
