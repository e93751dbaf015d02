//! The JWT attack list: every forged, tampered, mistimed or malformed token is answered
//! 401 (never 5xx, never the inner service), and a token just inside the leeway passes.
#![cfg(feature = "jwt")]

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey};
use pulse_core::{
    Identity,
    jwt::{
        JwtAuthLayer, JwtVerifier, KeySet, SigningKey, TokenIssuer, USER_TOKEN_TYPE,
        VerificationKey,
    },
};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

const HMAC_SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("keys/ec_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("keys/ed25519_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("keys/ed25519_public.pem");

/// The fixed "now" of every test: time is injected, never read from the system.
const NOW: u64 = 1_800_000_000;
const ISS: &str = "pulse-gateway";
const AUD: &str = "pulse-api";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn keys() -> KeySet {
    KeySet::new()
        .with_key(VerificationKey::hmac(HMAC_SECRET).unwrap().with_kid("hs"))
        .with_key(
            VerificationKey::rsa_pem(RSA_PUBLIC, Algorithm::RS256)
                .unwrap()
                .with_kid("rsa"),
        )
        .with_key(
            VerificationKey::ec_pem(EC_PUBLIC, Algorithm::ES256)
                .unwrap()
                .with_kid("ec"),
        )
        .with_key(VerificationKey::ed_pem(ED_PUBLIC).unwrap().with_kid("ed"))
}

fn verifier(keys: KeySet) -> JwtVerifier {
    JwtVerifier::new(keys)
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_clock(now)
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with exactly this header and these claims, signed with `key` under `alg`
/// whatever the header says.
fn raw_token(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64(serde_json::to_vec(header).unwrap()),
        b64(serde_json::to_vec(claims).unwrap())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(HMAC_SECRET).unwrap()
}

fn claims() -> Value {
    json!({
        "sub": "user-1",
        "email": "user-1@pulse.local",
        "roles": ["viewer"],
        "permissions": ["etl.access"],
        "iss": ISS,
        "aud": AUD,
        "iat": NOW - 10,
        "exp": NOW + 600,
        "jti": "t-1",
    })
}

fn with(mut claims: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn hs_token(claims: &Value) -> String {
    raw_token(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "hs"}),
        claims,
        &hs_key(),
        Algorithm::HS256,
    )
}

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call_with(verifier: JwtVerifier, auth: &[HeaderValue]) -> Answer {
    let service =
        JwtAuthLayer::new(verifier).layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let id = req.extensions().get::<Identity>().cloned();
            let body = serde_json::to_vec(&id).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }));
    let mut req = Request::builder().header("x-request-id", "req-42");
    for value in auth {
        req = req.header(AUTHORIZATION, value.clone());
    }
    let res = service
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let www_authenticate = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        www_authenticate,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn call(token: &str) -> Answer {
    call_with(
        verifier(keys()),
        &[HeaderValue::from_str(&format!("Bearer {token}")).unwrap()],
    )
    .await
}

#[track_caller]
fn assert_refused(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(answer.body["code"], "invalid_token");
    assert_eq!(answer.body["request_id"], "req-42");
}

#[track_caller]
fn assert_accepted(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["subject"], "user-1");
}

// ---- the baseline: each key kind verifies --------------------------------------

#[tokio::test]
async fn valid_tokens_of_every_key_kind_pass() {
    let claims = claims();
    for (kid, key, alg) in [
        ("hs", hs_key(), Algorithm::HS256),
        (
            "rsa",
            EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            Algorithm::RS256,
        ),
        (
            "ec",
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
            Algorithm::ES256,
        ),
        (
            "ed",
            EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
            Algorithm::EdDSA,
        ),
    ] {
        let header = json!({"alg": format!("{alg:?}"), "typ": "JWT", "kid": kid});
        let answer = call(&raw_token(&header, &claims, &key, alg)).await;
        assert_accepted(&answer);
        assert_eq!(answer.body["email"], "user-1@pulse.local");
        assert_eq!(answer.body["roles"], json!(["viewer"]));
        assert_eq!(answer.body["permissions"], json!(["etl.access"]));
        assert_eq!(answer.body["expires_at"], NOW + 600);
    }
}

