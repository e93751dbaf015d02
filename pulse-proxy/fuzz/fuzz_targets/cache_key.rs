//! The response cache's key and scopes (`pulse_proxy::cache`), through the public API:
//! a `CacheLayer` over a store that records the keys it is asked for.
//!
//! Input, one field per line: target A, user A, `accept` A, target B, user B,
//! `accept` B, then scope prefixes. An `accept` line starting with `=` is that header's
//! value (`=` alone: the empty value); any other line means no `accept` header.
//!
//! Properties:
//! - the key is injective: two `GET`s share a key exactly when path and query, the
//!   user (verified identity, or the user header) and the key's other headers are all
//!   equal, whatever the bytes (a user id can never forge another field);
//! - a request whose user header is missing or empty never reaches the store;
//! - a mutation (`POST`) of a path makes stale what a `GET` of that path, or of a path
//!   that differs only in percent-encoded unreserved characters, was stored under.
#![no_main]

use std::{
    convert::Infallible,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header::ACCEPT};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use pulse_core::Identity;
use pulse_proxy::cache::{
    CacheKey, CacheLayer, CacheStore, CachedResponse, KeyPart,
    store::{Lookup, StoreFuture},
};
use pulse_proxy_fuzz::{percent_decode, trim};
use tower::{Layer, ServiceExt, service_fn};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
});

const USER_HEADER: HeaderName = HeaderName::from_static("x-user-id");

/// A store that holds nothing and remembers what it was asked.
#[derive(Default)]
struct Recorder {
    looked_up: Mutex<Vec<CacheKey>>,
    invalidated: Mutex<Vec<Vec<Arc<str>>>>,
}

impl CacheStore for Recorder {
    fn get(&self, key: &CacheKey) -> StoreFuture<Lookup> {
        self.looked_up
            .lock()
            .expect("not poisoned")
            .push(key.clone());
        Box::pin(async { Ok(Lookup::new(None, 0)) })
    }

    fn put(&self, _: &CacheKey, _: Arc<CachedResponse>, _: u64, _: Duration) -> StoreFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn invalidate(&self, scopes: &[Arc<str>]) -> StoreFuture<()> {
        self.invalidated
            .lock()
            .expect("not poisoned")
            .push(scopes.to_vec());
        Box::pin(async { Ok(()) })
    }
}

#[derive(Clone, Debug)]
struct Request1 {
    uri: Uri,
    user: String,
    accept: Option<HeaderValue>,
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let mut request = || -> Option<Request1> {
        let uri = Uri::try_from(trim(lines.next()?)).ok()?;
        let user = String::from_utf8_lossy(lines.next()?).into_owned();
        let accept = lines
            .next()?
            .strip_prefix(b"=")
            .and_then(|v| HeaderValue::from_bytes(v).ok());
        Some(Request1 { uri, user, accept })
    };
    let (Some(a), Some(b)) = (request(), request()) else {
        return;
    };
    let scopes: Vec<String> = lines
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    RUNTIME.block_on(check(a, b, scopes));
});

