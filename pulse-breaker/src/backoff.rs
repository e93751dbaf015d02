//! How long the circuit stays open.

use std::time::Duration;

/// The open-duration policy: how long the breaker rejects before it lets probes through.
///
/// `attempt` counts consecutive re-opens: 0 when the circuit trips from closed, then
/// 1, 2, … each time a half-open probe fails. A successful recovery (half-open → closed)
/// resets it, so the next trip starts from the base duration again.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same open duration every time.
    Constant(Duration),
    /// `base * factor^attempt`, capped at `max`, then reduced by up to `jitter`
    /// (a fraction in `0.0..=1.0`) at random so that many gateways do not probe a
    /// recovering upstream in lockstep.
    Exponential {
        /// The open duration of the first trip.
        base: Duration,
        /// Growth per consecutive re-open (at least 1.0).
        factor: f64,
        /// The cap.
        max: Duration,
        /// Fraction of the duration removed at random: the result lies in
        /// `[d * (1 - jitter), d]`.
        jitter: f64,
    },
}

impl Backoff {
    /// A constant open duration.
    #[must_use]
    pub const fn constant(duration: Duration) -> Self {
        Self::Constant(duration)
    }

    /// Exponential backoff from `base` doubling up to `max`, without jitter.
    #[must_use]
    pub const fn exponential(base: Duration, max: Duration) -> Self {
        Self::Exponential {
            base,
            factor: 2.0,
            max,
            jitter: 0.0,
        }
    }

    /// The same policy with another growth factor (exponential only).
    #[must_use]
    pub fn with_factor(self, new_factor: f64) -> Self {
        match self {
            Self::Exponential {
                base, max, jitter, ..
            } => Self::Exponential {
                base,
                factor: new_factor.max(1.0),
                max,
                jitter,
            },
            other => other,
        }
    }

    /// The same policy with a jitter fraction in `0.0..=1.0` (exponential only).
    #[must_use]
    pub fn with_jitter(self, new_jitter: f64) -> Self {
        match self {
            Self::Exponential {
                base, factor, max, ..
            } => Self::Exponential {
                base,
                factor,
                max,
                jitter: new_jitter.clamp(0.0, 1.0),
            },
            other => other,
        }
    }

    /// The open duration for the given re-open `attempt`; `unit` is a uniform random
    /// number in `[0, 1)` used for jitter.
    #[must_use]
    pub fn open_duration(&self, attempt: u32, unit: f64) -> Duration {
        match *self {
            Self::Constant(d) => d,
            Self::Exponential {
                base,
                factor,
                max,
                jitter,
            } => {
                let exp = i32::try_from(attempt.min(64)).unwrap_or(64);
                let grown = base.as_secs_f64() * factor.max(1.0).powi(exp);
                let capped = grown.min(max.as_secs_f64()).max(0.0);
                let jittered = capped * (1.0 - jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
                Duration::try_from_secs_f64(jittered).unwrap_or(max)
            }
        }
    }
}

impl Default for Backoff {
    /// Exponential from 5 s, doubling, capped at 60 s, with 20 % jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_secs(5), Duration::from_secs(60)).with_jitter(0.2)
    }
}

/// splitmix64: a tiny, allocation-free generator for jitter; quality is ample for it.
pub(crate) fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Maps 64 random bits to `[0, 1)`.
pub(crate) fn unit_interval(bits: u64) -> f64 {
    // 53 bits of mantissa.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_grows_and_caps() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.open_duration(0, 0.5), Duration::from_secs(1));
        assert_eq!(b.open_duration(1, 0.5), Duration::from_secs(2));
        assert_eq!(b.open_duration(3, 0.5), Duration::from_secs(8));
        assert_eq!(b.open_duration(4, 0.5), Duration::from_secs(10));
        assert_eq!(b.open_duration(u32::MAX, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(10))
            .with_jitter(0.25);
        let mut state = 42_u64;
        for _ in 0..1000 {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let d = b.open_duration(0, unit_interval(splitmix64(state)));
            assert!(d <= Duration::from_secs(10));
            assert!(d >= Duration::from_millis(7500));
        }
    }

    #[test]
    fn constant_ignores_attempts() {
        let b = Backoff::constant(Duration::from_secs(3));
        assert_eq!(b.open_duration(9, 0.9), Duration::from_secs(3));
    }
}
