//! Schedules: runs the engine starts by itself, at interval or cron slots.
//!
//! Slots are computed from the wall clock alone (intervals are aligned to the Unix
//! epoch), so every instance computes the same slot times; the store's unique
//! `(job, slot)` row makes exactly one of them fire each slot.
//!
//! Slots the engine did not reach in time — every instance was down at 02:00, or the
//! process was frozen past a slot — are handled by the schedule's [`CatchUp`] policy
//! when the engine next looks: [`CatchUp::Latest`] (the default) runs once for the most
//! recent of them, [`CatchUp::All`] runs each of the newest `max` in order, one after the
//! other, and [`CatchUp::Skip`] drops them (with a log line). Missed slots are counted
//! from the newest slot recorded in the store, so a restart catches up; a job that never
//! fired starts with its next slot.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;

/// When a job runs by itself.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    catch_up: CatchUp,
}

/// What the engine does with the slots of a [`Schedule`] that went by while no instance
/// fired them (engine down, process frozen, job busy past a slot).
///
/// A slot is *missed* when the engine reaches it more than [`CatchUp::ON_TIME`] late, or
/// when a newer slot is already due; the newest slot reached within that tolerance fires
/// under every policy.
///
/// ```
/// use std::time::Duration;
/// use pulse_etl::{CatchUp, Schedule};
///
/// let nightly = Schedule::cron("0 0 2 * * *")?.with_catch_up(CatchUp::All { max: 3 });
/// assert_eq!(nightly.catch_up(), CatchUp::All { max: 3 });
/// assert_eq!("latest".parse::<CatchUp>()?, CatchUp::Latest);
/// assert_eq!("all:5".parse::<CatchUp>()?.to_string(), "all:5");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CatchUp {
    /// Drop missed slots (each drop is logged); only slots reached on time fire.
    Skip,
    /// Run once, for the most recent missed slot; older ones are dropped (logged).
    #[default]
    Latest,
    /// Run every missed slot, oldest first and one at a time (each waits until the job
    /// has no active run), but only the newest `max` of them; older ones are dropped.
    All {
        /// The most missed slots run (at least one).
        max: u32,
    },
}

impl CatchUp {
    /// How late a slot may be reached and still count as on time.
    pub const ON_TIME: Duration = Duration::from_secs(60);

    /// The most missed slots a schedule looks back for (bounds the work after a long
    /// outage of a frequent schedule).
    pub const LOOK_BACK: usize = 10_000;
}

impl fmt::Display for CatchUp {
    /// `skip`, `latest` or `all:<max>`, the form [`FromStr`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Skip => f.write_str("skip"),
            Self::Latest => f.write_str("latest"),
            Self::All { max } => write!(f, "all:{max}"),
        }
    }
}

impl FromStr for CatchUp {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ScheduleError::InvalidCatchUp(text.to_owned());
        match text.trim() {
            "skip" => Ok(Self::Skip),
            "latest" => Ok(Self::Latest),
            other => {
                let max = other
                    .strip_prefix("all:")
                    .and_then(|max| max.parse::<u32>().ok())
                    .filter(|max| *max > 0)
                    .ok_or_else(invalid)?;
                Ok(Self::All { max })
            }
        }
    }
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
    /// The catch-up policy is not `skip`, `latest` or `all:<n>` with `n` ≥ 1.
    #[error("invalid catch-up policy `{0}`: expected skip, latest or all:<n> (n >= 1)")]
    InvalidCatchUp(String),
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
            catch_up: CatchUp::default(),
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
            catch_up: CatchUp::default(),
        })
    }

    /// Sets what happens to missed slots (default [`CatchUp::Latest`]).
    #[must_use]
    pub const fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// What happens to missed slots.
    #[must_use]
    pub const fn catch_up(&self) -> CatchUp {
        self.catch_up
    }

    /// The slots at or before `until`, newest first (at most [`CatchUp::LOOK_BACK`]).
    pub fn slots_until(&self, until: OffsetDateTime) -> impl Iterator<Item = OffsetDateTime> {
        let mut cursor = self.latest_at_or_before(until);
        std::iter::from_fn(move || {
            let slot = cursor?;
            cursor = self.previous_before(slot);
            Some(slot)
        })
        .take(CatchUp::LOOK_BACK)
    }

    /// The slots in `(after, until]` that should fire now, oldest first, and how many
    /// were dropped. The newest of them, when it is within [`CatchUp::ON_TIME`] of
    /// `until`, is on time and always fires; the others are missed and go by the
    /// catch-up policy.
    #[must_use]
    pub fn due(&self, after: OffsetDateTime, until: OffsetDateTime) -> Due {
        let mut missed: Vec<OffsetDateTime> = self
            .slots_until(until)
            .take_while(|slot| *slot > after)
            .collect();
        let newest = missed.first().copied();
        let current = newest.filter(|slot| until - *slot <= CatchUp::ON_TIME);
        if current.is_some() {
            missed.remove(0);
        }
        let found = missed.len();
        let keep = match self.catch_up {
            CatchUp::Skip => 0,
            CatchUp::Latest => found.min(1),
            CatchUp::All { max } => found.min(usize::try_from(max).unwrap_or(usize::MAX)),
        };
        missed.truncate(keep);
        missed.reverse();
        missed.extend(current);
        Due {
            fire: missed,
            dropped: found - keep,
            newest,
        }
    }

    fn latest_at_or_before(&self, until: OffsetDateTime) -> Option<OffsetDateTime> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = i128::try_from(interval.as_nanos()).ok()?;
                let slot = until.unix_timestamp_nanos().div_euclid(step) * step;
                OffsetDateTime::from_unix_timestamp_nanos(slot).ok()
            }
            // The slot strictly before one second later (cron has whole seconds).
            Kind::Cron { .. } => self
                .previous_before(until + Duration::from_secs(1))
                .and_then(|slot| {
                    if slot > until {
                        self.previous_before(slot)
                    } else {
                        Some(slot)
                    }
                }),
        }
    }

    fn previous_before(&self, before: OffsetDateTime) -> Option<OffsetDateTime> {
        match &self.kind {
            Kind::Every(interval) => {
                let step = i128::try_from(interval.as_nanos()).ok()?;
                let slot = (before.unix_timestamp_nanos() - 1).div_euclid(step) * step;
                OffsetDateTime::from_unix_timestamp_nanos(slot).ok()
            }
            Kind::Cron { schedule, .. } => {
                let from = to_chrono(before)?;
                from_chrono(&schedule.after(&from).next_back()?)
            }
        }
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
                let from = to_chrono(after)?;
                from_chrono(&schedule.after(&from).next()?)
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

/// What [`Schedule::due`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The slots to fire now, oldest first.
    pub fire: Vec<OffsetDateTime>,
    /// How many missed slots the policy dropped.
    pub dropped: usize,
    /// The newest slot in the window, fired or dropped: the next window starts after it.
    pub newest: Option<OffsetDateTime>,
}

