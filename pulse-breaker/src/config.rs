//! Breaker configuration: trip conditions, window, half-open probes, backoff.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::clock::{Clock, TokioClock};
use crate::observer::Observer;
use crate::window::SlidingWindow;

/// Everything a [`Breaker`](crate::Breaker) is built from; every field has a default
/// (see the [tuning guide](crate::docs::tuning)) and a `with_*` builder.
///
/// ```
/// use std::time::Duration;
/// use pulse_breaker::{Backoff, Breaker, BreakerConfig, SlidingWindow};
///
/// let breaker = Breaker::new(
///     BreakerConfig::default()
///         .with_failure_rate_threshold(0.25)
///         .with_sliding_window(SlidingWindow::time(Duration::from_secs(30)))
///         .with_minimum_calls(10)
///         .with_slow_call_threshold(Some(Duration::from_secs(2)))
///         .with_backoff(Backoff::constant(Duration::from_secs(10))),
/// )
/// .expect("a valid configuration");
/// assert!(breaker.snapshot().state.admits());
/// ```
#[derive(Clone)]
#[must_use]
pub struct BreakerConfig {
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_threshold: Option<Duration>,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) window: SlidingWindow,
    pub(crate) half_open_probes: u32,
    pub(crate) probe_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) forced_open_retry_after: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) jitter_seed: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_threshold: None,
            minimum_calls: 20,
            consecutive_failures: Some(5),
            window: SlidingWindow::Count(100),
            half_open_probes: 1,
            probe_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            forced_open_retry_after: Self::DEFAULT_FORCED_OPEN_RETRY_AFTER,
            clock: Arc::new(TokioClock),
            observer: None,
            jitter_seed: 0x5eed_0fb7_ea4e_7500,
        }
    }
}

impl fmt::Debug for BreakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerConfig")
            .field("failure_rate_threshold", &self.failure_rate_threshold)
            .field("slow_call_rate_threshold", &self.slow_call_rate_threshold)
            .field("slow_call_threshold", &self.slow_call_threshold)
            .field("minimum_calls", &self.minimum_calls)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("window", &self.window)
            .field("half_open_probes", &self.half_open_probes)
            .field("probe_timeout", &self.probe_timeout)
            .field("backoff", &self.backoff)
            .field("forced_open_retry_after", &self.forced_open_retry_after)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl BreakerConfig {
    /// The largest number of half-open probes.
    pub const MAX_PROBES: u32 = 1024;

    /// The default retry hint of a forced-open circuit: 30 s.
    pub const DEFAULT_FORCED_OPEN_RETRY_AFTER: Duration = Duration::from_secs(30);

    /// Trip when at least this fraction (in `(0, 1]`) of the window's calls failed
    /// (default 0.5).
    pub fn with_failure_rate_threshold(mut self, fraction: f64) -> Self {
        self.failure_rate_threshold = fraction;
        self
    }

    /// Trip when at least this fraction (in `(0, 1]`) of the window's calls were slow
    /// (default 1.0; only with a slow-call threshold).
    pub fn with_slow_call_rate_threshold(mut self, fraction: f64) -> Self {
        self.slow_call_rate_threshold = fraction;
        self
    }

    /// Calls taking at least this long are slow (default `None`: no slow-call tracking,
    /// and the closed path never reads the clock).
    pub fn with_slow_call_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.slow_call_threshold = threshold;
        self
    }

    /// Rates are not evaluated before the window holds this many calls (default 20).
    pub fn with_minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Trip after this many failures in a row, whatever the window says (default 5;
    /// `None` disables the condition).
    pub fn with_consecutive_failures(mut self, failures: Option<u32>) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// The window the rates are computed over (default: the last 100 calls).
    pub fn with_sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// How many probe calls half-open admits, and how many must succeed to close
    /// (default 1).
    pub fn with_half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// A half-open circuit whose probes have not finished this long after the last one
    /// was admitted re-opens, so a hung probe cannot wedge it (default 10 s).
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// How long the circuit stays open (default: exponential 5 s → 60 s, 20 % jitter).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry hint a [forced-open](crate::Breaker::force_open) circuit gives
    /// ([`BreakerOpen::retry_after`](crate::BreakerOpen::retry_after),
    /// [`Breaker::retry_after`](crate::Breaker::retry_after), and so the HTTP
    /// `Retry-After`). A forced open has no end the breaker knows of, so this is the
    /// interval at which clients should come back (default 30 s; zero is answered as
    /// 1 s in `Retry-After`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use pulse_breaker::{Breaker, BreakerConfig};
    ///
    /// let breaker = Breaker::new(
    ///     BreakerConfig::default().with_forced_open_retry_after(Duration::from_secs(120)),
    /// )
    /// .expect("a valid configuration");
    /// breaker.force_open();
    /// let open = breaker.try_acquire().expect_err("forced open");
    /// assert_eq!(open.retry_after(), Some(Duration::from_secs(120)));
    /// assert_eq!(breaker.retry_after(), Some(Duration::from_secs(120)));
    /// ```
    pub fn with_forced_open_retry_after(mut self, hint: Duration) -> Self {
        self.forced_open_retry_after = hint;
        self
    }

    /// The clock (default [`TokioClock`]).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// An observer of transitions, outcomes and rejections (default: none).
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Seeds the jitter generator (for reproducible runs).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let fraction = |name: &'static str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::Fraction { name, value: v })
            }
        };
        fraction("failure_rate_threshold", self.failure_rate_threshold)?;
        fraction("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.minimum_calls == 0 {
            return Err(ConfigError::Zero("minimum_calls"));
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::Zero("consecutive_failures"));
        }
        if !(1..=Self::MAX_PROBES).contains(&self.half_open_probes) {
            return Err(ConfigError::Probes(self.half_open_probes));
        }
        match self.window {
            SlidingWindow::Count(n) if !(1..=SlidingWindow::MAX_COUNT).contains(&n) => {
                return Err(ConfigError::Window("count must be in 1..=524288"));
            }
            SlidingWindow::Time { span, buckets } => {
                if !(1..=SlidingWindow::MAX_BUCKETS).contains(&buckets) {
                    return Err(ConfigError::Window("buckets must be in 1..=1024"));
                }
                if span.as_millis() < u128::from(buckets) {
                    return Err(ConfigError::Window(
                        "span must be at least one millisecond per bucket",
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A threshold outside `(0, 1]`.
    #[error("{name} must be a fraction in (0, 1], got {value}")]
    Fraction {
        /// The setting.
        name: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A count that must be at least 1.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// Half-open probes outside `1..=1024`.
    #[error("half_open_probes must be in 1..=1024, got {0}")]
    Probes(u32),
    /// A sliding window that cannot be built.
    #[error("invalid sliding window: {0}")]
    Window(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(
            BreakerConfig::default()
                .with_failure_rate_threshold(0.0)
                .validate()
                .is_err()
        );
        assert!(
            BreakerConfig::default()
                .with_half_open_probes(0)
                .validate()
                .is_err()
        );
        assert!(
            BreakerConfig::default()
                .with_sliding_window(SlidingWindow::Count(0))
                .validate()
                .is_err()
        );
        assert!(
            BreakerConfig::default()
                .with_sliding_window(SlidingWindow::Time {
                    span: Duration::from_millis(5),
                    buckets: 10
                })
                .validate()
                .is_err()
        );
    }
}
