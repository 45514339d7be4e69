//! Who the operator is, for the ledger: the process's real uid, never an environment
//! variable the caller sets. Under `sudo` (real uid 0 and `SUDO_UID` set), the invoking user
//! too: root can set `SUDO_UID` to anything, but root can also write the ledger directory, so
//! nothing is lost by believing it there, and nobody else's `SUDO_UID` is read.

/// The operator's identity: `alice`, `root`, or `root (sudo from alice)`; a uid with no user
/// name is `uid 1234`.
pub fn identity() -> String {
    identity_of(
        rustix::process::getuid().as_raw(),
        std::env::var("SUDO_UID").ok().as_deref(),
        &|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        },
    )
}

/// [`identity`] from its inputs: the real uid, `SUDO_UID` if set, and a uid-to-name lookup.
pub fn identity_of(
    real_uid: u32,
    sudo_uid: Option<&str>,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> String {
    let name = |uid: u32| name_of(uid).unwrap_or_else(|| format!("uid {uid}"));
    let me = name(real_uid);
    if real_uid != 0 {
        return me;
    }
    match sudo_uid.and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(u) if u != 0 => format!("{me} (sudo from {})", name(u)),
        _ => me,
    }
}

#[cfg(test)]
mod tests {
    use super::identity_of;

    fn names(uid: u32) -> Option<String> {
        match uid {
            0 => Some("root".into()),
            1000 => Some("alice".into()),
            _ => None,
        }
    }

    #[test]
    fn identities() {
        let rows: &[(u32, Option<&str>, &str)] = &[
            (1000, None, "alice"),
            // Only root's SUDO_UID is believed.
            (1000, Some("0"), "alice"),
            (1000, Some("1001"), "alice"),
            (0, None, "root"),
            (0, Some("1000"), "root (sudo from alice)"),
            (0, Some("4242"), "root (sudo from uid 4242)"),
            (0, Some("0"), "root"),
            (0, Some("not a number"), "root"),
            (0, Some(""), "root"),
            (4242, None, "uid 4242"),
        ];
        for (uid, sudo, want) in rows {
            assert_eq!(identity_of(*uid, *sudo, &names), *want, "{uid} {sudo:?}");
        }
    }
}
