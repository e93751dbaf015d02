//! `JwksSource` against a wiremock JWKS endpoint on loopback: initial fetch, refetch
//! on an unknown `kid`, background refresh, and failures that keep the keys held; and
//! against a JWKS server in the test's own runtime that counts its fetches: a key
//! rotated mid-stream, concurrent unknown `kid`s sharing one fetch, a flood of made-up
//! `kid`s held to one fetch per cool-down, and a hung endpoint bounding the wait.
#![cfg(feature = "jwks")]

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::future::join_all;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use pulse_core::{
    Identity,
    jwt::{JwksError, JwksSource, JwtAuthLayer, JwtVerifier, SigningKey, TokenError, TokenIssuer},
};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const ED_PRIVATE: &[u8] = include_bytes!("keys/ed25519_private.pem");

/// A bound on waiting for the background task, so a broken refresh fails the test
/// instead of hanging it; nothing is asserted about timing.
const PATIENCE: Duration = Duration::from_secs(20);

fn jwk(private_pem: &[u8], alg: Algorithm, kid: &str) -> Value {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
        _ => EncodingKey::from_ed_pem(private_pem),
    }
    .unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

fn token(private_pem: &[u8], alg: Algorithm, kid: &str) -> String {
    let key = match alg {
        Algorithm::RS256 => SigningKey::rsa_pem(private_pem, alg),
        Algorithm::ES256 => SigningKey::ec_pem(private_pem, alg),
        _ => SigningKey::ed_pem(private_pem),
    }
    .unwrap()
    .with_kid(kid);
    TokenIssuer::new(key)
        .with_issuer("https://idp.test")
        .issue(&Identity::new("user-1"))
        .unwrap()
        .access_token
}

async fn serve(server: &MockServer, keys: Value) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": keys })))
        .mount(server)
        .await;
}

fn source(server: &MockServer) -> JwksSource {
    JwksSource::new(format!("{}/jwks.json", server.uri()).parse().unwrap())
}

#[tokio::test]
async fn keys_of_every_kind_are_fetched_and_verify() {
    let server = MockServer::start().await;
    serve(
        &server,
        json!([
            jwk(RSA_PRIVATE, Algorithm::RS256, "rsa-1"),
            jwk(EC_PRIVATE, Algorithm::ES256, "ec-1"),
            jwk(ED_PRIVATE, Algorithm::EdDSA, "ed-1"),
            // a symmetric key has no place in a published set and is skipped
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI", "kid": "oct-1"},
        ]),
    )
    .await;
    let jwks = source(&server);
    assert_eq!(jwks.refresh().await.unwrap(), 3);
    let verifier = JwtVerifier::new(jwks).with_issuer("https://idp.test");
    for (pem, alg, kid) in [
        (RSA_PRIVATE, Algorithm::RS256, "rsa-1"),
        (EC_PRIVATE, Algorithm::ES256, "ec-1"),
        (ED_PRIVATE, Algorithm::EdDSA, "ed-1"),
    ] {
        assert_eq!(
            verifier.verify(&token(pem, alg, kid)).unwrap().subject,
            "user-1"
        );
    }
    // the algorithm stays pinned to the JWK: an EC-signed token naming the RSA kid fails
    let mismatched = token(EC_PRIVATE, Algorithm::ES256, "rsa-1");
    assert_eq!(
        verifier.verify(&mismatched).unwrap_err(),
        TokenError::AlgorithmNotAllowed
    );
}

