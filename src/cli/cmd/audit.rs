//! `weightvault audit ...`: verifies the ledger, signs checkpoints, lists entries and prints
//! and checks proofs for auditors and witnesses.

use crate::cli::{write_out, AuditCommand, Exit, Globals};
use crate::ledger::query::EntryFilter;
use crate::ledger::record::Record;
use crate::ledger::Ledger;
use crate::store::Vault;
use anyhow::{Context, Result};

/// `--since`: RFC 3339, or a date meaning its midnight UTC.
fn parse_since(s: &str) -> Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            anyhow::anyhow!(
                "--since {s:?}: expected an RFC 3339 time (2026-11-22T10:00:00Z) or a date (2026-11-22)"
            )
        })
}

/// `--public-key`: an Ed25519 public key in hex.
fn parse_key(hex_key: &str) -> Result<[u8; 32]> {
    hex::decode(hex_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("--public-key must be 64 hex digits (an Ed25519 public key)")
        })
}

/// `audit verify`, `prove` and `consistency` with `--tiles`: from the buckets and the public
/// key alone (the key from `--public-key`, else the vault's HSM). `None` when `cmd` is not one.
fn on_tiles(
    g: &Globals,
    cmd: &AuditCommand,
    vault: &impl Fn() -> Result<Vault>,
) -> Result<Option<()>> {
    let (t, public_key) = match cmd {
        AuditCommand::Verify { tiles, public_key }
        | AuditCommand::Prove {
            tiles, public_key, ..
        }
        | AuditCommand::Consistency {
            tiles, public_key, ..
        } => (tiles, public_key.as_deref()),
        _ => return Ok(None),
    };
    let cfg = |u: &str| crate::store::bucket::BucketConfig {
        url: u.into(),
        endpoint: None,
        region: None,
        allow_http: false,
        part_size: crate::store::bucket::DEFAULT_PART_SIZE,
        parallel_parts: 1,
        read_ahead: 1,
        credentials: None,
    };
    let log = match (&t.tiles, &t.head) {
        (Some(url), Some(head)) => crate::ledger::tiles::TileLog::new(&cfg(url), &cfg(head))?,
        _ => {
            // A vault on a shared database: its ledger is audited where it is published.
            let v = vault()?;
            if !v.has_shared_ledger() {
                return Ok(None);
            }
            match v.tile_log() {
                Some(l) => l?,
                None => anyhow::bail!(
                    "this vault's ledger is in the shared database ([database]): it is audited where the service publishes it; add [ledger.tiles] to vault.toml (docs/DEPLOY.md), or pass --tiles and --head"
                ),
            }
        }
    };
    let env_public = std::env::var("WEIGHTVAULT_LEDGER_PUBLIC_KEY").ok();
    let (key, key_name) = match public_key.or(env_public.as_deref()) {
        Some(k) => (
            parse_key(k)?,
            t.key_name
                .clone()
                .unwrap_or_else(|| "weightvault.local/ledger".into()),
        ),
        None => {
            let v = vault()?;
            let name = t
                .key_name
                .clone()
                .unwrap_or_else(|| v.config().ledger.origin.clone());
            (v.key_wrap()?.ledger_public_key()?, name)
        }
    };
    match cmd {
        AuditCommand::Verify { .. } => {
            let mut bad = None;
            let (cp, r) = log.audit(&key_name, &key, &mut |i, e| {
                if let Err(w) = Record::parse(e) {
                    bad.get_or_insert(format!("entry {i} is not a canonical record: {w}"));
                }
                Ok(())
            })?;
            if let Some(b) = bad {
                anyhow::bail!("{}: {b}", log.location());
            }
            g.report(
                serde_json::json!({
                    "verified": true,
                    "location": log.location(),
                    "entries": r.entries,
                    "tiles": r.tiles,
                    "bundles": r.bundles,
                    "checkpoint_size": cp.size,
                    "key_name": key_name,
                }),
                || format!(
                    "published ledger verified from {}: {} entries, {} full and partial tiles, {} entry bundles, checkpoint of size {} signed by {key_name}",
                    log.location(),
                    r.entries,
                    r.tiles,
                    r.bundles,
                    cp.size
                ),
            )?;
        }
        AuditCommand::Prove { index, .. } => {
            let p = log.prove(&key_name, &key, *index)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        AuditCommand::Consistency { from, .. } => {
            let p = log.consistency(&key_name, &key, *from)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        _ => unreachable!("matched above"),
    }
    Ok(Some(()))
}

/// Runs an `audit` command; `vault` opens the vault for the commands that need it
/// (`verify-proof` works offline without one).
pub(in crate::cli) fn run(g: &Globals, cmd: AuditCommand) -> Result<()> {
    let vault = || g.open_vault();
    if let AuditCommand::VerifyProof {
        file,
        public_key,
        key_name,
    } = &cmd
    {
        let p: crate::ledger::InclusionProof = serde_json::from_str(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{}: not a proof from `audit prove`", file.display()))?;
        let cp = p.verify(key_name, &parse_key(public_key)?)?;
        g.report(
            serde_json::json!({"index": p.index, "included": true, "checkpoint_size": cp.size, "key_name": key_name}),
            || {
                format!(
                    "entry {} is in the ledger at checkpoint size {} (signed by {key_name})",
                    p.index, cp.size
                )
            },
        )?;
        return Ok(());
    }
    if let Some(done) = on_tiles(g, &cmd, &vault)? {
        return Ok(done);
    }
    let v = vault()?;
    let origin = v.config().ledger.origin.clone();
    match cmd {
        AuditCommand::VerifyProof { .. } => {}
        AuditCommand::Publish => {
            let Some(t) = v.tile_log() else {
                anyhow::bail!("this vault publishes no tiles: add [ledger.tiles] to vault.toml (docs/DEPLOY.md)");
            };
            let t = t?;
            let kw = v.key_wrap()?;
            let p = match v.shared_ledger() {
                // Beside the replicas' integrator: the same tiles, and the checkpoint only
                // replaced at the version read, so either's round is safe.
                Some(l) => v.publish_tiles(&t, &l?, &kw)?,
                None => v.publish_tiles(&t, &v.ledger()?.0, &kw)?,
            };
            g.report(
                serde_json::json!({"location": t.location(), "from": p.from, "size": p.size, "objects": p.objects}),
                || format!(
                    "published the ledger's tiles at {}: {} -> {} entries, {} objects written",
                    t.location(),
                    p.from,
                    p.size,
                    p.objects
                ),
            )?;
        }
        AuditCommand::Verify { public_key, .. } => {
            let key = match public_key {
                Some(k) => parse_key(&k)?,
                None => v.key_wrap()?.ledger_public_key()?,
            };
            let r = Ledger::verify(&v.ledger_dir(), &origin, &key)?;
            g.report(
                serde_json::json!({
                    "verified": true,
                    "entries": r.entries,
                    "closed_segments": r.closed_segments,
                    "checkpoints": r.checkpoints,
                    "latest_size": r.latest_size,
                    "uncovered": r.uncovered,
                }),
                || format!(
                    "ledger verified: {} entries ({} closed segments), {} checkpoints (latest covers {}), {} entries not yet under a checkpoint",
                    r.entries, r.closed_segments, r.checkpoints, r.latest_size, r.uncovered
                ),
            )?;
        }
        AuditCommand::Checkpoint => {
            let kw = v.key_wrap()?;
            if let Some(l) = v.shared_ledger() {
                use crate::ledger::backend::LedgerBackend;
                let note = l?.checkpoint(&origin, &kw)?;
                if g.json {
                    g.report(serde_json::json!({"checkpoint": note}), String::new)?;
                } else {
                    out!("{note}");
                }
                return Ok(());
            }
            let (l, rec) = v.ledger()?;
            if rec.discarded_bytes > 0 {
                eprintln!(
                    "ledger: discarded a torn final write of {} bytes",
                    rec.discarded_bytes
                );
            }
            let note = l.checkpoint(&origin, &kw)?;
            if g.json {
                g.report(serde_json::json!({"checkpoint": note}), String::new)?;
            } else {
                out!("{note}");
            }
        }
        AuditCommand::Show {
            since,
            model,
            requester,
        } => {
            let json = g.json;
            let filter = EntryFilter {
                since: since.as_deref().map(parse_since).transpose()?,
                model,
                requester,
            };
            // A closed standard output ends the listing (and the command) quietly.
            let mut stopped: Option<Exit> = None;
            let listed = v.visit_ledger(0, &mut |i, e| {
                let r = Record::parse(e).map_err(|w| format!("not a canonical record: {w}"))?;
                if !filter.matches(&r)? {
                    return Ok(());
                }
                let written = if json {
                    write_out(format_args!(
                        "{{\"index\":{i},\"record\":{}}}\n",
                        String::from_utf8_lossy(e)
                    ))
                } else {
                    write_out(format_args!(
                        "{i:>6} {} {:<16} {:<32} {}@{} {} {}{}{}\n",
                        r.time,
                        r.kind,
                        r.requester,
                        r.model,
                        r.revision.as_deref().unwrap_or("-"),
                        r.outcome,
                        r.failed_checks.join(","),
                        r.follows
                            .map(|f| format!(" (follows {f})"))
                            .unwrap_or_default(),
                        r.reason
                            .as_deref()
                            .map(|w| format!(" — {w}"))
                            .unwrap_or_default()
                    ))
                };
                if let Err(x) = written {
                    stopped = Some(x);
                    return Err("standard output closed".into());
                }
                Ok(())
            });
            if let Some(x) = stopped {
                return Err(x.into());
            }
            listed?;
        }
        AuditCommand::Consistency { from, .. } => {
            let p = Ledger::prove_consistency(&v.ledger_dir(), from)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        AuditCommand::Prove { index, .. } => {
            let p = Ledger::prove(&v.ledger_dir(), index)?;
            outln!("{}", serde_json::to_string_pretty(&p)?);
        }
        AuditCommand::PublicKey => {
            let key = hex::encode(v.key_wrap()?.ledger_public_key()?);
            g.report(serde_json::json!({"public_key": key}), || key.clone())?;
        }
    }
    Ok(())
}
