//! SIGINT and SIGTERM as a request to stop: long work (sealing, opening, fetching) checks
//! [`requested`] between chunks and returns an error that unwinds its scratch files, so the
//! command ends with one line and exit 130 / 143 instead of dying wherever it was.
//!
//! This cannot cover SIGKILL or a power cut, and it is not what keeps plaintext off the disk:
//! plaintext is written to unnamed files ([`crate::store::output`]) that vanish with the
//! process whatever kills it. A second SIGINT or SIGTERM while the first is being handled ends
//! the process at once (the default action), for a stuck command.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A signal that asked the command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGTERM.
    Term,
}

impl Signal {
    /// The exit code a shell reports for a command ended by this signal (128 + number).
    pub fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Int => signal_hook::consts::SIGINT,
            Signal::Term => signal_hook::consts::SIGTERM,
        }
    }

    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The error long work returns when a signal asked it to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {0}")]
pub struct Interrupted(pub Signal);

fn received() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Installs the handlers (once per process; later calls do nothing). Until this is called,
/// SIGINT and SIGTERM keep their default action.
pub fn install() -> std::io::Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let flag = received();
    for sig in [Signal::Int, Signal::Term] {
        let n = sig.number();
        // The second signal of either kind ends the process with the default action...
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register_conditional_default(n, armed.clone())?;
        // ...because the first one set this (checked before the flag is set below).
        signal_hook::flag::register(n, armed)?;
        signal_hook::flag::register_usize(n, flag.clone(), n as usize)?;
    }
    let _ = DONE.set(());
    Ok(())
}

/// The signal received, if one asked this process to stop.
pub fn requested() -> Option<Signal> {
    match received().load(Ordering::Relaxed) as i32 {
        0 => None,
        n if n == signal_hook::consts::SIGINT => Some(Signal::Int),
        _ => Some(Signal::Term),
    }
}

/// `Err` once a signal asked this process to stop: called between chunks of long work.
pub fn check() -> Result<(), Interrupted> {
    match requested() {
        Some(s) => Err(Interrupted(s)),
        None => Ok(()),
    }
}

/// Resolves when a signal asks this process to stop (polled every 20 ms), for `select!`
/// beside network work that may wait without a chunk arriving.
pub async fn stopped() -> Interrupted {
    loop {
        if let Some(s) = requested() {
            return Interrupted(s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_shells() {
        assert_eq!(Signal::Int.exit_code(), 130);
        assert_eq!(Signal::Term.exit_code(), 143);
    }
}
