//! tower's readiness contract, checked over every service of the workspace (issue 9,
//! defect 7).
//!
//! One strict mock stands in for the inner service: each instance has its own
//! readiness (a clone starts not ready, as tower's `Buffer` and `ConcurrencyLimit`
//! do), one `poll_ready` → `Ready` allows exactly one `call`, and a `call` without it
//! is recorded as a violation instead of panicking, so the assertions can say which
//! service broke the contract. Every service then goes through the same cases:
//!
//! 1. **pending inner** → a pass-through service is `Pending`; a load-shedding one
//!    (the proxy) is `Ready` and answers `503 overloaded` without calling the inner;
//! 2. **inner erroring in `poll_ready`** → the error surfaces (pass-through), or the
//!    request is answered with a JSON 5xx without calling the inner (shedding);
//! 3. **`call` after `Ready`** → the inner is called exactly once, by the instance
//!    that was made ready;
//! 4. **a clone does not inherit readiness** → after `poll_ready` on the original, a
//!    clone asks its own inner (pending here) and never uses the original's
//!    reservation; a shedding clone called without `poll_ready` answers 503 without
//!    calling the inner; the original's call still goes through its ready inner.

use std::{
    fmt,
    future::{Ready, ready},
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use pulse_breaker::{Breaker, BreakerConfig, CircuitBreaker};
use pulse_core::{
    AuthorizeLayer, Identity, RequestIdLayer, RequirePermissionLayer, RuleTable, SetRequestIdLayer,
    internal_auth::{InternalAuthLayer, InternalCredentialLayer, KeyRing},
    jwt::{JwtAuthLayer, JwtVerifier, SigningKey, TokenIssuer, VerificationKey},
};
use pulse_proxy::{
    Proxy, ProxyConfig,
    cache::{CacheLayer, MemoryStore},
};
use tower::{Layer, Service};

// ---------------------------------------------------------------------------------
// The strict inner service.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ready,
    Pending,
    Failing,
}

/// What every instance (original and clones) of one mock shares.
#[derive(Debug)]
struct Control {
    mode: Mutex<Mode>,
    calls: AtomicUsize,
    unready_calls: AtomicUsize,
}

impl Control {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn unready_calls(&self) -> usize {
        self.unready_calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Strict {
    control: Arc<Control>,
    /// This instance's readiness: one `Ready` from `poll_ready` allows one `call`.
    ready: bool,
}

impl Strict {
    fn new() -> (Self, Arc<Control>) {
        let control = Arc::new(Control {
            mode: Mutex::new(Mode::Ready),
            calls: AtomicUsize::new(0),
            unready_calls: AtomicUsize::new(0),
        });
        let this = Self {
            control: control.clone(),
            ready: false,
        };
        (this, control)
    }
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        // As tower's `Buffer` and `ConcurrencyLimit`: a clone holds no reservation.
        Self {
            control: self.control.clone(),
            ready: false,
        }
    }
}

/// The inner's `poll_ready` failure.
#[derive(Debug)]
struct InnerBroken;

impl fmt::Display for InnerBroken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner service broken")
    }
}

impl std::error::Error for InnerBroken {}

impl<B> Service<Request<B>> for Strict {
    type Response = Response<Full<Bytes>>;
    type Error = InnerBroken;
    type Future = Ready<Result<Self::Response, InnerBroken>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), InnerBroken>> {
        match self.control.mode() {
            Mode::Ready => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Mode::Pending => Poll::Pending,
            Mode::Failing => Poll::Ready(Err(InnerBroken)),
        }
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        if !std::mem::replace(&mut self.ready, false) {
            self.control.unready_calls.fetch_add(1, Ordering::SeqCst);
        }
        self.control.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"inner")))))
    }
}

// ---------------------------------------------------------------------------------
// The harness.

type Body = Full<Bytes>;

/// How a service meets an inner that is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discipline {
    /// Forwards the inner's readiness: `Pending` and errors come through.
    PassThrough,
    /// Stays ready and answers 503 in `call` (tower's `LoadShed`).
    Sheds,
}

