//! The lock-free state machine against a small sequential reference model.
//!
//! Random configurations and random sequences of calls (immediate or held open across
//! other operations), cancellations, time steps and manual transitions are applied to
//! both; after every step they must agree on admissions, state, counts and backoff.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use pulse_breaker::{
    Backoff, Breaker, BreakerConfig, CallPermit, ManualClock, Outcome, SlidingWindow, State,
};

#[derive(Debug, Clone, Copy)]
enum WindowKind {
    Count(u32),
    Time { span_ms: u64, buckets: u32 },
}

#[derive(Debug, Clone)]
struct Params {
    window: WindowKind,
    minimum_calls: u32,
    failure_rate: f64,
    consecutive: Option<u32>,
    slow_threshold_ms: Option<u64>,
    slow_rate: f64,
    probes: u32,
    probe_timeout_ms: u64,
    backoff: Backoff,
}

impl Params {
    fn config(&self, clock: &ManualClock) -> BreakerConfig {
        BreakerConfig::default()
            .with_sliding_window(match self.window {
                WindowKind::Count(n) => SlidingWindow::Count(n),
                WindowKind::Time { span_ms, buckets } => SlidingWindow::Time {
                    span: Duration::from_millis(span_ms),
                    buckets,
                },
            })
            .with_minimum_calls(self.minimum_calls)
            .with_failure_rate_threshold(self.failure_rate)
            .with_consecutive_failures(self.consecutive)
            .with_slow_call_threshold(self.slow_threshold_ms.map(Duration::from_millis))
            .with_slow_call_rate_threshold(self.slow_rate)
            .with_half_open_probes(self.probes)
            .with_probe_timeout(Duration::from_millis(self.probe_timeout_ms))
            .with_backoff(self.backoff)
            .with_clock(clock.clone())
    }
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignore),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    let window = prop_oneof![
        (1..8_u32).prop_map(WindowKind::Count),
        (1_000..4_000_u64, 1..5_u32)
            .prop_map(|(span_ms, buckets)| WindowKind::Time { span_ms, buckets }),
    ];
    let backoff = prop_oneof![
        (100..900_u64).prop_map(|ms| Backoff::constant(Duration::from_millis(ms))),
        (100..400_u64).prop_map(|ms| Backoff::exponential(
            Duration::from_millis(ms),
            Duration::from_millis(ms * 5)
        )),
    ];
    (
        window,
        1..6_u32,
        prop_oneof![Just(0.2), Just(0.5), Just(1.0)],
        prop::option::of(1..5_u32),
        prop::option::of(50..300_u64),
        prop_oneof![Just(0.5), Just(1.0)],
        1..4_u32,
        100..1_000_u64,
        backoff,
    )
        .prop_map(
            |(
                window,
                minimum_calls,
                failure_rate,
                consecutive,
                slow_threshold_ms,
                slow_rate,
                probes,
                probe_timeout_ms,
                backoff,
            )| Params {
                window,
                minimum_calls,
                failure_rate,
                consecutive,
                slow_threshold_ms,
                slow_rate,
                probes,
                probe_timeout_ms,
                backoff,
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    /// Acquire, let `ms` pass, record.
    Call {
        outcome: Outcome,
        ms: u64,
    },
    /// Acquire and keep the permit.
    Hold,
    /// Record the held permit `i` (modulo the number held).
    Finish {
        i: usize,
        outcome: Outcome,
    },
    /// Drop the held permit `i` unrecorded.
    Cancel {
        i: usize,
    },
    Advance(u64),
    ForceOpen,
    Disable,
    MetricsOnly,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (outcome(), prop_oneof![Just(0_u64), 0..400_u64]).prop_map(|(outcome, ms)| Op::Call { outcome, ms }),
        3 => Just(Op::Hold),
        3 => (any::<usize>(), outcome()).prop_map(|(i, outcome)| Op::Finish { i, outcome }),
        1 => any::<usize>().prop_map(|i| Op::Cancel { i }),
        4 => prop_oneof![1..300_u64, 300..3_000_u64].prop_map(Op::Advance),
        1 => prop_oneof![
            Just(Op::ForceOpen),
            Just(Op::Disable),
            Just(Op::MetricsOnly),
            Just(Op::Reset)
        ],
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Closed,
    Probe,
    MetricsOnly,
    Pass,
}

#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    kind: Kind,
    start: u64,
}

