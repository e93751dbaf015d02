//! The lock-free state machine shared by every clone of a breaker.
//!
//! One `AtomicU64` holds the state kind, a generation counter and a time in
//! milliseconds (the end of the open period, or the last probe admission in half-open),
//! so every transition is one compare-and-swap and a reader never sees a state with the
//! time of another. Every transition bumps the generation; a call remembers the
//! generation it was admitted in and its result is discarded if the circuit has moved
//! on since (a late failure from before a trip cannot reopen a recovered circuit).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backoff::{splitmix64, unit_interval};
use crate::config::BreakerConfig;
use crate::error::BreakerOpen;
use crate::observer::Observer;
use crate::policy::Outcome;
use crate::window::{Window, WindowCounts};
use crate::{Backoff, Clock};

/// The state of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow; outcomes are recorded and may trip the circuit.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A bounded number of probe calls test whether the service recovered.
    HalfOpen,
    /// Manually opened: every call is rejected until reset.
    ForcedOpen,
    /// Manually disabled: every call is admitted, nothing is recorded.
    Disabled,
    /// Every call is admitted and recorded, the circuit never trips.
    MetricsOnly,
}

impl State {
    /// A stable lowercase name (`"closed"`, `"half_open"`, …) for logs and labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// Whether calls are admitted without restriction in this state.
    #[must_use]
    pub const fn admits(self) -> bool {
        matches!(self, Self::Closed | Self::Disabled | Self::MetricsOnly)
    }

    fn code(self) -> u64 {
        match self {
            Self::Closed => CLOSED,
            Self::Open => OPEN,
            Self::HalfOpen => HALF_OPEN,
            Self::ForcedOpen => FORCED_OPEN,
            Self::Disabled => DISABLED,
            Self::MetricsOnly => METRICS_ONLY,
        }
    }

