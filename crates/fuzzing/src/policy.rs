//! The policy files as an operator writes them: `PolicyData::parse` (crates/pure/policy
//! set.rs) of the repository's `policies/` with one file replaced by the input.

use crate::mode;
use weightvault_policy::data::{repository_files, FILES};
use weightvault_policy::PolicyData;

/// The mode byte picks the file (`FILES`, modulo its length); the rest, read as UTF-8 with
/// invalid sequences replaced (the loader reads text), replaces it in the repository's set,
/// which is then parsed and validated whole.
pub fn policy_file(data: &[u8]) {
    let Some((m, rest)) = mode(data) else { return };
    let name = FILES[usize::from(m) % FILES.len()];
    let mut files = repository_files();
    files.insert(name.to_string(), String::from_utf8_lossy(rest).into_owned());
    let _ = PolicyData::parse(&files);
}
