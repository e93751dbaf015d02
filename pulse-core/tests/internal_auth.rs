//! Internal service authentication: exempt paths, key ring, signed internal tokens,
//! the client layer, rotation, and arbitrary input.
#![cfg(feature = "internal-auth")]

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pulse_core::{
    Identity,
    internal_auth::{
        Authenticated, Caller, CallerKind, CredentialOutcome, CredentialVerifier,
        InternalAuthLayer, InternalCredentialLayer, InternalTokenMinter, InternalTokenVerifier,
        KeyRing, KeyRingError, X_INTERNAL_AUTH, X_INTERNAL_TOKEN,
    },
    jwt::{JwtVerifier, SigningKey, TokenError, TokenIssuer, USER_TOKEN_TYPE, VerificationKey},
};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

const KEY_A: &str = "key-a-0123456789abcdef0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef0123456789abcdef";
const TOKEN_SECRET: &[u8] = b"internal-token-secret-32-bytes!!!";
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn ring() -> KeyRing {
    KeyRing::parse(&format!("a:{KEY_A},b:{KEY_B}")).unwrap()
}

fn token_verifier() -> InternalTokenVerifier {
    InternalTokenVerifier::new(
        VerificationKey::hmac(TOKEN_SECRET).unwrap(),
        "pulse-gateway",
        "pulse-etl",
    )
    .map_verifier(|v| v.with_clock(now))
}

fn minter() -> InternalTokenMinter {
    InternalTokenMinter::new(SigningKey::hmac(TOKEN_SECRET).unwrap(), "pulse-gateway")
        .with_clock(now)
}

fn layer(ring: KeyRing) -> InternalAuthLayer {
    InternalAuthLayer::new(ring)
        .with_verifier(token_verifier())
        .with_exempt_paths(["/health", "/metrics"])
        .unwrap()
}

/// What the handler behind the layer saw.
#[derive(Debug, Default)]
struct Seen {
    status: StatusCode,
    body: Value,
}

/// The handler echoes what reached it: caller, identity and credential headers.
async fn call_layer(layer: InternalAuthLayer, req: Request<Full<Bytes>>) -> Seen {
    let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let caller = req
            .extensions()
            .get::<Caller>()
            .map(|c| json!({"id": c.id, "kind": format!("{:?}", c.kind)}));
        let identity = req.extensions().get::<Identity>().cloned();
        let body = json!({
            "caller": caller,
            "identity": identity,
            "x_internal_auth": req.headers().contains_key(X_INTERNAL_AUTH),
            "x_internal_token": req.headers().contains_key(X_INTERNAL_TOKEN),
        });
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    }));
    let res = service.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Seen {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::builder().uri(path).header("x-request-id", "req-7");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::default()).unwrap()
}

#[track_caller]
fn assert_forbidden(seen: &Seen) {
    assert_eq!(seen.status, StatusCode::FORBIDDEN, "{}", seen.body);
    assert_eq!(
        seen.body,
        json!({"error": "Internal authentication required", "code": "internal_auth_required", "request_id": "req-7"})
    );
}

// ---- exempt paths ----------------------------------------------------------------------

#[tokio::test]
async fn exact_exempt_paths_are_open() {
    for path in ["/health", "/metrics", "/health?verbose=1"] {
        let seen = call_layer(layer(ring()), request(path, &[])).await;
        assert_eq!(seen.status, StatusCode::OK, "{path}");
        assert_eq!(seen.body["caller"], Value::Null);
    }
}

#[tokio::test]
async fn non_canonical_spellings_of_exempt_paths_are_not_exempt() {
    for path in [
        "/health/",
        "//health",
        "/health/../api/v1/jobs",
        "/health/./",
        "/./health",
        "/HEALTH",
        "/%68ealth",
        "/health%2F",
        "/healthz",
        "/health/x",
        "/metrics/../api",
        "/",
        "/api/v1/jobs",
    ] {
        let seen = call_layer(layer(ring()), request(path, &[])).await;
        assert_forbidden(&seen);
    }
}

