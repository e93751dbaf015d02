//! Run with: cargo run -p pulse-core --example guarded_service --features jwt,axum
//!
//! A service guarded by JWT + RBAC, on loopback: an axum router behind
//! `RequestIdLayer` → `JwtAuthLayer` → `RequirePermissionLayer("reports.read")`, whose
//! handler takes the verified caller as an `Identity` extractor (feature `axum`). It is
//! called over HTTP with a token that grants `reports.read` (200), one that does not
//! (403), and none (401); then the server shuts down and the example exits.

use std::error::Error;

use axum::{Router, routing::get};
use http::{Request, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pulse_core::jwt::{JwtAuthLayer, JwtVerifier, SigningKey, TokenIssuer, VerificationKey};
use pulse_core::{Identity, RequestIdLayer, RequirePermissionLayer};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    // One HMAC secret here; RSA, EC or Ed25519 keys (or a JWKS URL) work the same way.
    let secret = b"an example secret of at least 32 bytes";
    let issuer = TokenIssuer::new(SigningKey::hmac(secret)?)
        .with_issuer("example-idp")
        .with_audience("reports");
    let verifier = JwtVerifier::new(VerificationKey::hmac(secret)?)
        .with_issuer("example-idp")
        .with_audience("reports");

    let app = Router::new()
        .route(
            "/reports/{id}",
            get(|who: Identity| async move { format!("report for {}", who.subject) }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(RequestIdLayer::new()) // every answer, a 401 or 403 too, has an X-Request-ID
                .layer(JwtAuthLayer::new(verifier)) // 401 + WWW-Authenticate on a bad or missing token
                .layer(RequirePermissionLayer::new("reports.read")), // 403 without the permission
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("serving on http://{addr}");

    let reader = issuer.issue(&Identity::new("alice").with_permissions(["reports.read"]))?;
    let writer = issuer.issue(&Identity::new("bob").with_permissions(["reports.write"]))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let cases = [
        (
            "alice (reports.read)",
            Some(reader.access_token),
            StatusCode::OK,
        ),
        (
            "bob (reports.write)",
            Some(writer.access_token),
            StatusCode::FORBIDDEN,
        ),
        ("no token", None, StatusCode::UNAUTHORIZED),
    ];
    for (caller, token, expected) in cases {
        let mut request = Request::get(format!("http://{addr}/reports/7"));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = client.request(request.body(Empty::new())?).await?;
        let status = response.status();
        let request_id = response.headers()["x-request-id"].to_str()?.to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{caller:<22} → {status} (x-request-id {request_id}): {}",
            String::from_utf8_lossy(&body)
        );
        if status != expected {
            return Err(format!("{caller}: expected {expected}, got {status}").into());
        }
    }

    let _ = stop.send(());
    server.await??;
    Ok(())
}
