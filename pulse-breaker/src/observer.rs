//! Observing a breaker: transitions, outcomes, rejections.
//!
//! Without an observer the breaker makes no call at all. Observers are called inline on
//! the request path, so they must be cheap and must not block; the adapters here
//! allocate nothing per call.

use crate::policy::Outcome;
use crate::state::State;

/// Receives a breaker's events. Every method has an empty default.
pub trait Observer: Send + Sync + 'static {
    /// The circuit moved from `from` to `to`.
    fn on_transition(&self, from: State, to: State) {
        let _ = (from, to);
    }

    /// An admitted call finished (stale results included, before they are discarded).
    fn on_outcome(&self, outcome: Outcome, slow: bool) {
        let _ = (outcome, slow);
    }

    /// A call was rejected in `state`.
    fn on_rejected(&self, state: State) {
        let _ = state;
    }
}

/// An observer that does nothing (the same as none).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

#[cfg(feature = "tracing")]
pub use self::tracing_observer::TracingObserver;

#[cfg(feature = "tracing")]
mod tracing_observer {
    use std::borrow::Cow;

    use super::{Observer, Outcome, State};

    /// Logs transitions at `WARN` (opening) or `INFO` (recovering) and rejections and
    /// outcomes at `TRACE`, with the breaker's name in field `breaker`.
    #[derive(Debug, Clone)]
    pub struct TracingObserver {
        name: Cow<'static, str>,
    }

    impl TracingObserver {
        /// An observer for the breaker called `name`.
        #[must_use]
        pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
            Self { name: name.into() }
        }
    }

    impl Observer for TracingObserver {
        fn on_transition(&self, from: State, to: State) {
            if matches!(to, State::Open | State::ForcedOpen) {
                tracing::warn!(breaker = %self.name, from = from.as_str(), to = to.as_str(), "circuit breaker opened");
            } else {
                tracing::info!(breaker = %self.name, from = from.as_str(), to = to.as_str(), "circuit breaker state changed");
            }
        }

        fn on_outcome(&self, outcome: Outcome, slow: bool) {
            tracing::trace!(breaker = %self.name, ?outcome, slow, "circuit breaker outcome");
        }

        fn on_rejected(&self, state: State) {
            tracing::trace!(breaker = %self.name, state = state.as_str(), "circuit breaker rejected a call");
        }
    }
}

#[cfg(feature = "metrics")]
pub use self::metrics_observer::MetricsObserver;

#[cfg(feature = "metrics")]
mod metrics_observer {
    use std::borrow::Cow;

    use metrics::{Counter, Gauge};

    use super::{Observer, Outcome, State};

    /// Records with the `metrics` facade, labelled `breaker="<name>"`:
    ///
    /// | metric | kind | labels |
    /// |---|---|---|
    /// | `pulse_breaker_calls_total` | counter | `outcome` = success, failure, ignore |
    /// | `pulse_breaker_slow_calls_total` | counter | |
    /// | `pulse_breaker_rejected_total` | counter | |
    /// | `pulse_breaker_transitions_total` | counter | `to` = the new state |
    /// | `pulse_breaker_state` | gauge | `state`: 1 for the current state, 0 for others |
    ///
    /// Handles are registered once, when the observer is built.
    #[derive(Clone)]
    pub struct MetricsObserver {
        name: Cow<'static, str>,
        success: Counter,
        failure: Counter,
        ignore: Counter,
        slow: Counter,
        rejected: Counter,
        states: [Gauge; 6],
    }

    const STATES: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    impl MetricsObserver {
        /// An observer for the breaker called `name`.
        #[must_use]
        pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
            let name: Cow<'static, str> = name.into();
            let calls = |outcome: &'static str| metrics::counter!("pulse_breaker_calls_total", "breaker" => name.clone(), "outcome" => outcome);
            let states = STATES.map(|s| {
                metrics::gauge!("pulse_breaker_state", "breaker" => name.clone(), "state" => s.as_str())
            });
            if let Some(closed) = states.first() {
                closed.set(1.0);
            }
            Self {
                success: calls("success"),
                failure: calls("failure"),
                ignore: calls("ignore"),
                slow: metrics::counter!("pulse_breaker_slow_calls_total", "breaker" => name.clone()),
                rejected: metrics::counter!("pulse_breaker_rejected_total", "breaker" => name.clone()),
                states,
                name,
            }
        }
    }

    impl std::fmt::Debug for MetricsObserver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MetricsObserver")
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }

    impl Observer for MetricsObserver {
        fn on_transition(&self, _from: State, to: State) {
            metrics::counter!("pulse_breaker_transitions_total", "breaker" => self.name.clone(), "to" => to.as_str())
                .increment(1);
            for (state, gauge) in STATES.iter().zip(&self.states) {
                gauge.set(if *state == to { 1.0 } else { 0.0 });
            }
        }

        fn on_outcome(&self, outcome: Outcome, slow: bool) {
            match outcome {
                Outcome::Success => self.success.increment(1),
                Outcome::Failure => self.failure.increment(1),
                Outcome::Ignore => self.ignore.increment(1),
            }
            if slow {
                self.slow.increment(1);
            }
        }

        fn on_rejected(&self, _state: State) {
            self.rejected.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    #[cfg(feature = "metrics")]
    #[test]
    fn metrics_observer_records_without_a_recorder() {
        // With no global recorder installed the handles are no-ops: this checks the
        // observer builds and runs on every path.
        let observer = MetricsObserver::new("etl");
        observer.on_outcome(Outcome::Failure, true);
        observer.on_outcome(Outcome::Success, false);
        observer.on_outcome(Outcome::Ignore, false);
        observer.on_rejected(State::Open);
        observer.on_transition(State::Closed, State::Open);
    }

    #[cfg(feature = "tracing")]
    #[test]
    fn tracing_observer_logs_every_event() {
        let observer = TracingObserver::new("etl");
        observer.on_transition(State::Closed, State::Open);
        observer.on_transition(State::HalfOpen, State::Closed);
        observer.on_outcome(Outcome::Failure, false);
        observer.on_rejected(State::Open);
    }

    #[test]
    fn noop_observer_is_an_observer() {
        fn takes(_: impl Observer) {}
        takes(NoopObserver);
    }
}
