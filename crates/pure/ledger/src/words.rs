//! The typed words of a ledger record: its kind, the kind of requester, its outcome, the
//! authority a release relied on, and the key events and withdrawals its `shards` field
//! carries for the records that are not about shards. Each serialises to exactly the string a
//! record has always held, so every ledger written before these types verifies unchanged
//! (`tests/compat.rs`); a word this build does not know (a newer writer's) is kept as written
//! (`Other`), so its record still parses and re-serialises to the same canonical bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v,)*
            /// A word this build does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The word as the record holds it.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$v => $s,)*
                    $name::Other(s) => s,
                }
            }

            /// The word read from a record.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($s => $name::$v,)*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::parse(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&String::deserialize(d)?))
            }
        }
    };
}

words! {
    /// What a record records.
    Kind {
        /// The release service's decision on a request.
        ReleaseDecision = "release-decision",
        /// How one stream of a release ended.
        StreamEnd = "stream-end",
        /// An operator's `open`, before any plaintext.
        OperatorOpen = "operator-open",
        /// How an operator's `open` ended.
        OpenEnd = "open-end",
        /// A policy reload of the service.
        PolicyReload = "policy-reload",
        /// Releases a policy reload withdrew, beyond what its own record lists (the
        /// `policy-reload` follows its parts).
        Withdrawal = "withdrawal",
        /// A revision sealed.
        Seal = "seal",
        /// A revision removed.
        Remove = "remove",
        /// A revision crypto-shredded.
        Shred = "shred",
        /// A new KEK version made in the HSM.
        KekRotate = "kek-rotate",
        /// A KEK version destroyed.
        KekRetire = "kek-retire",
        /// Data keys moved to the newest KEK version.
        Rewrap = "rewrap",
        /// A compliance officer's decision on a release held for review (`follows` the held
        /// decision).
        Review = "review",
    }
}

words! {
    /// Who asked.
    RequesterKind {
        /// A person (a clearance and nationalities apply).
        Person = "person",
        /// A workload (a serving fleet's service identity).
        Workload = "workload",
        /// An operator of the vault (the CLI) or the service itself.
        Operator = "operator",
    }
}

words! {
    /// How it came out.
    Outcome {
        /// A release allowed.
        Allowed = "allowed",
        /// A release denied.
        Denied = "denied",
        /// A release held for a compliance officer (a review).
        Held = "held",
        /// A held release approved by a compliance officer.
        Approved = "approved",
        /// A stream or an open that finished.
        Completed = "completed",
        /// A stream that ended short of its length.
        CutShort = "cut-short",
        /// An open begun.
        Started = "started",
        /// An open that failed.
        Failed = "failed",
        /// An open interrupted (a signal, or the process died).
        Interrupted = "interrupted",
        /// A policy reload that took effect.
        Applied = "applied",
        /// A policy reload refused (the old policy stays), or a held release rejected by a
        /// compliance officer.
        Rejected = "rejected",
        /// A revision sealed.
        Sealed = "sealed",
        /// A revision removed.
        Removed = "removed",
        /// A revision shredded.
        Shredded = "shredded",
        /// A KEK version made.
        Created = "created",
        /// A KEK version destroyed.
        Destroyed = "destroyed",
        /// Data keys rewrapped.
        Rewrapped = "rewrapped",
    }
}

/// What an allowed release relied on: `not-controlled`, `licence-exception:NAME`,
/// `licence:ID`, `veu:ID` or `not-enforced:READING`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordAuthority {
    /// The model is not controlled.
    NotControlled,
    /// A licence exception, by name.
    LicenceException(String),
    /// A licence, by id.
    Licence(String),
    /// A Validated End User authorisation, by id.
    Veu(String),
    /// 4E091 licensing not applied under the reading named.
    NotEnforced(String),
    /// A form this build does not know, kept as written.
    Other(String),
}

impl RecordAuthority {
    /// The form the record holds.
    pub fn to_wire(&self) -> String {
        match self {
            RecordAuthority::NotControlled => "not-controlled".into(),
            RecordAuthority::LicenceException(n) => format!("licence-exception:{n}"),
            RecordAuthority::Licence(id) => format!("licence:{id}"),
            RecordAuthority::Veu(id) => format!("veu:{id}"),
            RecordAuthority::NotEnforced(r) => format!("not-enforced:{r}"),
            RecordAuthority::Other(s) => s.clone(),
        }
    }