    fn from_code(code: u64) -> Self {
        match code {
            OPEN => Self::Open,
            HALF_OPEN => Self::HalfOpen,
            FORCED_OPEN => Self::ForcedOpen,
            DISABLED => Self::Disabled,
            METRICS_ONLY => Self::MetricsOnly,
            _ => Self::Closed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const DISABLED: u64 = 4;
const METRICS_ONLY: u64 = 5;

// State word: kind:3 | generation:21 | time_ms:40 (34 years of milliseconds).
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const GEN_BITS: u32 = 21;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

fn pack(kind: u64, generation: u32, time_ms: u64) -> u64 {
    (kind << (TIME_BITS + GEN_BITS))
        | (u64::from(generation & GEN_MASK) << TIME_BITS)
        | time_ms.min(TIME_MASK)
}

fn kind_of(word: u64) -> u64 {
    word >> (TIME_BITS + GEN_BITS)
}

fn gen_of(word: u64) -> u32 {
    ((word >> TIME_BITS) as u32) & GEN_MASK
}

fn time_of(word: u64) -> u64 {
    word & TIME_MASK
}

fn next_gen(word: u64) -> u32 {
    gen_of(word).wrapping_add(1) & GEN_MASK
}

// Probe word: generation:21 | admitted:16 | successes:16. A word of an older generation
// reads as (0, 0), so entering half-open needs no separate reset.
fn pack_probes(generation: u32, admitted: u32, successes: u32) -> u64 {
    (u64::from(generation) << 32) | (u64::from(admitted) << 16) | u64::from(successes)
}

fn unpack_probes(word: u64, generation: u32) -> (u32, u32) {
    if (word >> 32) as u32 == generation {
        (((word >> 16) & 0xffff) as u32, (word & 0xffff) as u32)
    } else {
        (0, 0)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How a call was admitted. Word-sized, like every field of [`Permit`], so that the
/// permit moves as whole words (no partial-store forwarding stalls on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Admission {
    Closed,
    Probe,
    MetricsOnly,
    Passthrough,
}

/// What an admitted call must report back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    pub(crate) generation: u64,
    pub(crate) admission: Admission,
    /// Nanoseconds since the breaker's origin when admitted, or `NO_START`.
    pub(crate) start_ns: u64,
}

const NO_START: u64 = u64::MAX;

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The current state. Open → half-open happens lazily, on the first call after the
    /// open period: until then the state reads `Open` with `retry_after` zero.
    pub state: State,
    /// The window's counts (cleared when the circuit closes).
    pub counts: WindowCounts,
    /// Failures in a row among the latest recorded calls.
    pub consecutive_failures: u32,
    /// Time left in the open period (`Open`), until the probe timeout (`HalfOpen`),
    /// or the configured hint when forced open
    /// ([`BreakerConfig::with_forced_open_retry_after`]); `None` when the circuit
    /// admits every call. The same value as [`Breaker::retry_after`](crate::Breaker::retry_after).
    pub retry_after: Option<Duration>,
    /// Half-open probes admitted and not yet released in this half-open period.
    pub probes_in_flight: u32,
    /// Consecutive re-opens (the backoff attempt), 0 after a recovery.
    pub reopen_attempt: u32,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// Results discarded because the circuit changed state during the call.
    pub stale_results: u64,
    /// Monotonic generation counter (wraps at 2^21), bumped on every transition.
    pub generation: u32,
}

pub(crate) struct Core {
    state: AtomicU64,
    probes: AtomicU64,
    consecutive: AtomicU32,
    reopen_attempt: AtomicU32,
    rng: AtomicU64,
    rejected: AtomicU64,
    stale: AtomicU64,
    window: Window,
    origin: Instant,
    failure_rate_threshold: f64,
    slow_call_rate_threshold: f64,
    slow_call_threshold: Option<Duration>,
    minimum_calls: u32,
    consecutive_failures: u32,
    half_open_probes: u32,
    probe_timeout_ms: u64,
    forced_open_retry_after: Duration,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn Observer>>,
}

impl Core {
    pub(crate) fn new(config: &BreakerConfig) -> Self {
        Self {
            state: AtomicU64::new(pack(CLOSED, 0, 0)),
            probes: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            reopen_attempt: AtomicU32::new(0),
            rng: AtomicU64::new(config.jitter_seed),
            rejected: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            window: Window::new(config.window),
            origin: config.clock.now(),
            failure_rate_threshold: config.failure_rate_threshold,
            slow_call_rate_threshold: config.slow_call_rate_threshold,
            slow_call_threshold: config.slow_call_threshold,
            minimum_calls: config.minimum_calls,
            consecutive_failures: config.consecutive_failures.unwrap_or(u32::MAX),
            half_open_probes: config.half_open_probes,
            probe_timeout_ms: millis(config.probe_timeout),
            forced_open_retry_after: config.forced_open_retry_after,
            backoff: config.backoff,
            clock: config.clock.clone(),
            observer: config.observer.clone(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(
            self.clock
                .now()
                .saturating_duration_since(self.origin)
                .as_nanos(),
        )
        .unwrap_or(NO_START - 1)
    }

    fn now_ms(&self) -> u64 {
        millis(self.clock.now().saturating_duration_since(self.origin))
    }

    #[inline]
    fn permit(&self, generation: u32, admission: Admission) -> Permit {
        Permit {
            generation: u64::from(generation),
            admission,
            start_ns: if self.slow_call_threshold.is_some() {
                self.now_ns()
            } else {
                NO_START
            },
        }
    }

    pub(crate) fn state(&self) -> State {
        State::from_code(kind_of(self.state.load(Ordering::Acquire)))
    }

    /// Admits a call or says why not.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Result<Permit, BreakerOpen> {
        let word = self.state.load(Ordering::Acquire);
        // The hot path, kept small enough to inline into the service's `call`.
        if kind_of(word) == CLOSED && self.slow_call_threshold.is_none() {
            return Ok(Permit {
                generation: u64::from(gen_of(word)),
                admission: Admission::Closed,
                start_ns: NO_START,
            });
        }
        self.acquire_slow(word)
    }

    #[inline(never)]
    fn acquire_slow(&self, mut word: u64) -> Result<Permit, BreakerOpen> {
        loop {
            let generation = gen_of(word);
            match kind_of(word) {
                CLOSED => return Ok(self.permit(generation, Admission::Closed)),
                METRICS_ONLY => return Ok(self.permit(generation, Admission::MetricsOnly)),
                DISABLED => {
                    return Ok(Permit {
                        generation: u64::from(generation),
                        admission: Admission::Passthrough,
                        start_ns: NO_START,
                    });
                }
                FORCED_OPEN => {
                    return Err(self.reject(State::ForcedOpen, Some(self.forced_open_retry_after)));
                }
                OPEN => {
                    let now = self.now_ms();
                    let until = time_of(word);
                    if now < until {
                        return Err(
                            self.reject(State::Open, Some(Duration::from_millis(until - now)))
                        );
                    }
                    let next = pack(HALF_OPEN, next_gen(word), now);
                    match self.state.compare_exchange(
                        word,
                        next,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            self.notify(State::Open, State::HalfOpen);
                            word = next;
                        }
                        Err(actual) => word = actual,
                    }
                }
                _ => {
                    let now = self.now_ms();
                    if self.take_probe(generation) {
                        self.touch_half_open(generation, now);
                        return Ok(self.permit(generation, Admission::Probe));
                    }
                    let deadline = time_of(word).saturating_add(self.probe_timeout_ms);
                    if now < deadline {
                        return Err(self
                            .reject(State::HalfOpen, Some(Duration::from_millis(deadline - now))));
                    }
                    // The probes hung: treat the half-open attempt as failed.
                    self.trip(word);
                    word = self.state.load(Ordering::Acquire);
                }
            }
        }
    }

    fn reject(&self, state: State, retry_after: Option<Duration>) -> BreakerOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer.on_rejected(state);
        }
        BreakerOpen::new(state, retry_after)
    }

