//! KEK lifecycle events, recorded: a new version made in the HSM (`kek-rotate`), an old one
//! destroyed (`kek-retire`, recorded before it is destroyed) and data keys rewrapped to the
//! newest (`rewrap`). Each record goes to the ledger, or to its spool for the running service
//! that holds it, so these run beside `weightvault serve`.

use super::with_causes;
use crate::hsm::{HsmError, Pkcs11KeyWrap};
use crate::ledger::record::Record;
use crate::ledger::spool::Recorded;
use crate::ledger::words::{KeyEvent, Kind, Outcome};
use crate::ledger::LedgerError;
use crate::store::{RevisionRef, RewrapReport, StoreError, Vault};

/// Why a recorded KEK event failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The HSM did not make the new version.
    #[error("{0}")]
    Rotate(HsmError),
    /// The new version exists but its record was not written.
    #[error("KEK {label}.v{version} was created but not recorded")]
    RotateNotRecorded {
        /// The KEK label.
        label: String,
        /// The new version.
        version: u32,
        /// Why.
        #[source]
        source: LedgerError,
    },
    /// The vault or the HSM refused (for a retire: nothing was destroyed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data keys were rewrapped but the rewrap was not recorded.
    #[error("the data keys were rewrapped but the rewrap was not recorded")]
    RewrapNotRecorded(#[source] LedgerError),
}

/// Records a key lifecycle event `kind` (`kek-rotate`, `kek-retire`, `rewrap`) as
/// `operator`'s, its `events` in their written forms (`model` empty unless it concerns one,
/// `revision` too): appended to the ledger, or spooled for the running service that holds it.
pub fn record_key_event(
    v: &Vault,
    operator: &str,
    kind: Kind,
    what: (&str, Option<&str>),
    events: &[KeyEvent],
    outcome: Outcome,
) -> Result<Recorded, LedgerError> {
    v.record(&Record::key_event(
        &crate::store::now_rfc3339(),
        kind,
        operator,
        what,
        events,
        outcome,
    ))
}

/// The event of KEK version `version` of `kw`'s KEK.
fn kek(kw: &Pkcs11KeyWrap, version: u32) -> KeyEvent {
    KeyEvent::Kek {
        label: kw.kek_label().to_string(),
        version,
    }
}

impl Vault {
    /// Makes the next KEK version inside the HSM and records it (`kek:LABEL.vN`); returns the
    /// version and where its record went.
    pub fn rotate_kek_recorded(
        &self,
        kw: &Pkcs11KeyWrap,
        operator: &str,
    ) -> Result<(u32, Recorded), KekError> {
        let n = kw.rotate().map_err(KekError::Rotate)?;
        let at = record_key_event(
            self,
            operator,
            Kind::KekRotate,
            ("", None),
            &[kek(kw, n)],
            Outcome::Created,
        )
        .map_err(|source| KekError::RotateNotRecorded {
            label: kw.kek_label().to_string(),
            version: n,
            source,
        })?;
        Ok((n, at))
    }

    /// Retires KEK `version` (see [`Vault::retire_kek`]), recorded once the retire is decided
    /// and before anything is destroyed; a record that cannot be written stops it.
    pub fn retire_kek_recorded(
        &self,
        kw: &Pkcs11KeyWrap,
        version: u32,
        operator: &str,
    ) -> Result<Recorded, KekError> {
        let mut at = None;
        self.retire_kek(kw, version, || {
            let r = record_key_event(
                self,
                operator,
                Kind::KekRetire,
                ("", None),
                &[kek(kw, version)],
                Outcome::Destroyed,
            );
            at = Some(r.map_err(|e| format!("{} (nothing was destroyed)", with_causes(&e)))?);
            Ok(())
        })?;
        Ok(at.expect("recorded"))
    }

    /// Rewraps the data keys of `only` (or of the whole vault and its watermark key) to the
    /// newest KEK version (see [`Vault::rewrap`]), then records the rewrap: the version
    /// (`kek:LABEL.vN`) and how many objects left each older one (`from:vV:COUNT`).
    pub fn rewrap_recorded(
        &self,
        kw: &Pkcs11KeyWrap,
        only: Option<&RevisionRef>,
        progress: &dyn Fn(usize, usize),
        operator: &str,
    ) -> Result<(RewrapReport, Recorded), KekError> {
        let rep = self.rewrap(kw, only, progress)?;
        let mut events = vec![kek(kw, rep.newest)];
        events.extend(
            rep.rewrapped_from
                .iter()
                .map(|(&version, &files)| KeyEvent::From { version, files }),
        );
        let what = match only {
            Some(w) => (w.model.as_str(), w.revision.as_deref()),
            None => ("", None),
        };
        let at = record_key_event(
            self,
            operator,
            Kind::Rewrap,
            what,
            &events,
            Outcome::Rewrapped,
        )
        .map_err(KekError::RewrapNotRecorded)?;
        Ok((rep, at))
    }
}