/// The reference: plain fields, no atomics, the rules written out as in the docs.
struct Model {
    p: Params,
    now: u64,
    state: State,
    generation: u64,
    open_until: u64,
    last_probe: u64,
    admitted: u32,
    successes: u32,
    /// (epoch or sequence, failure, slow)
    window: VecDeque<(u64, bool, bool)>,
    consecutive: u32,
    attempt: u32,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            now: 0,
            state: State::Closed,
            generation: 0,
            open_until: 0,
            last_probe: 0,
            admitted: 0,
            successes: 0,
            window: VecDeque::new(),
            consecutive: 0,
            attempt: 0,
        }
    }

    fn counts(&self) -> (u32, u32, u32) {
        let live: Vec<_> = match self.p.window {
            WindowKind::Count(_) => self.window.iter().collect(),
            WindowKind::Time { span_ms, buckets } => {
                let width = span_ms / u64::from(buckets);
                let epoch = self.now / width;
                self.window
                    .iter()
                    .filter(|(e, _, _)| epoch - e < u64::from(buckets))
                    .collect()
            }
        };
        (
            live.len() as u32,
            live.iter().filter(|w| w.1).count() as u32,
            live.iter().filter(|w| w.2).count() as u32,
        )
    }

    fn acquire(&mut self) -> Option<ModelPermit> {
        loop {
            let permit = |kind| ModelPermit {
                generation: self.generation,
                kind,
                start: self.now,
            };
            match self.state {
                State::Closed => return Some(permit(Kind::Closed)),
                State::MetricsOnly => return Some(permit(Kind::MetricsOnly)),
                State::Disabled => return Some(permit(Kind::Pass)),
                State::ForcedOpen => return None,
                State::Open => {
                    if self.now < self.open_until {
                        return None;
                    }
                    self.state = State::HalfOpen;
                    self.generation += 1;
                    self.last_probe = self.now;
                    self.admitted = 0;
                    self.successes = 0;
                }
                State::HalfOpen => {
                    if self.admitted < self.p.probes {
                        self.admitted += 1;
                        self.last_probe = self.last_probe.max(self.now);
                        return Some(permit(Kind::Probe));
                    }
                    if self.now < self.last_probe + self.p.probe_timeout_ms {
                        return None;
                    }
                    self.trip();
                }
                _ => unreachable!(),
            }
        }
    }

    fn complete(&mut self, permit: ModelPermit, outcome: Outcome) {
        if permit.kind == Kind::Pass || permit.generation != self.generation {
            return;
        }
        let slow = outcome != Outcome::Ignore
            && self
                .p
                .slow_threshold_ms
                .is_some_and(|t| self.now - permit.start >= t);
        match permit.kind {
            Kind::Probe => match outcome {
                Outcome::Ignore => {
                    if self.admitted > self.successes {
                        self.admitted -= 1;
                    }
                }
                Outcome::Failure => self.trip(),
                Outcome::Success if slow => self.trip(),
                Outcome::Success => {
                    if self.successes < self.admitted {
                        self.successes += 1;
                        if self.successes >= self.p.probes {
                            self.close();
                        }
                    }
                }
            },
            Kind::Closed | Kind::MetricsOnly => {
                if outcome == Outcome::Ignore {
                    return;
                }
                let failure = outcome == Outcome::Failure;
                match self.p.window {
                    WindowKind::Count(n) => {
                        self.window.push_back((0, failure, slow));
                        if self.window.len() > n as usize {
                            self.window.pop_front();
                        }
                    }
                    WindowKind::Time { span_ms, buckets } => {
                        let width = span_ms / u64::from(buckets);
                        self.window.push_back((self.now / width, failure, slow));
                    }
                }
                if failure {
                    self.consecutive += 1;
                } else {
                    self.consecutive = 0;
                }
                if permit.kind == Kind::Closed && (failure || slow) && self.should_trip() {
                    self.trip();
                }
            }
            Kind::Pass => {}
        }
    }

    fn should_trip(&self) -> bool {
        if self.p.consecutive.is_some_and(|n| self.consecutive >= n) {
            return true;
        }
        let (calls, failures, slow) = self.counts();
        calls >= self.p.minimum_calls
            && (f64::from(failures) / f64::from(calls) >= self.p.failure_rate
                || (self.p.slow_threshold_ms.is_some()
                    && f64::from(slow) / f64::from(calls) >= self.p.slow_rate))
    }

    fn trip(&mut self) {
        let attempt = if self.state == State::HalfOpen {
            self.attempt + 1
        } else {
            0
        };
        let open_for = self.p.backoff.open_duration(attempt, 0.0);
        self.open_until = self.now + open_for.as_millis() as u64;
        self.state = State::Open;
        self.generation += 1;
        self.attempt = attempt;
    }

    fn close(&mut self) {
        self.window.clear();
        self.consecutive = 0;
        self.attempt = 0;
        self.state = State::Closed;
        self.generation += 1;
    }

    fn force(&mut self, to: State) {
        if to == State::Closed {
            self.window.clear();
            self.consecutive = 0;
            self.attempt = 0;
        }
        self.state = to;
        self.generation += 1;
    }
}