#[tokio::test]
async fn issuer_and_verifier_agree_for_every_key_kind() {
    for (signing, verification) in [
        (
            SigningKey::rsa_pem(RSA_PRIVATE, Algorithm::PS256).unwrap(),
            VerificationKey::rsa_pem(RSA_PUBLIC, Algorithm::PS256).unwrap(),
        ),
        (
            SigningKey::ec_pem(EC_PRIVATE, Algorithm::ES256).unwrap(),
            VerificationKey::ec_pem(EC_PUBLIC, Algorithm::ES256).unwrap(),
        ),
        (
            SigningKey::ed_pem(ED_PRIVATE).unwrap(),
            VerificationKey::ed_pem(ED_PUBLIC).unwrap(),
        ),
    ] {
        let issuer = TokenIssuer::new(signing.with_kid("k"))
            .with_issuer(ISS)
            .with_audience(AUD)
            .with_not_before(true)
            .with_clock(now);
        let token = issuer.issue(&Identity::new("user-1")).unwrap();
        let verifier = verifier(KeySet::new().with_key(verification.with_kid("k")));
        let answer = call_with(
            verifier,
            &[HeaderValue::from_str(&format!("bearer {}", token.access_token)).unwrap()],
        )
        .await;
        assert_accepted(&answer);
    }
}

#[tokio::test]
async fn no_token_is_unauthorized_with_bearer_challenge() {
    let answer = call_with(verifier(keys()), &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    assert_eq!(answer.body["code"], "unauthorized");
}

#[tokio::test]
async fn other_scheme_is_unauthorized() {
    let answer = call_with(
        verifier(keys()),
        &[HeaderValue::from_static("Basic dXNlcjpwYXNz")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["code"], "unauthorized");
}

// ---- the attack list -------------------------------------------------------------

#[tokio::test]
async fn alg_none_in_every_case_is_refused() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT", "kid": "hs"}).to_string());
        let payload = b64(claims().to_string());
        assert_refused(&call(&format!("{header}.{payload}.")).await);
        assert_refused(&call(&format!("{header}.{payload}")).await);
        // with a signature that would be valid for HS256
        let valid = hs_token(&claims());
        let signature = valid.rsplit('.').next().unwrap();
        assert_refused(&call(&format!("{header}.{payload}.{signature}")).await);
    }
}

#[tokio::test]
async fn signature_stripped_is_refused() {
    let token = hs_token(&claims());
    let (message, _) = token.rsplit_once('.').unwrap();
    assert_refused(&call(message).await);
}

#[tokio::test]
async fn signature_empty_is_refused() {
    let token = hs_token(&claims());
    let (message, _) = token.rsplit_once('.').unwrap();
    assert_refused(&call(&format!("{message}.")).await);
}

#[tokio::test]
async fn signature_with_one_byte_flipped_is_refused() {
    for (kid, key, alg) in [
        ("hs", hs_key(), Algorithm::HS256),
        (
            "rsa",
            EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            Algorithm::RS256,
        ),
        (
            "ec",
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
            Algorithm::ES256,
        ),
        (
            "ed",
            EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
            Algorithm::EdDSA,
        ),
    ] {
        let header = json!({"alg": format!("{alg:?}"), "kid": kid});
        let token = raw_token(&header, &claims(), &key, alg);
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        for position in [0, raw.len() / 2, raw.len() - 1] {
            raw[position] ^= 0x01;
            assert_refused(&call(&format!("{message}.{}", b64(&raw))).await);
            raw[position] ^= 0x01;
        }
        // and a flipped byte in the claims instead
        let tampered = hs_token(&with(claims(), json!({"permissions": ["*"]})));
        let forged_payload = tampered.split('.').nth(1).unwrap();
        let header_part = token.split('.').next().unwrap();
        assert_refused(&call(&format!("{header_part}.{forged_payload}.{signature}")).await);
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let public_as_secret = EncodingKey::from_secret(RSA_PUBLIC).unwrap();
    // naming the RSA key
    let token = raw_token(
        &json!({"alg": "HS256", "kid": "rsa"}),
        &claims(),
        &public_as_secret,
        Algorithm::HS256,
    );
    assert_refused(&call(&token).await);
    // the classic set-up: a single RSA key, no kid
    let only_rsa =
        KeySet::new().with_key(VerificationKey::rsa_pem(RSA_PUBLIC, Algorithm::RS256).unwrap());
    let token = raw_token(
        &json!({"alg": "HS256"}),
        &claims(),
        &public_as_secret,
        Algorithm::HS256,
    );
    let answer = call_with(
        verifier(only_rsa),
        &[HeaderValue::from_str(&format!("Bearer {token}")).unwrap()],
    )
    .await;
    assert_refused(&answer);
}

#[tokio::test]
async fn algorithm_not_allowed_for_the_key_is_refused() {
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let header = json!({"alg": format!("{alg:?}"), "kid": "rsa"});
        assert_refused(&call(&raw_token(&header, &claims(), &rsa, alg)).await);
    }
    let header = json!({"alg": "HS512", "kid": "hs"});
    assert_refused(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS512)).await);
    // an algorithm name jsonwebtoken does not know at all
    let header = json!({"alg": "ES512", "kid": "ec"});
    assert_refused(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS256)).await);
}

