//! Where a policy set comes from ([`PolicySource`]: a directory, a database, a bucket), which
//! version of it is in force, and reloading it in place ([`PolicyHandle`]). The source does the
//! reading; this module only parses what it returns.

use crate::data::PolicyError;
use crate::PolicyData;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A place policy sets are read from. The local implementation is a directory
/// (`weightvault::local::PolicyDir`).
pub trait PolicySource: Send + Sync {
    /// The text of every file named in [`FILES`] (a missing one is an error of the source,
    /// naming it).
    fn read(&self) -> Result<BTreeMap<String, String>, PolicyError>;
    /// Where the files are, for messages: a file named in an error is shown under it.
    fn location(&self, file: &str) -> String;
}

/// The version of a policy set: SHA-256 over its file names and texts, so any two replicas
/// that read the same files agree on it whatever the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyVersion(pub [u8; 32]);

impl PolicyVersion {
    /// The version of these files.
    pub fn of(files: &BTreeMap<String, String>) -> Self {
        let mut h = Sha256::new();
        for (name, text) in files {
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            h.update((text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        PolicyVersion(h.finalize().into())
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

/// A policy set with the version it was parsed from.
pub struct LoadedPolicy {
    /// The parsed, validated set.
    pub data: Arc<PolicyData>,
    /// Its version.
    pub version: PolicyVersion,
}

impl LoadedPolicy {
    /// Reads the source and parses what it returned; errors name the file where the source
    /// keeps it.
    pub fn load(source: &dyn PolicySource) -> Result<Self, PolicyError> {
        let files = source.read()?;
        Ok(Self {
            version: PolicyVersion::of(&files),
            data: Arc::new(parse_from(source, &files)?),
        })
    }
}

impl PolicyData {
    /// Reads `source` and parses the set.
    pub fn load(source: &dyn PolicySource) -> Result<Self, PolicyError> {
        parse_from(source, &source.read()?)
    }
}

fn parse_from(
    source: &dyn PolicySource,
    files: &BTreeMap<String, String>,
) -> Result<PolicyData, PolicyError> {
    PolicyData::parse(files).map_err(|mut e| {
        e.file = source.location(&e.file);
        e
    })
}

/// The policy a running service decides with, reloadable in place. A reload that fails to
/// load or validate leaves the policy in force untouched and returns the error.
pub struct PolicyHandle {
    source: Box<dyn PolicySource>,
    current: RwLock<(Arc<PolicyData>, PolicyVersion)>,
}

impl PolicyHandle {
    /// Loads the policy from `source`.
    pub fn load(source: Box<dyn PolicySource>) -> Result<Self, PolicyError> {
        let p = LoadedPolicy::load(source.as_ref())?;
        Ok(Self {
            source,
            current: RwLock::new((p.data, p.version)),
        })
    }

    /// The policy in force (decisions hold on to it for their whole duration).
    pub fn current(&self) -> Arc<PolicyData> {
        self.current.read().expect("policy lock").0.clone()
    }

    /// The version in force.
    pub fn version(&self) -> PolicyVersion {
        self.current.read().expect("policy lock").1
    }

    /// Reads the source again; on any error the old policy stays in force.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let p = LoadedPolicy::load(self.source.as_ref())?;
        *self.current.write().expect("policy lock") = (p.data, p.version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::FILES;

    #[test]
    fn the_version_changes_with_any_byte_of_any_file_or_name() {
        let files: BTreeMap<String, String> = FILES
            .iter()
            .map(|f| (f.to_string(), format!("# {f}\n")))
            .collect();
        let v = PolicyVersion::of(&files);
        assert_eq!(v, PolicyVersion::of(&files.clone()));
        for f in FILES {
            let mut g = files.clone();
            g.get_mut(*f).unwrap().push(' ');
            assert_ne!(PolicyVersion::of(&g), v, "{f}");
        }
        // Moving a byte from one file's text to the next file's name is another version.
        let a: BTreeMap<String, String> = [("a".into(), "bc".into())].into();
        let b: BTreeMap<String, String> = [("ab".into(), "c".into())].into();
        assert_ne!(PolicyVersion::of(&a), PolicyVersion::of(&b));
    }
}