fn to_chrono(at: OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = at.unix_timestamp_nanos();
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub)
}

fn from_chrono(at: &chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    let nanos =
        i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
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
        self.to_string() == other.to_string() && self.catch_up == other.catch_up
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

    #[test]
    fn slots_until_walk_back_from_the_newest_slot_at_or_before() {
        let every = Schedule::every(Duration::from_secs(60)).unwrap();
        let slots: Vec<_> = every
            .slots_until(datetime!(2026-01-01 10:02 UTC))
            .take(3)
            .collect();
        assert_eq!(
            slots,
            [
                datetime!(2026-01-01 10:02 UTC),
                datetime!(2026-01-01 10:01 UTC),
                datetime!(2026-01-01 10:00 UTC)
            ]
        );
        let nightly = Schedule::cron("0 0 2 * * *").unwrap();
        let slots: Vec<_> = nightly
            .slots_until(datetime!(2026-01-03 02:00 UTC))
            .take(2)
            .collect();
        assert_eq!(
            slots,
            [
                datetime!(2026-01-03 02:00 UTC),
                datetime!(2026-01-02 02:00 UTC)
            ]
        );
        let slots: Vec<_> = nightly
            .slots_until(datetime!(2026-01-03 01:59:59.9 UTC))
            .take(1)
            .collect();
        assert_eq!(slots, [datetime!(2026-01-02 02:00 UTC)]);
        // Bounded however long ago the window starts.
        let every_second = Schedule::every(Duration::from_secs(1)).unwrap();
        assert_eq!(
            every_second
                .slots_until(datetime!(2026-01-01 10:00 UTC))
                .count(),
            CatchUp::LOOK_BACK
        );
    }

    #[test]
    fn due_applies_the_catch_up_policy() {
        // Last fired 02:00 on the 1st; the engine comes back at 03:00 on the 4th.
        let last = datetime!(2026-01-01 02:00 UTC);
        let back = datetime!(2026-01-04 03:00 UTC);
        let nightly = Schedule::cron("0 0 2 * * *").unwrap();

        let latest = nightly.due(last, back);
        assert_eq!(latest.fire, [datetime!(2026-01-04 02:00 UTC)]);
        assert_eq!(latest.dropped, 2);
        assert_eq!(latest.newest, Some(datetime!(2026-01-04 02:00 UTC)));

        let skip = nightly.clone().with_catch_up(CatchUp::Skip).due(last, back);
        assert!(skip.fire.is_empty());
        assert_eq!(skip.dropped, 3);
        assert_eq!(skip.newest, Some(datetime!(2026-01-04 02:00 UTC)));

        let all = nightly
            .clone()
            .with_catch_up(CatchUp::All { max: 2 })
            .due(last, back);
        assert_eq!(
            all.fire,
            [
                datetime!(2026-01-03 02:00 UTC),
                datetime!(2026-01-04 02:00 UTC)
            ]
        );
        assert_eq!(all.dropped, 1);

        // On time: every policy fires the slot just reached, nothing is dropped.
        let at = datetime!(2026-01-04 02:00:00.2 UTC);
        for policy in [CatchUp::Skip, CatchUp::Latest, CatchUp::All { max: 5 }] {
            let due = nightly
                .clone()
                .with_catch_up(policy)
                .due(datetime!(2026-01-03 02:00 UTC), at);
            assert_eq!(due.fire, [datetime!(2026-01-04 02:00 UTC)], "{policy}");
            assert_eq!(due.dropped, 0, "{policy}");
        }
        // Nothing due before the next slot.
        let none = nightly.due(
            datetime!(2026-01-04 02:00 UTC),
            datetime!(2026-01-04 12:00 UTC),
        );
        assert_eq!(
            none,
            Due {
                fire: Vec::new(),
                dropped: 0,
                newest: None
            }
        );
    }

    #[test]
    fn catch_up_parses_and_prints() {
        for text in ["skip", "latest", "all:1", "all:24"] {
            assert_eq!(text.parse::<CatchUp>().unwrap().to_string(), text);
        }
        for bad in ["", "all", "all:0", "all:-1", "every", "all:x"] {
            assert_eq!(
                bad.parse::<CatchUp>(),
                Err(ScheduleError::InvalidCatchUp(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(CatchUp::default(), CatchUp::Latest);
        let every = Schedule::every(Duration::from_secs(60)).unwrap();
        assert_ne!(every.clone().with_catch_up(CatchUp::Skip), every);
    }
}
