//! The local implementations of the edge traits: what a vault on one machine reads and writes
//! on its own disk. Other implementations (object storage, PostgreSQL) sit beside these.

use crate::policy::data::{PolicyError, FILES};
use crate::policy::{PolicyData, PolicyHandle, PolicySource};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A policy set in a directory (`policies/`): one file per name in [`FILES`].
#[derive(Debug, Clone)]
pub struct PolicyDir(pub PathBuf);

impl PolicyDir {
    /// The directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self(dir.into())
    }

    /// Reads and parses the set.
    pub fn load(&self) -> Result<PolicyData, PolicyError> {
        PolicyData::load(self)
    }

    /// A reloadable handle on the set.
    pub fn handle(&self) -> Result<PolicyHandle, PolicyError> {
        PolicyHandle::load(Box::new(self.clone()))
    }
}

impl PolicySource for PolicyDir {
    fn read(&self) -> Result<BTreeMap<String, String>, PolicyError> {
        let mut files = BTreeMap::new();
        for name in FILES {
            let p = self.0.join(name);
            let text = std::fs::read_to_string(&p).map_err(|e| PolicyError {
                file: p.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            })?;
            files.insert(name.to_string(), text);
        }
        Ok(files)
    }

    fn location(&self, file: &str) -> String {
        self.0.join(file).display().to_string()
    }
}