#[tokio::test]
async fn unknown_or_malicious_kid_is_refused() {
    for kid in [
        "unknown",
        "../../../../etc/passwd",
        "/dev/null",
        "' OR '1'='1",
        "hs'; DROP TABLE keys; --",
        "hs\u{0000}",
        "HS",
        "",
        &"k".repeat(5000),
    ] {
        let header = json!({"alg": "HS256", "kid": kid});
        assert_refused(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS256)).await);
    }
    // kid of the wrong JSON type
    let header = json!({"alg": "HS256", "kid": 7});
    assert_refused(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS256)).await);
    // no kid while several keys are configured
    let header = json!({"alg": "HS256"});
    assert_refused(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS256)).await);
}

#[tokio::test]
async fn expired_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"exp": NOW - 31})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"exp": 1})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"exp": 0})))).await);
}

#[tokio::test]
async fn exp_missing_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"exp": null})))).await);
}

#[tokio::test]
async fn sub_missing_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"sub": null})))).await);
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"nbf": NOW + 31})))).await);
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"iat": NOW + 31})))).await);
}

#[tokio::test]
async fn lifetime_over_the_maximum_is_refused() {
    // the default cap is what the issuer issues by default: one hour
    let hour = 3600;
    assert_refused(
        &call(&hs_token(&with(
            claims(),
            json!({"iat": NOW - 10, "exp": NOW - 10 + hour + 1}),
        )))
        .await,
    );
    assert_accepted(
        &call(&hs_token(&with(
            claims(),
            json!({"iat": NOW - 10, "exp": NOW - 10 + hour}),
        )))
        .await,
    );
    // where iat is not required, the remaining lifetime is bounded all the same
    let without_iat = || verifier(keys()).require_issued_at(false);
    for exp in [NOW + hour + 31 + 1, u64::MAX] {
        let token = hs_token(&with(claims(), json!({"iat": null, "exp": exp})));
        assert_refused(&call_with(without_iat(), &bearer(&token)).await);
    }
    let token = hs_token(&with(claims(), json!({"iat": null})));
    assert_accepted(&call_with(without_iat(), &bearer(&token)).await);
}

#[tokio::test]
async fn iat_missing_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"iat": null})))).await);
    assert_refused(
        &call_with(
            user_verifier(),
            &bearer(&hs_token(&with(claims(), json!({"iat": null})))),
        )
        .await,
    );
}

// ---- token kinds: a user token is only ever a user token -------------------------------

/// The `typ` of the gateway's internal service tokens.
const INTERNAL_TYPE: &str = "pulse-internal+jwt";

/// What the gateway builds: user tokens only, its audience, at most its tokens' lifetime.
fn user_verifier() -> JwtVerifier {
    verifier(keys())
        .with_required_type(USER_TOKEN_TYPE)
        .with_max_lifetime(Duration::from_secs(900))
}

fn bearer(token: &str) -> [HeaderValue; 1] {
    [HeaderValue::from_str(&format!("Bearer {token}")).unwrap()]
}

/// An HS256 token with this `typ` header (none for `None`).
fn typed_token(typ: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": "HS256", "kid": "hs"});
    if let Some(typ) = typ {
        header["typ"] = json!(typ);
    }
    raw_token(&header, claims, &hs_key(), Algorithm::HS256)
}

