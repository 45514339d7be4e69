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
    let cli = weightvault::cli::Cli::parse();
    match weightvault::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A command that ends with its own status has said what it had to say.
        Err(e) if e.downcast_ref::<weightvault::cli::Exit>().is_some() => {
            let x = e.downcast_ref::<weightvault::cli::Exit>().expect("checked");
            if let Some(m) = &x.message {
                eprintln!("weightvault: error: {m}");
            }
            std::process::ExitCode::from(x.code)
        }
        Err(e) => {
            // One line: the error and its causes, outermost first. A command stopped by
            // SIGINT or SIGTERM says so and exits as the shell would report that signal.
            let msg = weightvault::cli::one_line(&e);
            match weightvault::interrupt::requested() {
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
    }
}