#[test]
fn non_canonical_exempt_paths_are_refused_at_set_up() {
    for bad in [
        "health", "/health/", "//health", "/a/../b", "/%68", "/a b", "",
    ] {
        assert!(
            InternalAuthLayer::new(ring())
                .with_exempt_paths([bad])
                .is_err(),
            "{bad}"
        );
    }
}

// ---- key ring --------------------------------------------------------------------------

#[tokio::test]
async fn valid_key_passes_and_names_the_caller() {
    for (key, id) in [(KEY_A, "a"), (KEY_B, "b")] {
        let seen = call_layer(
            layer(ring()),
            request("/api/v1/jobs", &[("x-internal-auth", key)]),
        )
        .await;
        assert_eq!(seen.status, StatusCode::OK);
        assert_eq!(seen.body["caller"], json!({"id": id, "kind": "Key"}));
        // a key carries no user identity, and the secret is not passed on
        assert_eq!(seen.body["identity"], Value::Null);
        assert_eq!(seen.body["x_internal_auth"], false);
    }
}

#[tokio::test]
async fn wrong_or_repeated_keys_are_forbidden() {
    for headers in [
        vec![("x-internal-auth", "wrong")],
        vec![("x-internal-auth", "")],
        vec![("x-internal-auth", &KEY_A[..KEY_A.len() - 1])],
        vec![("x-internal-auth", KEY_A), ("x-internal-auth", KEY_B)],
        vec![("x-internal-auth", KEY_A), ("x-internal-auth", "wrong")],
        vec![("x-internal-auth-extra", KEY_A)],
    ] {
        let seen = call_layer(layer(ring()), request("/api/v1/jobs", &headers)).await;
        assert_forbidden(&seen);
    }
}

#[tokio::test]
async fn plain_user_headers_never_become_an_identity() {
    let seen = call_layer(
        layer(ring()),
        request(
            "/api/v1/jobs",
            &[
                ("x-internal-auth", KEY_A),
                ("x-user-id", "admin"),
                ("x-user-email", "admin@pulse.local"),
            ],
        ),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["identity"], Value::Null);
}

#[tokio::test]
async fn identity_smuggled_in_extensions_is_dropped() {
    let mut req = request("/api/v1/jobs", &[("x-internal-auth", KEY_A)]);
    req.extensions_mut().insert(Identity::new("smuggled"));
    req.extensions_mut()
        .insert(Caller::new("smuggled", CallerKind::Token));
    let seen = call_layer(layer(ring()), req).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["identity"], Value::Null);
    assert_eq!(seen.body["caller"]["id"], "a");

    let mut req = request("/health", &[]);
    req.extensions_mut().insert(Identity::new("smuggled"));
    let seen = call_layer(layer(ring()), req).await;
    assert_eq!(seen.body["identity"], Value::Null);
}

