//! Run with: cargo run -p pulse-proxy --example authenticated_proxy --features http,cache
//!
//! A minimal authenticated reverse proxy with a response cache, on loopback:
//!
//! ```text
//! client → gateway [JWT → cache (per user) → Proxy → HttpTransport] → upstream
//! ```
//!
//! The upstream echoes the user id it was given and counts its calls. A caller with a
//! valid token gets the answer twice, the second time from the cache (the upstream is
//! called once) — even though it tried to spoof `X-User-ID`, the upstream sees only the
//! verified subject; a caller without a token gets 401 and the upstream is not called.
//! (The JWT layer comes from pulse-core's `jwt` feature.) Then both servers stop.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::{Router, http::HeaderMap, routing::get};
use bytes::Bytes;
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pulse_core::Identity;
use pulse_core::jwt::{JwtAuthLayer, JwtVerifier, SigningKey, TokenIssuer, VerificationKey};
use pulse_proxy::cache::{CacheLayer, MemoryStore};
use pulse_proxy::transport::{HttpTransport, TransportConfig};
use pulse_proxy::{Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceBuilder;

/// Serves `app` on a loopback port until the returned sender is dropped or fired.
async fn serve(app: Router) -> Result<(std::net::SocketAddr, oneshot::Sender<()>), Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((addr, stop))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // The internal service: who is asking, and how often it was asked.
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = Router::new().route(
        "/api/v1/reports",
        get({
            let calls = calls.clone();
            move |headers: HeaderMap| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let user = headers.get("x-user-id").and_then(|v| v.to_str().ok());
                format!("reports of {}", user.unwrap_or("nobody"))
            }
        }),
    );
    let (upstream_addr, stop_upstream) = serve(upstream).await?;

    // The gateway: verify the token, answer repeated GETs per user from memory, forward
    // the rest with the verified identity injected.
    let secret = b"an example secret of at least 32 bytes";
    let issuer = TokenIssuer::new(SigningKey::hmac(secret)?).with_issuer("example-idp");
    let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?).with_issuer("example-idp");
    let config = ProxyConfig::new(format!("http://{upstream_addr}").parse()?)?
        .with_prefix_rewrite("/api/", "/api/v1/")
        .with_response_timeout(Duration::from_secs(5));
    let cache = CacheLayer::new(MemoryStore::new()).with_ttl(Duration::from_secs(30));
    let stats = cache.stats();
    let gateway = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(verifier))
        .layer(cache)
        .service(Proxy::new(
            HttpTransport::new(TransportConfig::new()),
            config,
        ));
    let (gateway_addr, stop_gateway) =
        serve(Router::new().route_service("/api/{*path}", gateway)).await?;
    println!("upstream on {upstream_addr}, gateway on {gateway_addr}");

    let token = issuer.issue(&Identity::new("alice"))?.access_token;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = |token: Option<&str>| {
        let mut request =
            Request::get(format!("http://{gateway_addr}/api/reports")).header("x-user-id", "admin"); // spoofed: stripped by the proxy
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::new());
        let client = client.clone();
        async move {
            let response = client.request(request?).await?;
            let status = response.status();
            let x_cache = response.headers().get("x-cache").cloned();
            let body = response.into_body().collect().await?.to_bytes();
            let x_cache = x_cache
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            println!(
                "{status} x-cache={x_cache}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok::<_, Box<dyn Error>>((status, x_cache, body))
        }
    };

    let first = get(Some(&token)).await?;
    let second = get(Some(&token)).await?;
    let anonymous = get(None).await?;
    println!(
        "upstream calls: {}, cache hits: {}",
        calls.load(Ordering::SeqCst),
        stats.snapshot().hits
    );

    let _ = stop_gateway.send(());
    let _ = stop_upstream.send(());
    let expected = (
        first
            == (
                StatusCode::OK,
                "MISS".to_owned(),
                Bytes::from("reports of alice"),
            ),
        second
            == (
                StatusCode::OK,
                "HIT".to_owned(),
                Bytes::from("reports of alice"),
            ),
        anonymous.0 == StatusCode::UNAUTHORIZED,
        calls.load(Ordering::SeqCst) == 1,
    );
    if expected != (true, true, true, true) {
        return Err(format!("unexpected outcome: {expected:?}").into());
    }
    Ok(())
}
