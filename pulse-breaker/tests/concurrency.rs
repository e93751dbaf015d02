//! Many callers at once never get more than the configured number of half-open probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pulse_breaker::{
    Backoff, BoxError, Breaker, BreakerConfig, CircuitBreaker, ManualClock, Observer, Outcome,
    State,
};
use tower::{Service, ServiceExt, service_fn};

const PROBES: u32 = 3;

fn half_open_breaker(clock: &ManualClock, observer: impl Observer) -> Breaker {
    let b = Breaker::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_half_open_probes(PROBES)
            .with_probe_timeout(Duration::from_secs(3600))
            .with_backoff(Backoff::constant(Duration::from_secs(1)))
            .with_clock(clock.clone())
            .with_observer(observer),
    )
    .unwrap();
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(1));
    b
}

/// Tracks the most probes ever running at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Closings(Arc<AtomicUsize>);

impl Observer for Closings {
    fn on_transition(&self, _from: State, to: State) {
        if to == State::Closed {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn threads_never_exceed_the_probe_permits() {
    let clock = ManualClock::new();
    let breaker = half_open_breaker(&clock, Closings::default());
    let in_flight = Arc::new(InFlight::default());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let breaker = breaker.clone();
            let in_flight = in_flight.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    if let Ok(permit) = breaker.try_acquire() {
                        in_flight.enter();
                        if i % 7 == 0 {
                            std::thread::yield_now();
                        }
                        in_flight.leave();
                        // Cancelled or ignored: the permit comes back, the circuit stays
                        // half-open.
                        if i % 2 == 0 {
                            drop(permit);
                        } else {
                            permit.record(Outcome::Ignore);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(in_flight.max.load(Ordering::SeqCst) <= PROBES as usize);
    assert!(in_flight.total.load(Ordering::SeqCst) >= PROBES as usize);
    let snap = breaker.snapshot();
    assert_eq!(snap.state, State::HalfOpen);
    assert_eq!(snap.probes_in_flight, 0, "every permit was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_never_exceed_the_probe_permits_and_close_once() {
    let clock = ManualClock::new();
    let closings = Closings::default();
    let breaker = half_open_breaker(&clock, closings.clone());
    let in_flight = Arc::new(InFlight::default());
    let upstream = {
        let in_flight = in_flight.clone();
        service_fn(move |_: ()| {
            let in_flight = in_flight.clone();
            async move {
                in_flight.enter();
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                in_flight.leave();
                Ok::<_, BoxError>(())
            }
        })
    };

    // Phase 1: every outcome is ignored, so the circuit stays half-open and the probe
    // permits keep cycling between 64 tasks.
    let ignoring = CircuitBreaker::new(upstream.clone(), breaker.clone())
        .with_classifier(|_: Result<&(), &BoxError>| Outcome::Ignore);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut service = ignoring.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    let _ = service.ready().await.unwrap().call(()).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(in_flight.max.load(Ordering::SeqCst) <= PROBES as usize);
    assert!(in_flight.total.load(Ordering::SeqCst) >= PROBES as usize);
    assert_eq!(breaker.state(), State::HalfOpen);

    // Phase 2: successes count; 64 concurrent callers close the circuit exactly once.
    let counting = CircuitBreaker::new(upstream, breaker.clone());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut service = counting.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let _ = service.ready().await.unwrap().call(()).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(closings.0.load(Ordering::SeqCst), 1);
    assert_eq!(breaker.state(), State::Closed);
}
