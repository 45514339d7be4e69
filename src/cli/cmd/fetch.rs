//! `weightvault fetch`: the serving node's side of a release, from settings given as flags,
//! environment or a config file; prints the release, or every check of a denial (exit 2).

use crate::cli::ui::verdict;
use crate::cli::{Exit, FetchArgs, Globals};
use crate::release::fetch::{fetch, FetchConfig, FetchError, FetchFile};
use anyhow::Result;
use std::time::Instant;

/// A setting from its flag (or environment variable), else from the config file.
fn need<T>(v: Option<T>, f: Option<T>, flag: &str) -> Result<T> {
    v.or(f).ok_or_else(|| {
        anyhow::anyhow!(
            "fetch needs --{flag} (or `{}` in --config)",
            flag.replace('-', "_")
        )
    })
}

/// Runs `fetch`.
pub(in crate::cli) fn run(g: &Globals, a: FetchArgs) -> Result<()> {
    let FetchArgs {
        model,
        out,
        server,
        ca,
        cert,
        key,
        host_key,
        attest,
        config,
        parallel,
        limit_rate,
        resumable,
        retries,
    } = a;
    let json = g.json;
    crate::interrupt::install()?;
    let file = match &config {
        Some(p) => FetchFile::load(p)?,
        None => FetchFile::default(),
    };
    let cfg = FetchConfig {
        server: need(server, file.server, "server")?,
        ca: need(ca, file.ca, "ca")?,
        cert: need(cert, file.cert, "cert")?,
        key: need(key, file.key, "key")?,
        host_key: need(host_key, file.host_key, "host-key")?,
        attest: need(attest, file.attest, "attest")?,
        parallel: parallel.or(file.parallel).unwrap_or(4),
        progress: !g.quiet,
        limit_rate,
        resumable: resumable || file.resumable.unwrap_or(false),
        retries: retries
            .or(file.retries)
            .unwrap_or(crate::release::fetch::DEFAULT_RETRIES),
    };
    let t = Instant::now();
    match fetch(&cfg, &model, &out) {
        Ok(r) => {
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "release": r.release,
                        "ledger_index": r.ledger_index,
                        "resumed": r.resumed,
                        "downloaded": r.downloaded,
                        "bytes": r.bytes,
                        "seconds": t.elapsed().as_secs_f64(),
                        "attest_ms": r.attest_time.as_secs_f64() * 1e3,
                        "first_byte_ms": r.first_byte.map(|d| d.as_secs_f64() * 1e3),
                    })
                );
            } else {
                outln!(
                    "fetched {}@{} into {}: {} files, {} bytes in {:.1}s (release {}{}{})",
                    r.release.model,
                    r.release.revision,
                    out.display(),
                    r.release.shards.len(),
                    r.bytes,
                    t.elapsed().as_secs_f64(),
                    r.release.id,
                    r.ledger_index
                        .map(|i| format!(", ledger entry {i}"))
                        .unwrap_or_default(),
                    if r.resumed {
                        format!(", resumed: {} bytes downloaded this time", r.downloaded)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Err(FetchError::Denied {
            message,
            decision,
            ledger_index,
        }) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "error": message,
                        "status": crate::cli::status::DENIED,
                        "decision": decision,
                        "ledger_index": ledger_index,
                    })
                );
                return Err(Exit::quiet(crate::cli::status::DENIED).into());
            }
            eprintln!("weightvault: {message} (ledger entry {ledger_index})");
            print_checks(&decision, 5);
            Err(Exit::quiet(crate::cli::status::DENIED).into())
        }
        Err(FetchError::Held {
            message,
            decision,
            review,
        }) => {
            let held = crate::cli::status::HELD;
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "error": message,
                        "status": held,
                        "decision": decision,
                        "review": review,
                    })
                );
                return Err(Exit::quiet(held).into());
            }
            eprintln!("weightvault: {message}");
            print_checks(&decision, 6);
            eprintln!(
                "weightvault: nothing was released; ask a compliance officer to decide review {review} (weightvault review show {review}), then run the same fetch again"
            );
            Err(Exit::quiet(held).into())
        }
        Err(e @ FetchError::Revoked(_)) => Err(Exit {
            code: crate::cli::status::DENIED,
            message: Some(e.to_string()),
        }
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Every check of a refused or held decision on standard error, one a line: the verdict
/// padded to `width` (5 fits FAIL, 6 fits REVIEW), the check, its reason.
fn print_checks(decision: &crate::policy::ReleaseDecision, width: usize) {
    for c in &decision.checks {
        eprintln!(
            "  {:<width$} {:<19} {}",
            verdict(c.verdict),
            c.check.name(),
            c.reason
        );
    }
}