#[tokio::test]
async fn previous_key_passes_while_in_the_ring_and_fails_after_removal() {
    let receiver = KeyRing::parse(&format!("old:{KEY_A}")).unwrap();
    let sender = KeyRing::parse(&format!("old:{KEY_A}")).unwrap();
    let through = |sender: KeyRing, receiver: KeyRing| async move {
        let etl = layer(receiver).layer(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
        let client = InternalCredentialLayer::new().with_key(sender).layer(etl);
        client
            .oneshot(request("/api/v1/jobs", &[]))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        through(sender.clone(), receiver.clone()).await,
        StatusCode::OK
    );

    // 1. every receiver learns the new key; the old one still works
    receiver.insert("new", KEY_B).unwrap();
    assert_eq!(
        through(sender.clone(), receiver.clone()).await,
        StatusCode::OK
    );
    // 2. senders switch; both sides agree
    sender.insert("new", KEY_B).unwrap();
    let old_sender = KeyRing::parse(&format!("old:{KEY_A}")).unwrap();
    assert!(sender.set_primary("new"));
    assert_eq!(
        through(sender.clone(), receiver.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        through(old_sender.clone(), receiver.clone()).await,
        StatusCode::OK
    );
    // 3. the old key is removed: its requests now fail
    assert!(receiver.remove("old"));
    assert_eq!(
        through(old_sender, receiver.clone()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(through(sender, receiver).await, StatusCode::OK);
}

#[test]
fn key_ring_from_file_and_env() {
    let path = std::env::temp_dir().join(format!("pulse-keys-{}.txt", std::process::id()));
    std::fs::write(&path, format!("# keys\nk2:{KEY_B}\nk1:{KEY_A}\n")).unwrap();
    let ring = KeyRing::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(ring.len(), 2);
    assert_eq!(&*ring.primary().unwrap().0, "k2");
    assert!(matches!(
        KeyRing::from_env("PULSE_TEST_SURELY_UNSET_VARIABLE"),
        Err(KeyRingError::MissingEnv(_))
    ));
    assert!(matches!(
        KeyRing::from_file("/nonexistent/pulse/keys"),
        Err(KeyRingError::Io(_))
    ));
}

#[test]
fn secrets_never_show_in_debug() {
    let ring = ring();
    let layer = layer(ring.clone());
    let client = InternalCredentialLayer::new()
        .with_key(ring.clone())
        .with_token(minter(), "pulse-etl");
    for text in [
        format!("{ring:?}"),
        format!("{layer:?}"),
        format!("{client:?}"),
        format!("{:?}", ring.primary()),
    ] {
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("internal-token-secret"), "{text}");
    }
}

// ---- signed internal tokens ----------------------------------------------------------------

fn user() -> Identity {
    Identity::new("user-7")
        .with_email("user-7@pulse.local")
        .with_roles(["viewer"])
        .with_permissions(["etl.access", "etl.jobs.run"])
}

#[tokio::test]
async fn minted_token_carries_the_signed_identity() {
    let token = minter().mint(&user(), "pulse-etl").unwrap();
    let seen = call_layer(
        layer(KeyRing::new()),
        request("/api/v1/jobs", &[("x-internal-token", &token)]),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.body["caller"],
        json!({"id": "pulse-gateway", "kind": "Token"})
    );
    assert_eq!(seen.body["identity"]["subject"], "user-7");
    assert_eq!(seen.body["identity"]["email"], "user-7@pulse.local");
    assert_eq!(
        seen.body["identity"]["permissions"],
        json!(["etl.access", "etl.jobs.run"])
    );
    assert_eq!(seen.body["identity"]["expires_at"], NOW + 60);
    assert_eq!(seen.body["x_internal_token"], false);
}

#[tokio::test]
async fn bad_internal_tokens_are_forbidden() {
    let other_key = InternalTokenMinter::new(
        SigningKey::hmac(b"another-secret-another-secret-!!!").unwrap(),
        "pulse-gateway",
    )
    .with_clock(now);
    let other_issuer =
        InternalTokenMinter::new(SigningKey::hmac(TOKEN_SECRET).unwrap(), "evil").with_clock(now);
    let stale = minter().with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW - 120));
    let long = minter().with_lifetime(Duration::from_secs(3600));
    // a user token signed with the same secret is not an internal token (typ differs)
    let user_token = TokenIssuer::new(SigningKey::hmac(TOKEN_SECRET).unwrap())
        .with_issuer("pulse-gateway")
        .with_audience("pulse-etl")
        .with_clock(now)
        .issue(&user())
        .unwrap()
        .access_token;
    let good = minter().mint(&user(), "pulse-etl").unwrap();
    for token in [
        minter().mint(&user(), "pulse-billing").unwrap(),
        other_key.mint(&user(), "pulse-etl").unwrap(),
        other_issuer.mint(&user(), "pulse-etl").unwrap(),
        stale.mint(&user(), "pulse-etl").unwrap(),
        long.mint(&user(), "pulse-etl").unwrap(),
        user_token,
        format!("{good}x"),
        "garbage".to_owned(),
        String::new(),
    ] {
        let seen = call_layer(
            layer(KeyRing::new()),
            request("/api/v1/jobs", &[("x-internal-token", &token)]),
        )
        .await;
        assert_forbidden(&seen);
    }
}

// ---- token kinds: an internal token is only ever an internal token -------------------------

/// An HS256 token signed with the internal secret, with exactly this `typ` and these claims.
fn raw_internal(typ: Option<&str>, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The claims the gateway's minter writes, for `patch` to change.
fn internal_claims(patch: Value) -> Value {
    let mut claims = json!({
        "sub": "user-7",
        "iss": "pulse-gateway",
        "aud": "pulse-etl",
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "j-1",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[test]
fn internal_tokens_need_their_type_audience_iat_and_a_short_life() {
    let verifier = token_verifier();
    let internal = Some("pulse-internal+jwt");
    // the reference token passes, so each refusal below is for its one change
    assert!(
        verifier
            .verify(&raw_internal(internal, &internal_claims(json!({}))))
            .is_ok()
    );
    for (token, reason) in [
        // no iat
        (
            raw_internal(internal, &internal_claims(json!({"iat": null}))),
            TokenError::MissingClaim("iat"),
        ),
        // iat in the future beyond the leeway
        (
            raw_internal(
                internal,
                &internal_claims(json!({"iat": NOW + 31, "exp": NOW + 60})),
            ),
            TokenError::IssuedInFuture,
        ),
        // living longer than the minter's tokens (60 s)
        (
            raw_internal(internal, &internal_claims(json!({"exp": NOW + 120}))),
            TokenError::LifetimeTooLong,
        ),
        (
            raw_internal(
                internal,
                &internal_claims(json!({"iat": NOW - 50, "exp": NOW + 50})),
            ),
            TokenError::LifetimeTooLong,
        ),
        // missing or other type
        (
            raw_internal(None, &internal_claims(json!({}))),
            TokenError::WrongType,
        ),
        (
            raw_internal(Some("JWT"), &internal_claims(json!({}))),
            TokenError::WrongType,
        ),
        (
            raw_internal(Some(USER_TOKEN_TYPE), &internal_claims(json!({}))),
            TokenError::WrongType,
        ),
        // the user tokens' audience, or none
        (
            raw_internal(internal, &internal_claims(json!({"aud": "pulse-api"}))),
            TokenError::WrongAudience,
        ),
        (
            raw_internal(internal, &internal_claims(json!({"aud": null}))),
            TokenError::MissingClaim("aud"),
        ),
    ] {
        assert_eq!(verifier.verify(&token).unwrap_err(), reason);
    }
}

#[test]
fn user_and_internal_tokens_are_not_interchangeable_even_with_one_secret() {
    // The gateway's two token kinds, carelessly signed with one secret.
    let secret = TOKEN_SECRET;
    let issuer = TokenIssuer::new(SigningKey::hmac(secret).unwrap())
        .with_issuer("pulse-gateway")
        .with_audience("pulse-api")
        .with_lifetime(Duration::from_secs(3600))
        .with_clock(now);
    let user_verifier = JwtVerifier::new(VerificationKey::hmac(secret).unwrap())
        .with_issuer("pulse-gateway")
        .with_audience("pulse-api")
        .with_required_type(USER_TOKEN_TYPE)
        .with_max_lifetime(issuer.lifetime())
        .with_clock(now);
    // a user verifier at its defaults, as built before token kinds existed
    let default_user_verifier = JwtVerifier::new(VerificationKey::hmac(secret).unwrap())
        .with_issuer("pulse-gateway")
        .with_audience("pulse-api")
        .with_clock(now);
    let internal_verifier = token_verifier();

    let user_token = issuer.issue(&user()).unwrap().access_token;
    assert!(user_verifier.verify(&user_token).is_ok());
    assert!(default_user_verifier.verify(&user_token).is_ok());
    assert_eq!(
        internal_verifier.verify(&user_token).unwrap_err(),
        TokenError::WrongType
    );
    // even addressed to the internal service
    let user_token_for_etl = issuer
        .clone()
        .with_audience("pulse-etl")
        .issue(&user())
        .unwrap()
        .access_token;
    assert_eq!(
        internal_verifier.verify(&user_token_for_etl).unwrap_err(),
        TokenError::WrongType
    );

    let internal_token = minter().mint(&user(), "pulse-etl").unwrap();
    assert!(internal_verifier.verify(&internal_token).is_ok());
    assert!(user_verifier.verify(&internal_token).is_err());
    assert!(default_user_verifier.verify(&internal_token).is_err());
    // even addressed to the gateway's own audience
    let internal_token_for_api = minter().mint(&user(), "pulse-api").unwrap();
    assert_eq!(
        user_verifier.verify(&internal_token_for_api).unwrap_err(),
        TokenError::WrongType
    );
    assert_eq!(
        default_user_verifier
            .verify(&internal_token_for_api)
            .unwrap_err(),
        TokenError::WrongType
    );
}

#[tokio::test]
async fn with_replay_protection_each_token_is_accepted_once() {
    let layer = InternalAuthLayer::new(token_verifier().with_replay_protection(10_000));
    let token = minter().mint(&user(), "pulse-etl").unwrap();
    let first = call_layer(
        layer.clone(),
        request("/api/v1/jobs", &[("x-internal-token", &token)]),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let replayed = call_layer(
        layer.clone(),
        request("/api/v1/jobs", &[("x-internal-token", &token)]),
    )
    .await;
    assert_forbidden(&replayed);
    // a fresh token for the same user is fine
    let fresh = minter().mint(&user(), "pulse-etl").unwrap();
    let seen = call_layer(
        layer,
        request("/api/v1/jobs", &[("x-internal-token", &fresh)]),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
}

#[tokio::test]
async fn a_valid_key_does_not_rescue_an_invalid_token() {
    let seen = call_layer(
        layer(ring()),
        request(
            "/api/v1/jobs",
            &[
                ("x-internal-auth", KEY_A),
                ("x-internal-token", "forged.token.here"),
            ],
        ),
    )
    .await;
    assert_forbidden(&seen);
}

#[tokio::test]
async fn key_and_token_together_give_caller_and_identity() {
    let token = minter().mint(&user(), "pulse-etl").unwrap();
    let seen = call_layer(
        layer(ring()),
        request(
            "/api/v1/jobs",
            &[("x-internal-auth", KEY_A), ("x-internal-token", &token)],
        ),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["caller"]["id"], "a");
    assert_eq!(seen.body["identity"]["subject"], "user-7");
}

// ---- the client layer ----------------------------------------------------------------------

async fn outbound(layer: InternalCredentialLayer, req: Request<Full<Bytes>>) -> HeaderMap {
    let service = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        Ok::<_, Infallible>(req.headers().clone())
    }));
    service.oneshot(req).await.unwrap()
}

#[tokio::test]
async fn client_layer_inserts_sensitive_credentials() {
    let client = InternalCredentialLayer::new()
        .with_key(ring())
        .with_token(minter(), "pulse-etl");
    let mut req = request(
        "/api/v1/jobs",
        &[
            ("x-internal-auth", "forwarded-by-a-client"),
            ("x-internal-auth", "and-another"),
            ("x-internal-token", "forwarded.by.client"),
        ],
    );
    req.extensions_mut().insert(user());
    let headers = outbound(client, req).await;

    let keys: Vec<_> = headers.get_all(X_INTERNAL_AUTH).iter().collect();
    assert_eq!(keys, [KEY_A]);
    assert!(keys[0].is_sensitive());
    let tokens: Vec<_> = headers.get_all(X_INTERNAL_TOKEN).iter().collect();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].is_sensitive());
    let identity = token_verifier()
        .verify(tokens[0].to_str().unwrap())
        .unwrap();
    assert_eq!(identity.subject, "user-7");
}

#[tokio::test]
async fn client_layer_without_identity_sends_no_token() {
    let client = InternalCredentialLayer::new().with_token(minter(), "pulse-etl");
    let req = request(
        "/api/v1/jobs",
        &[("x-internal-token", "forwarded.by.client")],
    );
    let headers = outbound(client, req).await;
    assert!(!headers.contains_key(X_INTERNAL_TOKEN));
    assert!(!headers.contains_key(X_INTERNAL_AUTH));
}

// ---- more kinds behind the trait --------------------------------------------------------------

/// A made-up credential kind: proves the layer takes any `CredentialVerifier`.
struct TrustedSidecar;

impl CredentialVerifier for TrustedSidecar {
    fn verify(&self, headers: &HeaderMap) -> CredentialOutcome {
        match headers.get("x-sidecar-attested").map(HeaderValue::as_bytes) {
            None => CredentialOutcome::Absent,
            Some(b"mesh-ok") => {
                CredentialOutcome::Valid(Authenticated::new(Caller::new("mesh", CallerKind::Key)))
            }
            Some(_) => CredentialOutcome::Invalid,
        }
    }

    fn remove_credential(&self, headers: &mut HeaderMap) {
        headers.remove("x-sidecar-attested");
    }
}

#[tokio::test]
async fn custom_credential_kinds_plug_in() {
    let layer = InternalAuthLayer::new(TrustedSidecar);
    let seen = call_layer(
        layer.clone(),
        request("/api/v1/jobs", &[("x-sidecar-attested", "mesh-ok")]),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(seen.body["caller"]["id"], "mesh");
    let seen = call_layer(
        layer,
        request("/api/v1/jobs", &[("x-sidecar-attested", "nope")]),
    )
    .await;
    assert_forbidden(&seen);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_caller_extractor_fails_closed() {
    use axum::{Router, routing::get};

    let router = Router::new().route("/whoami", get(|caller: Caller| async move { caller.id }));
    let res = router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/whoami")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let guarded = router.layer(layer(ring()));
    let res = guarded
        .oneshot(
            Request::builder()
                .uri("/whoami")
                .header("x-internal-auth", KEY_B)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "b");
}

#[test]
fn a_reused_token_serves_its_window_then_a_fresh_one_is_minted() {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let at = Arc::new(AtomicU64::new(NOW));
    let clock = {
        let at = Arc::clone(&at);
        move || UNIX_EPOCH + Duration::from_secs(at.load(Ordering::SeqCst))
    };
    let minter = InternalTokenMinter::new(SigningKey::hmac(TOKEN_SECRET).unwrap(), "pulse-gateway")
        .with_clock(clock)
        .with_reuse(Duration::from_secs(15), 100);
    let alice = Identity::new("alice").with_permissions(["etl.access"]);
    let first = minter.mint(&alice, "pulse-etl").unwrap();
    assert_eq!(token_verifier().verify(&first).unwrap().subject, "alice");

    at.store(NOW + 14, Ordering::SeqCst);
    assert_eq!(minter.mint(&alice, "pulse-etl").unwrap(), first);
    let header = minter.mint_header(&alice, "pulse-etl").unwrap();
    assert_eq!(header.as_bytes(), first.as_bytes());
    assert!(header.is_sensitive());

    // A changed identity (other grants) or another audience never gets alice's token.
    let admin = alice.clone().with_roles(["admin"]);
    assert_ne!(minter.mint(&admin, "pulse-etl").unwrap(), first);
    assert_ne!(minter.mint(&alice, "pulse-billing").unwrap(), first);

    // Past the window: a fresh token (new iat, exp and jti).
    at.store(NOW + 15, Ordering::SeqCst);
    let fresh = minter.mint(&alice, "pulse-etl").unwrap();
    assert_ne!(fresh, first);
    // A clock set back before a kept token's iat does not reuse it either.
    at.store(NOW, Ordering::SeqCst);
    assert_ne!(minter.mint(&alice, "pulse-etl").unwrap(), fresh);
}

#[test]
fn a_reuse_window_is_whole_seconds_and_at_most_half_the_lifetime() {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let alice = Identity::new("alice");
    // Under a second: no reuse at all.
    let minter = minter().with_reuse(Duration::from_millis(500), 100);
    assert_ne!(
        minter.mint(&alice, "pulse-etl").unwrap(),
        minter.mint(&alice, "pulse-etl").unwrap()
    );
    // A window past the lifetime is cut to half of it: a token is never handed out
    // after it expired, nor with less than half its life left.
    let at = Arc::new(AtomicU64::new(NOW));
    let clock = {
        let at = Arc::clone(&at);
        move || UNIX_EPOCH + Duration::from_secs(at.load(Ordering::SeqCst))
    };
    let minter = InternalTokenMinter::new(SigningKey::hmac(TOKEN_SECRET).unwrap(), "pulse-gateway")
        .with_reuse(Duration::from_secs(600), 100)
        .with_lifetime(Duration::from_secs(60))
        .with_clock(clock);
    let first = minter.mint(&alice, "pulse-etl").unwrap();
    at.store(NOW + 29, Ordering::SeqCst);
    assert_eq!(minter.mint(&alice, "pulse-etl").unwrap(), first);
    at.store(NOW + 30, Ordering::SeqCst);
    assert_ne!(minter.mint(&alice, "pulse-etl").unwrap(), first);
}

#[test]
fn without_reuse_every_token_is_fresh() {
    let alice = Identity::new("alice");
    let minter = minter();
    let one = minter.mint(&alice, "pulse-etl").unwrap();
    let two = minter.mint(&alice, "pulse-etl").unwrap();
    assert_ne!(one, two, "a fresh jti each time");
}

// ---- property tests ------------------------------------------------------------------------

mod properties {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;

    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    });

    fn header_byte() -> impl Strategy<Value = u8> {
        prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t')]
    }

    fn check(name: &'static str, raw: &[u8]) -> Result<(), TestCaseError> {
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            return Ok(());
        };
        let mut req = request("/api/v1/jobs", &[]);
        req.headers_mut().insert(name, value);
        let seen = RUNTIME.block_on(call_layer(layer(ring()), req));
        prop_assert_eq!(seen.status, StatusCode::FORBIDDEN);
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_x_internal_auth_never_authorizes(
            bytes in prop::collection::vec(header_byte(), 0..512),
        ) {
            prop_assume!(bytes != KEY_A.as_bytes() && bytes != KEY_B.as_bytes());
            check("x-internal-auth", &bytes)?;
        }

        #[test]
        fn near_misses_of_a_key_never_authorize(
            position in any::<prop::sample::Index>(),
            replacement in 0x21u8..=0x7e,
        ) {
            let mut key = KEY_A.as_bytes().to_vec();
            let i = position.index(key.len());
            prop_assume!(key[i] != replacement);
            key[i] = replacement;
            // "key-a-…" with its `a` made a `b` is the ring's other key, which is valid.
            prop_assume!(key != KEY_B.as_bytes());
            check("x-internal-auth", &key)?;
        }

        #[test]
        fn arbitrary_x_internal_token_never_authorizes(
            bytes in prop::collection::vec(header_byte(), 0..2048),
        ) {
            check("x-internal-token", &bytes)?;
        }
    }
}
