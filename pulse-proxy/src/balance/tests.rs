use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pulse_breaker::{Breaker, BreakerConfig};
use tower::retry::budget::TpsBudget;
use tower::{BoxError, ServiceExt};

use super::*;

type Body = Full<Bytes>;
type Req = Request<ProxyRequestBody<Body>>;

/// What one instance answers, and what it saw.
#[derive(Clone)]
struct Upstream {
    answer: Arc<Mutex<Result<StatusCode, ProxyError>>>,
    calls: Arc<AtomicU32>,
    /// The length of the body of the last request.
    body_len: Arc<AtomicU64>,
}

impl Upstream {
    fn new(answer: Result<StatusCode, ProxyError>) -> Self {
        Self {
            answer: Arc::new(Mutex::new(answer)),
            calls: Arc::default(),
            body_len: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    fn answer(&self, answer: Result<StatusCode, ProxyError>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn service(
        &self,
    ) -> impl Service<Req, Response = Response<()>, Error = ProxyError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static {
        let this = self.clone();
        tower::service_fn(move |request: Req| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::Relaxed);
                let bytes = request
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_: BoxError| ProxyError::InvalidBody)?
                    .to_bytes();
                this.body_len.store(bytes.len() as u64, Ordering::Relaxed);
                let answer = this.answer.lock().unwrap().clone();
                answer.map(|status| {
                    let mut response = Response::new(());
                    *response.status_mut() = status;
                    response
                })
            }
        })
    }
}

fn breaker() -> Breaker {
    Breaker::new(BreakerConfig::default()).unwrap()
}

/// Events heard by the observer, in order.
#[derive(Clone, Default)]
struct Heard(Arc<Mutex<Vec<String>>>);

impl PoolObserver for Heard {
    fn on_ejected(&self, instance: &str, length: Duration) {
        self.0
            .lock()
            .unwrap()
            .push(format!("ejected {instance} {}s", length.as_secs()));
    }
    fn on_restored(&self, instance: &str) {
        self.0.lock().unwrap().push(format!("restored {instance}"));
    }
    fn on_retried(&self, from: &str, to: &str, error: &ProxyError) {
        self.0
            .lock()
            .unwrap()
            .push(format!("retried {from} -> {to}: {error}"));
    }
    fn on_budget_exhausted(&self, instance: &str, error: &ProxyError) {
        self.0
            .lock()
            .unwrap()
            .push(format!("budget {instance}: {error}"));
    }
}

fn pool_of(
    upstreams: &[&Upstream],
    heard: &Heard,
) -> Pool<
    impl Service<Req, Response = Response<()>, Error = ProxyError, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static,
> {
    upstreams
        .iter()
        .enumerate()
        .fold(Pool::builder(), |builder, (i, upstream)| {
            builder.instance(format!("i{i}"), upstream.service(), breaker())
        })
        .with_observer(heard.clone())
        .build()
        .unwrap()
}

fn request(method: Method) -> Req {
    let mut request = Request::new(ProxyRequestBody::empty());
    *request.method_mut() = method;
    request
}

/// A request whose body streams (as the proxy sends a client's body), `len` bytes.
fn streamed(method: Method, len: usize) -> Req {
    let body = Full::new(Bytes::from(vec![b'x'; len]));
    let (body, _) = ProxyRequestBody::streaming(body, 1 << 20);
    let mut request = Request::new(body);
    *request.method_mut() = method;
    request
}