#[tokio::test]
async fn internal_tokens_signed_with_the_user_key_are_not_user_tokens() {
    // The shape of an internal token, with the user key, issuer and audience: refused
    // by a verifier left at its defaults and by one requiring the user type.
    for typ in [
        INTERNAL_TYPE,
        "application/pulse-internal+jwt",
        "PULSE-INTERNAL+JWT",
    ] {
        let token = typed_token(Some(typ), &claims());
        assert_refused(&call(&token).await);
        assert_refused(&call_with(user_verifier(), &bearer(&token)).await);
        // without an audience, against a verifier configured without one
        let token = typed_token(Some(typ), &with(claims(), json!({"aud": null})));
        let no_audience = JwtVerifier::new(keys()).with_issuer(ISS).with_clock(now);
        assert_refused(&call_with(no_audience, &bearer(&token)).await);
    }
}

#[cfg(feature = "internal-auth")]
#[tokio::test]
async fn a_token_of_the_internal_minter_is_not_a_user_token_even_for_the_user_audience() {
    use pulse_core::internal_auth::InternalTokenMinter;
    let minter =
        InternalTokenMinter::new(SigningKey::hmac(HMAC_SECRET).unwrap().with_kid("hs"), ISS)
            .with_clock(now);
    let token = minter.mint(&Identity::new("user-1"), AUD).unwrap();
    assert_refused(&call(&token).await);
    assert_refused(&call_with(user_verifier(), &bearer(&token)).await);
}

#[tokio::test]
async fn a_user_verifier_requires_the_user_type() {
    for typ in [
        None,
        Some("JWT"),
        Some("jwt"),
        Some(INTERNAL_TYPE),
        Some("id_token+jwt"),
        Some("dpop+jwt"),
        Some(""),
        Some("at+jwt "),
    ] {
        let token = typed_token(typ, &claims());
        assert_refused(&call_with(user_verifier(), &bearer(&token)).await);
    }
    // media types compare case-insensitively, the application/ prefix optional
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/At+Jwt",
    ] {
        let token = typed_token(Some(typ), &claims());
        assert_accepted(&call_with(user_verifier(), &bearer(&token)).await);
    }
}

#[tokio::test]
async fn a_default_verifier_accepts_user_and_plain_types_only() {
    for typ in [
        None,
        Some("JWT"),
        Some("at+jwt"),
        Some("application/at+jwt"),
    ] {
        assert_accepted(&call(&typed_token(typ, &claims())).await);
    }
    for typ in [
        INTERNAL_TYPE,
        "secevent+jwt",
        "logout+jwt",
        "dpop+jwt",
        "JOSE",
        "",
    ] {
        assert_refused(&call(&typed_token(Some(typ), &claims())).await);
    }
}

#[tokio::test]
async fn a_user_verifier_refuses_other_audiences_and_longer_lifetimes() {
    let v = user_verifier;
    let t = |patch: Value| typed_token(Some(USER_TOKEN_TYPE), &with(claims(), patch));
    // the internal service's audience, or none
    assert_refused(&call_with(v(), &bearer(&t(json!({"aud": "pulse-etl"})))).await);
    assert_refused(&call_with(v(), &bearer(&t(json!({"aud": null})))).await);
    // the cap is the issued lifetime (15 minutes here), whatever the token says
    assert_accepted(
        &call_with(
            v(),
            &bearer(&t(json!({"iat": NOW - 10, "exp": NOW - 10 + 900}))),
        )
        .await,
    );
    assert_refused(
        &call_with(
            v(),
            &bearer(&t(json!({"iat": NOW - 10, "exp": NOW - 10 + 901}))),
        )
        .await,
    );
    assert_refused(
        &call_with(
            v(),
            &bearer(&t(json!({"iat": NOW - 3600, "exp": NOW + 600}))),
        )
        .await,
    );
    // iat in the future beyond the leeway
    assert_refused(&call_with(v(), &bearer(&t(json!({"iat": NOW + 31, "exp": NOW + 600})))).await);
    assert_accepted(&call_with(v(), &bearer(&t(json!({"iat": NOW + 30, "exp": NOW + 600})))).await);
}

