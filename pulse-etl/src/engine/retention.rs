//! Retention: how long the store keeps events, runs and their logs.

use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// How long the store keeps what the engine records, and how it deletes the rest.
///
/// Events (state changes, progress; what `GET /api/v1/events` streams) are kept
/// [`events`](Self::with_events) long (default 7 days); finished runs with their attempts
/// and log lines [`runs`](Self::with_runs) long (default 90 days) — except the latest run
/// of each job, which is always kept — and schedule slots as long as runs (each job's
/// newest always kept). Every [`interval`](Self::with_interval) (default hourly) one
/// instance at a time deletes them in batches of [`batch`](Self::with_batch) rows (one
/// short transaction each, a pause between), so writers are never blocked for long.
///
/// ```
/// use std::time::Duration;
/// use pulse_etl::{EngineConfig, Retention};
///
/// // PULSE_RETENTION_DAYS=30: runs and logs 30 days, events 7.
/// let config = EngineConfig::new().with_retention(Retention::days(30));
/// # let _ = config;
/// let short = Retention::default().with_events(Duration::from_secs(86_400));
/// assert_eq!(short.events(), Duration::from_secs(86_400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    events: Duration,
    runs: Duration,
    interval: Duration,
    batch: u32,
    pause: Duration,
}

impl Default for Retention {
    /// Events 7 days, runs and logs 90 days, a pass every hour in batches of 500.
    fn default() -> Self {
        Self {
            events: 7 * DAY,
            runs: 90 * DAY,
            interval: Duration::from_secs(3600),
            batch: 500,
            pause: Duration::from_millis(20),
        }
    }
}

impl Retention {
    /// Runs and their logs kept `days` days (at least one); events the default 7 days,
    /// or `days` when that is shorter.
    #[must_use]
    pub fn days(days: u32) -> Self {
        let runs = DAY * days.max(1);
        let default = Self::default();
        Self {
            runs,
            events: default.events.min(runs),
            ..default
        }
    }

    /// How long events (other than log lines) are kept.
    #[must_use]
    pub fn with_events(mut self, age: Duration) -> Self {
        self.events = age;
        self
    }

    /// How long finished runs and their logs are kept.
    #[must_use]
    pub fn with_runs(mut self, age: Duration) -> Self {
        self.runs = age;
        self
    }

    /// How often a retention pass runs.
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// The most rows of each kind one batch deletes.
    #[must_use]
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// How long events are kept.
    #[must_use]
    pub const fn events(&self) -> Duration {
        self.events
    }

    /// How long finished runs and their logs are kept.
    #[must_use]
    pub const fn runs(&self) -> Duration {
        self.runs
    }

    /// How often a pass runs.
    #[must_use]
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// Rows per batch.
    #[must_use]
    pub const fn batch(&self) -> u32 {
        self.batch
    }

    pub(crate) const fn pause(&self) -> Duration {
        self.pause
    }
}
