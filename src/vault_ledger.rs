//! A vault's ledger: where the store (the vault's directory and configuration) meets the
//! ledger's local log. Neither `store` nor `ledger` imports the other; this module uses both.

use crate::ledger;
use crate::store::Vault;

impl Vault {
    /// Opens the vault's ledger (`<vault>/ledger`).
    pub fn ledger(&self) -> Result<(ledger::Ledger, ledger::log::Recovery), ledger::LedgerError> {
        self.ledger_visiting(&mut |_, _| Ok(()))
    }

    /// [`Vault::ledger`], calling `visit` with every entry (index, record bytes): those read
    /// while opening, then those appended from the spool.
    pub fn ledger_visiting(
        &self,
        visit: &mut ledger::log::Visit<'_>,
    ) -> Result<(ledger::Ledger, ledger::log::Recovery), ledger::LedgerError> {
        self.open_ledger(visit).map(|(l, r, _)| (l, r))
    }

    /// Opens the ledger to record what killed commands left unrecorded (their unfinished
    /// opens): returns how many, or `None` when a running service holds the ledger (it
    /// recorded them when it started).
    pub fn settle_ledger(&self) -> Result<Option<usize>, ledger::LedgerError> {
        match self.open_ledger(&mut |_, _| Ok(())) {
            Ok((_, _, n)) => Ok(Some(n)),
            Err(ledger::LedgerError::Log(ledger::log::LogError::Busy(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_ledger(
        &self,
        visit: &mut ledger::log::Visit<'_>,
    ) -> Result<(ledger::Ledger, ledger::log::Recovery, usize), ledger::LedgerError> {
        let mut opens = ledger::record::UnfinishedOpens::default();
        let (l, rec) = ledger::Ledger::open_visiting(
            &self.ledger_dir(),
            &self.config().ledger.origin,
            &mut |i, e| {
                opens.add_entry(i, e);
                visit(i, e)
            },
        )?;
        // Records left while another process held the ledger go in first.
        let mut visit_record = |i: u64, r: &ledger::record::Record| {
            visit(i, &r.canonical())
                .map_err(|why| ledger::LedgerError::Verify(format!("entry {i}: {why}")))
        };
        for (i, r) in l.ingest_spool()? {
            opens.add_entry(i, &r.canonical());
            visit_record(i, &r)?;
        }
        // An open that started but never ended died without running code (SIGKILL, a crash):
        // whoever holds the ledger next says so, since the open held it while it ran.
        let ends = opens.interrupted_ends(&crate::store::now_rfc3339());
        for end in &ends {
            let i = l.append(end)?;
            visit_record(i, end)?;
        }
        Ok((l, rec, ends.len()))
    }

    /// Records an operator's action: appended to the ledger, or left in its spool for the
    /// running service that holds it (see [`ledger::spool`]).
    pub fn record(
        &self,
        r: &ledger::record::Record,
    ) -> Result<ledger::spool::Recorded, ledger::LedgerError> {
        ledger::spool::record(&self.ledger_dir(), &self.config().ledger.origin, r)
    }
}

impl Vault {
    /// The shared database's ledger, when the vault has one (`[database]`, or
    /// `WEIGHTVAULT_DATABASE`): where the service's records are instead of the vault's own.
    pub fn shared_ledger(
        &self,
    ) -> Option<Result<crate::postgres::PgLedger, crate::postgres::PgError>> {
        let s = crate::database::DatabaseSection::resolve(self.config().database.as_ref())?;
        Some(
            crate::postgres::Database::connect(&s)
                .map(|d| d.ledger().with_origin(&self.config().ledger.origin)),
        )
    }

    /// Whether the vault's ledger is a shared database's (`[database]`, or
    /// `WEIGHTVAULT_DATABASE`), without connecting to it.
    pub fn has_shared_ledger(&self) -> bool {
        crate::database::DatabaseSection::resolve(self.config().database.as_ref()).is_some()
    }

    /// A reader of the vault's ledger: the shared database's when the vault has one, else
    /// its own (which a running service may hold: reading needs no lock).
    pub fn ledger_reader(&self) -> Result<LedgerReader, ledger::LedgerError> {
        Ok(match self.shared_ledger() {
            Some(l) => {
                LedgerReader::Shared(l.map_err(|e| ledger::LedgerError::Unavailable(Box::new(e)))?)
            }
            None => LedgerReader::Local(self.ledger_dir()),
        })
    }

    /// Visits every entry of the vault's ledger in order from index `from` (see
    /// [`Vault::ledger_reader`]); returns the number of entries.
    pub fn visit_ledger(
        &self,
        from: u64,
        visit: &mut ledger::log::Visit<'_>,
    ) -> Result<u64, ledger::LedgerError> {
        self.ledger_reader()?.visit(from, visit)
    }

    /// The ledger's tiled publication (`[ledger.tiles]`), if the vault has one.
    pub fn tile_log(&self) -> Option<Result<ledger::tiles::TileLog, crate::store::StoreError>> {
        let t = self.config().ledger.tiles.as_ref()?;
        let (worm, head) = t.buckets(&self.config().store);
        Some(ledger::tiles::TileLog::new(&worm, &head))
    }

    /// Publishes the durable entries of `ledger` (the vault's own, or the shared database's)
    /// as tiles, signed by `signer`: what the published head lacks of them.
    pub fn publish_tiles(
        &self,
        tiles: &ledger::tiles::TileLog,
        ledger: &dyn ledger::backend::LedgerBackend,
        signer: &dyn ledger::LedgerSigner,
    ) -> Result<ledger::tiles::Published, ledger::tiles::TileLogError> {
        let origin = self.config().ledger.origin.clone();
        let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        tiles.publish(&origin, &origin, signer, now, &mut |from, max| {
            ledger.entries(from, max).map_err(|e| {
                ledger::tiles::TileLogError::Store(crate::store::StoreError::BadInput(format!(
                    "reading the ledger from entry {from}: {e}"
                )))
            })
        })
    }
}

/// Where a vault's ledger is read from ([`Vault::ledger_reader`]).
pub enum LedgerReader {
    /// The vault's own ledger directory.
    Local(std::path::PathBuf),
    /// The shared database's.
    Shared(crate::postgres::PgLedger),
}

impl LedgerReader {
    /// The number of entries.
    pub fn entry_count(&self) -> Result<u64, ledger::LedgerError> {
        match self {
            LedgerReader::Local(dir) => ledger::Ledger::entries(dir, &mut |_, _| Ok(())),
            LedgerReader::Shared(l) => Ok(ledger::backend::LedgerBackend::len(l)),
        }
    }

    /// Visits every entry in order from index `from`; returns the number of entries.
    pub fn visit(
        &self,
        from: u64,
        visit: &mut ledger::log::Visit<'_>,
    ) -> Result<u64, ledger::LedgerError> {
        match self {
            LedgerReader::Local(dir) => ledger::Ledger::entries(dir, &mut |i, e| {
                if i >= from {
                    visit(i, e)?;
                }
                Ok(())
            }),
            LedgerReader::Shared(l) => {
                let mut i = from;
                loop {
                    let batch = ledger::backend::LedgerBackend::entries(l, i, 10_000)?;
                    if batch.is_empty() {
                        return self.entry_count();
                    }
                    for e in &batch {
                        visit(i, e).map_err(|w| {
                            ledger::LedgerError::Verify(format!("database ledger entry {i}: {w}"))
                        })?;
                        i += 1;
                    }
                }
            }
        }
    }
}