/// A service under test: how to build it over the mock, and a request it lets
/// through to the inner when everything is well.
struct Subject<S> {
    name: &'static str,
    discipline: Discipline,
    build: Box<dyn Fn(Strict) -> S>,
    request: Box<dyn Fn() -> Request<Body>>,
}

fn poll_ready<S: Service<R>, R>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    svc.poll_ready(&mut Context::from_waker(Waker::noop()))
}

/// Runs a response future to completion; every future here completes without
/// waiting on a timer or a socket.
async fn answer<F, RB, E>(future: F) -> (StatusCode, String)
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let res = future.await.expect("the service answers");
    let status = res.status();
    let body = res.into_body().collect().await.expect("a body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn suite<S, RB>(subject: Subject<S>)
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone,
    S::Error: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let name = subject.name;
    pending_inner(&subject).await;
    failing_inner(&subject).await;
    call_after_ready(&subject).await;
    clone_has_its_own_readiness(&subject).await;
    eprintln!("{name}: readiness contract kept");
}

fn assert_shed(name: &str, status: StatusCode, body: &str) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {body}");
    assert!(body.contains(r#""code":"overloaded""#), "{name}: {body}");
}

async fn pending_inner<S, RB>(subject: &Subject<S>)
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone,
    S::Error: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let name = subject.name;
    let (inner, control) = Strict::new();
    control.set(Mode::Pending);
    let mut svc = (subject.build)(inner);
    match subject.discipline {
        Discipline::PassThrough => {
            assert!(
                poll_ready(&mut svc).is_pending(),
                "{name}: pending inner → pending"
            );
            // The inner becomes ready: so does the service, and the call goes through.
            control.set(Mode::Ready);
            assert!(
                matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))),
                "{name}"
            );
            let (status, body) = answer(svc.call((subject.request)())).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(control.calls(), 1, "{name}");
        }
        Discipline::Sheds => {
            assert!(
                matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))),
                "{name}"
            );
            let (status, body) = answer(svc.call((subject.request)())).await;
            assert_shed(name, status, &body);
            assert_eq!(
                control.calls(),
                0,
                "{name}: a pending inner is never called"
            );
        }
    }
    assert_eq!(
        control.unready_calls(),
        0,
        "{name}: called a not-ready inner"
    );
}

async fn failing_inner<S, RB>(subject: &Subject<S>)
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone,
    S::Error: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let name = subject.name;
    let (inner, control) = Strict::new();
    control.set(Mode::Failing);
    let mut svc = (subject.build)(inner);
    match subject.discipline {
        Discipline::PassThrough => {
            assert!(
                matches!(poll_ready(&mut svc), Poll::Ready(Err(_))),
                "{name}: the inner's poll_ready error surfaces"
            );
        }
        Discipline::Sheds => {
            assert!(
                matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))),
                "{name}"
            );
            let (status, body) = answer(svc.call((subject.request)())).await;
            assert!(status.is_server_error(), "{name}: {status} {body}");
            assert!(body.contains(r#""code":"#), "{name}: a JSON error: {body}");
            assert!(!body.contains("broken"), "{name}: no inner detail: {body}");
        }
    }
    assert_eq!(control.calls(), 0, "{name}: a failed inner is never called");
}

async fn call_after_ready<S, RB>(subject: &Subject<S>)
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone,
    S::Error: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let name = subject.name;
    let (inner, control) = Strict::new();
    let mut svc = (subject.build)(inner);
    for round in 1..=3 {
        assert!(
            matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))),
            "{name}"
        );
        let (status, body) = answer(svc.call((subject.request)())).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(control.calls(), round, "{name}: one inner call per call");
    }
    assert_eq!(
        control.unready_calls(),
        0,
        "{name}: called a not-ready inner"
    );
}