async fn check(a: Request1, b: Request1, scopes: Vec<String>) {
    let target = |r: &Request1| {
        r.uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned()
    };
    let same_target = target(&a) == target(&b);
    let same_user = a.user == b.user;
    let same_accept = a.accept == b.accept;

    // The verified identity (the default key).
    let keys = keys(&[KeyPart::Identity], &[&a, &b], Source::Identity).await;
    assert_eq!(
        keys[0] == keys[1],
        same_target && same_user,
        "identity key: {keys:?}"
    );

    // The identity and a header the response varies on.
    let parts = [KeyPart::Identity, KeyPart::Header(ACCEPT)];
    let keys = keys_of(&parts, &a, &b, Source::Identity).await;
    assert_eq!(
        keys[0] == keys[1],
        same_target && same_user && same_accept,
        "{keys:?}"
    );

    // A user header instead of the identity: a missing or empty one bypasses the cache.
    let parts = [KeyPart::UserHeader(USER_HEADER), KeyPart::Header(ACCEPT)];
    let usable = |r: &Request1| HeaderValue::from_str(&r.user).is_ok_and(|v| !v.is_empty());
    let keys = keys_of(&parts, &a, &b, Source::Header).await;
    match (usable(&a), usable(&b)) {
        (true, true) => {
            assert_eq!(keys.len(), 2, "{keys:?}");
            assert_eq!(
                keys[0] == keys[1],
                same_target && same_user && same_accept,
                "{keys:?}"
            );
        }
        (ua, ub) => assert_eq!(keys.len(), usize::from(ua) + usize::from(ub), "{keys:?}"),
    }

    // Scopes: a POST of A's path makes stale what a GET of A was stored under, and so
    // of B when the two paths are the same resource to the upstream.
    let recorder = Arc::new(Recorder::default());
    let mut layer = CacheLayer::new(recorder.clone());
    for scope in &scopes {
        layer = layer.with_scope(scope);
    }
    let service = layer.layer(upstream());
    let equivalent = unreserved_decoded(a.uri.path()) == unreserved_decoded(b.uri.path());
    for r in [&a, &b] {
        let _ = service
            .clone()
            .oneshot(request(r, Method::GET, Source::Identity))
            .await;
    }
    let _ = service
        .clone()
        .oneshot(request(&a, Method::POST, Source::Identity))
        .await;
    let looked_up = recorder.looked_up.lock().expect("not poisoned").clone();
    let invalidated = recorder.invalidated.lock().expect("not poisoned").concat();
    assert_eq!(looked_up.len(), 2);
    let stale = |key: &CacheKey| key.scopes().iter().any(|s| invalidated.contains(s));
    assert!(
        stale(&looked_up[0]),
        "POST {} left {:?} fresh ({invalidated:?})",
        a.uri,
        looked_up[0]
    );
    if equivalent {
        assert!(
            stale(&looked_up[1]),
            "POST {} left {:?} fresh",
            a.uri,
            looked_up[1]
        );
    }
}

#[derive(Clone, Copy)]
enum Source {
    Identity,
    Header,
}

async fn keys_of(parts: &[KeyPart], a: &Request1, b: &Request1, source: Source) -> Vec<CacheKey> {
    keys(parts, &[a, b], source).await
}

/// The keys the cache looks up for these `GET`s, in order (bypassed ones have none).
async fn keys(parts: &[KeyPart], requests: &[&Request1], source: Source) -> Vec<CacheKey> {
    let recorder = Arc::new(Recorder::default());
    let service = CacheLayer::new(recorder.clone())
        .with_key_parts(parts.iter().cloned())
        .layer(upstream());
    for r in requests {
        let _ = service
            .clone()
            .oneshot(request(r, Method::GET, source))
            .await;
    }
    recorder.looked_up.lock().expect("not poisoned").clone()
}

fn request(r: &Request1, method: Method, source: Source) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    *req.method_mut() = method;
    *req.uri_mut() = r.uri.clone();
    if let Some(accept) = &r.accept {
        req.headers_mut().insert(ACCEPT, accept.clone());
    }
    match source {
        Source::Identity => {
            req.extensions_mut().insert(Identity::new(r.user.clone()));
        }
        Source::Header => {
            if let Ok(value) = HeaderValue::from_str(&r.user) {
                req.headers_mut().insert(USER_HEADER, value);
            }
        }
    }
    req
}

fn upstream() -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"[]"))))
    })
}

/// The path as the upstream resolves it: percent-encoded unreserved characters
/// (RFC 3986 §2.3) decoded, hex case ignored; everything else as sent.
fn unreserved_decoded(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let decoded = percent_decode(&bytes[i..i + 3]);
            if let [c] = decoded[..]
                && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            {
                out.push(c);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
