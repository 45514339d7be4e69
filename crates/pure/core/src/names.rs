//! The names a vault accepts for models and revisions: they become directory names and ledger
//! fields, so they are checked wherever they enter (the CLI, the release service).

/// A model or revision name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} '{name}' is not allowed: use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'")]
pub struct NameError {
    /// What the name was for (`model name`, `revision`).
    pub what: &'static str,
    /// The name as given.
    pub name: String,
}

/// Checks a model or revision name: 1-128 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_name(what: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !s.starts_with('.')
        && !s.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_paths_or_options_are_refused() {
        for bad in ["", ".", "..", "-x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_name("model name", bad).is_err(), "{bad:?}");
        }
        for good in ["acme-frontier", "r1", "v2.0_rc", &"x".repeat(128)] {
            assert!(check_name("revision", good).is_ok(), "{good:?}");
        }
    }
}
