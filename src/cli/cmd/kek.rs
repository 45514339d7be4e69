//! `weightvault kek list|rotate|retire` and `weightvault rewrap`: KEK versions on the HSM and
//! the data keys under them; rotations, retirements and rewraps are recorded in the ledger.

use crate::cli::ui::{counter, recorded_json};
use crate::cli::{operator, Globals, KekCommand};
use crate::store::RevisionRef;
use anyhow::Result;

/// Runs `kek ...`.
pub(in crate::cli) fn run(g: &Globals, cmd: KekCommand) -> Result<()> {
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    match cmd {
        KekCommand::List => {
            let u = v.kek_use(&kw)?;
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&u)?);
            } else {
                for ver in &u.on_token {
                    let n = u.by_version.get(ver).map_or(0, Vec::len);
                    outln!(
                        "{}.v{ver}: opens {n} object(s){}",
                        kw.kek_label(),
                        if Some(ver) == u.on_token.last() {
                            " (newest: new seals and rewraps use it)"
                        } else {
                            ""
                        }
                    );
                }
                for (ver, objs) in &u.by_version {
                    if !u.on_token.contains(ver) {
                        outln!(
                            "v{ver} (not on the token!): {} object(s) cannot be opened",
                            objs.len()
                        );
                    }
                }
            }
        }
        KekCommand::Rotate => {
            let (n, at) = v.rotate_kek_recorded(&kw, &operator::identity())?;
            g.report(
                serde_json::json!({"kek": kw.kek_label(), "version": n, "recorded": recorded_json(&at)}),
                || format!(
                    "created KEK {}.v{n} in the HSM ({at}); run `weightvault rewrap` to move every data key to it",
                    kw.kek_label()
                ),
            )?;
        }
        KekCommand::Retire { kek_version } => {
            let at = v.retire_kek_recorded(&kw, kek_version, &operator::identity())?;
            g.report(
                serde_json::json!({"kek": kw.kek_label(), "destroyed": kek_version, "recorded": recorded_json(&at)}),
                || format!("KEK {}.v{kek_version} destroyed in the HSM ({at})", kw.kek_label()),
            )?;
        }
    }
    Ok(())
}

/// Runs `rewrap`.
pub(in crate::cli) fn rewrap(g: &Globals, what: Option<&RevisionRef>) -> Result<()> {
    let v = g.open_vault()?;
    let kw = v.key_wrap()?;
    let bar = counter(g.quiet);
    let done = v.rewrap_recorded(
        &kw,
        what,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &operator::identity(),
    );
    bar.finish_and_clear();
    let (rep, at) = done?;
    let moved: u64 = rep.rewrapped_from.values().sum();
    let from: Vec<String> = rep
        .rewrapped_from
        .iter()
        .map(|(v, n)| format!("{n} from v{v}"))
        .collect();
    g.report(
        serde_json::json!({
            "kek": kw.kek_label(),
            "newest": rep.newest,
            "rewrapped": moved,
            "rewrapped_from": rep.rewrapped_from,
            "current": rep.current,
            "recorded": recorded_json(&at),
        }),
        || format!(
            "rewrapped {moved} object(s) to KEK {}.v{}{}; {} already current; no ciphertext changed ({at})",
            kw.kek_label(),
            rep.newest,
            if from.is_empty() { String::new() } else { format!(" ({})", from.join(", ")) },
            rep.current
        ),
    )?;
    Ok(())
}