#[test]
fn a_pool_needs_distinct_instances() {
    let empty = Pool::builder::<tower::util::BoxCloneSyncService<Req, Response<()>, ProxyError>>();
    assert_eq!(empty.build().unwrap_err(), PoolError::NoInstances);
    let up = Upstream::new(Ok(StatusCode::OK));
    let twice = Pool::builder()
        .instance("a", up.service(), breaker())
        .instance("a", up.service(), breaker())
        .build()
        .unwrap_err();
    assert_eq!(twice, PoolError::DuplicateInstance("a".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_goes_to_another_instance_and_the_dead_one_is_ejected() {
    let dead = Upstream::new(Err(ProxyError::ConnectRefused));
    let live = Upstream::new(Ok(StatusCode::OK));
    let heard = Heard::default();
    let pool = pool_of(&[&dead, &live], &heard);
    // Whichever instance is drawn first, every POST (never sent, so safe) ends on the
    // live one, with at most one more attempt each time, until the dead one is ejected.
    for _ in 0..200 {
        let response = pool.clone().oneshot(request(Method::POST)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if pool.instances()[0].is_ejected() {
            break;
        }
    }
    assert!(pool.instances()[0].is_ejected());
    assert_eq!(dead.calls(), DEFAULT_CONSECUTIVE_FAILURES);
    assert_eq!(u64::from(dead.calls()), pool.stats().retries());
    assert_eq!(pool.stats().ejections(), 1);
    // Ejected: never drawn again while it lasts.
    for _ in 0..20 {
        let response = pool.clone().oneshot(request(Method::POST)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(dead.calls(), DEFAULT_CONSECUTIVE_FAILURES);
    let heard = heard.0.lock().unwrap().clone();
    assert!(heard[0].starts_with("retried i0 -> i1: "), "{heard:?}");
    assert_eq!(
        heard
            .iter()
            .filter(|e| e.starts_with("ejected"))
            .collect::<Vec<_>>(),
        ["ejected i0 5s"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_ejection_ends_after_its_time_and_the_next_in_a_row_is_longer() {
    let a = Upstream::new(Ok(StatusCode::OK));
    let b = Upstream::new(Ok(StatusCode::OK));
    let heard = Heard::default();
    let pool = pool_of(&[&a, &b], &heard);
    for _ in 0..DEFAULT_CONSECUTIVE_FAILURES {
        pool.record(0, Outcome::Failure);
    }
    assert!(pool.instances()[0].is_ejected());
    for _ in 0..50 {
        assert_eq!(pool.pick(None), 1, "an ejected instance is not drawn");
    }
    let status = pool.status();
    assert_eq!(status[0].ejected_for, Some(DEFAULT_BASE_EJECTION));
    assert!(!status[0].is_available() && status[1].is_available());

    tokio::time::advance(DEFAULT_BASE_EJECTION).await;
    assert!(!pool.instances()[0].is_ejected());
    let _ = pool.pick(None);
    assert_eq!(pool.stats().restorations(), 1);
    // Failing again before any success: twice as long.
    for _ in 0..DEFAULT_CONSECUTIVE_FAILURES {
        pool.record(0, Outcome::Failure);
    }
    tokio::time::advance(DEFAULT_BASE_EJECTION).await;
    assert!(
        pool.instances()[0].is_ejected(),
        "the second one lasts 10 s"
    );
    tokio::time::advance(DEFAULT_BASE_EJECTION).await;
    assert!(!pool.instances()[0].is_ejected());
    // A success once it is back: the next ejection is short again.
    pool.record(0, Outcome::Success);
    for _ in 0..DEFAULT_CONSECUTIVE_FAILURES {
        pool.record(0, Outcome::Failure);
    }
    assert_eq!(pool.status()[0].ejected_for, Some(DEFAULT_BASE_EJECTION));
    assert_eq!(
        *heard.0.lock().unwrap(),
        [
            "ejected i0 5s",
            "restored i0",
            "ejected i0 10s",
            "restored i0",
            "ejected i0 5s"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn never_more_than_half_of_the_instances_are_ejected() {
    let ups: Vec<_> = (0..4)
        .map(|_| Upstream::new(Err(ProxyError::ConnectRefused)))
        .collect();
    let pool = pool_of(&ups.iter().collect::<Vec<_>>(), &Heard::default());
    for _ in 0..20 {
        // Refused, or the circuit the refusals opened.
        let _ = pool
            .clone()
            .oneshot(request(Method::GET))
            .await
            .unwrap_err();
    }
    let ejected = pool.instances().iter().filter(|i| i.is_ejected()).count();
    assert_eq!(ejected, 2, "two of four, never more");
    // The two left are still drawn.
    let left: Vec<usize> = (0..4)
        .filter(|i| !pool.instances()[*i].is_ejected())
        .collect();
    for _ in 0..20 {
        assert!(left.contains(&pool.pick(None)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_reached_its_instance_is_retried_only_when_idempotent() {
    let a = Upstream::new(Err(ProxyError::ConnectionLost));
    let b = Upstream::new(Err(ProxyError::ConnectionLost));
    let pool = pool_of(&[&a, &b], &Heard::default());
    let total = || a.calls() + b.calls();

    let error = pool
        .clone()
        .oneshot(request(Method::POST))
        .await
        .unwrap_err();
    assert_eq!(error, ProxyError::ConnectionLost);
    assert_eq!(total(), 1, "a POST may have done its work: not sent again");

    let _ = pool
        .clone()
        .oneshot(request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(total(), 3, "a GET is sent once more");
    assert!(a.calls() >= 1 && b.calls() >= 1, "to the other instance");

    let mut keyed = request(Method::POST);
    keyed
        .headers_mut()
        .insert(IDEMPOTENCY_KEY, http::HeaderValue::from_static("start-1"));
    let _ = pool.clone().oneshot(keyed).await.unwrap_err();
    assert_eq!(
        total(),
        5,
        "a POST with an Idempotency-Key is sent once more"
    );
    assert_eq!(pool.stats().retries(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_upstreams_answer_is_never_retried() {
    let a = Upstream::new(Ok(StatusCode::SERVICE_UNAVAILABLE));
    let b = Upstream::new(Ok(StatusCode::SERVICE_UNAVAILABLE));
    let pool = pool_of(&[&a, &b], &Heard::default());
    for _ in 0..2 {
        let response = pool.clone().oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(a.calls() + b.calls(), 2);
    assert_eq!(pool.stats().retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lone_instance_is_never_ejected_nor_retried_on() {
    let only = Upstream::new(Err(ProxyError::ConnectRefused));
    let pool = pool_of(&[&only], &Heard::default());
    for _ in 0..5 {
        let _ = pool
            .clone()
            .oneshot(request(Method::GET))
            .await
            .unwrap_err();
    }
    assert_eq!(only.calls(), 5);
    assert!(!pool.instances()[0].is_ejected());
    assert_eq!(
        pool.pick(Some(0)),
        0,
        "avoiding the only one still picks it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_error() {
    let a = Upstream::new(Err(ProxyError::ConnectRefused));
    let b = Upstream::new(Err(ProxyError::ConnectRefused));
    let heard = Heard::default();
    // A reserve of one retry, and successes earn none.
    let pool = [&a, &b]
        .iter()
        .enumerate()
        .fold(Pool::builder(), |builder, (i, up)| {
            builder.instance(format!("i{i}"), up.service(), breaker())
        })
        .with_retry_budget(TpsBudget::new(Duration::from_secs(1), 1, 0.0))
        .with_observer(heard.clone())
        .build()
        .unwrap();
    let _ = pool
        .clone()
        .oneshot(request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(a.calls() + b.calls(), 2, "the reserve pays for one retry");
    let _ = pool
        .clone()
        .oneshot(request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(a.calls() + b.calls(), 3, "then none");
    assert_eq!(pool.stats().retries(), 1);
    assert_eq!(pool.stats().budget_exhausted(), 1);
    assert!(
        heard
            .0
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .starts_with("budget ")
    );
}

#[tokio::test(start_paused = true)]
async fn a_small_streamed_body_is_buffered_and_sent_again_whole() {
    let a = Upstream::new(Err(ProxyError::ConnectRefused));
    let b = Upstream::new(Err(ProxyError::ConnectRefused));
    let pool = pool_of(&[&a, &b], &Heard::default());
    let _ = pool
        .clone()
        .oneshot(streamed(Method::POST, 1000))
        .await
        .unwrap_err();
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(a.body_len.load(Ordering::Relaxed), 1000);
    assert_eq!(b.body_len.load(Ordering::Relaxed), 1000);
}

#[tokio::test(start_paused = true)]
async fn a_body_too_large_to_buffer_is_not_sent_again() {
    let a = Upstream::new(Err(ProxyError::ConnectRefused));
    let b = Upstream::new(Err(ProxyError::ConnectRefused));
    let pool = pool_of(&[&a, &b], &Heard::default());
    let large = usize::try_from(DEFAULT_RETRY_BODY_LIMIT).unwrap() + 1;
    let error = pool
        .clone()
        .oneshot(streamed(Method::PUT, large))
        .await
        .unwrap_err();
    assert_eq!(error, ProxyError::ConnectRefused);
    assert_eq!(a.calls() + b.calls(), 1, "streamed once, gone");
    assert_eq!(pool.stats().retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_instance_whose_circuit_is_open_is_avoided_and_its_requests_move() {
    let a = Upstream::new(Ok(StatusCode::OK));
    let b = Upstream::new(Ok(StatusCode::OK));
    let open = breaker();
    open.force_open();
    let pool = Pool::builder()
        .instance("a", a.service(), open)
        .instance("b", b.service(), breaker())
        .build()
        .unwrap();
    for _ in 0..20 {
        let response = pool.clone().oneshot(request(Method::POST)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!((a.calls(), b.calls()), (0, 20));
    // Its open circuit says nothing about the instance: not ejected.
    assert!(!pool.instances()[0].is_ejected());
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_weigh_and_are_released_when_cancelled() {
    let a = Upstream::new(Ok(StatusCode::OK));
    let pool = pool_of(&[&a], &Heard::default());
    let gate = Arc::new(tokio::sync::Notify::new());
    let waiting = {
        let gate = Arc::clone(&gate);
        tower::service_fn(move |_req: Req| {
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                Ok::<_, ProxyError>(Response::new(()))
            }
        })
    };
    let slow = Pool::builder()
        .instance("slow", waiting, breaker())
        .build()
        .unwrap();
    let pending = tokio::spawn(slow.clone().oneshot(request(Method::GET)));
    tokio::task::yield_now().await;
    assert_eq!(slow.status()[0].in_flight, 1);
    pending.abort();
    let _ = pending.await;
    assert_eq!(slow.status()[0].in_flight, 0);
    a.answer(Ok(StatusCode::NO_CONTENT));
    let response = pool.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}