async fn clone_has_its_own_readiness<S, RB>(subject: &Subject<S>)
where
    S: Service<Request<Body>, Response = Response<RB>> + Clone,
    S::Error: fmt::Debug,
    RB: http_body::Body<Data = Bytes>,
    RB::Error: fmt::Debug,
{
    let name = subject.name;
    let (inner, control) = Strict::new();
    let mut original = (subject.build)(inner);
    assert!(
        matches!(poll_ready(&mut original), Poll::Ready(Ok(()))),
        "{name}"
    );
    let mut clone = original.clone();
    let mut unpolled = original.clone();

    // The inner is now busy: the original keeps its reservation, clones get none.
    control.set(Mode::Pending);
    match subject.discipline {
        Discipline::PassThrough => {
            assert!(
                poll_ready(&mut clone).is_pending(),
                "{name}: a clone asks its own inner instead of reusing the original's readiness"
            );
        }
        Discipline::Sheds => {
            assert!(
                matches!(poll_ready(&mut clone), Poll::Ready(Ok(()))),
                "{name}"
            );
            let (status, body) = answer(clone.call((subject.request)())).await;
            assert_shed(name, status, &body);
            // Called without any poll_ready at all.
            let (status, body) = answer(unpolled.call((subject.request)())).await;
            assert_shed(name, status, &body);
        }
    }
    assert_eq!(control.calls(), 0, "{name}: no clone called the inner");

    // The original still holds its ready inner.
    let (status, body) = answer(original.call((subject.request)())).await;
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    assert_eq!(control.calls(), 1, "{name}");
    assert_eq!(
        control.unready_calls(),
        0,
        "{name}: called a not-ready inner"
    );

    // And it does not think it is still ready afterwards.
    if subject.discipline == Discipline::Sheds {
        let (status, body) = answer(original.call((subject.request)())).await;
        assert_shed(name, status, &body);
        assert_eq!(control.calls(), 1, "{name}");
    }
}

// ---------------------------------------------------------------------------------
// The services of the workspace.

const SECRET: &[u8] = b"a readiness-suite secret of 32+ bytes";
const INTERNAL_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn get() -> Request<Body> {
    let mut req = Request::get("/api/etl/jobs")
        .header("x-request-id", "readiness-1")
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    req.extensions_mut()
        .insert(Identity::new("user-1").with_permissions(["etl.access", "etl.jobs.run"]));
    req
}

#[tokio::test]
async fn proxy() {
    suite(Subject {
        name: "pulse_proxy::Proxy",
        discipline: Discipline::Sheds,
        build: Box::new(|inner| {
            let config = ProxyConfig::new("http://etl.internal".parse().expect("a URI"))
                .expect("a valid upstream");
            Proxy::new(inner, config)
        }),
        request: Box::new(get),
    })
    .await;
}

#[tokio::test]
async fn cache() {
    suite(Subject {
        name: "pulse_proxy::cache::Cache",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| CacheLayer::new(MemoryStore::new()).layer(inner)),
        // A new path each time: every GET is a miss that reaches the inner (a hit
        // rightly never does).
        request: Box::new({
            let n = AtomicUsize::new(0);
            move || {
                let mut req = get();
                let path = format!("/api/etl/jobs/{}", n.fetch_add(1, Ordering::SeqCst));
                *req.uri_mut() = path.parse().expect("a URI");
                req
            }
        }),
    })
    .await;
}

/// The cache's miss path moves the ready inner into its boxed future: with the
/// identity missing it takes the bypass path instead, which calls in place.
#[tokio::test]
async fn cache_bypass() {
    suite(Subject {
        name: "pulse_proxy::cache::Cache (bypass)",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| CacheLayer::new(MemoryStore::new()).layer(inner)),
        request: Box::new(|| {
            let mut req = get();
            req.extensions_mut().remove::<Identity>();
            req
        }),
    })
    .await;
}

#[tokio::test]
async fn circuit_breaker() {
    suite(Subject {
        name: "pulse_breaker::CircuitBreaker",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            CircuitBreaker::new(
                inner,
                Breaker::new(BreakerConfig::default()).expect("valid"),
            )
        }),
        request: Box::new(get),
    })
    .await;
    suite(Subject {
        name: "pulse_breaker::CircuitBreaker (http)",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            CircuitBreaker::http(
                inner,
                Breaker::new(BreakerConfig::default()).expect("valid"),
            )
        }),
        request: Box::new(get),
    })
    .await;
}

