//! `weightvault review list|show|approve|reject`: a compliance officer's side of the releases
//! the policy held for review. Reads the reviews from the vault's ledger (the shared
//! database's, with `[database]`); an approval or a rejection is itself a ledger record (who,
//! when, why), which the running service counts within a second (it ingests the ledger's
//! spool; every replica on a shared database reads it before its next decision) and which
//! lets the same requester, model, host country and check results through for `[review]
//! approval_hours` (rules.toml), and nothing else.

use crate::cli::operator;
use crate::cli::{policy_dir, Globals, ReviewCommand};
use crate::ledger::record::Record;
use crate::ledger::review::{Review, Reviews};
use anyhow::{bail, Context, Result};

fn reviews(g: &Globals) -> Result<(crate::store::Vault, Reviews)> {
    let v = g.open_vault()?;
    let mut rv = Reviews::default();
    v.visit_ledger(0, &mut |i, e| {
        rv.add(i, &Record::parse(e)?);
        Ok(())
    })
    .context("reading the ledger")?;
    // Decisions a running service has not appended yet (it ingests the spool every second).
    if !v.has_shared_ledger() {
        for r in crate::ledger::spool::pending(&v.ledger_dir())? {
            rv.add(IN_SPOOL, &r);
        }
    }
    Ok((v, rv))
}

/// The index given to a decision still in the ledger's spool (appended within a second by
/// the running service).
const IN_SPOOL: u64 = u64::MAX;

fn entry(i: u64) -> String {
    if i == IN_SPOOL {
        "in the ledger's spool".into()
    } else {
        format!("ledger entry {i}")
    }
}

fn state(r: &Review) -> String {
    match &r.decision {
        None => "pending".into(),
        Some((i, d)) => format!(
            "{} by {} at {} ({}): {}",
            d.outcome,
            d.requester,
            d.time,
            entry(*i),
            d.reason.as_deref().unwrap_or("")
        ),
    }
}

fn summary(r: &Review) -> serde_json::Value {
    let h = &r.held;
    serde_json::json!({
        "id": r.id,
        "time": h.time,
        "requester": h.requester,
        "organisation": h.organisation,
        "model": h.model,
        "revision": h.revision,
        "host_id": h.host_id,
        "host_country": h.host_country,
        "held_by": h.failed_checks,
        "state": match &r.decision {
            None => "pending".to_string(),
            Some((_, d)) => d.outcome.to_string(),
        },
        "decided_by": r.decision.as_ref().map(|(_, d)| d.requester.clone()),
        "decided_at": r.decision.as_ref().map(|(_, d)| d.time.clone()),
        "decision_reason": r.decision.as_ref().and_then(|(_, d)| d.reason.clone()),
        "decision_entry": r.decision.as_ref().and_then(|(i, _)| (*i != IN_SPOOL).then_some(*i)),
    })
}