    /// Reads the form a record holds.
    pub fn parse(s: &str) -> Self {
        if s == "not-controlled" {
            RecordAuthority::NotControlled
        } else if let Some(n) = s.strip_prefix("licence-exception:") {
            RecordAuthority::LicenceException(n.into())
        } else if let Some(id) = s.strip_prefix("licence:") {
            RecordAuthority::Licence(id.into())
        } else if let Some(id) = s.strip_prefix("veu:") {
            RecordAuthority::Veu(id.into())
        } else if let Some(r) = s.strip_prefix("not-enforced:") {
            RecordAuthority::NotEnforced(r.into())
        } else {
            RecordAuthority::Other(s.into())
        }
    }

    /// The licence id, when it is a licence.
    pub fn licence(&self) -> Option<&str> {
        match self {
            RecordAuthority::Licence(id) => Some(id),
            _ => None,
        }
    }
}

impl From<&str> for RecordAuthority {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl Serialize for RecordAuthority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for RecordAuthority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// A key event, as `kek-rotate`, `kek-retire` and `rewrap` records carry them in `shards`:
/// `kek:LABEL.vN` (the KEK version made, destroyed, or rewrapped to) and `from:vN:M` (M files
/// moved from version N).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyEvent {
    /// A KEK version.
    Kek {
        /// The KEK's label in the HSM.
        label: String,
        /// Its version.
        version: u32,
    },
    /// Files rewrapped away from a version.
    From {
        /// The old version.
        version: u32,
        /// How many files.
        files: u64,
    },
}

impl KeyEvent {
    /// The form the record holds.
    pub fn to_wire(&self) -> String {
        match self {
            KeyEvent::Kek { label, version } => format!("kek:{label}.v{version}"),
            KeyEvent::From { version, files } => format!("from:v{version}:{files}"),
        }
    }

    /// Reads the form a record holds; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(rest) = s.strip_prefix("kek:") {
            let (label, v) = rest.rsplit_once(".v")?;
            return Some(KeyEvent::Kek {
                label: label.into(),
                version: v.parse().ok()?,
            });
        }
        let (v, n) = s.strip_prefix("from:v")?.split_once(':')?;
        Some(KeyEvent::From {
            version: v.parse().ok()?,
            files: n.parse().ok()?,
        })
    }
}

/// A withdrawal, as a `policy-reload` record carries it in `shards`: `withdrawn:N`, the ledger
/// index of the release decision it withdrew.
pub fn withdrawal_to_wire(index: u64) -> String {
    format!("withdrawn:{index}")
}

/// Reads a `withdrawn:N`.
pub fn parse_withdrawal(s: &str) -> Option<u64> {
    s.strip_prefix("withdrawn:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_as_written_known_or_not() {
        for w in [
            "release-decision",
            "stream-end",
            "operator-open",
            "open-end",
            "policy-reload",
            "seal",
            "remove",
            "shred",
            "kek-rotate",
            "kek-retire",
            "rewrap",
            "from-the-future",
        ] {
            let k = Kind::parse(w);
            assert_eq!(k.as_str(), w);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{w}\""));
            assert_eq!(
                serde_json::from_str::<Kind>(&format!("\"{w}\"")).unwrap(),
                k
            );
        }
        assert_eq!(
            Kind::parse("from-the-future"),
            Kind::Other("from-the-future".into())
        );
        assert_eq!(Outcome::parse("cut-short"), Outcome::CutShort);
        assert_eq!(RequesterKind::parse("operator"), RequesterKind::Operator);
        for a in [
            "not-controlled",
            "licence-exception:TSU",
            "licence:D-1",
            "odd",
        ] {
            assert_eq!(RecordAuthority::parse(a).to_wire(), a);
        }
        assert_eq!(RecordAuthority::parse("licence:D-1").licence(), Some("D-1"));
        assert_eq!(
            RecordAuthority::parse("licence-exception:x").licence(),
            None
        );
    }

    #[test]
    fn key_events_and_withdrawals_read_back_as_written() {
        for s in ["kek:weightvault-kek.v3", "kek:a.v.b.v12", "from:v2:13"] {
            assert_eq!(KeyEvent::parse(s).unwrap().to_wire(), s);
        }
        assert_eq!(
            KeyEvent::parse("kek:weightvault-kek.v3"),
            Some(KeyEvent::Kek {
                label: "weightvault-kek".into(),
                version: 3
            })
        );
        for bad in ["model.safetensors", "kek:nolabel", "from:v2", "from:vx:1"] {
            assert_eq!(KeyEvent::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_withdrawal(&withdrawal_to_wire(17)), Some(17));
        assert_eq!(parse_withdrawal("withdrawn:x"), None);
    }
}
