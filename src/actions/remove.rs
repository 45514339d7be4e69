//! Taking a revision out of the vault so that its name can be sealed again, recorded: the
//! `remove` record is written first, and nothing is removed when it cannot be.

use super::operator_record;
use crate::ledger::words::{Kind, Outcome};
use crate::store::{RemoveReport, RevisionRef, StoreError, Vault};
use anyhow::Context;

impl Vault {
    /// Removes `r` (see [`Vault::remove`]) as `operator`'s action: a `remove` record of its
    /// sealed files goes to the ledger (or its spool, beside a running service) before
    /// anything is deleted. The data keys are not destroyed (that is
    /// [`Vault::shred_recorded`]).
    pub fn remove_recorded(
        &self,
        r: &RevisionRef,
        operator: &str,
    ) -> Result<RemoveReport, StoreError> {
        self.remove(r, |label, files| {
            let (model, rev) = label.split_once('@').expect("MODEL@REV");
            let rec = operator_record(
                Kind::Remove,
                operator,
                model,
                Some(rev),
                files.to_vec(),
                Outcome::Removed,
            );
            let at = self
                .record(&rec)
                .context("recording the removal in the ledger (nothing was removed)")?;
            Ok(at.to_string())
        })
    }
}