/// Runs `review ...` for the vault `g` names.
pub(in crate::cli) fn run(g: &Globals, cmd: ReviewCommand) -> Result<()> {
    match cmd {
        ReviewCommand::List { all } => {
            let (_, rv) = reviews(g)?;
            let shown: Vec<&Review> = rv
                .by_id
                .values()
                .filter(|r| all || r.decision.is_none())
                .collect();
            g.report(
                serde_json::json!({
                    "reviews": shown.iter().map(|r| summary(r)).collect::<Vec<_>>()
                }),
                || {
                    if shown.is_empty() {
                        return if all {
                            "no release was ever held for review".into()
                        } else {
                            "no review is pending (--all lists decided ones too)".into()
                        };
                    }
                    let mut out = format!(
                        "{:<6} {:<20} {:<34} {:<22} {:<4} {:<22} STATE",
                        "ID", "TIME", "REQUESTER", "MODEL", "HOST", "HELD BY"
                    );
                    for r in shown {
                        let h = &r.held;
                        out.push_str(&format!(
                            "\n{:<6} {:<20} {:<34} {:<22} {:<4} {:<22} {}",
                            r.id,
                            h.time,
                            h.requester,
                            h.model,
                            h.host_country.as_deref().unwrap_or("-"),
                            h.failed_checks.join(","),
                            match &r.decision {
                                None => "pending".to_string(),
                                Some((_, d)) => format!("{} by {}", d.outcome, d.requester),
                            }
                        ));
                    }
                    out
                },
            )?;
        }
        ReviewCommand::Show { id } => {
            let (_, rv) = reviews(g)?;
            let r = find(&rv, id)?;
            let h = &r.held;
            let why = h.reason.as_deref().unwrap_or("");
            let checks: Vec<&str> = why
                .split_once(": ")
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split("; ")
                .collect();
            let mut j = summary(r);
            j["reasons"] = serde_json::json!(checks);
            j["review_key"] = serde_json::json!(r.key);
            g.report(j, || {
                format!(
                    "review {id}: held at {} (ledger entry {id})\n  requester     {} ({})\n  model         {}@{}\n  host          {} in {} (attested by {})\n  source        {}\n  held by       {}\n{}\n  review key    {}\n  state         {}",
                    h.time,
                    h.requester,
                    h.organisation.as_deref().unwrap_or("-"),
                    h.model,
                    h.revision.as_deref().unwrap_or("-"),
                    h.host_id.as_deref().unwrap_or("-"),
                    h.host_country.as_deref().unwrap_or("-"),
                    h.attester.as_deref().unwrap_or("-"),
                    h.source.as_deref().unwrap_or("-"),
                    h.failed_checks.join(", "),
                    checks
                        .iter()
                        .map(|c| format!("    {c}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    r.key,
                    state(r)
                )
            })?;
        }
        ReviewCommand::Approve {
            id,
            reason,
            policies,
        }
        | ReviewCommand::Reject {
            id,
            reason,
            policies,
        } if reason.trim().is_empty() => {
            let _ = (id, policies);
            bail!("--reason must say why (it goes in the ledger with who decided and when)")
        }
        ReviewCommand::Approve {
            id,
            reason,
            policies,
        } => decide(g, id, &reason, true, policies)?,
        ReviewCommand::Reject {
            id,
            reason,
            policies,
        } => decide(g, id, &reason, false, policies)?,
    }
    Ok(())
}

fn find(rv: &Reviews, id: u64) -> Result<&Review> {
    rv.by_id.get(&id).with_context(|| {
        let pending: Vec<String> = rv.pending().map(|r| r.id.to_string()).collect();
        format!(
            "ledger entry {id} is not a release held for review ({})",
            if pending.is_empty() {
                "none is pending".to_string()
            } else {
                format!("pending: {}", pending.join(", "))
            }
        )
    })
}

fn decide(
    g: &Globals,
    id: u64,
    reason: &str,
    approve: bool,
    policies: Option<std::path::PathBuf>,
) -> Result<()> {
    let (v, rv) = reviews(g)?;
    let r = find(&rv, id)?;
    if let Some((i, d)) = &r.decision {
        bail!(
            "review {id} was already {} by {} at {} ({}); a held request asked again is a new review",
            d.outcome,
            d.requester,
            d.time,
            entry(*i)
        );
    }
    // How long an approval lasts is the policy's (the service applies its own in force).
    let hours = if approve {
        let dir = policy_dir(policies);
        Some(
            crate::local::PolicyDir::new(&dir)
                .load()
                .with_context(|| format!("reading the policy in {}", dir.display()))?
                .rules
                .approval_hours,
        )
    } else {
        None
    };
    let now = crate::store::now_rfc3339();
    let h = &r.held;
    let mut rec = Record::action(
        &now,
        "review",
        &operator::identity(),
        &h.model,
        h.revision.as_deref(),
        vec![],
        if approve { "approved" } else { "rejected" },
    );
    rec.host_country = h.host_country.clone();
    rec.follows = Some(id);
    rec.reason = Some(reason.to_string());
    // Where the service reads it: the shared database's ledger when the vault has one (every
    // replica reads the approvals from it before deciding), else the vault's own.
    let recorded = match v.shared_ledger() {
        Some(l) => {
            let l = l.context("connecting to the shared database")?;
            crate::ledger::spool::Recorded::Appended(
                crate::ledger::backend::LedgerBackend::append(&l, &rec)
                    .context("recording the decision in the shared database's ledger")?,
            )
        }
        None => v.record(&rec)?,
    };
    let verb = if approve { "approved" } else { "rejected" };
    g.report(
        serde_json::json!({
            "review": id,
            "decision": verb,
            "by": rec.requester,
            "at": now,
            "approval_hours": hours,
            "recorded": crate::cli::ui::recorded_json(&recorded),
        }),
        || {
            format!(
                "review {id} {verb} by {} at {now} ({recorded}){}",
                rec.requester,
                match hours {
                    Some(h) => format!(
                        "; {} may fetch {} to a host in {} with the same check results for {h} hours",
                        r.held.requester,
                        r.held.model,
                        r.held.host_country.as_deref().unwrap_or("-")
                    ),
                    None => String::new(),
                }
            )
        },
    )?;
    Ok(())
}