#[tokio::test]
async fn the_issuer_writes_the_user_type_and_its_verifier_agrees() {
    let issuer = TokenIssuer::new(SigningKey::hmac(HMAC_SECRET).unwrap().with_kid("hs"))
        .with_issuer(ISS)
        .with_audience(AUD)
        .with_lifetime(Duration::from_secs(900))
        .with_clock(now);
    let token = issuer.issue(&Identity::new("user-1")).unwrap().access_token;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_accepted(&call_with(user_verifier(), &bearer(&token)).await);
    // issued for longer than the verifier's cap: refused
    let long = issuer
        .with_lifetime(Duration::from_secs(901))
        .issue(&Identity::new("user-1"))
        .unwrap()
        .access_token;
    assert_refused(&call_with(user_verifier(), &bearer(&long)).await);
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"iss": "evil"})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"iss": null})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"iss": [ISS]})))).await);
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"aud": "other"})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"aud": ["a", "b"]})))).await);
    assert_refused(&call(&hs_token(&with(claims(), json!({"aud": null})))).await);
    // an array containing the audience is fine
    assert_accepted(&call(&hs_token(&with(claims(), json!({"aud": ["x", AUD]})))).await);
}

#[tokio::test]
async fn audience_present_but_not_configured_is_refused() {
    let no_audience = JwtVerifier::new(keys()).with_issuer(ISS).with_clock(now);
    let token = hs_token(&claims());
    let answer = call_with(
        no_audience,
        &[HeaderValue::from_str(&format!("Bearer {token}")).unwrap()],
    )
    .await;
    assert_refused(&answer);
}

#[tokio::test]
async fn claims_of_the_wrong_json_type_are_refused() {
    for patch in [
        json!({"exp": "soon"}),
        json!({"exp": 1.8e9}),
        json!({"exp": -1}),
        json!({"exp": [NOW + 600]}),
        json!({"sub": 5}),
        json!({"sub": ["user-1"]}),
        json!({"permissions": "x"}),
        json!({"permissions": [1, 2]}),
        json!({"roles": {"admin": true}}),
        json!({"email": 5}),
        json!({"iat": "now"}),
        json!({"nbf": true}),
        json!({"iss": 1234}),
        json!({"aud": 1234}),
        json!({"jti": {}}),
    ] {
        assert_refused(&call(&hs_token(&with(claims(), patch))).await);
    }
    // claims that are not an object at all
    // serde would read an array positionally into the claim fields: refused
    let positional = json!(["user-1", NOW + 600, null, NOW - 10, ISS, AUD]);
    for not_object in [
        positional,
        json!([1, 2]),
        json!("sub"),
        json!(null),
        json!(42),
    ] {
        assert_refused(&call(&hs_token(&not_object)).await);
    }
}

#[tokio::test]
async fn wrong_segment_count_is_refused() {
    let token = hs_token(&claims());
    for bad in [
        "abc".to_owned(),
        token.split('.').take(2).collect::<Vec<_>>().join("."),
        format!("{token}.extra"),
        format!("{token}."),
        format!(".{token}"),
        "..".to_owned(),
        "....".to_owned(),
    ] {
        assert_refused(&call(&bad).await);
    }
}

#[tokio::test]
async fn bad_base64_is_refused() {
    let token = hs_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}/", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], "a", parts[2]),
        "!!!.###.$$$".to_owned(),
    ] {
        assert_refused(&call(&bad).await);
    }
}

#[tokio::test]
async fn non_json_is_refused() {
    let not_json = b64("this is not json");
    let token = hs_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    assert_refused(&call(&format!("{not_json}.{}.{}", parts[1], parts[2])).await);
    // a non-JSON payload with a valid signature
    let message = format!("{}.{not_json}", parts[0]);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &hs_key(), Algorithm::HS256).unwrap();
    assert_refused(&call(&format!("{message}.{signature}")).await);
}

#[tokio::test]
async fn over_size_token_is_refused() {
    // validly signed, only too large
    let big = with(claims(), json!({"pad": "x".repeat(9 * 1024)}));
    assert_refused(&call(&hs_token(&big)).await);
}

#[tokio::test]
async fn non_utf8_header_is_refused() {
    let header = b64([0xff, 0xfe, b'{', 0xc3, 0x28, b'}']);
    let token = hs_token(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let message = format!("{header}.{}", parts[1]);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &hs_key(), Algorithm::HS256).unwrap();
    assert_refused(&call(&format!("{message}.{signature}")).await);
    // non-UTF-8 claims, validly signed
    let message = format!("{}.{}", parts[0], b64([b'{', 0xff, b'}']));
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &hs_key(), Algorithm::HS256).unwrap();
    assert_refused(&call(&format!("{message}.{signature}")).await);
}

