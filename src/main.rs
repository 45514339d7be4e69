//! The `weightvault` command.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIGHTVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match weightvault::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => weightvault::cli::status::OK,
                _ => weightvault::cli::status::USAGE,
            };
            // A command line that does not parse cannot say whether it asked for JSON; one
            // that holds `--json` gets its usage error as JSON.
            if code != weightvault::cli::status::OK && std::env::args().any(|a| a == "--json") {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                json_error(first.trim_start_matches("error: "), code);
            } else {
                let _ = e.print();
            }
            return std::process::ExitCode::from(code);
        }
    };
    if let Some(conf) = cli.softhsm2_conf() {
        set_softhsm2_conf(&conf);
    }
    let json = cli.json;
    match weightvault::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast::<weightvault::cli::Exit>() {
            // A command that ends with its own status has said what it had to say.
            Ok(x) => {
                if let Some(m) = &x.message {
                    if json {
                        json_error(m, x.code);
                    } else {
                        eprintln!("weightvault: error: {m}");
                    }
                }
                std::process::ExitCode::from(x.code)
            }
            Err(e) => report(e, json),
        },
    }
}

/// An error under `--json`: one object on standard error.
fn json_error(message: &str, status: u8) {
    eprintln!(
        "{}",
        serde_json::json!({"error": message, "status": status})
    );
}

/// Points SoftHSM2 at the vault's configuration: the only place it takes one from is
/// `SOFTHSM2_CONF`, read when the module is initialised. Here, at the start of `main`, the
/// process has one thread, so nothing can read the environment while it changes; the library
/// never sets it, only checks it (see `weightvault::hsm`).
#[allow(clippy::disallowed_methods)]
fn set_softhsm2_conf(conf: &std::path::Path) {
    std::env::set_var(weightvault::hsm::SOFTHSM2_CONF_VAR, conf);
}

/// The one line for an error, and the status: as the shell reports a signal that stopped the
/// command, else failure.
fn report(e: anyhow::Error, json: bool) -> std::process::ExitCode {
    // One line: the error and its causes, outermost first.
    let msg = weightvault::cli::one_line(&e);
    match weightvault::interrupt::requested() {
        Some(sig) if json => {
            json_error(&msg, sig.exit_code());
            std::process::ExitCode::from(sig.exit_code())
        }
        None if json => {
            json_error(&msg, weightvault::cli::status::ERROR);
            std::process::ExitCode::FAILURE
        }
        Some(sig) => {
            // The command's own words say what was kept (resume state, or nothing).
            if msg.contains("interrupted by") {
                eprintln!("weightvault: {msg}");
            } else {
                eprintln!("weightvault: interrupted by {sig}: {msg}");
            }
            std::process::ExitCode::from(sig.exit_code())
        }
        None => {
            eprintln!("weightvault: error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
