//! weightvault's fuzz targets, one `pub fn <target>(data: &[u8])` each, over the parsers of
//! outside input in the pure crates: sealed containers and their heads, safetensors headers,
//! revision manifests, the sealed stream of a release, host evidence, release request bodies,
//! ledger segment frames, records, checkpoints, proofs and tiles, the policy files, and the
//! Consolidated Screening List's JSON.
//!
//! A target must never panic, hang or allocate more than its input justifies, whatever the
//! bytes; where the input has structure a raw byte string would rarely get past (a header
//! with a length and a count that agree, a signed note), a target also builds a valid input
//! through the real encoder from [`arbitrary`] values, checks that it reads back as written,
//! then mutates it. Each target's first byte picks the mode (raw or structured).
//!
//! `fuzz/` (cargo-fuzz, nightly) runs each target under libFuzzer; `tests/replay.rs` replays
//! every input kept in `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` on stable.
//! This crate is not under `crates/pure` only because those tests read files; it depends on
//! the pure crates alone.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod container;
mod evidence;
mod frames;
mod ledger;
mod manifest;
mod mutate;
mod policy;
mod release;
mod safetensors;
mod screening;
mod stream;

pub use container::{container_head, container_header, container_key_slots, container_prelude};
pub use evidence::evidence;
pub use frames::ledger_frames;
pub use ledger::{ledger_checkpoint, ledger_record, ledger_tiles};
pub use manifest::manifest;
pub use policy::policy_file;
pub use release::release_body;
pub use safetensors::safetensors_header;
pub use screening::csl_import;
pub use stream::sealed_stream;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its fuzz/ binary and of its corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("container_prelude", container_prelude),
    ("container_header", container_header),
    ("container_key_slots", container_key_slots),
    ("container_head", container_head),
    ("safetensors_header", safetensors_header),
    ("manifest", manifest),
    ("sealed_stream", sealed_stream),
    ("evidence", evidence),
    ("release_body", release_body),
    ("ledger_frames", ledger_frames),
    ("ledger_record", ledger_record),
    ("ledger_checkpoint", ledger_checkpoint),
    ("ledger_tiles", ledger_tiles),
    ("policy_file", policy_file),
    ("csl_import", csl_import),
];

/// Splits off the mode byte: `None` for an empty input.
fn mode(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}
