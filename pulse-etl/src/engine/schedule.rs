//! Schedules: runs the engine starts by itself, at interval or cron slots.
//!
//! Slots are computed from the wall clock alone (intervals are aligned to the Unix
//! epoch), so every instance computes the same slot times; the store's unique
//! `(job, slot)` row makes exactly one of them fire each slot.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;

/// When a job runs by itself.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Every(Duration),
    Cron {
        expression: String,
        schedule: Box<cron::Schedule>,
    },
}

/// An invalid schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The interval is shorter than one second.
    #[error("a schedule interval must be at least one second")]
    IntervalTooShort,
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron {
        /// The expression.
        expression: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl Schedule {
    /// Every `interval` (at least one second), at slots aligned to the Unix epoch.
    ///
    /// # Errors
    /// [`ScheduleError::IntervalTooShort`] under one second.
    pub fn every(interval: Duration) -> Result<Self, ScheduleError> {
        if interval < Duration::from_secs(1) {
            return Err(ScheduleError::IntervalTooShort);
        }
        Ok(Self {
            kind: Kind::Every(interval),
        })
    }

    /// A cron expression with seconds: `sec min hour day-of-month month day-of-week
    /// [year]`, in UTC, e.g. `0 */15 * * * *` (every quarter hour).
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`] when it does not parse.
    pub fn cron(expression: &str) -> Result<Self, ScheduleError> {
        let schedule =
            cron::Schedule::from_str(expression).map_err(|err| ScheduleError::InvalidCron {
                expression: expression.to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            kind: Kind::Cron {
                expression: expression.to_owned(),
                schedule: Box::new(schedule),
            },
        })
    }

    /// The first slot strictly after `after`.
    #[must_use]
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = i128::try_from(interval.as_nanos()).ok()?;
                let now = after.unix_timestamp_nanos();
                let next = (now.div_euclid(step) + 1) * step;
                OffsetDateTime::from_unix_timestamp_nanos(next).ok()
            }
            Kind::Cron { schedule, .. } => {
                let nanos = after.unix_timestamp_nanos();
                let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
                let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
                let from = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub)?;
                let next = schedule.after(&from).next()?;
                let next_nanos = i128::from(next.timestamp()) * 1_000_000_000
                    + i128::from(next.timestamp_subsec_nanos());
                OffsetDateTime::from_unix_timestamp_nanos(next_nanos).ok()
            }
        }
    }

    /// The interval, for interval schedules.
    #[must_use]
    pub fn interval(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Every(interval) => Some(*interval),
            Kind::Cron { .. } => None,
        }
    }
}

impl fmt::Display for Schedule {
    /// `every 300s` or the cron expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Every(interval) => write!(f, "every {}s", interval.as_secs()),
            Kind::Cron { expression, .. } => f.write_str(expression),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.to_string()).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn interval_slots_are_aligned_to_the_epoch() {
        let every = Schedule::every(Duration::from_secs(300)).unwrap();
        assert_eq!(
            every.next_after(datetime!(2026-01-01 10:02:30 UTC)),
            Some(datetime!(2026-01-01 10:05 UTC))
        );
        // Strictly after: a slot time gives the next slot.
        assert_eq!(
            every.next_after(datetime!(2026-01-01 10:05 UTC)),
            Some(datetime!(2026-01-01 10:10 UTC))
        );
        assert_eq!(every.to_string(), "every 300s");
        assert!(Schedule::every(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn cron_slots_follow_the_expression() {
        let quarter = Schedule::cron("0 */15 * * * *").unwrap();
        assert_eq!(
            quarter.next_after(datetime!(2026-01-01 10:02:30.5 UTC)),
            Some(datetime!(2026-01-01 10:15 UTC))
        );
        assert_eq!(
            quarter.next_after(datetime!(2026-01-01 10:15 UTC)),
            Some(datetime!(2026-01-01 10:30 UTC))
        );
        assert!(Schedule::cron("every tuesday").is_err());
    }
}
