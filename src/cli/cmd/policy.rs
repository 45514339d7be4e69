//! `weightvault policy reload|check|lint`: makes the running service reload its policy,
//! decides a what-if release and prints every check, or validates the policy files.

use crate::actions::reload::{reload, PolicyReload};
use crate::cli::ui::verdict;
use crate::cli::{policy_dir, Exit, Globals, PolicyCommand};
use crate::dry_run::{licence_use, newest_sealed, WhatIf};
use crate::policy::NoGeo;
use crate::store::Vault;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Runs `policy ...` for the vault `g` names.
pub(in crate::cli) fn run(g: &Globals, cmd: PolicyCommand) -> Result<()> {
    let vault_dir = g.dir.as_path();
    let json = g.json;
    match cmd {
        PolicyCommand::Reload { wait } => {
            let v = Vault::open(vault_dir)?;
            match reload(&v, std::time::Duration::from_secs(wait))? {
                PolicyReload::Refused { reason } => anyhow::bail!(
                    "the service refused the new policy and keeps the old one in force: {reason}"
                ),
                PolicyReload::Applied { withdrawn } => g.report(
                    serde_json::json!({"reloaded": true, "withdrawn": withdrawn}),
                    || {
                        let withdrawn: Vec<String> = withdrawn.iter().map(u64::to_string).collect();
                        format!(
                            "policy reloaded; {} live release(s) withdrawn{}",
                            withdrawn.len(),
                            if withdrawn.is_empty() {
                                String::new()
                            } else {
                                format!(" (decisions at ledger entries {})", withdrawn.join(", "))
                            }
                        )
                    },
                )?,
            }
        }
        PolicyCommand::Lint { policies } => {
            let dir = policy_dir(policies);
            let p = crate::local::PolicyDir::new(&dir).load()?;
            g.report(
                serde_json::json!({
                    "policies": dir,
                    "valid": true,
                    "tier_changes": p.tiers.changes.len(),
                    "models": p.models.len(),
                    "organisations": p.organisations.len(),
                    "requesters": p.requesters.len(),
                    "licences": p.licences.len(),
                    "restricted_parties": p.restricted.len(),
                    "attesters": p.attesters.len(),
                    "cedar_policies": p.org_rules.len(),
                }),
                || format!(
                    "{}: valid — {} tier changes, {} models, {} organisations, {} requesters, {} licences, {} restricted parties, {} attesters, {} Cedar policies",
                    dir.display(),
                    p.tiers.changes.len(),
                    p.models.len(),
                    p.organisations.len(),
                    p.requesters.len(),
                    p.licences.len(),
                    p.restricted.len(),
                    p.attesters.len(),
                    p.org_rules.len()
                ),
            )?;
        }
        PolicyCommand::Check {
            policies,
            requester,
            host_country,
            host_region,
            host_id,
            model,
            date,
            source_ip,
            geoip,
        } => {
            let dir = policy_dir(policies);
            let p = crate::local::PolicyDir::new(&dir).load()?;
            let time = match date {
                Some(d) => {
                    let d = time::Date::parse(
                        &d,
                        time::macros::format_description!("[year]-[month]-[day]"),
                    )
                    .with_context(|| format!("--date {d}: expected YYYY-MM-DD"))?;
                    d.with_hms(12, 0, 0).expect("noon").assume_utc()
                }
                None => time::OffsetDateTime::now_utc(),
            };
            let geo: Box<dyn crate::policy::GeoLookup> = match (source_ip, geoip.or_else(|| std::env::var_os("WEIGHTVAULT_GEOIP").map(PathBuf::from))) {
                (None, _) => Box::new(NoGeo),
                (Some(_), None) => anyhow::bail!(
                    "--source-ip needs an IP-geolocation database: run tools/fetch-geoip and pass --geoip FILE (or set WEIGHTVAULT_GEOIP)"
                ),
                (Some(_), Some(f)) => {
                    let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    Box::new(crate::policy::MaxMindGeo::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
                }
            };
            // When the model is sealed in the vault, its recorded training facts must agree
            // with the inventory (read from the newest revision's manifest header).
            let vault = Vault::open(vault_dir).ok();
            let sealed = newest_sealed(vault.as_ref(), &model);
            if let (Some(r), false) = (&sealed, json) {
                outln!(
                    "sealed facts from {}@{} in {}",
                    r.manifest.model,
                    r.manifest.revision,
                    vault_dir.display()
                );
            }
            // The licences' use so far is what the vault's ledger counts, as the release
            // service counts it.
            let used = licence_use(vault.as_ref())?;
            if !json {
                for (id, u) in used.iter().filter(|(k, _)| !k.starts_with("quota:")) {
                    outln!(
                        "licence {id}: {} releases and {} bytes counted in the vault's ledger",
                        u.releases,
                        u.bytes
                    );
                }
            }
            let req = WhatIf {
                requester,
                model,
                host_id,
                host_country,
                host_region,
                source_ip,
                time,
            }
            .request(sealed.as_ref(), used);
            let d = crate::policy::decide(&p, geo.as_ref(), &req);
            if json {
                outln!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                outln!("{:<20} {:<8} REASON", "CHECK", "VERDICT");
                for c in &d.checks {
                    outln!(
                        "{:<20} {:<8} {}",
                        c.check.name(),
                        verdict(c.verdict),
                        c.reason
                    );
                }
                let relies = d
                    .authority
                    .as_ref()
                    .map_or("-".to_string(), |a| a.describe());
                outln!(
                    "\ndecision: {} on {} (dry run; relies on: {relies})",
                    d.outcome.name().to_uppercase(),
                    time.date()
                );
                let f: Vec<_> = d.failed().iter().map(|c| c.name()).collect();
                if !f.is_empty() {
                    outln!("failed checks: {}", f.join(", "));
                }
                let h: Vec<_> = d.held().iter().map(|c| c.name()).collect();
                if !h.is_empty() {
                    outln!("held for a compliance officer by: {}", h.join(", "));
                }
            }
            match d.outcome {
                crate::policy::DecisionOutcome::Allow => {}
                crate::policy::DecisionOutcome::Review => {
                    return Err(Exit::quiet(crate::cli::status::HELD).into())
                }
                crate::policy::DecisionOutcome::Deny => {
                    return Err(Exit::quiet(crate::cli::status::ERROR).into())
                }
            }
        }
    }
    Ok(())
}
