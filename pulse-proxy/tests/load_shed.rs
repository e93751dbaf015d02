//! The proxy follows tower's readiness contract (issue 9, defect 7): behind a
//! `Buffer` or a `ConcurrencyLimit` that is full, concurrent requests are shed with
//! `503 overloaded` instead of calling a transport that is not ready (which panics in
//! both), and the retry layer uses the readiness it was given instead of waiting for a
//! second one.

mod common;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pulse_proxy::{Proxy, ProxyConfig, ProxyError, ProxyRequestBody, retry::RetryLayer};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const CONCURRENT: usize = 24;

/// An upstream that holds every request until the gate opens, counting calls.
#[derive(Clone)]
struct Gated {
    gate: Arc<Semaphore>,
    calls: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            calls: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<ProxyRequestBody<ClientBody>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |_req: Request<ProxyRequestBody<ClientBody>>| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            let gate = this.gate.clone();
            async move {
                // The gate is never closed; a failed acquire would only end the wait.
                let _ = gate.acquire().await.map(|p| p.forget());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    }

    fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

fn config() -> ProxyConfig {
    ProxyConfig::new("http://etl.internal".parse().unwrap()).unwrap()
}

/// Fires `CONCURRENT` requests at clones of `proxy` (as a server does, one clone per
/// connection), lets them all reach the point where they wait, opens the gate, and
/// returns every status. A panic in any request fails the test through its task.
async fn load(proxy: TestProxy, gated: &Gated) -> Vec<(StatusCode, String)> {
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let res = proxy
                    .oneshot(get("/api/jobs").body(empty()).unwrap())
                    .await
                    .unwrap();
                let status = res.status();
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                let body = res.into_body().collect().await.unwrap().to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                }
                (status, body)
            })
        })
        .collect();
    // Every task runs up to its wait (current-thread runtime: they run when we yield).
    for _ in 0..CONCURRENT * 4 {
        tokio::task::yield_now().await;
    }
    gated.open();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("no request panics"));
    }
    answers
}

fn boxed<T>(proxy: Proxy<T>) -> TestProxy
where
    Proxy<T>: Service<
            Request<ClientBody>,
            Response = Response<pulse_proxy::ProxyResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    <Proxy<T> as Service<Request<ClientBody>>>::Future: Send + 'static,
{
    tower::util::BoxCloneService::new(proxy.map_response(|res| res.map(BodyExt::boxed_unsync)))
}

fn assert_shed(answers: &[(StatusCode, String)], gated: &Gated, max_through: usize) {
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let shed: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(ok >= 1, "{answers:?}");
    assert!(ok <= max_through, "{ok} got through: {answers:?}");
    assert_eq!(ok + shed.len(), CONCURRENT, "{answers:?}");
    for (_, body) in shed {
        assert!(body.contains(r#""code":"overloaded""#), "{body}");
    }
    assert_eq!(
        gated.calls.load(Ordering::SeqCst),
        ok,
        "shed requests never reach it"
    );
}

/// `ConcurrencyLimit` panics ("max requests in-flight; poll_ready must be called
/// first") when called without the permit its `poll_ready` takes.
#[tokio::test]
async fn behind_a_concurrency_limit_excess_requests_are_shed_not_panicking() {
    let gated = Gated::new();
    let transport = ServiceBuilder::new()
        .concurrency_limit(2)
        .service(gated.service());
    let answers = load(boxed(Proxy::new(transport, config())), &gated).await;
    assert_shed(&answers, &gated, 2);
}

/// `Buffer` panics ("buffer full; poll_ready must be called first") when called
/// without the slot its `poll_ready` reserves.
#[tokio::test]
async fn behind_a_full_buffer_excess_requests_are_shed_not_panicking() {
    let gated = Gated::new();
    let transport = ServiceBuilder::new()
        .buffer(2)
        .concurrency_limit(1)
        .service(gated.service());
    let answers = load(boxed(Proxy::new(transport, config())), &gated).await;
    // One in the upstream, two waiting in the buffer.
    assert_shed(&answers, &gated, 3);
}

/// A transport that failed (a buffer whose worker is gone) is answered per request
/// with the classified error, never called, and the proxy stays usable.
#[tokio::test]
async fn a_failed_transport_is_answered_not_called() {
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<ProxyRequestBody<ClientBody>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
        })
    };
    struct Broken<S>(S);
    impl<S, R> Service<R> for Broken<S>
    where
        S: Service<R>,
    {
        type Response = S::Response;
        type Error = ProxyError;
        type Future = std::future::Ready<Result<S::Response, ProxyError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ProxyError>> {
            std::task::Poll::Ready(Err(ProxyError::Unavailable))
        }
        fn call(&mut self, _: R) -> Self::Future {
            panic!("called although poll_ready failed")
        }
    }
    let mut proxy = Proxy::new(Broken(failing), config());
    for _ in 0..3 {
        let res = proxy
            .ready()
            .await
            .unwrap()
            .call(get("/x").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            res.extensions().get::<ProxyError>(),
            Some(&ProxyError::Unavailable)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The retry layer buffers a small idempotent body before sending; it must send with
/// the service `poll_ready` made ready, not wait for a clone to become ready while the
/// original holds the only permit (a deadlock under `ConcurrencyLimit(1)`).
#[tokio::test(start_paused = true)]
async fn retry_buffering_uses_the_readiness_it_was_given() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let calls = calls.clone();
        service_fn(move |req: Request<ProxyRequestBody<ClientBody>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| ProxyError::Protocol)?;
                Ok::<_, ProxyError>(Response::new(Full::new(body.to_bytes())))
            }
        })
    };
    let transport =
        RetryLayer::new().layer(ServiceBuilder::new().concurrency_limit(1).service(upstream));
    // Kept, as a server connection keeps its service between requests: the ready
    // original holds the permit while the request is under way.
    let mut proxy = Proxy::new(transport, config());
    for _ in 0..3 {
        let request = Request::put("/x").body(full("payload")).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            proxy.ready().await.unwrap().call(request).await
        })
        .await
        .expect("the request is sent, not stuck waiting for a second permit")
        .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "payload");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
