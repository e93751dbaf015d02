//! Header hygiene: strip hop-by-hop headers and the reserved headers that only Pulse
//! itself may set.
//!
//! - [`strip_hop_by_hop`] removes every header named by any `Connection` line, and the
//!   standard hop-by-hop set ([`HOP_BY_HOP`]).
//! - [`strip_reserved`] removes `X-Internal-*` and `X-User-*` in every spelling:
//!   header names are case-insensitive (and [`HeaderName`] is lower-case already),
//!   and many servers treat `_` and `.` like `-`, so `x_user_id` and `x.user.id` are
//!   the same header to them as `X-User-ID`.
//! - [`strip_forwarded`] removes `X-Forwarded-*`, `Forwarded` and `X-Real-IP` (same
//!   spellings), for requests that did not come from a trusted hop.
//!
//! Every value of a matched name goes, not only the first. All three are cheap when
//! there is nothing to remove: one pass over the names, no allocation.
//! [`HeaderHygiene`] bundles them into a policy and [`StripHeadersLayer`] applies it
//! to the requests (and optionally the responses) of a service.
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use pulse_core::headers::{strip_hop_by_hop, strip_reserved};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-user-id", HeaderValue::from_static("admin"));
//! headers.insert("x_user_id", HeaderValue::from_static("admin"));
//! headers.append("x.internal.auth", HeaderValue::from_static("guess-1"));
//! headers.append("x.internal.auth", HeaderValue::from_static("guess-2"));
//! headers.insert("connection", HeaderValue::from_static("close, x-secret"));
//! headers.insert("x-secret", HeaderValue::from_static("hop"));
//! headers.insert("accept", HeaderValue::from_static("application/json"));
//!
//! strip_reserved(&mut headers);
//! strip_hop_by_hop(&mut headers);
//!
//! assert_eq!(headers.len(), 1);
//! assert_eq!(headers["accept"], "application/json");
//! ```

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderName, Request, Response, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The standard hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy
/// `Keep-Alive` and `Proxy-Connection`).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers: every header named in any `Connection` line (a
/// comma-separated list of names), then the standard set [`HOP_BY_HOP`], all values.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|line| line.as_bytes().split(|b| *b == b','))
            .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Remove every reserved header: `X-Internal-*` and `X-User-*` (also exactly
/// `X-Internal` and `X-User`), with `_` or `.` in place of any `-`, all values.
///
/// Clients must never be able to send these: services behind the gateway read the
/// caller's identity from them. See [`is_reserved`].
pub fn strip_reserved(headers: &mut HeaderMap) {
    remove_matching(headers, is_reserved);
}

/// Remove the headers by which a previous hop reports the client: `X-Forwarded-*`,
/// `X-Real-IP` (with `_`/`.` variants) and `Forwarded`, all values. Use it on requests
/// that did not come from a trusted proxy. See [`is_forwarded`].
pub fn strip_forwarded(headers: &mut HeaderMap) {
    remove_matching(headers, is_forwarded);
}

/// Whether `name` is a reserved header (see [`strip_reserved`]).
pub fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    x_prefixed(name, b"internal") || x_prefixed(name, b"user")
}

/// Whether `name` is a forwarding header (see [`strip_forwarded`]).
pub fn is_forwarded(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name == b"forwarded" || x_prefixed(name, b"forwarded") || spelled(name, b"x-real-ip")
}

/// Whether `name` is `x` SEP `word`, followed by nothing or by SEP, where SEP is any
/// of `-`, `_`, `.`.
fn x_prefixed(name: &[u8], word: &[u8]) -> bool {
    let rest = match name {
        [b'x', sep, rest @ ..] if is_separator(*sep) => rest,
        _ => return false,
    };
    match rest.strip_prefix(word) {
        Some([]) => true,
        Some([sep, ..]) => is_separator(*sep),
        _ => false,
    }
}

