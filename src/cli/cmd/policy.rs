//! `weightvault policy reload|check|import-csl|lint`: makes the running service reload its
//! policy, decides a what-if release and prints every check, imports the Consolidated
//! Screening List, or validates the policy files.

use crate::actions::reload::{reload, PolicyReload};
use crate::cli::ui::verdict;
use crate::cli::{policy_dir, Exit, Globals, PolicyCommand};
use crate::dry_run::{licence_use, newest_sealed, WhatIf};
use crate::policy::NoGeo;
use crate::store::Vault;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
        PolicyCommand::ImportCsl {
            file,
            policies,
            list_date,
        } => import_csl(g, &file, &policy_dir(policies), list_date.as_deref())?,
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
                    "restricted_parties": p.screening.len(),
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
                    p.screening.len(),
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

/// `policy import-csl`: reads the CSL's JSON, writes `screening-list.json` atomically, reports
/// what it holds.
fn import_csl(g: &Globals, file: &Path, dir: &Path, list_date: Option<&str>) -> Result<()> {
    use crate::policy::screening;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut list =
        screening::import_csl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if let Some(d) = list_date {
        list.list_date = Some(
            time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
                .with_context(|| format!("--list-date {d}: expected YYYY-MM-DD"))?,
        );
    }
    let stored = list
        .to_stored()
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a policy directory (give --policies DIR)",
            dir.display()
        );
    }
    let target = dir.join("screening-list.json");
    let tmp = dir.join(".screening-list.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, stored.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        crate::durable::sync_dir(dir)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", target.display()));
    }
    let mut per_source: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &list.parties {
        *per_source.entry(p.code.as_str()).or_default() += 1;
    }
    let aliases: usize = list.parties.iter().map(|p| p.aliases.len()).sum();
    let date = list.list_date.map(|d| d.to_string()).unwrap_or_default();
    g.report(
        serde_json::json!({
            "file": target,
            "parties": list.parties.len(),
            "aliases": aliases,
            "list_date": date,
            "sources": per_source,
        }),
        || {
            let mut s = format!(
                "{}: {} parties, {aliases} aliases, list of {date}",
                target.display(),
                list.parties.len()
            );
            for (code, n) in &per_source {
                s.push_str(&format!("\n  {code:<8} {n}"));
            }
            s.push_str("\nnot in force yet: run `weightvault policy lint`, then `weightvault policy reload`");
            s
        },
    )?;
    Ok(())
}
