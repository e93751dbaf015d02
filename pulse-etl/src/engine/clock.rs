//! Where the engine's timestamps come from.
//!
//! Wall-clock time (`OffsetDateTime`, stored in the runs), hence the names: pulse-breaker's
//! `Clock` and `ManualClock` are monotonic (`Instant`) and a different thing.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

/// The source of the timestamps the engine writes (leases, backoff, schedules).
///
/// The engine's timers still run on tokio's clock; this one decides what is stored, so
/// tests can expire leases by moving a [`ManualWallClock`] instead of waiting.
pub trait WallClock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock, in UTC.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to.
#[derive(Clone)]
pub struct ManualWallClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualWallClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: OffsetDateTime) {
        if let Ok(mut now) = self.now.lock() {
            *now = to;
        }
    }
}

impl WallClock for ManualWallClock {
    fn now(&self) -> OffsetDateTime {
        self.now
            .lock()
            .map(|now| *now)
            .unwrap_or_else(|poisoned| *poisoned.into_inner())
    }
}

impl fmt::Debug for ManualWallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualWallClock").field(&self.now()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = ManualWallClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + Duration::from_secs(90));
    }
}