#[tokio::test]
async fn non_ascii_authorization_header_is_refused() {
    let value = HeaderValue::from_bytes(b"Bearer \xff\xfe.\x80.\x81").unwrap();
    let answer = call_with(verifier(keys()), &[value]).await;
    assert_refused(&answer);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let token = hs_token(&claims());
    let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let answer = call_with(verifier(keys()), &[value.clone(), value]).await;
    assert_refused(&answer);
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_ignored() {
    // An attacker's own key, embedded in the header and pointed at by URLs: the token
    // is signed with it, and must still be refused.
    let attacker_key = EncodingKey::from_secret(b"attacker-secret-attacker-secret!!").unwrap();
    let header = json!({
        "alg": "HS256",
        "kid": "hs",
        "jku": "http://127.0.0.1:1/jwks.json",
        "x5u": "http://127.0.0.1:1/cert.pem",
        "jwk": {"kty": "oct", "k": b64("attacker-secret-attacker-secret!!")},
    });
    assert_refused(
        &call(&raw_token(
            &header,
            &claims(),
            &attacker_key,
            Algorithm::HS256,
        ))
        .await,
    );
    // the same headers on a genuinely signed token change nothing either
    assert_accepted(&call(&raw_token(&header, &claims(), &hs_key(), Algorithm::HS256)).await);
}

// ---- the leeway --------------------------------------------------------------------

#[tokio::test]
async fn token_just_inside_the_leeway_passes() {
    assert_accepted(&call(&hs_token(&with(claims(), json!({"exp": NOW - 29})))).await);
    assert_accepted(&call(&hs_token(&with(claims(), json!({"nbf": NOW + 30})))).await);
    assert_accepted(&call(&hs_token(&with(claims(), json!({"iat": NOW + 30})))).await);
}

#[tokio::test]
async fn token_at_the_leeway_edge_is_refused() {
    assert_refused(&call(&hs_token(&with(claims(), json!({"exp": NOW - 30})))).await);
}

// ---- key rotation by kid -------------------------------------------------------------

#[tokio::test]
async fn previous_kid_passes_while_in_the_set_and_fails_after_removal() {
    let old = b"old-secret-old-secret-old-secret!!";
    let new = b"new-secret-new-secret-new-secret!!";
    let set = KeySet::new().with_key(VerificationKey::hmac(old).unwrap().with_kid("2026-01"));
    let verifier = verifier(set.clone());
    let issue = |secret: &[u8], kid: &str| {
        TokenIssuer::new(SigningKey::hmac(secret).unwrap().with_kid(kid))
            .with_issuer(ISS)
            .with_audience(AUD)
            .with_clock(now)
            .issue(&Identity::new("user-1"))
            .unwrap()
            .access_token
    };
    let old_token = issue(old, "2026-01");
    let bearer = |t: &str| [HeaderValue::from_str(&format!("Bearer {t}")).unwrap()];

    assert_accepted(&call_with(verifier.clone(), &bearer(&old_token)).await);

    set.insert(VerificationKey::hmac(new).unwrap().with_kid("2026-02"));
    let new_token = issue(new, "2026-02");
    assert_accepted(&call_with(verifier.clone(), &bearer(&new_token)).await);
    assert_accepted(&call_with(verifier.clone(), &bearer(&old_token)).await);

    assert!(set.remove("2026-01"));
    assert_refused(&call_with(verifier.clone(), &bearer(&old_token)).await);
    assert_accepted(&call_with(verifier, &bearer(&new_token)).await);
}

#[test]
fn short_hmac_secret_is_refused_at_set_up() {
    assert!(VerificationKey::hmac(b"only-31-bytes-long-secret-12345").is_err());
    assert!(SigningKey::hmac(b"").is_err());
}

/// Each attack is refused for its own reason, not by accident of another check.
#[test]
fn each_attack_is_refused_for_its_own_reason() {
    use pulse_core::jwt::TokenError as E;
    let v = verifier(keys());
    let t = |patch: Value| hs_token(&with(claims(), patch));
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "hs"}).to_string()),
        b64(claims().to_string())
    );
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let cases: Vec<(String, E)> = vec![
        (none, E::Malformed),
        (
            raw_token(
                &json!({"alg": "HS256", "kid": "rsa"}),
                &claims(),
                &EncodingKey::from_secret(RSA_PUBLIC).unwrap(),
                Algorithm::HS256,
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            raw_token(
                &json!({"alg": "RS384", "kid": "rsa"}),
                &claims(),
                &rsa,
                Algorithm::RS384,
            ),
            E::AlgorithmNotAllowed,
        ),
        (
            raw_token(
                &json!({"alg": "HS256", "kid": "../../etc/passwd"}),
                &claims(),
                &hs_key(),
                Algorithm::HS256,
            ),
            E::UnknownKey,
        ),
        (
            raw_token(
                &json!({"alg": "HS256", "kid": "hs"}),
                &claims(),
                &EncodingKey::from_secret(b"x").unwrap(),
                Algorithm::HS256,
            ),
            E::BadSignature,
        ),
        (t(json!({"exp": NOW - 31})), E::Expired),
        (t(json!({"exp": null})), E::MissingClaim("exp")),
        (t(json!({"nbf": NOW + 31})), E::NotYetValid),
        (t(json!({"iat": NOW + 31})), E::IssuedInFuture),
        (t(json!({"iat": null})), E::MissingClaim("iat")),
        (t(json!({"exp": NOW + 2 * 3600})), E::LifetimeTooLong),
        (typed_token(Some(INTERNAL_TYPE), &claims()), E::WrongType),
        (typed_token(Some("secevent+jwt"), &claims()), E::WrongType),
        (t(json!({"iss": "evil"})), E::WrongIssuer),
        (t(json!({"aud": "evil"})), E::WrongAudience),
        (t(json!({"exp": "soon"})), E::InvalidClaims),
        (
            t(json!({"pad": "x".repeat(9000)})),
            E::TooLarge { max: 8192 },
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(v.verify(&token).unwrap_err(), reason);
    }
    let user = user_verifier();
    assert_eq!(
        user.verify(&typed_token(None, &claims())).unwrap_err(),
        E::WrongType
    );
    assert_eq!(
        user.verify(&typed_token(Some("JWT"), &claims()))
            .unwrap_err(),
        E::WrongType
    );
}

// ---- property tests ------------------------------------------------------------------

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
        // every byte a header value may hold: visible ASCII, tab, obs-text
        prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t'), Just(b'.')]
    }

    fn check(raw: &[u8]) -> Result<(), TestCaseError> {
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            return Ok(());
        };
        let answer = RUNTIME.block_on(call_with(verifier(keys()), &[value]));
        prop_assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        prop_assert!(answer.www_authenticate.is_some());
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_authorization_bytes_never_authorize(
            prefix in prop::sample::select(vec!["", "Bearer ", "bearer ", "BEARER  ", "Basic "]),
            bytes in prop::collection::vec(header_byte(), 0..2048),
        ) {
            let mut raw = prefix.as_bytes().to_vec();
            raw.extend(bytes);
            check(&raw)?;
        }

        #[test]
        fn arbitrary_three_segment_tokens_never_authorize(
            token in "[A-Za-z0-9_-]{0,64}\\.[A-Za-z0-9_-]{0,256}\\.[A-Za-z0-9_-]{0,128}",
        ) {
            check(format!("Bearer {token}").as_bytes())?;
        }

        #[test]
        fn any_single_character_change_to_a_valid_token_never_authorizes(
            position in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_.=+/-]",
        ) {
            let token = hs_token(&claims());
            let i = position.index(token.len());
            prop_assume!(token[i..=i] != replacement);
            let mutated = format!("{}{}{}", &token[..i], replacement, &token[i + 1..]);
            check(format!("Bearer {mutated}").as_bytes())?;
        }
    }
}

// ---- axum ----------------------------------------------------------------------------

#[cfg(feature = "axum")]
#[tokio::test]
async fn works_as_an_axum_layer_with_the_identity_extractor() {
    use axum::{Router, body::Body, routing::get};

    let app = Router::new()
        .route(
            "/me",
            get(|identity: Identity| async move { identity.subject }),
        )
        .layer(JwtAuthLayer::new(verifier(keys())));
    let token = hs_token(&claims());
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/me")
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "user-1"
    );

    let res = app
        .oneshot(Request::builder().uri("/me").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
