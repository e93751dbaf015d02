//! One test per pitfall of naive breakers, plus the tower-level behaviour.
//! Time is paused (or a `ManualClock`): nothing here sleeps for real.

use std::future::{Future, pending};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pulse_breaker::{
    Backoff, BoxError, Breaker, BreakerConfig, BreakerOpen, CircuitBreaker, CircuitBreakerLayer,
    KeyedBreakers, KeyedCircuitBreakerLayer, ManualClock, Observer, Outcome, SlidingWindow, State,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn breaker(config: BreakerConfig) -> Breaker {
    match Breaker::new(config) {
        Ok(b) => b,
        Err(e) => panic!("invalid test configuration: {e}"),
    }
}

fn constant(secs: u64) -> Backoff {
    Backoff::constant(Duration::from_secs(secs))
}

fn record(b: &Breaker, outcome: Outcome) {
    match b.try_acquire() {
        Ok(permit) => permit.record(outcome),
        Err(open) => panic!("expected an admitted call, got {open}"),
    }
}

fn status_service(
    status: Arc<AtomicU32>,
) -> impl Service<Request<()>, Response = Response<String>, Error = BoxError, Future: Send> + Clone
{
    service_fn(move |_req: Request<()>| {
        let code = status.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::from_u16(code as u16)?;
            Ok::<_, BoxError>(r)
        }
    })
}

#[test]
fn old_failures_leave_a_count_window() {
    let b = breaker(
        BreakerConfig::default()
            .with_sliding_window(SlidingWindow::Count(10))
            .with_minimum_calls(10)
            .with_consecutive_failures(None),
    );
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    for _ in 0..10 {
        record(&b, Outcome::Success);
    }
    // The four failures were pushed out by ten newer calls.
    assert_eq!(b.snapshot().counts.failures, 0);
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    // 4 of the last 10 failed: below 50 %, although 8 failures happened in total.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().counts.failures, 4);
}