    fn take_probe(&self, generation: u32) -> bool {
        let mut word = self.probes.load(Ordering::Acquire);
        loop {
            let (admitted, successes) = unpack_probes(word, generation);
            if admitted >= self.half_open_probes {
                return false;
            }
            let next = pack_probes(generation, admitted + 1, successes);
            match self
                .probes
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    fn release_probe(&self, generation: u32) {
        let mut word = self.probes.load(Ordering::Acquire);
        loop {
            let (admitted, successes) = unpack_probes(word, generation);
            if admitted == 0 || admitted <= successes {
                return;
            }
            let next = pack_probes(generation, admitted - 1, successes);
            match self
                .probes
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts a successful probe; true when it was the last one needed.
    fn probe_succeeded(&self, generation: u32) -> bool {
        let mut word = self.probes.load(Ordering::Acquire);
        loop {
            let (admitted, successes) = unpack_probes(word, generation);
            if successes >= admitted {
                return false;
            }
            let next = pack_probes(generation, admitted, successes + 1);
            match self
                .probes
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return successes + 1 >= self.half_open_probes,
                Err(actual) => word = actual,
            }
        }
    }

    /// Restarts the probe timeout from the latest admission.
    fn touch_half_open(&self, generation: u32, now: u64) {
        let mut word = self.state.load(Ordering::Acquire);
        while kind_of(word) == HALF_OPEN && gen_of(word) == generation && time_of(word) < now {
            let next = pack(HALF_OPEN, generation, now);
            match self
                .state
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// The call admitted with `permit` finished with `outcome`.
    #[inline(always)]
    pub(crate) fn complete(&self, permit: &Permit, outcome: Outcome) {
        // The hot path: a success while closed, into a window already full of
        // successes, changes nothing (see `CountWindow::record`).
        if permit.admission == Admission::Closed
            && outcome == Outcome::Success
            && permit.start_ns == NO_START
            && self.observer.is_none()
            && self.window.is_full_of_successes()
            && u64::from(gen_of(self.state.load(Ordering::Acquire))) == permit.generation
            && self.consecutive.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.complete_slow(permit, outcome);
    }

    #[inline(never)]
    fn complete_slow(&self, permit: &Permit, outcome: Outcome) {
        let slow = match self.slow_call_threshold {
            Some(threshold) if permit.start_ns != NO_START && outcome != Outcome::Ignore => {
                Duration::from_nanos(self.now_ns().saturating_sub(permit.start_ns)) >= threshold
            }
            _ => false,
        };
        let generation = permit.generation as u32;
        if let Some(observer) = &self.observer {
            observer.on_outcome(outcome, slow);
        }
        if permit.admission == Admission::Passthrough {
            return;
        }
        let word = self.state.load(Ordering::Acquire);
        if gen_of(word) != generation {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match permit.admission {
            Admission::Probe => match outcome {
                Outcome::Ignore => self.release_probe(generation),
                Outcome::Failure => self.trip(word),
                Outcome::Success if slow => self.trip(word),
                Outcome::Success => {
                    if self.probe_succeeded(generation) {
                        self.close(word);
                    }
                }
            },
            Admission::Closed | Admission::MetricsOnly => {
                if outcome == Outcome::Ignore {
                    return;
                }
                let failure = outcome == Outcome::Failure;
                let now = if self.window.needs_time() {
                    self.now_ms()
                } else {
                    0
                };
                self.window.record(failure, slow, now);
                let in_a_row = if failure {
                    self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    if self.consecutive.load(Ordering::Relaxed) != 0 {
                        self.consecutive.store(0, Ordering::Relaxed);
                    }
                    0
                };
                if permit.admission == Admission::Closed
                    && (failure || slow)
                    && self.should_trip(in_a_row, now)
                {
                    self.trip(word);
                }
            }
            Admission::Passthrough => {}
        }
    }

    /// The call admitted with `permit` was dropped before it finished.
    pub(crate) fn cancel(&self, permit: &Permit) {
        if permit.admission == Admission::Probe
            && u64::from(gen_of(self.state.load(Ordering::Acquire))) == permit.generation
        {
            self.release_probe(permit.generation as u32);
        }
    }

    fn should_trip(&self, in_a_row: u32, now: u64) -> bool {
        if in_a_row >= self.consecutive_failures {
            return true;
        }
        let counts = self.window.counts(now);
        counts.calls >= self.minimum_calls
            && (counts.failure_rate() >= self.failure_rate_threshold
                || (self.slow_call_threshold.is_some()
                    && counts.slow_rate() >= self.slow_call_rate_threshold))
    }

    /// CAS from `seen` to `next` while the state kind and generation stay those of
    /// `seen` (the time field may move under us in half-open).
    fn transition(&self, seen: u64, next: u64) -> bool {
        let mut current = seen;
        loop {
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual)
                    if kind_of(actual) == kind_of(seen) && gen_of(actual) == gen_of(seen) =>
                {
                    current = actual;
                }
                Err(_) => return false,
            }
        }
    }

    /// Closed or half-open → open.
    fn trip(&self, seen: u64) {
        let from = State::from_code(kind_of(seen));
        let attempt = if from == State::HalfOpen {
            self.reopen_attempt
                .load(Ordering::Acquire)
                .saturating_add(1)
        } else {
            0
        };
        let open_for = self.backoff.open_duration(attempt, self.next_unit());
        let until = self.now_ms().saturating_add(millis(open_for));
        if self.transition(seen, pack(OPEN, next_gen(seen), until)) {
            self.reopen_attempt.store(attempt, Ordering::Release);
            self.notify(from, State::Open);
        }
    }

    /// Half-open → closed, with a fresh window.
    fn close(&self, seen: u64) {
        // Nothing records into the window in half-open, so clearing it before the
        // transition loses no outcome of the new closed period.
        self.window.clear();
        self.consecutive.store(0, Ordering::Relaxed);
        if self.transition(seen, pack(CLOSED, next_gen(seen), 0)) {
            self.reopen_attempt.store(0, Ordering::Release);
            self.notify(State::HalfOpen, State::Closed);
        }
    }

    /// A manual transition from whatever state to `to`.
    pub(crate) fn force(&self, to: State) {
        if to == State::Closed {
            self.window.clear();
            self.consecutive.store(0, Ordering::Relaxed);
            self.reopen_attempt.store(0, Ordering::Release);
        }
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let next = pack(to.code(), next_gen(word), 0);
            match self
                .state
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.notify(State::from_code(kind_of(word)), to);
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    fn notify(&self, from: State, to: State) {
        if let Some(observer) = &self.observer {
            observer.on_transition(from, to);
        }
    }

    fn next_unit(&self) -> f64 {
        let seed = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        unit_interval(splitmix64(seed))
    }

    /// See [`Breaker::retry_after`](crate::Breaker::retry_after).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let word = self.state.load(Ordering::Acquire);
        match kind_of(word) {
            OPEN | HALF_OPEN => self.retry_after_at(word, self.now_ms()),
            // No clock read for the states that do not need one.
            _ => self.retry_after_at(word, 0),
        }
    }

    fn retry_after_at(&self, word: u64, now: u64) -> Option<Duration> {
        match kind_of(word) {
            OPEN => Some(Duration::from_millis(time_of(word).saturating_sub(now))),
            HALF_OPEN => Some(Duration::from_millis(
                time_of(word)
                    .saturating_add(self.probe_timeout_ms)
                    .saturating_sub(now),
            )),
            FORCED_OPEN => Some(self.forced_open_retry_after),
            _ => None,
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let word = self.state.load(Ordering::Acquire);
        let now = self.now_ms();
        let state = State::from_code(kind_of(word));
        let generation = gen_of(word);
        let retry_after = self.retry_after_at(word, now);
        let probes_in_flight = if state == State::HalfOpen {
            let (admitted, successes) =
                unpack_probes(self.probes.load(Ordering::Acquire), generation);
            admitted.saturating_sub(successes)
        } else {
            0
        };
        Snapshot {
            state,
            counts: self.window.counts(now),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            retry_after,
            probes_in_flight,
            reopen_attempt: self.reopen_attempt.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Relaxed),
            stale_results: self.stale.load(Ordering::Relaxed),
            generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_word_round_trips() {
        let w = pack(HALF_OPEN, GEN_MASK, TIME_MASK);
        assert_eq!(kind_of(w), HALF_OPEN);
        assert_eq!(gen_of(w), GEN_MASK);
        assert_eq!(time_of(w), TIME_MASK);
        assert_eq!(next_gen(w), 0);
        let w = pack(METRICS_ONLY, 7, 123_456);
        assert_eq!(
            (kind_of(w), gen_of(w), time_of(w)),
            (METRICS_ONLY, 7, 123_456)
        );
    }

    #[test]
    fn probe_word_resets_per_generation() {
        let w = pack_probes(3, 2, 1);
        assert_eq!(unpack_probes(w, 3), (2, 1));
        assert_eq!(unpack_probes(w, 4), (0, 0));
    }
}
