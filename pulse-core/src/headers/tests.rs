use std::convert::Infallible;

use http::HeaderValue;
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use http::{Request, Response};

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

#[test]
fn connection_tokens_of_every_line_are_removed() {
    let mut headers = map(&[
        ("connection", "keep-alive, X-Foo"),
        ("connection", " x-bar ,,"),
        ("x-foo", "1"),
        ("x-foo", "2"),
        ("x-bar", "3"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic eA=="),
        ("proxy-authenticate", "Basic"),
        ("proxy-connection", "keep-alive"),
        ("x-keep", "yes"),
    ]);
    strip_hop_by_hop(&mut headers);
    assert_eq!(headers, map(&[("x-keep", "yes")]));
}

#[test]
fn odd_connection_tokens_do_not_panic() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_bytes(b"\xff\xfe, , close,\tx-a").unwrap(),
    );
    headers.insert("x-a", HeaderValue::from_static("1"));
    headers.insert("close", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut headers);
    assert!(headers.is_empty());
}

#[test]
fn reserved_names() {
    for name in [
        "x-user-id",
        "x-user-email",
        "x_user_id",
        "x.user.id",
        "x-user_id",
        "x-user",
        "x_user",
        "x-internal-auth",
        "x.internal",
        "x_internal_token",
        "x-internal-",
    ] {
        let name = HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap();
        assert!(is_reserved(&name), "{name}");
    }
    for name in [
        "x-username",
        "x-users",
        "x-internals",
        "user-id",
        "xx-user-id",
        "x--user-id",
        "accept",
        "x",
        "x-",
    ] {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        assert!(!is_reserved(&name), "{name}");
    }
}

#[test]
fn forwarded_names() {
    for name in [
        "x-forwarded-for",
        "x_forwarded_proto",
        "x.forwarded.host",
        "forwarded",
        "x-real-ip",
        "x_real.ip",
    ] {
        assert!(
            is_forwarded(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
    for name in ["x-forwardedfor", "x-real-ips", "forwarded-for", "via"] {
        assert!(
            !is_forwarded(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
            "{name}"
        );
    }
}

#[test]
fn policy_trusts_forwarded_only_when_told() {
    let original = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-user-id", "u"),
        ("connection", "close"),
        ("upgrade", "websocket"),
    ]);
    let mut headers = original.clone();
    HeaderHygiene::new().apply(&mut headers);
    assert!(headers.is_empty());

    let mut headers = original.clone();
    HeaderHygiene::new()
        .with_trusted_forwarded(true)
        .with_hop_by_hop(false)
        .apply(&mut headers);
    assert_eq!(
        headers,
        map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "close"),
            ("upgrade", "websocket"),
        ])
    );
}

#[tokio::test]
async fn layer_strips_requests_and_optionally_responses() {
    let svc = ServiceBuilder::new()
        .layer(StripHeadersLayer::new().with_responses(true))
        .service_fn(|req: Request<()>| async move {
            assert!(req.headers().get("x_user_id").is_none());
            assert_eq!(req.headers()["accept"], "*/*");
            let mut res = Response::new(());
            res.headers_mut()
                .insert("x-internal-auth", HeaderValue::from_static("key"));
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            Ok::<_, Infallible>(res)
        });
    let req = Request::builder()
        .header("x_user_id", "admin")
        .header("accept", "*/*")
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers().len(), 1);
    assert_eq!(res.headers()["content-type"], "text/plain");
}

#[tokio::test]
async fn layer_works_in_an_axum_router() {
    use axum::{Router, body::Body, http::HeaderMap as AxumHeaders, routing::get};

    let app = Router::new()
        .route(
            "/",
            get(|headers: AxumHeaders| async move { headers.len().to_string() }),
        )
        .layer(StripHeadersLayer::new());
    let req = Request::builder()
        .uri("/")
        .header("X.User.Email", "root@x")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 64).await.unwrap();
    assert_eq!(body, "0");
}

/// Reference model: lower-case, every `_`/`.` read as `-`, then plain prefix checks.
fn model_is_reserved(name: &str) -> bool {
    let canonical: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    ["x-user", "x-internal"]
        .iter()
        .any(|p| canonical == *p || canonical.starts_with(&format!("{p}-")))
}

/// A reserved name in a random spelling: random case, each separator one of `-_.`.
fn reserved_variant() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "x-user",
        "x-user-id",
        "x-user-email",
        "x-user-roles",
        "x-internal",
        "x-internal-auth",
        "x-internal-token",
        "x-internal-caller-id",
    ]);
    (base, any::<u64>(), any::<u64>()).prop_map(|(base, case_bits, sep_bits)| {
        base.chars()
            .enumerate()
            .map(|(i, c)| match c {
                '-' => ['-', '_', '.'][((sep_bits >> (2 * i % 64)) % 3) as usize],
                c if case_bits >> (i % 64) & 1 == 1 => c.to_ascii_uppercase(),
                c => c,
            })
            .collect()
    })
}

/// Any header name, including near-misses of reserved ones.
fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,20}",
        "[xX][-_.](user|internal|forwarded|USER)[a-z_.-]{0,6}",
        reserved_variant(),
    ]
}

proptest! {
    /// Stripping removes every variant of a reserved name, all of its values, and
    /// keeps every other header with all its values in order.
    #[test]
    fn strip_reserved_matches_model(
        entries in prop::collection::vec((any_name(), "[a-z0-9 ]{0,8}"), 0..24),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &entries {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let before = headers.clone();
        strip_reserved(&mut headers);
        for name in before.keys() {
            if model_is_reserved(name.as_str()) {
                prop_assert!(!headers.contains_key(name), "{} kept", name);
            } else {
                let kept: Vec<_> = headers.get_all(name).iter().collect();
                let had: Vec<_> = before.get_all(name).iter().collect();
                prop_assert_eq!(kept, had);
            }
        }
        prop_assert!(headers.keys().all(|n| before.contains_key(n)));
    }

    /// Every spelling of a reserved name is reserved.
    #[test]
    fn every_variant_is_reserved(name in reserved_variant()) {
        let header = HeaderName::from_bytes(name.as_bytes()).unwrap();
        prop_assert!(is_reserved(&header));
        let mut headers = HeaderMap::new();
        headers.append(header.clone(), HeaderValue::from_static("1"));
        headers.append(header.clone(), HeaderValue::from_static("2"));
        strip_reserved(&mut headers);
        prop_assert!(headers.is_empty());
    }

    /// Hop-by-hop stripping never panics, removes the standard set and every
    /// token of every `Connection` line, and keeps the rest.
    #[test]
    fn strip_hop_by_hop_matches_model(
        names in prop::collection::vec("[a-z-]{1,12}", 0..12),
        lines in prop::collection::vec(prop::collection::vec("[a-z-]{1,12}", 0..4), 0..3),
    ) {
        let mut headers = HeaderMap::new();
        for name in &names {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("v"));
        }
        for line in &lines {
            headers.append(header::CONNECTION, HeaderValue::from_str(&line.join(", ")).unwrap());
        }
        let before = headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in before.keys() {
            let named = lines.iter().flatten().any(|t| t == name.as_str());
            let standard = HOP_BY_HOP.contains(name);
            prop_assert_eq!(headers.contains_key(name), !named && !standard, "{}", name);
        }
    }
}
