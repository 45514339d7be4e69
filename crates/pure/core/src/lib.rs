//! weightvault's core: the sealed container (`format`), the key schedule (`keys`), the sealed
//! stream a release is sent in (`stream`), signed host evidence (`evidence`), the strict
//! safetensors header check (`header_check`), a revision's manifest (`manifest`) and the
//! value types every layer above shares (`facts`).
//!
//! Everything here takes bytes and values and returns values. It never opens a file or a
//! socket, reads the clock or the environment, or talks to the HSM: `clippy.toml` beside this
//! crate disallows those calls and the README's test command runs clippy with `-D warnings`,
//! so such an import fails the build. (Randomness for new keys comes from `getrandom`.)
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod evidence;
pub mod facts;
pub mod format;
pub mod header_check;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod stream;
