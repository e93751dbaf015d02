//! One conformance suite, run over every transport: the pooled TCP client, the Unix
//! socket client and the in-process call. The upstream reports exactly which headers
//! reached it.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use pulse_core::Identity;
use pulse_proxy::{ClientAddr, ProxyError, TimeoutPhase};
use serde_json::Value;

async fn error_code(
    res: http::Response<http_body_util::combinators::UnsyncBoxBody<Bytes, ProxyError>>,
) -> (StatusCode, Value) {
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

macro_rules! conformance {
    ($transport:ident) => {
        mod $transport {
            use super::*;

            #[tokio::test]
            async fn injects_verified_identity_and_drops_every_spoof() {
                let h = common::$transport(|c| c).await;
                let mut req = get("/api/etl/echo/jobs?limit=5&q=%2e%2e")
                    .header("x-user-id", "evil")
                    .header("X_User_Id", "evil")
                    .header("X.User.Id", "evil")
                    .header("x-user-email", "evil@example.com")
                    .header("x-internal-auth", "guess")
                    .header("x_internal_token", "guess")
                    .header("connection", "x-user-id, x-request-id")
                    .header("authorization", "Bearer user-token")
                    .header(
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    )
                    .header("tracestate", "vendor=1")
                    .header("x-request-id", "req-123")
                    .header("host", "gateway.example")
                    .body(empty())
                    .unwrap();
                req.extensions_mut()
                    .insert(Identity::new("user-42").with_email("u42@pulse.local"));
                let (status, echo) = h.echo(req).await;
                assert_eq!(status, StatusCode::OK, "{echo}");
                assert_eq!(echo["uri"], "/api/v1/echo/jobs?limit=5&q=%2e%2e");
                assert_eq!(seen_values(&echo, "x-user-id"), ["user-42"]);
                assert_eq!(seen_values(&echo, "x-user-email"), ["u42@pulse.local"]);
                assert_eq!(seen_values(&echo, "x-request-id"), ["req-123"]);
                assert_eq!(seen_values(&echo, "x-correlation-id"), ["req-123"]);
                assert_eq!(seen_values(&echo, "host"), [h.authority.as_str()]);
                assert_eq!(seen_values(&echo, "x-forwarded-host"), ["gateway.example"]);
                assert_eq!(seen_values(&echo, "tracestate"), ["vendor=1"]);
                assert_eq!(seen_values(&echo, "traceparent").len(), 1);
                for name in seen_names(&echo) {
                    assert!(
                        ![
                            "x_user_id",
                            "x.user.id",
                            "x-internal-auth",
                            "x_internal_token",
                            "authorization",
                            "connection"
                        ]
                        .contains(&name.as_str()),
                        "{name} reached the upstream"
                    );
                }
            }

            #[tokio::test]
            async fn two_connection_lines_the_first_empty() {
                let h = common::$transport(|c| c).await;
                let mut req = get("/api/etl/echo")
                    .header("connection", "")
                    .header("connection", "x-hop, x-user-id")
                    .header("x-hop", "1")
                    .header("keep-alive", "timeout=5")
                    .body(empty())
                    .unwrap();
                req.extensions_mut().insert(Identity::new("user-42"));
                let (status, echo) = h.echo(req).await;
                assert_eq!(status, StatusCode::OK);
                assert!(seen_values(&echo, "x-hop").is_empty());
                assert!(seen_values(&echo, "keep-alive").is_empty());
                assert_eq!(seen_values(&echo, "x-user-id"), ["user-42"]);
            }

            #[tokio::test]
            async fn without_identity_no_user_header_at_all() {
                let h = common::$transport(|c| c).await;
                let req = get("/api/etl/echo")
                    .header("x-user-id", "evil")
                    .body(empty())
                    .unwrap();
                let (_, echo) = h.echo(req).await;
                assert!(seen_values(&echo, "x-user-id").is_empty());
                // A fresh id is generated and sent when the client sent none.
                assert_eq!(seen_values(&echo, "x-request-id").len(), 1);
            }

            #[tokio::test]
            async fn forwarded_chain_starts_at_the_peer() {
                let h = common::$transport(|c| c).await;
                let mut req = get("/api/etl/echo")
                    .header("x-forwarded-for", "6.6.6.6")
                    .header("x_forwarded_for", "6.6.6.6")
                    .header("forwarded", "for=6.6.6.6")
                    .body(empty())
                    .unwrap();
                req.extensions_mut().insert(ClientAddr(
                    "203.0.113.9:4000".parse::<SocketAddr>().unwrap(),
                ));
                let (_, echo) = h.echo(req).await;
                assert_eq!(seen_values(&echo, "x-forwarded-for"), ["203.0.113.9"]);
                assert!(seen_values(&echo, "x_forwarded_for").is_empty());
                assert_eq!(seen_values(&echo, "forwarded").len(), 1);
                assert!(seen_values(&echo, "forwarded")[0].starts_with("for=203.0.113.9"));
            }

            #[tokio::test]
            async fn unsafe_paths_never_reach_the_upstream() {
                let h = common::$transport(|c| c).await;
                for path in [
                    "/api/etl/%2e%2e/admin",
                    "/api/etl/..%2fadmin",
                    "/api/etl//x",
                    "/api/etl/a%5cb",
                ] {
                    let res = h.send(get(path).body(empty()).unwrap()).await;
                    let (status, body) = error_code(res).await;
                    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
                    assert_eq!(body["code"], "bad_request");
                }
                let res = h.send(get("/api/other").body(empty()).unwrap()).await;
                assert_eq!(res.status(), StatusCode::NOT_FOUND);
                assert_eq!(h.seen.calls(), 0);
            }

            #[tokio::test]
            async fn content_length_with_transfer_encoding_is_rejected() {
                let h = common::$transport(|c| c).await;
                let req = Request::post("/api/etl/echo")
                    .header("content-length", "5")
                    .header("transfer-encoding", "chunked")
                    .body(full(Bytes::from_static(b"hello")))
                    .unwrap();
                let res = h.send(req).await;
                assert!(res.extensions().get::<ProxyError>().is_some());
                let (status, body) = error_code(res).await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(body["code"], "bad_request");
                let req = Request::post("/api/etl/echo")
                    .header("content-length", "5")
                    .header("content-length", "6")
                    .body(full(Bytes::from_static(b"hello")))
                    .unwrap();
                assert_eq!(h.send(req).await.status(), StatusCode::BAD_REQUEST);
                assert_eq!(h.seen.calls(), 0);
            }

            #[tokio::test]
            async fn body_limit_by_length_and_while_streaming() {
                let h = common::$transport(|c| c.with_max_request_body(1024)).await;
                let req = Request::post("/api/etl/echo")
                    .header("content-length", "2048")
                    .body(full(vec![b'a'; 2048]))
                    .unwrap();
                let (status, body) = error_code(h.send(req).await).await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
                assert_eq!(body["code"], "payload_too_large");
                // No length announced: the limit trips mid-stream.
                let body = chunked((0..4).map(|_| Bytes::from(vec![b'b'; 512])).collect());
                let res = h
                    .send(Request::post("/api/etl/echo").body(body).unwrap())
                    .await;
                assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
            }

            #[tokio::test]
            async fn bodies_stream_both_ways_at_every_size() {
                let h = common::$transport(|c| c).await;
                for size in [0usize, 1024, 64 * 1024, 1024 * 1024] {
                    let payload = Bytes::from(vec![b'z'; size]);
                    let req = Request::post("/api/etl/stream")
                        .body(full(payload.clone()))
                        .unwrap();
                    let res = h.send(req).await;
                    assert_eq!(res.status(), StatusCode::OK);
                    let got = res.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(got.len(), size);
                    assert_eq!(got, payload);
                }
            }

            #[tokio::test]
            async fn response_keeps_cookies_loses_hop_and_internal_headers_echoes_id() {
                let h = common::$transport(|c| c).await;
                let req = get("/api/etl/cookies")
                    .header("x-request-id", "req-9")
                    .body(empty())
                    .unwrap();
                let res = h.send(req).await;
                assert_eq!(res.status(), StatusCode::OK);
                let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
                assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
                for gone in [
                    "x-leak",
                    "keep-alive",
                    "x-internal-secret",
                    "x-user-id",
                    "connection",
                ] {
                    assert!(
                        !res.headers().contains_key(gone),
                        "{gone} reached the client"
                    );
                }
                assert_eq!(res.headers()["x-request-id"], "req-9");
            }

            #[tokio::test]
            async fn trailers_survive() {
                let h = common::$transport(|c| c).await;
                let req = get("/api/etl/trailers")
                    .header("te", "trailers")
                    .body(empty())
                    .unwrap();
                let res = h.send(req).await;
                let collected = res.into_body().collect().await.unwrap();
                assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
                assert_eq!(collected.to_bytes(), "payload");
            }

            #[tokio::test]
            async fn upstream_502_passes_through_once() {
                let h = common::$transport(|c| c).await;
                let res = h
                    .send(get("/api/etl/status/502").body(empty()).unwrap())
                    .await;
                assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
                assert!(res.extensions().get::<ProxyError>().is_none());
                assert_eq!(h.seen.calls(), 1);
            }

            #[tokio::test]
            async fn slow_upstream_gives_504() {
                let h = common::$transport(|c| c.with_response_timeout(Duration::from_millis(200)))
                    .await;
                let res = h.send(get("/api/etl/slow").body(empty()).unwrap()).await;
                assert_eq!(
                    res.extensions().get::<ProxyError>(),
                    Some(&ProxyError::Timeout {
                        phase: TimeoutPhase::ResponseHeaders
                    })
                );
                let (status, body) = error_code(res).await;
                assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
                assert_eq!(body["code"], "gateway_timeout");
            }

            #[tokio::test]
            async fn total_deadline_cuts_a_body_that_never_ends() {
                let h = common::$transport(|c| {
                    c.with_response_timeout(Duration::from_secs(5))
                        .with_total_timeout(Duration::from_secs(1))
                })
                .await;
                // Stream the request body forever: the upstream echoes what it gets,
                // so the response body never ends either.
                let (tx, body) = channel_body();
                tx.send(Bytes::from_static(b"first")).await.unwrap();
                let res = h
                    .send(Request::post("/api/etl/stream").body(body).unwrap())
                    .await;
                assert_eq!(res.status(), StatusCode::OK);
                let err = res.into_body().collect().await.unwrap_err();
                assert_eq!(
                    err,
                    ProxyError::Timeout {
                        phase: TimeoutPhase::Total
                    }
                );
                drop(tx);
            }
        }
    };
}

conformance!(tcp);
conformance!(in_process);
#[cfg(unix)]
conformance!(unix);