#[tokio::test]
async fn jwt_auth() {
    let issuer = TokenIssuer::new(SigningKey::hmac(SECRET).expect("a long secret"));
    let token = issuer
        .issue(&Identity::new("user-1"))
        .expect("a token")
        .access_token;
    suite(Subject {
        name: "pulse_core::jwt::JwtAuth",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            let verifier = JwtVerifier::new(VerificationKey::hmac(SECRET).expect("a long secret"));
            JwtAuthLayer::new(verifier).layer(inner)
        }),
        request: Box::new(move || {
            let mut req = get();
            req.extensions_mut().remove::<Identity>();
            req.headers_mut().insert(
                AUTHORIZATION,
                format!("Bearer {token}").parse().expect("a header value"),
            );
            req
        }),
    })
    .await;
}

#[tokio::test]
async fn rbac() {
    suite(Subject {
        name: "pulse_core::rbac::Authorize",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            let table = RuleTable::builder()
                .require("GET", "/api/etl/*", ["etl.access"])
                .build()
                .expect("a valid table");
            AuthorizeLayer::new(table).layer(inner)
        }),
        request: Box::new(get),
    })
    .await;
    suite(Subject {
        name: "pulse_core::rbac::RequirePermission",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| RequirePermissionLayer::new("etl.jobs.run").layer(inner)),
        request: Box::new(get),
    })
    .await;
}

#[tokio::test]
async fn internal_auth() {
    suite(Subject {
        name: "pulse_core::internal_auth::InternalAuth",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            let ring = KeyRing::parse(&format!("etl-1:{INTERNAL_SECRET}")).expect("a key ring");
            InternalAuthLayer::new(ring).layer(inner)
        }),
        request: Box::new(|| {
            let mut req = get();
            req.headers_mut().insert(
                "x-internal-auth",
                INTERNAL_SECRET.parse().expect("a header value"),
            );
            req
        }),
    })
    .await;
    suite(Subject {
        name: "pulse_core::internal_auth::InternalCredential",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| {
            let ring = KeyRing::parse(&format!("etl-1:{INTERNAL_SECRET}")).expect("a key ring");
            InternalCredentialLayer::new().with_key(ring).layer(inner)
        }),
        request: Box::new(get),
    })
    .await;
}

#[tokio::test]
async fn request_id() {
    suite(Subject {
        name: "pulse_core::request_id::RequestIdService",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| RequestIdLayer::new().layer(inner)),
        request: Box::new(get),
    })
    .await;
    suite(Subject {
        name: "pulse_core::request_id::SetRequestId",
        discipline: Discipline::PassThrough,
        build: Box::new(|inner| SetRequestIdLayer::new().layer(inner)),
        request: Box::new(get),
    })
    .await;
}

/// The suite itself catches the bugs it is for: a middleware that calls a fresh
/// clone of its inner (instead of the one made ready), and one that reports ready
/// without asking its inner, both fail it.
#[tokio::test]
async fn the_suite_catches_contract_breakers() {
    #[derive(Clone)]
    struct CallsAClone<S>(S);
    impl<S: Service<R> + Clone, R> Service<R> for CallsAClone<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, req: R) -> S::Future {
            self.0.clone().call(req)
        }
    }
    #[derive(Clone)]
    struct AlwaysReady<S>(S);
    impl<S: Service<R>, R> Service<R> for AlwaysReady<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: R) -> S::Future {
            self.0.call(req)
        }
    }
    let calls_a_clone = AssertUnwindSafe(suite(Subject {
        name: "calls a clone",
        discipline: Discipline::PassThrough,
        build: Box::new(CallsAClone),
        request: Box::new(get),
    }))
    .catch_unwind()
    .await;
    assert!(calls_a_clone.is_err(), "a clone's call is caught");
    let always_ready = AssertUnwindSafe(suite(Subject {
        name: "always ready",
        discipline: Discipline::PassThrough,
        build: Box::new(AlwaysReady),
        request: Box::new(get),
    }))
    .catch_unwind()
    .await;
    assert!(always_ready.is_err(), "a readiness lie is caught");
}
