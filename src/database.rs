//! `[database]` in `vault.toml`: the PostgreSQL database that service replicas share (nonces,
//! releases, licence counters, withdrawals and the ledger's sequence; [`crate::postgres`]).
//! Absent, the service keeps that state in its own process and the ledger in local segment
//! files, as on one machine. The environment variable `WEIGHTVAULT_DATABASE` overrides it.
//!
//! It must never print a password: [`DatabaseSection`]'s `Debug` hides the URL's.

use serde::{Deserialize, Serialize};

/// The environment variable that overrides `[database] url`.
pub const DATABASE_ENV: &str = "WEIGHTVAULT_DATABASE";

/// `[database]` in `vault.toml`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `postgres://user[:password]@host[:port]/database[?options]` (the libpq URL form).
    pub url: String,
    /// Connections each replica keeps open at most (default 16).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    16
}

impl DatabaseSection {
    /// A section with the default pool size.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseSection {
            url: url.into(),
            pool_size: default_pool_size(),
        }
    }

    /// The database to use: `WEIGHTVAULT_DATABASE` when set and not empty, else the vault's
    /// `[database]` section, else none (in-process state, local ledger).
    pub fn resolve(configured: Option<&DatabaseSection>) -> Option<DatabaseSection> {
        Self::resolve_from(configured, std::env::var(DATABASE_ENV).ok())
    }

    fn resolve_from(
        configured: Option<&DatabaseSection>,
        env: Option<String>,
    ) -> Option<DatabaseSection> {
        match env.filter(|u| !u.trim().is_empty()) {
            Some(url) => Some(DatabaseSection {
                url,
                pool_size: configured.map_or_else(default_pool_size, |c| c.pool_size),
            }),
            None => configured.cloned(),
        }
    }

    /// The URL with any password replaced by `***` (for logs and errors).
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// `url` with the password of its user-info part replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSection")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_section_and_absence_means_in_process() {
        let file = DatabaseSection {
            url: "postgres://vault@db1/wv".into(),
            pool_size: 4,
        };
        let env = |s: &str| Some(s.to_string());
        type Row<'a> = (
            Option<&'a DatabaseSection>,
            Option<String>,
            Option<(&'a str, usize)>,
        );
        let rows: &[Row] = &[
            (None, None, None),
            (None, env(""), None),
            (None, env("  "), None),
            (Some(&file), None, Some(("postgres://vault@db1/wv", 4))),
            (Some(&file), env(""), Some(("postgres://vault@db1/wv", 4))),
            (
                Some(&file),
                env("postgres://x@db2/wv"),
                Some(("postgres://x@db2/wv", 4)),
            ),
            (
                None,
                env("postgres://x@db2/wv"),
                Some(("postgres://x@db2/wv", 16)),
            ),
        ];
        for (conf, e, want) in rows {
            let got = DatabaseSection::resolve_from(*conf, e.clone());
            assert_eq!(
                got.as_ref().map(|d| (d.url.as_str(), d.pool_size)),
                *want,
                "{conf:?} {e:?}"
            );
        }
    }

    #[test]
    fn a_password_never_shows() {
        let rows = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u:p%40ss@h/db?x=1", "postgres://u:***@h/db?x=1"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("host=h user=u", "host=h user=u"),
        ];
        for (url, want) in rows {
            assert_eq!(redact(url), want);
            let d = format!("{:?}", DatabaseSection::new(url));
            assert!(!d.contains("secret") && !d.contains("p%40ss"), "{d}");
        }
        let toml: DatabaseSection = toml::from_str("url = \"postgres://a@b/c\"").unwrap();
        assert_eq!(toml, DatabaseSection::new("postgres://a@b/c"));
        assert!(toml::from_str::<DatabaseSection>("url = \"x\"\nuser = \"y\"").is_err());
    }
}