/// Whether `name` equals `canonical` (written with `-`), allowing `_` or `.` for `-`.
fn spelled(name: &[u8], canonical: &[u8]) -> bool {
    name.len() == canonical.len()
        && name
            .iter()
            .zip(canonical)
            .all(|(n, c)| n == c || (*c == b'-' && is_separator(*n)))
}

const fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.')
}

/// Remove every name matching `pred`, allocating only when there is something to
/// remove.
fn remove_matching(headers: &mut HeaderMap, pred: fn(&HeaderName) -> bool) {
    if !headers.keys().any(pred) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| pred(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Which headers to strip. The default strips everything: hop-by-hop, reserved and
/// forwarding headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderHygiene {
    hop_by_hop: bool,
    trusted_forwarded: bool,
}

impl Default for HeaderHygiene {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderHygiene {
    /// Strip hop-by-hop, reserved and forwarding headers.
    pub const fn new() -> Self {
        Self {
            hop_by_hop: true,
            trusted_forwarded: false,
        }
    }

    /// Whether to strip hop-by-hop headers (default `true`). A server layer in front
    /// of a WebSocket route must keep `Connection`/`Upgrade`: pass `false` there.
    #[must_use]
    pub const fn with_hop_by_hop(mut self, strip: bool) -> Self {
        self.hop_by_hop = strip;
        self
    }

    /// Whether the previous hop is a trusted proxy whose `X-Forwarded-*`, `Forwarded`
    /// and `X-Real-IP` are kept (default `false`: they are stripped).
    #[must_use]
    pub const fn with_trusted_forwarded(mut self, trusted: bool) -> Self {
        self.trusted_forwarded = trusted;
        self
    }

    /// Apply the policy to a header map. Reserved headers are always stripped.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if self.hop_by_hop {
            strip_hop_by_hop(headers);
        }
        strip_reserved(headers);
        if !self.trusted_forwarded {
            strip_forwarded(headers);
        }
    }
}

/// Strips headers from the requests a service receives, by a [`HeaderHygiene`]
/// policy; optionally strips hop-by-hop and reserved headers from its responses too.
/// Builds [`StripHeaders`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StripHeadersLayer {
    policy: HeaderHygiene,
    responses: bool,
}

impl StripHeadersLayer {
    /// Strip requests by the default policy ([`HeaderHygiene::new`]).
    pub const fn new() -> Self {
        Self {
            policy: HeaderHygiene::new(),
            responses: false,
        }
    }

    /// Use this policy for requests.
    #[must_use]
    pub const fn with_policy(mut self, policy: HeaderHygiene) -> Self {
        self.policy = policy;
        self
    }

    /// Also strip hop-by-hop and reserved headers from responses (default `false`).
    #[must_use]
    pub const fn with_responses(mut self, strip: bool) -> Self {
        self.responses = strip;
        self
    }
}

impl<S> Layer<S> for StripHeadersLayer {
    type Service = StripHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StripHeaders {
            inner,
            policy: self.policy,
            responses: self.responses,
        }
    }
}

/// Middleware stripping headers; see [`StripHeadersLayer`].
#[derive(Clone, Debug)]
pub struct StripHeaders<S> {
    inner: S,
    policy: HeaderHygiene,
    responses: bool,
}

impl<S> StripHeaders<S> {
    /// Strip requests by the default policy.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            policy: HeaderHygiene::new(),
            responses: false,
        }
    }

    /// A layer building this service.
    pub const fn layer() -> StripHeadersLayer {
        StripHeadersLayer::new()
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consume this middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StripHeaders<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        self.policy.apply(req.headers_mut());
        ResponseFuture {
            inner: self.inner.call(req),
            responses: self.responses,
        }
    }
}

pin_project! {
    /// Response future of [`StripHeaders`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        responses: bool,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if *this.responses
            && let Ok(res) = &mut result
        {
            strip_hop_by_hop(res.headers_mut());
            strip_reserved(res.headers_mut());
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use proptest::prelude::*;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

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
}
