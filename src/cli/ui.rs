//! Printing that several commands share: byte counts, rates, progress bars and check verdicts.

use crate::store::sealed::Progress;
use crate::store::SealProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;

/// A byte bar on standard error (hidden when `quiet`); told of a seal's progress too.
pub(super) struct Bars {
    /// The bar.
    pub(super) bar: ProgressBar,
}

impl Bars {
    /// A bar of 0 bytes so far, hidden when `quiet`.
    pub(super) fn new(quiet: bool) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if quiet {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl SealProgress for Bars {
    fn start(&self, total: u64, _files: usize) {
        self.bar.set_length(total);
    }
    fn file(&self, rel: &str) {
        self.bar.set_message(rel.to_string());
    }
    fn bytes(&self) -> &dyn Progress {
        &self.bar
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Where a ledger record went, for `--json`: `{"ledger_index": N}`, or `{"ledger_index":
/// null, "spooled": true}` when the running service appends it.
pub(super) fn recorded_json(r: &crate::ledger::spool::Recorded) -> serde_json::Value {
    match r {
        crate::ledger::spool::Recorded::Appended(i) => serde_json::json!({"ledger_index": i}),
        crate::ledger::spool::Recorded::Spooled(_) => {
            serde_json::json!({"ledger_index": null, "spooled": true})
        }
    }
}

/// A bar counting objects (hidden when `quiet`).
pub(super) fn counter(quiet: bool) -> ProgressBar {
    if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    }
}

/// `bytes` since `t` as GiB per second, e.g. `1.52 GiB/s`.
pub(super) fn gib_per_s(bytes: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64().max(1e-9);
    format!("{:.2} GiB/s", bytes as f64 / s / (1u64 << 30) as f64)
}

/// A byte count for people, e.g. `1.50 MiB`.
pub(super) fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// A check's verdict as the tables print it: `pass`, `FAIL` or `n/a`.
pub(super) fn verdict(v: crate::policy::Verdict) -> &'static str {
    match v {
        crate::policy::Verdict::Pass => "pass",
        crate::policy::Verdict::Fail => "FAIL",
        crate::policy::Verdict::NotApplicable => "n/a",
        crate::policy::Verdict::Review => "REVIEW",
    }
}
