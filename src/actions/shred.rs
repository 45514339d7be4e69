//! Crypto-shredding a revision, recorded: the `shred` record is appended to the ledger first
//! (not spooled: the shred needs the ledger itself), and nothing is destroyed when it cannot
//! be.

use super::operator_record;
use crate::hsm::Pkcs11KeyWrap;
use crate::ledger::words::{Kind, Outcome};
use crate::store::{RevisionRef, ShredReport, StoreError, Vault};
use anyhow::Context;

impl Vault {
    /// Shreds `r` (see [`Vault::shred`]) as `operator`'s action, its `shred` record of every
    /// sealed file appended before anything is destroyed. The report's `still_open` must be
    /// empty; the caller says so when it is not.
    pub fn shred_recorded(
        &self,
        kw: &Pkcs11KeyWrap,
        r: &RevisionRef,
        operator: &str,
    ) -> Result<ShredReport, StoreError> {
        self.shred(kw, r, |label, files| {
            let (ledger, _) = self
                .ledger()
                .context("opening the ledger (nothing was destroyed)")?;
            let (model, rev) = label.split_once('@').expect("MODEL@REV");
            ledger
                .append(&operator_record(
                    Kind::Shred,
                    operator,
                    model,
                    Some(rev),
                    files.to_vec(),
                    Outcome::Shredded,
                ))
                .context("recording the shred in the ledger (nothing was destroyed)")?;
            Ok(())
        })
    }
}
