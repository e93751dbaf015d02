//! Circuit-breaker overhead: pulse-breaker next to tower-resilience's circuit breaker,
//! in one run, on the same trivial inner service.
//!
//! Run with: cargo bench --bench breaker -- --warm-up-time 1 --measurement-time 3
//!
//! Groups:
//! - `closed`: one call through a closed breaker (the inner service answers at once),
//!   with the bare inner service as the floor;
//! - `rejected`: one call through an open breaker;
//! - `contended`: the closed path from 4 threads sharing one breaker (time per call,
//!   all threads together).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use pulse_breaker::{Breaker, BreakerConfig, CircuitBreaker, Outcome};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_resilience::circuitbreaker::CircuitBreakerLayer as ResilienceLayer;

const THREADS: usize = 4;

type Inner = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, std::io::Error>>>;

fn inner() -> Inner {
    fn echo(x: u64) -> std::future::Ready<Result<u64, std::io::Error>> {
        std::future::ready(Ok(x))
    }
    service_fn(echo as fn(u64) -> _)
}

fn failing() -> Inner {
    fn fail(_: u64) -> std::future::Ready<Result<u64, std::io::Error>> {
        std::future::ready(Err(std::io::Error::other("down")))
    }
    service_fn(fail as fn(u64) -> _)
}

fn pulse(inner: Inner) -> CircuitBreaker<Inner> {
    CircuitBreaker::new(inner, pulse_breaker())
}

fn pulse_static(inner: Inner) -> CircuitBreaker<Inner> {
    CircuitBreaker::new(inner, pulse_breaker().into_static())
}

fn pulse_breaker() -> Breaker {
    Breaker::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(5))
            .with_backoff(pulse_breaker::Backoff::constant(Duration::from_secs(3600))),
    )
    .expect("valid configuration")
}

fn resilience<S>(
    inner: S,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send
where
    S: Service<u64, Response = u64, Error = std::io::Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let layer = ResilienceLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(5)
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .expect("valid tower-resilience configuration");
    ServiceBuilder::new().layer(layer).service(inner)
}

/// Runs `iters` calls on a current-thread runtime and returns the elapsed time.
fn run<S>(rt: &tokio::runtime::Runtime, service: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let ready = service.ready().await.ok().expect("ready");
            let _ = black_box(ready.call(black_box(i)).await);
        }
        start.elapsed()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn closed(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("closed");
    let mut bare = inner();
    group.bench_function("inner service alone", |b| {
        b.iter_custom(|iters| run(&rt, &mut bare, iters))
    });
    let breaker = Breaker::default();
    group.bench_function("pulse-breaker try_acquire+record", |b| {
        b.iter(|| {
            if let Ok(permit) = black_box(&breaker).try_acquire() {
                permit.record(black_box(Outcome::Success));
            }
        })
    });
    let fast = pulse_breaker().into_static();
    group.bench_function("pulse-breaker try_acquire+record (into_static)", |b| {
        b.iter(|| {
            if let Ok(permit) = black_box(&fast).try_acquire() {
                permit.record(black_box(Outcome::Success));
            }
        })
    });
    let mut p = pulse(inner());
    group.bench_function("pulse-breaker", |b| {
        b.iter_custom(|iters| run(&rt, &mut p, iters))
    });
    let mut ps = pulse_static(inner());
    group.bench_function("pulse-breaker (into_static)", |b| {
        b.iter_custom(|iters| run(&rt, &mut ps, iters))
    });
    let mut r = resilience(inner());
    group.bench_function("tower-resilience", |b| {
        b.iter_custom(|iters| run(&rt, &mut r, iters))
    });
    group.finish();
}

fn rejected(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rejected");
    let mut p = pulse(failing());
    let _ = run(&rt, &mut p, 10);
    assert!(p.breaker().snapshot().rejected > 0, "pulse circuit open");
    group.bench_function("pulse-breaker", |b| {
        b.iter_custom(|iters| run(&rt, &mut p, iters))
    });
    let mut r = resilience(failing());
    let _ = run(&rt, &mut r, 10);
    group.bench_function("tower-resilience", |b| {
        b.iter_custom(|iters| run(&rt, &mut r, iters))
    });
    group.finish();
}

/// `THREADS` threads share the breaker (clones of one service); returns wall time per
/// `iters` calls in total.
fn contended_run<S>(service: &S, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send,
{
    let per_thread = iters.div_ceil(THREADS as u64);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let mut service = service.clone();
            scope.spawn(move || {
                let rt = runtime();
                run(&rt, &mut service, per_thread)
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended");
    let p = pulse(inner());
    group.bench_function("pulse-breaker", |b| {
        b.iter_custom(|iters| contended_run(&p, iters))
    });
    let ps = pulse_static(inner());
    group.bench_function("pulse-breaker (into_static)", |b| {
        b.iter_custom(|iters| contended_run(&ps, iters))
    });
    let r = resilience(inner());
    group.bench_function("tower-resilience", |b| {
        b.iter_custom(|iters| contended_run(&r, iters))
    });
    group.finish();
}

criterion_group!(benches, closed, rejected, contended);
criterion_main!(benches);