#[tokio::test]
async fn unknown_kid_triggers_one_background_refetch() {
    let server = MockServer::start().await;
    serve(
        &server,
        json!([jwk(RSA_PRIVATE, Algorithm::RS256, "2026-01")]),
    )
    .await;
    let jwks = source(&server);
    jwks.refresh().await.unwrap();
    jwks.spawn_background_refresh();
    let mut refreshed = jwks.subscribe();
    refreshed.borrow_and_update();
    let verifier = JwtVerifier::new(jwks.clone()).with_issuer("https://idp.test");

    // the issuer rotates to a new key
    serve(
        &server,
        json!([
            jwk(RSA_PRIVATE, Algorithm::RS256, "2026-01"),
            jwk(ED_PRIVATE, Algorithm::EdDSA, "2026-02"),
        ]),
    )
    .await;
    let new_token = token(ED_PRIVATE, Algorithm::EdDSA, "2026-02");
    // the request is answered at once (401) and never waits for the fetch
    assert_eq!(
        verifier.verify(&new_token).unwrap_err(),
        TokenError::UnknownKey
    );
    tokio::time::timeout(PATIENCE, refreshed.changed())
        .await
        .expect("the unknown kid woke the background refresh")
        .unwrap();
    assert_eq!(verifier.verify(&new_token).unwrap().subject, "user-1");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    // a burst of garbage kids right after does not hammer the endpoint
    for i in 0..50 {
        let garbage = token(ED_PRIVATE, Algorithm::EdDSA, &format!("garbage-{i}"));
        assert_eq!(
            verifier.verify(&garbage).unwrap_err(),
            TokenError::UnknownKey
        );
    }
    jwks.refresh().await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn background_refresh_picks_up_a_new_set_without_any_request() {
    let server = MockServer::start().await;
    serve(&server, json!([jwk(RSA_PRIVATE, Algorithm::RS256, "old")])).await;
    let jwks = source(&server).with_refresh_interval(Duration::from_millis(20));
    jwks.refresh().await.unwrap();
    let mut refreshed = jwks.subscribe();
    refreshed.borrow_and_update();
    serve(&server, json!([jwk(EC_PRIVATE, Algorithm::ES256, "new")])).await;
    jwks.spawn_background_refresh();
    tokio::time::timeout(PATIENCE, refreshed.changed())
        .await
        .expect("background refresh ran")
        .unwrap();
    assert_eq!(jwks.keys().kids(), ["new"]);
}

#[tokio::test]
async fn failures_keep_the_keys_held() {
    let server = MockServer::start().await;
    serve(&server, json!([jwk(RSA_PRIVATE, Algorithm::RS256, "k")])).await;
    let jwks = source(&server);
    jwks.refresh().await.unwrap();
    let verifier = JwtVerifier::new(jwks.clone());
    let good = token(RSA_PRIVATE, Algorithm::RS256, "k");

    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    assert!(matches!(
        jwks.refresh().await,
        Err(JwksError::Status(status)) if status == 500
    ));
    assert!(verifier.verify(&good).is_ok());

    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(&server)
        .await;
    assert!(matches!(jwks.refresh().await, Err(JwksError::Parse(_))));
    assert!(verifier.verify(&good).is_ok());
}

#[tokio::test]
async fn unreachable_endpoint_is_an_error_not_a_panic() {
    // a port nothing listens on: bind one, then drop it
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let jwks = JwksSource::new(
        format!("http://127.0.0.1:{port}/jwks.json")
            .parse()
            .unwrap(),
    );
    assert!(matches!(jwks.refresh().await, Err(JwksError::Request(_))));
    assert!(jwks.keys().is_empty());
}

#[tokio::test]
async fn oversized_document_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(300 * 1024)))
        .mount(&server)
        .await;
    assert!(matches!(
        source(&server).refresh().await,
        Err(JwksError::Request(_))
    ));
}

/// A JWKS endpoint in the test's runtime that counts the fetches it answers and can
/// change its key set, or hang, at any moment.
#[derive(Clone)]
struct LocalJwks {
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
    url: String,
}

impl LocalJwks {
    async fn start(keys: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let jwks = Self {
            keys: Arc::new(Mutex::new(json!({ "keys": keys }))),
            fetches: Arc::new(AtomicUsize::new(0)),
            hang: Arc::new(AtomicBool::new(false)),
            url,
        };
        let state = jwks.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.fetches.fetch_add(1, Ordering::SeqCst);
                    if state.hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    let body = state.keys.lock().unwrap().to_string();
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        jwks
    }

    fn rotate(&self, keys: Value) {
        *self.keys.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn source(&self) -> JwksSource {
        JwksSource::new(self.url.parse().unwrap())
    }
}

/// The gateway's shape: `JwtAuthLayer` in front of a service that answers 200.
fn protected(
    jwks: JwksSource,
) -> impl Service<
    Request<String>,
    Response = Response<pulse_core::body::ResponseBody<String>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let verifier = JwtVerifier::new(jwks).with_issuer("https://idp.test");
    ServiceBuilder::new()
        .layer(JwtAuthLayer::new(verifier))
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
}

