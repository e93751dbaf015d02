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

/// Wall time that moves with tokio's clock: `start` plus the tokio time elapsed since
/// the clock was made. Under `tokio::time::pause` (`#[tokio::test(start_paused = true)]`)
/// the engine's timers and the timestamps it stores advance together, in virtual time:
/// a test of backoffs, leases or schedules of minutes finishes in milliseconds and
/// decides the same way every run.
#[derive(Debug, Clone, Copy)]
pub struct TokioWallClock {
    start: OffsetDateTime,
    origin: tokio::time::Instant,
}

impl TokioWallClock {
    /// A clock reading `start` now (needs a tokio runtime for its time source).
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl WallClock for TokioWallClock {
    fn now(&self) -> OffsetDateTime {
        self.start + self.origin.elapsed()
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

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let start = time::macros::datetime!(2026-01-01 00:00 UTC);
        let clock = TokioWallClock::new(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(3600));
    }
}