fn check(model: &Model, real: &Breaker, step: usize) -> Result<(), TestCaseError> {
    let snap = real.snapshot();
    prop_assert_eq!(snap.state, model.state, "state after step {}", step);
    let (calls, failures, slow) = model.counts();
    prop_assert_eq!(
        (snap.counts.calls, snap.counts.failures, snap.counts.slow),
        (calls, failures, slow),
        "counts after step {}",
        step
    );
    prop_assert_eq!(
        snap.consecutive_failures,
        model.consecutive,
        "step {}",
        step
    );
    prop_assert_eq!(snap.reopen_attempt, model.attempt, "step {}", step);
    prop_assert_eq!(
        u64::from(snap.generation),
        model.generation,
        "generation after step {}",
        step
    );
    if model.state == State::Open {
        prop_assert_eq!(
            snap.retry_after,
            Some(Duration::from_millis(
                model.open_until.saturating_sub(model.now)
            )),
            "retry_after after step {}",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_reference_model(p in params(), ops in prop::collection::vec(op(), 1..120)) {
        let clock = ManualClock::new();
        let real = Breaker::new(p.config(&clock).with_jitter_seed(1)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Jitter is off in the generated policies, so both sides agree on durations.
        let mut model = Model::new(p);
        let mut held: Vec<(CallPermit, ModelPermit)> = Vec::new();
        let advance = |model: &mut Model, ms: u64| {
            clock.advance(Duration::from_millis(ms));
            model.now += ms;
        };

        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call { outcome, ms } => {
                    let r = real.try_acquire();
                    let m = model.acquire();
                    prop_assert_eq!(r.is_ok(), m.is_some(), "admission at step {}", step);
                    advance(&mut model, ms);
                    if let (Ok(r), Some(m)) = (r, m) {
                        r.record(outcome);
                        model.complete(m, outcome);
                    }
                }
                Op::Hold => {
                    let r = real.try_acquire();
                    let m = model.acquire();
                    prop_assert_eq!(r.is_ok(), m.is_some(), "admission at step {}", step);
                    if let (Ok(r), Some(m)) = (r, m) {
                        held.push((r, m));
                    }
                }
                Op::Finish { i, outcome } => {
                    if !held.is_empty() {
                        let (r, m) = held.swap_remove(i % held.len());
                        r.record(outcome);
                        model.complete(m, outcome);
                    }
                }
                Op::Cancel { i } => {
                    if !held.is_empty() {
                        let (r, m) = held.swap_remove(i % held.len());
                        drop(r);
                        model.complete(m, Outcome::Ignore);
                    }
                }
                Op::Advance(ms) => advance(&mut model, ms),
                Op::ForceOpen => { real.force_open(); model.force(State::ForcedOpen); }
                Op::Disable => { real.disable(); model.force(State::Disabled); }
                Op::MetricsOnly => { real.metrics_only(); model.force(State::MetricsOnly); }
                Op::Reset => { real.reset(); model.force(State::Closed); }
            }
            check(&model, &real, step)?;
        }
    }
}
