//! The names a vault accepts for models and revisions: they become directory names and ledger
//! fields, so they are checked wherever they enter (the CLI, the release service).

/// A model or revision name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} '{name}' is not allowed: use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'{}", if *what == "model name" { " (or ORG/NAME, Hugging Face style: two such parts, without '--')" } else { "" })]
pub struct NameError {
    /// What the name was for (`model name`, `revision`).
    pub what: &'static str,
    /// The name as given.
    pub name: String,
}

/// Checks a model name: a name as [`check_name`] accepts, or `ORG/NAME` (Hugging Face style)
/// of two such parts; no part holds `--`, which stands for the `/` in the model's directory
/// and object names ([`model_dir`]).
pub fn check_model_name(s: &str) -> Result<(), NameError> {
    let bad = || NameError {
        what: "model name",
        name: s.to_string(),
    };
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 2 || s.len() > 128 || s.contains("--") {
        return Err(bad());
    }
    for p in parts {
        check_name("model name", p).map_err(|_| bad())?;
    }
    Ok(())
}

/// The directory (and object key) name of a model: `ORG/NAME` becomes `ORG--NAME`, as in the
/// Hugging Face cache; a plain name is itself.
pub fn model_dir(model: &str) -> std::borrow::Cow<'_, str> {
    if model.contains('/') {
        model.replace('/', "--").into()
    } else {
        model.into()
    }
}

/// The model a directory name stands for (the inverse of [`model_dir`]).
pub fn model_of_dir(dir: &str) -> String {
    dir.replacen("--", "/", 1)
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
    fn models_may_be_org_slash_name_stored_as_org_dash_dash_name() {
        for good in [
            "acme-frontier",
            "sentence-transformers/all-MiniLM-L6-v2",
            "a/b",
        ] {
            assert!(check_model_name(good).is_ok(), "{good:?}");
            assert_eq!(model_of_dir(&model_dir(good)), good);
        }
        assert_eq!(model_dir("org/name"), "org--name");
        for bad in [
            "a/b/c", "/a", "a/", "a//b", "../a", "a/..", "a/-x", "a--b", "org/a--b", ".", "",
        ] {
            let e = check_model_name(bad).unwrap_err();
            assert!(e.to_string().contains("ORG/NAME"), "{bad:?}: {e}");
        }
        assert!(!check_name("revision", "r1/x")
            .unwrap_err()
            .to_string()
            .contains("ORG/NAME"));
    }

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
