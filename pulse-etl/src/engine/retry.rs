//! Retry policies: exponential backoff with jitter, one [`Backoff`] shared by the
//! engine's retries of failed attempts and the seed jobs' retries of failed fetches.

use std::time::Duration;

/// Exponential backoff with jitter: the `n`-th wait (from 1) is
/// `initial · multiplier^(n-1)`, capped at `max`, then reduced by up to `jitter` (a
/// fraction) at random so that work failing together does not retry together.
///
/// ```
/// use std::time::Duration;
/// use pulse_etl::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).with_jitter(0.5);
/// assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(4)); // 1 s · 2²
/// assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(2)); // half jittered away
/// assert_eq!(backoff.delay(9, 0.0), Duration::from_secs(10)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How much each wait grows (at least 1).
    pub multiplier: f64,
    /// The fraction (0 to 1) of each wait that is randomised away.
    pub jitter: f64,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with 20 % jitter.
    #[must_use]
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: 0.2,
        }
    }

    /// Sets the first wait.
    #[must_use]
    pub const fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the longest wait.
    #[must_use]
    pub const fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the growth per wait (at least 1).
    #[must_use]
    pub const fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier < 1.0 { 1.0 } else { multiplier };
        self
    }

    /// Sets the jitter fraction (clamped to 0..=1).
    #[must_use]
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The `n`-th wait (from 1; 0 counts as 1) for a `random` number in `0..1`
    /// (`random = 0` gives the full, un-jittered wait).
    #[must_use]
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        let exponent = i32::try_from(n.saturating_sub(1).min(64)).unwrap_or(64);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max)
    }

    /// The `n`-th wait, with fresh jitter.
    #[must_use]
    pub fn delay_jittered(&self, n: u32) -> Duration {
        self.delay(n, rand::random::<f64>())
    }
}

/// How a run's failed attempts are retried: how many attempts, and the [`Backoff`]
/// between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The most attempts one run may take (1: never retry).
    pub max_attempts: u32,
    /// The wait after each failed attempt.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 attempts, 1 s then 2 s (×2), at most 5 min, 20 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    #[must_use]
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the most attempts (at least 1).
    #[must_use]
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = if max_attempts == 0 { 1 } else { max_attempts };
        self
    }

    /// Sets the whole backoff.
    #[must_use]
    pub const fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the wait after the first failure.
    #[must_use]
    pub const fn with_initial_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = self.backoff.with_initial(backoff);
        self
    }

    /// Sets the longest wait.
    #[must_use]
    pub const fn with_max_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = self.backoff.with_max(backoff);
        self
    }

    /// Sets the growth per retry (at least 1).
    #[must_use]
    pub const fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff = self.backoff.with_multiplier(multiplier);
        self
    }

    /// Sets the jitter fraction (clamped to 0..=1).
    #[must_use]
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.backoff = self.backoff.with_jitter(jitter);
        self
    }

    /// The wait after failed attempt `attempt` (from 1), with fresh jitter.
    #[must_use]
    pub fn delay_after(&self, attempt: u32) -> Duration {
        self.backoff.delay_jittered(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_caps() {
        let backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).with_jitter(0.5);
        assert_eq!(backoff.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(backoff.delay(5, 0.0), Duration::from_secs(10));
        assert_eq!(backoff.delay(500, 0.0), Duration::from_secs(10));
        // Jitter takes away at most half.
        assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(2));
        let jittered = backoff.delay_jittered(3);
        assert!(jittered >= Duration::from_secs(2) && jittered <= Duration::from_secs(4));
    }

    #[test]
    fn a_policy_builds_its_backoff() {
        let policy = RetryPolicy::default()
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(350))
            .with_multiplier(0.5)
            .with_jitter(2.0);
        assert_eq!(
            policy.backoff,
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(350),
                multiplier: 1.0,
                jitter: 1.0,
            }
        );
    }

    #[test]
    fn max_attempts_is_at_least_one() {
        assert_eq!(RetryPolicy::default().with_max_attempts(0).max_attempts, 1);
        assert_eq!(RetryPolicy::never().max_attempts, 1);
    }
}
