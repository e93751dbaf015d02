//! The internal credential: pulse-core's `InternalCredentialLayer` around the
//! transport adds it after the proxy has stripped whatever the client sent.

mod common;

use common::*;
use http::StatusCode;
use pulse_core::{
    Identity,
    internal_auth::{InternalAuthLayer, InternalCredentialLayer, KeyRing},
};
use pulse_proxy::{
    Proxy,
    transport::{HttpTransport, InProcessTransport, TransportConfig},
};
use tower::{Layer, ServiceExt};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

const KEYS: &str = "gw:0123456789abcdef0123456789abcdef";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn the_upstream_gets_the_configured_key_never_the_clients_guess() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let transport = InternalCredentialLayer::new()
        .with_key(KeyRing::parse(KEYS).unwrap())
        .layer(HttpTransport::new(TransportConfig::new()));
    let proxy = Proxy::new(transport, base_config(&server.address().to_string()));
    let req = get("/api/etl/jobs")
        .header("x-internal-auth", "guess")
        .header("X_Internal_Auth", "guess")
        .body(empty())
        .unwrap();
    assert_eq!(proxy.oneshot(req).await.unwrap().status(), StatusCode::OK);
    let received = server.received_requests().await.unwrap();
    let values: Vec<_> = received[0]
        .headers
        .get_all("x-internal-auth")
        .iter()
        .collect();
    assert_eq!(values, [SECRET]);
    assert!(received[0].headers.get("x_internal_auth").is_none());
}

/// The whole chain in process: gateway proxy → credential layer → the internal
/// service's own `InternalAuthLayer`, which lets the request through.
#[tokio::test]
async fn an_internal_service_behind_internal_auth_accepts_the_proxied_request() {
    let seen = Seen::default();
    let ring = KeyRing::parse(KEYS).unwrap();
    let etl = InternalAuthLayer::new(ring.clone()).layer(upstream(seen.clone()));
    let transport = InternalCredentialLayer::new()
        .with_key(ring)
        .layer(InProcessTransport::new(etl));
    let proxy = Proxy::new(transport, base_config("etl.internal:8001"));
    let mut req = get("/api/etl/echo").body(empty()).unwrap();
    req.extensions_mut().insert(Identity::new("user-42"));
    let res = proxy.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Without the credential layer the same service refuses.
    let bare = Proxy::new(
        InProcessTransport::new(
            InternalAuthLayer::new(KeyRing::parse(KEYS).unwrap()).layer(upstream(seen)),
        ),
        base_config("etl.internal:8001"),
    );
    let req = get("/api/etl/echo")
        .header("x-internal-auth", SECRET)
        .body(empty())
        .unwrap();
    assert_eq!(
        bare.oneshot(req).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}
