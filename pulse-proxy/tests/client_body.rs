//! A client's broken request body is the client's fault (issue 9, defect 1): over real
//! loopback sockets, a raw TCP client sends malformed bodies through a gateway built
//! like the example's (proxy → circuit breaker → pooled transport) to a real hyper
//! upstream. It gets `400 invalid_body`, and no number of such requests opens the
//! circuit; upstream 5xx answers and refused connections still do.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use pulse_breaker::{Breaker, BreakerConfig, CircuitBreakerLayer, State};
use pulse_proxy::{
    Proxy, ProxyConfig, UpstreamClassifier,
    transport::{HttpTransport, TransportConfig},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower::ServiceBuilder;

/// More than the breaker's consecutive-failure threshold below.
const ATTEMPTS: usize = 8;

async fn serve(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The upstream: `/api/v1/echo` reads the whole body, `/api/v1/fail` answers 500.
async fn upstream(calls: Arc<AtomicUsize>) -> String {
    let echo_calls = calls.clone();
    let router = Router::new()
        .route(
            "/api/v1/echo",
            post(move |body: Bytes| {
                echo_calls.fetch_add(1, Ordering::SeqCst);
                async move { body }
            }),
        )
        .route(
            "/api/v1/fail",
            post(move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke") }
            }),
        );
    serve(router).await
}

/// A gateway in front of `upstream`, wired as the full-stack example's: the breaker
/// sits between the proxy and the pooled transport and classifies with
/// `UpstreamClassifier`. Returns its address and the breaker.
async fn gateway(upstream: &str) -> (String, Breaker) {
    gateway_with(upstream, TransportConfig::new()).await
}

async fn gateway_with(upstream: &str, transport: TransportConfig) -> (String, Breaker) {
    let breaker = Breaker::new(
        BreakerConfig::default()
            .with_consecutive_failures(Some(3))
            .with_minimum_calls(100)
            .with_backoff(pulse_breaker::Backoff::constant(Duration::from_secs(60))),
    )
    .unwrap();
    let transport = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(UpstreamClassifier::new()))
        .service(HttpTransport::new(
            transport.with_connect_timeout(Some(Duration::from_secs(2))),
        ));
    let config = ProxyConfig::new(format!("http://{upstream}").parse().unwrap())
        .unwrap()
        .with_prefix_rewrite("/api/etl/", "/api/v1/")
        .with_max_request_body(64);
    let proxy = Proxy::new(transport, config);
    let addr = serve(Router::new().fallback_service(proxy)).await;
    (addr, breaker)
}

/// Sends raw bytes, half-closes nothing (a broken client may keep the socket open),
/// and reads the answer's status and body text. The timeout only guards the suite
/// against a hang; no assertion depends on time.
async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            // The proxy's JSON error bodies are small and sent with a length.
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(len) = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                && body.len() >= len
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the gateway answers");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn post_chunked(path: &str, chunks: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{chunks}"
    )
    .into_bytes()
}

/// The issue's reproduction: chunk size `ZZ`, after a valid first chunk so that the
/// body is already streaming upstream when it breaks.
#[tokio::test]
async fn bad_chunked_bodies_get_400_invalid_body_and_never_open_the_circuit() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(calls.clone()).await;
    let (gw, breaker) = gateway(&upstream).await;

    for _ in 0..ATTEMPTS {
        let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", "2\r\n{\"\r\nZZ\r\n")).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(r#""code":"invalid_body""#), "{body}");
        assert!(body.contains(r#""request_id":"#), "{body}");
    }
    // A chunk size that is not even the first chunk's, and a body cut short by the
    // client closing its side.
    let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", "ZZ\r\n")).await;
    assert_eq!(status, 400, "{body}");
    let mut cut = TcpStream::connect(&gw).await.unwrap();
    cut.write_all(
        b"POST /api/etl/echo HTTP/1.1\r\nHost: gateway\r\nContent-Length: 40\r\n\r\n{\"partial\":",
    )
    .await
    .unwrap();
    cut.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), cut.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "a truncated body is never blamed on the upstream: {answer}"
    );

    assert_eq!(breaker.state(), State::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.counts.failures, 0, "{snapshot:?}");
    assert_eq!(snapshot.consecutive_failures, 0);

    // The circuit is closed for everyone else: a good request still goes through.
    let (status, body) = raw(
        &gw,
        &post_chunked("/api/etl/echo", "7\r\n{\"a\":1}\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"{"a":1}"#), "{body}");
}

/// Over HTTP/2 to the upstream, hyper resets the stream of a failed request body and
/// reports its own error without the cause; the pooled transport still knows whose
/// fault it was.
#[tokio::test]
async fn over_http2_a_bad_body_is_still_the_clients_fault() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(calls).await;
    let (gw, breaker) = gateway_with(&upstream, TransportConfig::new().with_http2_only(true)).await;
    for _ in 0..ATTEMPTS {
        let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", "2\r\n{\"\r\nZZ\r\n")).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(r#""code":"invalid_body""#), "{body}");
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().counts.failures, 0);
    let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", "2\r\n{}\r\n0\r\n\r\n")).await;
    assert_eq!(status, 200, "{body}");
}

/// A body over the limit, streamed without a length, stays 413 and does not count.
#[tokio::test]
async fn a_body_over_the_limit_is_413_and_never_opens_the_circuit() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(calls).await;
    let (gw, breaker) = gateway(&upstream).await;
    let big = "x".repeat(50);
    let chunks = format!("32\r\n{big}\r\n32\r\n{big}\r\n0\r\n\r\n");
    for _ in 0..ATTEMPTS {
        let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", &chunks)).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains(r#""code":"payload_too_large""#), "{body}");
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().counts.failures, 0);
}

/// The upstream's own 5xx answers are upstream faults: the circuit opens, and the
/// next request is answered 503 `circuit_open` with the breaker's remaining time.
#[tokio::test]
async fn upstream_5xx_answers_open_the_circuit() {
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(calls.clone()).await;
    let (gw, breaker) = gateway(&upstream).await;
    let request = post_chunked("/api/etl/fail", "2\r\n{}\r\n0\r\n\r\n");
    for _ in 0..3 {
        let (status, _) = raw(&gw, &request).await;
        assert_eq!(status, 500);
    }
    assert_eq!(breaker.state(), State::Open);
    let (status, body) = raw(&gw, &request).await;
    assert_eq!(status, 503);
    assert!(body.contains(r#""code":"circuit_open""#), "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the open circuit sheds");
}

/// Refused connections are upstream faults too.
#[tokio::test]
async fn refused_connections_open_the_circuit() {
    // A port that was just free: nothing listens there any more.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (gw, breaker) = gateway(&closed).await;
    for _ in 0..3 {
        let (status, body) = raw(&gw, &post_chunked("/api/etl/echo", "0\r\n\r\n")).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains(r#""code":"service_unavailable""#), "{body}");
    }
    assert_eq!(breaker.state(), State::Open);
}