#[test]
fn old_failures_leave_a_time_window() {
    let clock = ManualClock::new();
    let b = breaker(
        BreakerConfig::default()
            .with_clock(clock.clone())
            .with_sliding_window(SlidingWindow::time(Duration::from_secs(10)))
            .with_minimum_calls(5)
            .with_consecutive_failures(None),
    );
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.snapshot().counts.failures, 4);
    clock.advance(Duration::from_secs(11));
    assert_eq!(b.snapshot().counts.calls, 0);
    for _ in 0..4 {
        record(&b, Outcome::Failure);
    }
    // Without expiry these would be 8 failures in 8 calls (over the minimum of 5).
    assert_eq!(b.state(), State::Closed);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn client_errors_never_trip() {
    let status = Arc::new(AtomicU32::new(404));
    let b = breaker(BreakerConfig::default().with_backoff(constant(5)));
    let mut svc = CircuitBreakerLayer::http(b.clone()).layer(status_service(status.clone()));
    for code in [400, 401, 403, 404, 409, 422, 429] {
        status.store(code, Ordering::SeqCst);
        for _ in 0..50 {
            let r = svc
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), code as u16);
        }
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().counts.calls, 0);
    // 5xx do trip (five in a row by default).
    status.store(503, Ordering::SeqCst);
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call(Request::new(())).await;
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn cancellation_never_trips() {
    let b = breaker(BreakerConfig::default().with_consecutive_failures(Some(1)));
    let hanging = service_fn(|_: ()| pending::<Result<(), BoxError>>());
    let mut svc = CircuitBreaker::new(hanging, b.clone());
    for _ in 0..100 {
        let fut = svc.ready().await.unwrap().call(());
        let timed = tokio::time::timeout(Duration::from_millis(10), fut).await;
        assert!(
            timed.is_err(),
            "the call hangs and is dropped by the timeout"
        );
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().counts.calls, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_releases_its_permit() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(constant(1)),
    );
    record(&b, Outcome::Failure);
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = b.try_acquire().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire().is_err(), "one probe at a time");
    drop(probe);
    assert_eq!(b.snapshot().probes_in_flight, 0);
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn stale_results_are_ignored() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(2))
            .with_backoff(constant(1)),
    );
    // A slow call admitted while closed…
    let late = b.try_acquire().unwrap();
    // …the circuit trips, and recovers, while it runs…
    record(&b, Outcome::Failure);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    record(&b, Outcome::Failure);
    // …and its late failure must not count in the new period (it would be the second
    // failure in a row and trip the recovered circuit).
    late.record(Outcome::Failure);
    assert_eq!(b.state(), State::Closed);
    let snap = b.snapshot();
    assert_eq!(snap.stale_results, 1);
    assert_eq!(snap.consecutive_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_cannot_wedge_half_open() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_probe_timeout(Duration::from_secs(3))
            .with_backoff(constant(2)),
    );
    record(&b, Outcome::Failure);
    tokio::time::advance(Duration::from_secs(2)).await;
    let hung = b.try_acquire().unwrap();
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state(), State::HalfOpen);
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(3)));

    // The probe never answers: after the probe timeout the attempt counts as failed.
    tokio::time::advance(Duration::from_secs(3)).await;
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state(), State::Open);
    assert_eq!(b.snapshot().reopen_attempt, 1);

    // The next open period ends, a fresh probe goes through and closes the circuit…
    tokio::time::advance(Duration::from_secs(2)).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    // …and the hung probe, answering at last, changes nothing.
    hung.record(Outcome::Failure);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_in_call_and_stays_ready() {
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |_: ()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>("down") }
        })
    };
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(2))
            .with_backoff(constant(30)),
    );
    let mut svc = CircuitBreaker::new(upstream, b.clone());
    let mut clone = svc.clone();
    for _ in 0..2 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    // The clone shares the breaker; poll_ready is immediately ready, call fails fast.
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(clone.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let err = clone.call(()).await.unwrap_err();
    let open = err.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(open.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the upstream was not called"
    );
    assert_eq!(b.snapshot().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn http_rejection_is_a_503_with_the_request_id() {
    let status = Arc::new(AtomicU32::new(502));
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(constant(7)),
    );
    let mut svc = CircuitBreakerLayer::http(b.clone()).layer(status_service(status));
    let _ = svc.ready().await.unwrap().call(Request::new(())).await;
    let request = Request::builder()
        .header("x-request-id", "req-123")
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.body(),
        r#"{"error":"Upstream service temporarily unavailable (circuit open)","code":"circuit_open","request_id":"req-123"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_with_reopens_and_resets_on_success() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(Backoff::exponential(
                Duration::from_secs(1),
                Duration::from_secs(4),
            )),
    );
    record(&b, Outcome::Failure);
    let mut expected = [1, 2, 4, 4].into_iter();
    let mut open_for = expected.next().unwrap();
    loop {
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Some(Duration::from_secs(open_for))
        );
        tokio::time::advance(Duration::from_secs(open_for)).await;
        let Some(next) = expected.next() else { break };
        b.try_acquire().unwrap().record(Outcome::Failure);
        open_for = next;
    }
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    record(&b, Outcome::Failure);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip() {
    let upstream = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, BoxError>(())
    });
    let b = breaker(
        BreakerConfig::default()
            .with_slow_call_threshold(Some(Duration::from_secs(2)))
            .with_slow_call_rate_threshold(0.8)
            .with_minimum_calls(5)
            .with_sliding_window(SlidingWindow::Count(5)),
    );
    let mut svc = CircuitBreaker::new(upstream, b.clone());
    for _ in 0..5 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().counts.slow, 5);
}

#[test]
fn failure_rate_trips_only_after_minimum_calls() {
    let b = breaker(
        BreakerConfig::default()
            .with_minimum_calls(4)
            .with_consecutive_failures(None)
            .with_clock(ManualClock::new()),
    );
    record(&b, Outcome::Failure);
    record(&b, Outcome::Success);
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Closed, "3 calls < minimum 4");
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open, "3 of 4 failed");
}

#[test]
fn manual_states() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_clock(ManualClock::new()),
    );
    b.metrics_only();
    for _ in 0..10 {
        record(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::MetricsOnly);
    assert_eq!(b.snapshot().counts.failures, 10);

    b.disable();
    record(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Disabled);

    b.force_open();
    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.state(), State::ForcedOpen);
    // A forced open has no end the breaker knows of: the default hint, so an HTTP
    // answer still carries a real `Retry-After`.
    assert_eq!(open.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(b.snapshot().retry_after, Some(Duration::from_secs(30)));

    b.reset();
    let snap = b.snapshot();
    assert_eq!(snap.state, State::Closed);
    assert_eq!(snap.counts.calls, 0);
}

#[derive(Default, Clone)]
struct Transitions(Arc<std::sync::Mutex<Vec<(State, State)>>>);

impl Observer for Transitions {
    fn on_transition(&self, from: State, to: State) {
        self.0.lock().unwrap().push((from, to));
    }
}

