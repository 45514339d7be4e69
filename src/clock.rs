//! The clock, as an edge: the release service reads the time only through a [`Clock`], so the
//! engine's inputs are values and a test (or a replica that must agree with others on
//! expiries) can give it another clock.

use time::OffsetDateTime;

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// The time now, UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
