//! `JwksSource` against a wiremock JWKS endpoint on loopback: initial fetch, refetch
//! on an unknown `kid`, background refresh, and failures that keep the keys held.
#![cfg(feature = "jwks")]

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
use pulse_core::{
    Identity,
    jwt::{JwksError, JwksSource, JwtVerifier, SigningKey, TokenError, TokenIssuer},
};
use serde_json::{Value, json};
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
