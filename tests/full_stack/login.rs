//! The gateway's login under hostile input: bounded bodies and fields, JSON errors for
//! every rejection, throttling per (account, client address) that no stranger can turn
//! into a lock-out, and the client address forwarded only by an authenticated frontend.
//! Distinct clients are distinct loopback source addresses (127.0.0.2, 127.0.0.3, …).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const STRANGER: [u8; 4] = [127, 0, 0, 2];
const USER: [u8; 4] = [127, 0, 0, 3];

fn login_request(
    base: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/api/auth/login"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.body(Full::new(body.into())).expect("valid request")
}

fn credentials(email: &str, password: &str) -> Bytes {
    Bytes::from(json!({"email": email, "password": password}).to_string())
}

async fn login_as(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    email: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = login_request(base, Some("application/json"), credentials(email, password));
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    exchange(client, request).await
}

/// The shared JSON error shape, with this status and code.
fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert!(answer.body["error"].is_string(), "{}", answer.body);
    assert!(answer.body["request_id"].is_string(), "{}", answer.body);
    assert!(
        answer.headers[http::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("application/json")),
        "{:?}",
        answer.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_login_body_gets_a_json_error_with_the_right_status() {
    let t = start().await;
    let back = t.backend();
    let json_type = Some("application/json");

    // Bodies past 4 KiB: 413, also a 1 MiB e-mail (which the throttle used to keep).
    // (A fresh client each: the gateway answers before reading such a body and closes
    // the connection, which a pooled client might otherwise reuse.)
    let big = format!(
        r#"{{"email": "{}", "password": "x"}}"#,
        "a".repeat(5 * 1024)
    );
    let answer = exchange(&client(), login_request(&back, json_type, big)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let huge = credentials(&format!("{}@pulse.local", "a".repeat(1 << 20)), "x");
    let answer = exchange(&client(), login_request(&back, json_type, huge)).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Fields past their limits: 422, saying the limit.
    let long_email = format!("{}@pulse.local", "a".repeat(255));
    let answer = exchange(
        &t.http,
        login_request(&back, json_type, credentials(&long_email, "x")),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("254")
    );
    let long_password = "p".repeat(1025);
    let answer = exchange(
        &t.http,
        login_request(
            &back,
            json_type,
            credentials("admin@pulse.local", &long_password),
        ),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("1024")
    );
    // At the limits, the credentials are checked (and wrong).
    let at_limit = format!("{}@pulse.local", "a".repeat(254 - "@pulse.local".len()));
    let answer = exchange(
        &t.http,
        login_request(&back, json_type, credentials(&at_limit, &"p".repeat(1024))),
    )
    .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let answer = exchange(
        &t.http,
        login_request(&back, json_type, credentials("", "")),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Malformed JSON: 400; the wrong shape: 422; not JSON at all: 415.
    let answer = exchange(&t.http, login_request(&back, json_type, r#"{"email": "#)).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = exchange(
        &t.http,
        login_request(&back, json_type, r#"{"email": 1, "password": []}"#),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let answer = exchange(
        &t.http,
        login_request(&back, None, credentials("admin@pulse.local", "admin")),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    t.stack.shutdown().await;
}

/// A chunked body has no length to check up front: the limit holds while reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_is_cut_off_with_413() {
    let t = start().await;
    let addr = t.stack.backend.as_ref().expect("backend").server.addr;
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let chunk = "a".repeat(8 * 1024);
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    // The gateway may answer (and close) before reading everything.
    let _ = socket.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, socket.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_answer_alike() {
    let t = start().await;
    let back = t.backend();
    let wrong = login_as(&t.http, &back, "admin@pulse.local", "nope", &[]).await;
    let unknown = login_as(&t.http, &back, "ghost@pulse.local", "nope", &[]).await;
    for answer in [&wrong, &unknown] {
        assert_error(answer, StatusCode::UNAUTHORIZED, "invalid_credentials");
        assert_eq!(answer.body["error"], "Invalid email or password");
    }
    // Case and spaces do not make another account (nor another throttle key).
    let token = login_as(&t.http, &back, "  Admin@Pulse.Local ", "admin", &[]).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.body);
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_failing_many_times_does_not_lock_the_user_out() {
    let t = start().await;
    let back = t.backend();
    let stranger = client_from(STRANGER);
    // Five failures on the admin's account from the stranger's address…
    for _ in 0..5 {
        let answer = login_as(&stranger, &back, "admin@pulse.local", "guess", &[]).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // …refuse that pair (429 + Retry-After), even with the right password.
    for password in ["guess", "admin"] {
        let answer = login_as(&stranger, &back, "admin@pulse.local", password, &[]).await;
        assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry_after: u64 = answer.headers["retry-after"]
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=30).contains(&retry_after), "{retry_after}");
    }
    // More strangers join in: the account is slowed down, never locked.
    for ip in [[127, 0, 0, 4], [127, 0, 0, 5]] {
        let other = client_from(ip);
        for _ in 0..5 {
            let answer = login_as(&other, &back, "admin@pulse.local", "guess", &[]).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        }
    }
    // The admin, from their own address, signs in; a typo there is a plain 401.
    let user = client_from(USER);
    let typo = login_as(&user, &back, "admin@pulse.local", "admn", &[]).await;
    assert_error(&typo, StatusCode::UNAUTHORIZED, "invalid_credentials");
    let answer = login_as(&user, &back, "admin@pulse.local", "admin", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body["access_token"].is_string());
    // The stranger's other attempts are unaffected by the pair's lock until the
    // address itself goes past its own (higher) limit.
    let answer = login_as(&stranger, &back, "viewer@pulse.local", "viewer", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_forwarded_only_by_the_authenticated_frontend() {
    let t = start().await;
    let back = t.backend();
    let front = t.frontend();

    // Through the frontend, the gateway tells browsers apart: the stranger's lock does
    // not reach the user, although both arrive from the frontend's address.
    let stranger = client_from(STRANGER);
    for _ in 0..5 {
        let answer = login_as(&stranger, &front, "viewer@pulse.local", "guess", &[]).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let answer = login_as(&stranger, &front, "viewer@pulse.local", "guess", &[]).await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(answer.headers.contains_key("retry-after"));
    let user = client_from(USER);
    let answer = login_as(&user, &front, "viewer@pulse.local", "viewer", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // A browser's own X-Forwarded-For does not pick its bucket: the frontend drops it.
    let spoofer = client_from([127, 0, 0, 6]);
    for i in 0..5 {
        let spoof = format!("198.51.100.{i}");
        let answer = login_as(
            &spoofer,
            &front,
            "admin@pulse.local",
            "guess",
            &[("x-forwarded-for", &spoof)],
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
    let answer = login_as(
        &spoofer,
        &front,
        "admin@pulse.local",
        "guess",
        &[("x-forwarded-for", "198.51.100.99")],
    )
    .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // Straight to the gateway, without the frontend's key (or with a wrong one), a
    // forwarded address is ignored too.
    let direct = client_from([127, 0, 0, 7]);
    for i in 0..5 {
        let spoof = format!("203.0.113.{i}");
        let answer = login_as(
            &direct,
            &back,
            "admin@pulse.local",
            "guess",
            &[
                ("x-forwarded-for", &spoof),
                ("x-internal-auth", "not-the-key-not-the-key-not-the-key"),
            ],
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
    let answer = login_as(
        &direct,
        &back,
        "admin@pulse.local",
        "guess",
        &[("x-forwarded-for", "203.0.113.99")],
    )
    .await;
    assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    t.stack.shutdown().await;
}
