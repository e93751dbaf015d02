//! Transport-specific behaviour: the in-flight cap, failures to connect, exact header
//! sets seen by a wiremock upstream, retries, breakers and balancing.

mod common;

use std::{
    collections::BTreeSet,
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
use pulse_breaker::{Breaker, BreakerConfig, CircuitBreaker};
use pulse_core::Identity;
use pulse_proxy::{
    Proxy, ProxyConfig, ProxyError, ProxyRequestBody,
    balance::Pool,
    retry::RetryLayer,
    transport::{HttpTransport, InProcessTransport, TransportConfig, UnixTransport},
};
use tower::{Layer, ServiceExt, service_fn};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

#[tokio::test(start_paused = true)]
async fn full_pool_fails_fast_with_503_and_retry_after() {
    let h = tcp_with(|c| c, TransportConfig::new().with_max_in_flight(1)).await;
    let first = {
        let proxy = h.proxy.clone();
        tokio::spawn(async move {
            proxy
                .oneshot(get("/api/etl/slow").body(empty()).unwrap())
                .await
        })
    };
    h.seen.slow_arrived.notified().await;
    let res = h.send(get("/api/etl/echo").body(empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.extensions().get::<ProxyError>(),
        Some(&ProxyError::PoolExhausted)
    );
    assert_eq!(res.headers()["retry-after"], "1");
    first.abort();
    let _ = first.await;
    // A task waits (2 s at most) for the aborted request's answer, to keep its
    // connection, and holds its permit meanwhile; then the permit comes back.
    let res = h.send(get("/api/etl/echo").body(empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = h.echo(get("/api/etl/echo").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[cfg(unix)]
#[tokio::test]
async fn missing_unix_socket_gives_503() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::new(
        UnixTransport::new(dir.path().join("absent.sock"), TransportConfig::new()),
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let res = proxy
        .oneshot(get("/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.extensions().get::<ProxyError>(),
        Some(&ProxyError::Unavailable)
    );
}

/// The exact set of headers a wiremock upstream receives for a request full of spoofs.
#[tokio::test]
async fn wiremock_upstream_receives_exactly_the_expected_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let authority = server.address().to_string();
    let proxy = Proxy::new(
        HttpTransport::new(TransportConfig::new()),
        base_config(&authority),
    );
    let mut req = Request::post("/api/etl/jobs/nightly/start?force=true")
        .header("host", "gateway.example")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("content-length", "2")
        .header("authorization", "Bearer user-token")
        .header("cookie", "session=1")
        .header("connection", "keep-alive, x-trace-me")
        .header("x-trace-me", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic x")
        .header("te", "gzip")
        .header("upgrade", "h2c")
        .header("x-user-id", "evil")
        .header("x_user_id", "evil")
        .header("x.user.email", "evil")
        .header("x-internal-auth", "guess")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-request-id", "req-1")
        .body(full("{}"))
        .unwrap();
    req.extensions_mut()
        .insert(Identity::new("user-42").with_email("u42@pulse.local"));
    let res = proxy.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["x-request-id"], "req-1");

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.url.path(), "/api/v1/jobs/nightly/start");
    assert_eq!(got.url.query(), Some("force=true"));
    assert_eq!(got.body, b"{}");
    let names: BTreeSet<&str> = got.headers.keys().map(|k| k.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "host",
        "accept",
        "content-type",
        "content-length",
        "cookie",
        "traceparent",
        "x-user-id",
        "x-user-email",
        "x-request-id",
        "x-correlation-id",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    assert_eq!(got.headers["host"], authority.as_str());
    assert_eq!(got.headers["x-user-id"], "user-42");
    assert_eq!(got.headers["x-forwarded-host"], "gateway.example");
    assert_eq!(got.headers.get_all("x-user-id").iter().count(), 1);
}

type Upstream = tower::util::BoxCloneSyncService<
    Request<ProxyRequestBody<ClientBody>>,
    Response<Full<Bytes>>,
    ProxyError,
>;

/// An upstream that fails its first `fail` calls with `err`, then answers 200.
fn flaky(fail: usize, err: ProxyError, calls: Arc<AtomicUsize>) -> Upstream {
    tower::util::BoxCloneSyncService::new(service_fn(
        move |req: Request<ProxyRequestBody<ClientBody>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let err = err.clone();
            async move {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map_err(|_| ProxyError::Protocol)?;
                if n < fail {
                    Err(err)
                } else {
                    Ok(Response::new(Full::new(body.to_bytes())))
                }
            }
        },
    ))
}

#[tokio::test]
async fn never_sent_requests_are_retried_whatever_the_method() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = RetryLayer::new().layer(InProcessTransport::new(flaky(
        1,
        ProxyError::ConnectRefused,
        calls.clone(),
    )));
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let res = proxy
        .oneshot(Request::post("/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_sent_post_is_not_retried_a_get_with_small_body_is() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = RetryLayer::new().layer(InProcessTransport::new(flaky(
        1,
        ProxyError::Protocol,
        calls.clone(),
    )));
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let res = proxy
        .clone()
        .oneshot(Request::post("/x").body(full("payload")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    calls.store(0, Ordering::SeqCst);
    let res = proxy
        .oneshot(Request::put("/x").body(full("payload")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "payload"
    );
}

#[tokio::test]
async fn retries_stop_when_the_budget_is_spent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = RetryLayer::new()
        .with_max_retries(5)
        .with_budget(tower::retry::budget::TpsBudget::new(
            Duration::from_secs(10),
            1,
            0.0,
        ))
        .layer(InProcessTransport::new(flaky(
            usize::MAX,
            ProxyError::ConnectRefused,
            calls.clone(),
        )));
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    for _ in 0..5 {
        let res = proxy
            .clone()
            .oneshot(get("/x").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // 5 first attempts, and far fewer retries than 5 × 5 once the budget is spent.
    let total = calls.load(Ordering::SeqCst);
    assert!((5..25).contains(&total), "{total} calls");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_around_the_transport_gives_503_with_retry_after() {
    let breaker = Breaker::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(1))
            .with_backoff(pulse_breaker::Backoff::constant(Duration::from_secs(7))),
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = CircuitBreaker::new(
        InProcessTransport::new(flaky(usize::MAX, ProxyError::ConnectRefused, calls.clone())),
        breaker,
    );
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let first = proxy
        .clone()
        .oneshot(get("/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = proxy
        .oneshot(get("/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "7");
    assert!(matches!(
        res.extensions().get::<ProxyError>(),
        Some(ProxyError::CircuitOpen { .. })
    ));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("circuit_open"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn balancer_avoids_the_instance_whose_circuit_is_open() {
    let (a_calls, b_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a_breaker = Breaker::new(BreakerConfig::default()).unwrap();
    a_breaker.force_open();
    let transport = Pool::builder()
        .instance(
            "a",
            InProcessTransport::new(flaky(0, ProxyError::Protocol, a_calls.clone())),
            a_breaker,
        )
        .instance(
            "b",
            InProcessTransport::new(flaky(0, ProxyError::Protocol, b_calls.clone())),
            Breaker::new(BreakerConfig::default()).unwrap(),
        )
        .build()
        .unwrap();
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    for _ in 0..20 {
        let res = proxy
            .clone()
            .oneshot(get("/x").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(a_calls.load(Ordering::SeqCst), 0);
    assert_eq!(b_calls.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn in_process_errors_are_mapped_without_detail() {
    let upstream = service_fn(|_req: Request<ProxyRequestBody<ClientBody>>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("db password is hunter2"))
    });
    let proxy = Proxy::new(
        InProcessTransport::new(upstream),
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let res = proxy
        .oneshot(get("/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
}
