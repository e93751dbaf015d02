//! Passive outlier ejection: consecutive gateway failures take an instance out of the
//! draw for a while, as Envoy's `consecutive_gateway_failure` detector does.

use std::time::Duration;

use tokio::time::Instant;

/// The default consecutive gateway failures that eject an instance.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 3;
/// The default length of a first ejection.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(5);
/// The default longest ejection.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(60);
/// The default largest share of the instances ejected at once, in percent.
pub const DEFAULT_MAX_EJECTED_PERCENT: u8 = 50;

/// When an instance is ejected and for how long.
///
/// After [`consecutive_failures`](Self::with_consecutive_failures) gateway failures in
/// a row (refused, reset, timed out, or a 502/503/504 answer) an instance leaves the
/// draw for the base ejection time multiplied by the number of times it was ejected in
/// a row, at most the [maximum](Self::with_max_ejection). A success after an ejection
/// ended resets that count. At most
/// [`max_ejected_percent`](Self::with_max_ejected_percent) of the instances are ejected
/// at once (rounded down: a pool of one instance never ejects it), so that a failure
/// of everything does not empty the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct EjectionPolicy {
    consecutive_failures: u32,
    base: Duration,
    max: Duration,
    max_ejected_percent: u8,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl EjectionPolicy {
    /// 3 failures in a row, 5 s × ejections in a row, at most 60 s, at most half of the
    /// instances.
    pub const fn new() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base: DEFAULT_BASE_EJECTION,
            max: DEFAULT_MAX_EJECTION,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
        }
    }

    /// Consecutive gateway failures that eject an instance (at least 1).
    pub const fn with_consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = if failures == 0 { 1 } else { failures };
        self
    }

    /// The first ejection's length; the n-th in a row lasts n times as long.
    pub const fn with_base_ejection(mut self, length: Duration) -> Self {
        self.base = length;
        self
    }

    /// The longest ejection.
    pub const fn with_max_ejection(mut self, length: Duration) -> Self {
        self.max = length;
        self
    }

    /// The largest share of the instances ejected at once, in percent (capped at 100).
    pub const fn with_max_ejected_percent(mut self, percent: u8) -> Self {
        self.max_ejected_percent = if percent > 100 { 100 } else { percent };
        self
    }

    /// Consecutive gateway failures that eject an instance.
    pub const fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The length of an instance's `nth` ejection in a row (1-based).
    pub fn ejection_length(&self, nth: u32) -> Duration {
        self.base.saturating_mul(nth.max(1)).min(self.max)
    }

    /// Whether one more instance may be ejected when `ejected` of `total` already are.
    pub const fn may_eject(&self, ejected: usize, total: usize) -> bool {
        (ejected + 1).saturating_mul(100) <= total.saturating_mul(self.max_ejected_percent as usize)
    }
}

/// What one attempt on an instance says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer that is not a gateway failure.
    Success,
    /// A gateway failure: refused, reset, timed out, or a 502/503/504 answer.
    Failure,
    /// Nothing about the instance (the client's fault, an open circuit, shedding).
    Neutral,
}

/// What [`Outlier::record`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Ejected(Duration),
}

/// One instance's outlier state.
#[derive(Debug, Default)]
pub(crate) struct Outlier {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    /// Whether the instance is ejected at `now`.
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// The rest of the ejection at `now`.
    pub(crate) fn ejected_for(&self, now: Instant) -> Option<Duration> {
        self.ejected_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Clears an ejection that has ended by `now`; true when one did (the instance is
    /// back in the draw).
    pub(crate) fn restore(&mut self, now: Instant) -> bool {
        if self.ejected_until.is_some_and(|until| until <= now) {
            self.ejected_until = None;
            return true;
        }
        false
    }

    pub(crate) const fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    pub(crate) const fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Counts `outcome` at `now`; `others_ejected` of `total` instances are ejected
    /// (this one not counted).
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        policy: &EjectionPolicy,
        now: Instant,
        others_ejected: usize,
        total: usize,
    ) -> Change {
        match outcome {
            Outcome::Neutral => Change::None,
            Outcome::Success => {
                self.consecutive = 0;
                // A success after the ejection ended: the next one starts short again.
                if !self.is_ejected(now) {
                    self.ejections = 0;
                }
                Change::None
            }
            Outcome::Failure => {
                self.consecutive = self.consecutive.saturating_add(1);
                if self.consecutive < policy.consecutive_failures
                    || self.is_ejected(now)
                    || !policy.may_eject(others_ejected, total)
                {
                    return Change::None;
                }
                self.ejections = self.ejections.saturating_add(1);
                let length = policy.ejection_length(self.ejections);
                self.ejected_until = Some(now + length);
                self.consecutive = 0;
                Change::Ejected(length)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_share_is_ejected() {
        let half = EjectionPolicy::new();
        assert!(!half.may_eject(0, 1), "a lone instance stays");
        assert!(half.may_eject(0, 2));
        assert!(!half.may_eject(1, 2));
        assert!(half.may_eject(0, 3));
        assert!(!half.may_eject(1, 3));
        assert!(half.may_eject(1, 4));
        assert!(!half.may_eject(2, 4));
        let all = EjectionPolicy::new().with_max_ejected_percent(200);
        assert!(all.may_eject(0, 1));
        assert!(
            !EjectionPolicy::new()
                .with_max_ejected_percent(0)
                .may_eject(0, 10)
        );
    }

    #[test]
    fn ejections_grow_in_a_row_up_to_the_maximum() {
        let policy = EjectionPolicy::new()
            .with_base_ejection(Duration::from_secs(10))
            .with_max_ejection(Duration::from_secs(25));
        assert_eq!(policy.ejection_length(1), Duration::from_secs(10));
        assert_eq!(policy.ejection_length(2), Duration::from_secs(20));
        assert_eq!(policy.ejection_length(3), Duration::from_secs(25));
        assert_eq!(
            EjectionPolicy::new()
                .with_consecutive_failures(0)
                .consecutive_failures(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_a_success_between_resets_the_count() {
        let policy = EjectionPolicy::new();
        let mut outlier = Outlier::default();
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(
                outlier.record(Outcome::Failure, &policy, now, 0, 2),
                Change::None
            );
        }
        outlier.record(Outcome::Success, &policy, now, 0, 2);
        outlier.record(Outcome::Neutral, &policy, now, 0, 2);
        for _ in 0..2 {
            outlier.record(Outcome::Failure, &policy, now, 0, 2);
        }
        assert!(!outlier.is_ejected(now));
        assert_eq!(
            outlier.record(Outcome::Failure, &policy, now, 0, 2),
            Change::Ejected(DEFAULT_BASE_EJECTION)
        );
        assert!(outlier.is_ejected(now));
        assert_eq!(outlier.ejected_for(now), Some(DEFAULT_BASE_EJECTION));
        let later = now + DEFAULT_BASE_EJECTION;
        assert!(!outlier.is_ejected(later));
        assert!(outlier.restore(later));
        assert!(!outlier.restore(later), "restored once");
    }
}
