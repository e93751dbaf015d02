//! One test per CVE class the issue names. Each would have caught a shipped gateway
//! vulnerability; the conformance suite repeats most of them over every transport.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use pulse_core::Identity;
use pulse_proxy::{
    Proxy, ProxyConfig, ProxyError, TimeoutPhase,
    transport::{HttpTransport, InProcessTransport, TransportConfig},
};
use tower::ServiceExt;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

fn user(req: &mut Request<ClientBody>) {
    req.extensions_mut()
        .insert(Identity::new("user-42").with_email("u42@pulse.local"));
}

/// `Connection: x-user-id` must not let the client delete the injected header
/// (hop-by-hop stripping happens before injection, never after).
#[tokio::test]
async fn connection_header_cannot_remove_the_injected_user_id() {
    let h = in_process(|c| c).await;
    let mut req = get("/api/etl/echo")
        .header("connection", "x-user-id, x-user-email, x-request-id")
        .body(empty())
        .unwrap();
    user(&mut req);
    let (status, echo) = h.echo(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen_values(&echo, "x-user-id"), ["user-42"]);
    assert_eq!(seen_values(&echo, "x-user-email"), ["u42@pulse.local"]);
    assert_eq!(seen_values(&echo, "x-request-id").len(), 1);
}

/// `X_User_Id`, `x-user-id`, `X.User.Id` (and any case) never reach the upstream, with
/// or without a verified identity: servers that fold `_`/`.` into `-` would read them
/// as the real header.
#[tokio::test]
async fn spoofed_user_headers_in_every_spelling_never_reach_the_upstream() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/jobs"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let proxy = Proxy::new(
        HttpTransport::new(TransportConfig::new()),
        ProxyConfig::new(server.uri().parse().unwrap())
            .unwrap()
            .with_prefix_rewrite("/api/etl/", "/api/v1/"),
    );
    for with_identity in [false, true] {
        let mut req = get("/api/etl/jobs")
            .header("X_User_Id", "evil")
            .header("x-user-id", "evil")
            .header("X.User.Id", "evil")
            .header("X-USER-ROLES", "admin")
            .header("x_internal_auth", "guess")
            .body(empty())
            .unwrap();
        if with_identity {
            user(&mut req);
        }
        let res = proxy.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    for (i, req) in received.iter().enumerate() {
        for (name, value) in &req.headers {
            let folded = name.as_str().replace(['_', '.'], "-");
            assert_ne!(value, "evil", "{name} carried the spoofed value");
            assert!(
                !folded.starts_with("x-internal"),
                "{name} reached the upstream"
            );
            if folded.starts_with("x-user") {
                assert!(
                    i == 1 && (name == "x-user-id" || name == "x-user-email"),
                    "{name}"
                );
            }
        }
    }
    assert!(received[0].headers.get("x-user-id").is_none());
    assert_eq!(received[1].headers["x-user-id"], "user-42");
}

/// Traversal in its encoded forms is rejected before the prefix rewrite could turn it
/// into a path outside `/api/v1/`.
#[tokio::test]
async fn encoded_traversal_and_empty_segments_are_rejected() {
    let h = in_process(|c| c).await;
    for path in [
        "/api/etl/%2e%2e/admin",
        "/api/etl/..%2fadmin",
        "/api/etl//x",
    ] {
        let res = h.send(get(path).body(empty()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(matches!(
            res.extensions().get::<ProxyError>(),
            Some(ProxyError::UnsafePath { .. })
        ));
    }
    assert_eq!(h.seen.calls(), 0);
}

/// Request smuggling: `Content-Length` together with `Transfer-Encoding`.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_rejected() {
    let h = in_process(|c| c).await;
    let req = Request::post("/api/etl/echo")
        .header("content-length", "4")
        .header("transfer-encoding", "chunked")
        .body(full("0\r\n\r\n"))
        .unwrap();
    let res = h.send(req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(matches!(
        res.extensions().get::<ProxyError>(),
        Some(ProxyError::BadFraming { .. })
    ));
    assert_eq!(h.seen.calls(), 0);
}

/// Two `Connection` lines, the first empty: a parser that reads only the first line
/// would forward what the second names.
#[tokio::test]
async fn two_connection_lines_with_the_first_empty() {
    let h = tcp(|c| c).await;
    let mut req = get("/api/etl/echo")
        .header("connection", "")
        .header("connection", "x-secret-hop, x-user-id")
        .header("x-secret-hop", "1")
        .body(empty())
        .unwrap();
    user(&mut req);
    let (status, echo) = h.echo(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen_values(&echo, "x-secret-hop").is_empty());
    assert_eq!(seen_values(&echo, "x-user-id"), ["user-42"]);
}

/// A slow upstream gives 504 after the time-to-headers timeout (paused time: the test
/// takes no real time).
#[tokio::test(start_paused = true)]
async fn slow_upstream_gives_504() {
    let h = in_process(|c| c).await; // default timeout: 30 s
    let res = h.send(get("/api/etl/slow").body(empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        res.extensions().get::<ProxyError>(),
        Some(&ProxyError::Timeout {
            phase: TimeoutPhase::ResponseHeaders
        })
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "gateway_timeout");
}

/// A refused connection gives 503 (`ConnectRefused`, not a timeout): it fails at once,
/// well within the connect timeout.
#[tokio::test]
async fn refused_connection_gives_503() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let proxy = Proxy::new(
        HttpTransport::new(
            TransportConfig::new().with_connect_timeout(Some(Duration::from_secs(30))),
        ),
        ProxyConfig::new(format!("http://127.0.0.1:{port}").parse().unwrap())
            .unwrap()
            .with_response_timeout(Duration::from_secs(60)),
    );
    let req = get("/api/v1/jobs").body(empty()).unwrap();
    let res = proxy.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.extensions().get::<ProxyError>(),
        Some(&ProxyError::ConnectRefused)
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("service_unavailable"));
    assert!(
        !text.contains("127.0.0.1"),
        "upstream detail leaked: {text}"
    );
}

/// An upstream's own 502 is an answer, not a transport failure: even with retries on,
/// it is sent once and passed through.
#[tokio::test]
async fn upstream_502_is_not_retried() {
    use pulse_proxy::retry::RetryLayer;
    use tower::Layer;

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502).set_body_string("upstream detail"))
        .mount(&server)
        .await;
    let transport = RetryLayer::new()
        .with_max_retries(3)
        .layer(HttpTransport::new(TransportConfig::new()));
    let proxy = Proxy::new(
        transport,
        ProxyConfig::new(server.uri().parse().unwrap()).unwrap(),
    );
    let res = proxy
        .oneshot(get("/api/v1/jobs").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// The in-process transport does not hand the gateway's extensions (its verified
/// `Identity` included) to the upstream: it must trust only the headers.
#[tokio::test]
async fn in_process_upstream_sees_no_gateway_extensions() {
    let upstream = tower::service_fn(
        |req: Request<pulse_proxy::ProxyRequestBody<ClientBody>>| async move {
            let leaked = req.extensions().get::<Identity>().is_some();
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from(if leaked { "leaked" } else { "clean" }),
            )))
        },
    );
    let proxy = Proxy::new(
        InProcessTransport::new(upstream),
        ProxyConfig::new("http://etl".parse().unwrap()).unwrap(),
    );
    let mut req = get("/x").body(empty()).unwrap();
    user(&mut req);
    let res = proxy.oneshot(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "clean");
}