async fn call(
    service: &(
         impl Service<
        Request<String>,
        Response = Response<pulse_core::body::ResponseBody<String>>,
        Error = Infallible,
    > + Clone
     ),
    token: &str,
) -> StatusCode {
    let req = Request::get("/")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(String::new())
        .unwrap();
    service.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn key_rotated_mid_stream_costs_no_request_a_401() {
    let server = LocalJwks::start(json!([jwk(RSA_PRIVATE, Algorithm::RS256, "2026-01")])).await;
    let jwks = server
        .source()
        .with_min_refetch_interval(Duration::from_secs(30));
    jwks.refresh().await.unwrap();
    let service = protected(jwks);
    let old = token(RSA_PRIVATE, Algorithm::RS256, "2026-01");
    let new = token(ED_PRIVATE, Algorithm::EdDSA, "2026-02");

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(call(&service, &old).await);
    }
    // The identity provider publishes the new key and signs with it from now on;
    // tokens of the old key are still in circulation.
    server.rotate(json!([
        jwk(RSA_PRIVATE, Algorithm::RS256, "2026-01"),
        jwk(ED_PRIVATE, Algorithm::EdDSA, "2026-02"),
    ]));
    for i in 0..20 {
        statuses.push(call(&service, if i % 2 == 0 { &new } else { &old }).await);
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // The first fetch at start, one for the new kid.
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn concurrent_requests_with_a_new_kid_share_one_fetch() {
    let server = LocalJwks::start(json!([jwk(RSA_PRIVATE, Algorithm::RS256, "old")])).await;
    let jwks = server.source();
    jwks.refresh().await.unwrap();
    let service = protected(jwks);
    server.rotate(json!([
        jwk(RSA_PRIVATE, Algorithm::RS256, "old"),
        jwk(ED_PRIVATE, Algorithm::EdDSA, "new"),
    ]));
    let new = token(ED_PRIVATE, Algorithm::EdDSA, "new");
    // All of them meet the unknown kid before the fetch can answer (the first poll of
    // `join_all` polls each one, on this single-threaded runtime).
    let statuses = join_all((0..100).map(|_| call(&service, &new))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_flood_of_made_up_kids_fetches_at_most_once_per_cool_down() {
    let server = LocalJwks::start(json!([jwk(RSA_PRIVATE, Algorithm::RS256, "real")])).await;
    let cool_down = Duration::from_secs(30);
    let jwks = server.source().with_min_refetch_interval(cool_down);
    jwks.refresh().await.unwrap();
    let service = protected(jwks);
    let real = token(RSA_PRIVATE, Algorithm::RS256, "real");
    let made_up: Vec<String> = (0..200)
        .map(|i| token(ED_PRIVATE, Algorithm::EdDSA, &format!("made-up-{i}")))
        .collect();

    // A concurrent wave, then a sequential one: every made-up kid is refused, and
    // only the first of them caused a fetch.
    let wave = join_all(made_up[..100].iter().map(|t| call(&service, t))).await;
    assert!(wave.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    for t in &made_up[100..] {
        assert_eq!(call(&service, t).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(server.fetches(), 2);
    // Real users are not held up by the flood.
    assert_eq!(call(&service, &real).await, StatusCode::OK);

    // Once the cool-down has passed, the next flood buys one more fetch, no more.
    tokio::time::pause();
    tokio::time::advance(cool_down).await;
    tokio::time::resume();
    let wave = join_all(made_up.iter().map(|t| call(&service, t))).await;
    assert!(wave.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(server.fetches(), 3);
    assert_eq!(call(&service, &real).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_bounds_the_wait() {
    let server = LocalJwks::start(json!([])).await;
    server.hang.store(true, Ordering::SeqCst);
    let timeout = Duration::from_secs(2);
    let service = protected(server.source().with_timeout(timeout));
    let new = token(ED_PRIVATE, Algorithm::EdDSA, "new");
    let started = tokio::time::Instant::now();
    let statuses = join_all((0..10).map(|_| call(&service, &new))).await;
    // Refused once the fetch timed out, not hung; ten waiters, one fetch.
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(started.elapsed() <= timeout, "{:?}", started.elapsed());
    assert!(server.fetches() <= 1);
}

#[tokio::test]
async fn verify_async_waits_where_verify_answers_at_once() {
    let server = LocalJwks::start(json!([jwk(RSA_PRIVATE, Algorithm::RS256, "old")])).await;
    let jwks = server.source();
    jwks.refresh().await.unwrap();
    let verifier = JwtVerifier::new(jwks).with_issuer("https://idp.test");
    server.rotate(json!([jwk(ED_PRIVATE, Algorithm::EdDSA, "new")]));
    let new = token(ED_PRIVATE, Algorithm::EdDSA, "new");
    assert_eq!(verifier.verify_async(&new).await.unwrap().subject, "user-1");
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_waiting_request_keeps_the_readiness_it_was_given() {
    // Under a concurrency limit of one, the inner service's permit is taken by
    // `poll_ready`: the request that waits for the refetch must be sent with that very
    // service (a fresh clone has no permit, and tower's limit panics when called
    // unready), and the next request still gets through.
    let server = LocalJwks::start(json!([jwk(RSA_PRIVATE, Algorithm::RS256, "old")])).await;
    let jwks = server.source();
    jwks.refresh().await.unwrap();
    let verifier = JwtVerifier::new(jwks).with_issuer("https://idp.test");
    let service = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(verifier))
        .concurrency_limit(1)
        .service(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    server.rotate(json!([jwk(ED_PRIVATE, Algorithm::EdDSA, "new")]));
    let new = token(ED_PRIVATE, Algorithm::EdDSA, "new");
    assert_eq!(call(&service, &new).await, StatusCode::OK);
    assert_eq!(call(&service, &new).await, StatusCode::OK);
    assert_eq!(server.fetches(), 2);
}