#[test]
fn observer_sees_every_transition() {
    let seen = Transitions::default();
    let clock = ManualClock::new();
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(constant(1))
            .with_clock(clock.clone())
            .with_observer(seen.clone()),
    );
    record(&b, Outcome::Failure);
    clock.advance(Duration::from_secs(1));
    record(&b, Outcome::Success);
    b.force_open();
    b.reset();
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_isolate_hosts() {
    let upstream = service_fn(|req: Request<()>| async move {
        let fail = req.uri().host() == Some("bad.internal");
        Ok::<_, BoxError>(
            Response::builder()
                .status(if fail { 503 } else { 200 })
                .body(String::new())?,
        )
    });
    let breakers = KeyedBreakers::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(2))
            .with_backoff(constant(10)),
        8,
    )
    .unwrap();
    let host = |req: &Request<()>| req.uri().host().unwrap_or_default().to_owned();
    let mut svc = KeyedCircuitBreakerLayer::http(breakers.clone(), host).layer(upstream);
    let get = |uri: &str| Request::get(uri).body(()).unwrap();
    for _ in 0..3 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(get("http://bad.internal/x"))
            .await;
    }
    let bad = svc
        .ready()
        .await
        .unwrap()
        .call(get("http://bad.internal/x"))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(bad.body().contains("circuit_open"));
    let good = svc
        .ready()
        .await
        .unwrap()
        .call(get("http://good.internal/x"))
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(
        breakers.get_existing("bad.internal").unwrap().state(),
        State::Open
    );
    assert_eq!(
        breakers.get_existing("good.internal").unwrap().state(),
        State::Closed
    );
    assert_eq!(breakers.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn future_is_send_and_drop_safe() {
    fn assert_send<T: Send>(_: &T) {}
    let b = breaker(BreakerConfig::default());
    let mut svc = CircuitBreaker::new(service_fn(|x: u8| async move { Ok::<_, BoxError>(x) }), b);
    let fut = svc.call(1);
    assert_send(&fut);
    let mut fut = pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(1))));
}

#[tokio::test(start_paused = true)]
async fn static_breakers_trip_and_heal_like_counted_ones() {
    let counted = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(constant(1)),
    );
    let fast = counted.clone().into_static();
    let mut svc = CircuitBreaker::new(
        service_fn(|fail: bool| async move { if fail { Err("down") } else { Ok(()) } }),
        fast.clone(),
    );
    assert!(svc.ready().await.unwrap().call(true).await.is_err());
    assert_eq!(counted.state(), State::Open, "both handles see one circuit");
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.is::<BreakerOpen>());
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call(false).await.unwrap();
    assert_eq!(fast.state(), State::Closed);
}

/// Every rejection carries a retry hint, forced open included, and the handle reports
/// the remaining open time (what a gateway puts in `Retry-After`) as it runs down.
#[tokio::test(start_paused = true)]
async fn retry_after_is_the_real_remaining_time_and_forced_open_has_one() {
    let b = breaker(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_probe_timeout(Duration::from_secs(4))
            .with_backoff(constant(10))
            .with_forced_open_retry_after(Duration::from_secs(90)),
    );
    assert_eq!(b.retry_after(), None, "closed: nothing to wait for");
    record(&b, Outcome::Failure);
    assert_eq!(b.retry_after(), Some(Duration::from_secs(10)));
    tokio::time::advance(Duration::from_millis(6_500)).await;
    assert_eq!(b.retry_after(), Some(Duration::from_millis(3_500)));
    assert_eq!(b.snapshot().retry_after, b.retry_after());
    let open = b.try_acquire().unwrap_err();
    assert_eq!(open.retry_after(), Some(Duration::from_millis(3_500)));
    assert_eq!(open.retry_after_secs(), Some(4));

    // Half-open with its probe taken: the time until the probe times out.
    tokio::time::advance(Duration::from_millis(3_500)).await;
    assert_eq!(b.retry_after(), Some(Duration::ZERO), "due to probe");
    let _probe = b.try_acquire().unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.retry_after(), Some(Duration::from_secs(3)));

    b.force_open();
    assert_eq!(b.retry_after(), Some(Duration::from_secs(90)));
    let forced = b.try_acquire().unwrap_err();
    assert_eq!(forced.state(), State::ForcedOpen);
    assert_eq!(forced.retry_after(), Some(Duration::from_secs(90)));
    let response: http::Response<String> = forced.to_http_response(None);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "90");

    b.disable();
    assert_eq!(b.retry_after(), None);
}
