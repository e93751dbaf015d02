//! One upstream instance of a pool: its transport behind its own breaker, its load and
//! its outlier state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pulse_breaker::{Breaker, CircuitBreaker, State};
use tokio::time::Instant;

use super::ejection::Outlier;
use crate::UpstreamClassifier;

/// One upstream instance (see [`Pool::instances`](super::Pool::instances)).
pub struct Instance<S> {
    name: String,
    service: CircuitBreaker<S, UpstreamClassifier>,
    breaker: Breaker,
    in_flight: AtomicUsize,
    outlier: Mutex<Outlier>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Instance<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.name)
            .field("circuit", &self.breaker.state())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl<S> Instance<S> {
    /// `transport` guarded by `breaker`, classified with [`UpstreamClassifier`].
    pub(crate) fn new(name: String, transport: S, breaker: Breaker) -> Self {
        let service = CircuitBreaker::new(transport, breaker.clone())
            .with_classifier(UpstreamClassifier::new());
        Self {
            name,
            service,
            breaker,
            in_flight: AtomicUsize::new(0),
            outlier: Mutex::default(),
        }
    }

    /// Its name (usually its base URL), as given to the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its circuit breaker.
    pub const fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Its requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether outlier detection has taken it out of the draw now.
    pub fn is_ejected(&self) -> bool {
        self.outlier().is_ejected(Instant::now())
    }

    /// Its state now, e.g. for a health report.
    pub fn status(&self) -> InstanceStatus {
        let now = Instant::now();
        let outlier = self.outlier();
        InstanceStatus {
            name: self.name.clone(),
            circuit: self.breaker.state(),
            ejected_for: outlier.ejected_for(now),
            ejections_in_a_row: outlier.ejections(),
            consecutive_failures: outlier.consecutive_failures(),
            in_flight: self.in_flight(),
        }
    }

    pub(crate) fn outlier(&self) -> std::sync::MutexGuard<'_, Outlier> {
        // The state stays consistent under a panic elsewhere: every update is one step.
        self.outlier.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) const fn service(&self) -> &CircuitBreaker<S, UpstreamClassifier> {
        &self.service
    }

    /// Counts a request in flight until the guard drops (a cancelled request too).
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// `(rejecting, in flight)`: any instance whose circuit admits calls is lighter
    /// than any that rejects them, then requests in flight decide.
    pub(crate) fn load(&self) -> (bool, usize) {
        let rejecting = match self.breaker.state() {
            // Open with nothing left of its open period: the next call is its probe, not
            // penalised, or a healthy peer would starve it of its probe forever.
            State::Open => self.breaker.retry_after().is_none_or(|d| !d.is_zero()),
            // Forced open rejects whatever its retry hint says.
            state => !state.admits(),
        };
        (rejecting, self.in_flight())
    }
}

/// A request in flight on an instance.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One instance's state at one moment (see [`Instance::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// Its name.
    pub name: String,
    /// Its circuit's state.
    pub circuit: State,
    /// The rest of its ejection, when outlier detection has taken it out of the draw.
    pub ejected_for: Option<Duration>,
    /// How many times in a row it was ejected (the next ejection is that much longer).
    pub ejections_in_a_row: u32,
    /// Gateway failures in a row since its last success.
    pub consecutive_failures: u32,
    /// Its requests in flight.
    pub in_flight: usize,
}

impl InstanceStatus {
    /// Whether the pool sends it requests now: not ejected and its circuit admits
    /// calls (or is due to probe).
    pub fn is_available(&self) -> bool {
        self.ejected_for.is_none() && self.circuit.admits()
    }
}
