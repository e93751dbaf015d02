use std::{
    convert::Infallible,
    io,
    sync::{Arc, Mutex},
};

use http::{HeaderValue, Request, Response, StatusCode};
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;

/// Captures everything a `fmt` subscriber writes, for asserting on log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    // tracing-core computes a new callsite's interest from the *registering thread's*
    // default subscriber while only one dispatcher is alive, so a callsite first hit
    // by a concurrent test without a subscriber would be cached as "never" and our
    // log lines lost. A second, permanently live dispatcher rules that out.
    static KEEP_TWO_DISPATCHERS: std::sync::OnceLock<tracing::Dispatch> =
        std::sync::OnceLock::new();
    KEEP_TWO_DISPATCHERS
        .get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Echoes the id the handler sees (extension) and whether `RequestId::current` agrees.
async fn echo(req: Request<()>) -> Result<Response<String>, Infallible> {
    let ext = req.extensions().get::<RequestId>().cloned();
    assert_eq!(ext, RequestId::current());
    tracing::info!("handler ran");
    Ok(Response::new(
        ext.map(|id| id.to_string()).unwrap_or_default(),
    ))
}

fn request(headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder().uri("/api/things?secret=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

fn is_uuid_v7(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
}

#[tokio::test]
async fn valid_inbound_id_is_kept_everywhere() {
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .service_fn(|req: Request<()>| async move {
            // The request's headers were normalised to the chosen id.
            assert_eq!(req.headers()[X_REQUEST_ID], "abc-1");
            assert_eq!(req.headers()[X_CORRELATION_ID], "abc-1");
            echo(req).await
        });
    let res = svc
        .oneshot(request(&[("x-request-id", "abc-1")]))
        .await
        .unwrap();
    assert_eq!(res.headers()[X_REQUEST_ID], "abc-1");
    assert_eq!(res.body(), "abc-1");
}

#[tokio::test]
async fn correlation_id_is_the_fallback() {
    let svc = RequestIdService::new(service_fn(echo));
    let res = svc
        .oneshot(request(&[("x-correlation-id", "corr.7")]))
        .await
        .unwrap();
    assert_eq!(res.body(), "corr.7");
    assert_eq!(res.headers()[X_REQUEST_ID], "corr.7");
}

#[tokio::test]
async fn missing_or_invalid_ids_are_generated() {
    let svc = RequestIdService::new(service_fn(echo));
    for headers in [
        &[][..],
        &[("x-request-id", "")],
        &[("x-request-id", "has space")],
        &[("x-request-id", "a/b")],
    ] {
        let res = svc.clone().oneshot(request(headers)).await.unwrap();
        assert!(is_uuid_v7(res.body()), "{headers:?} → {}", res.body());
        assert_eq!(res.headers()[X_REQUEST_ID], res.body().as_str());
    }
    let long = "a".repeat(MAX_LEN + 1);
    let res = svc
        .oneshot(request(&[("x-request-id", &long)]))
        .await
        .unwrap();
    assert!(is_uuid_v7(res.body()));
}

#[tokio::test]
async fn edge_mode_always_generates_and_logs_the_client_value() {
    let (logs, _guard) = capture_logs();
    let svc = ServiceBuilder::new()
        .layer(RequestIdLayer::edge())
        .service_fn(|req: Request<()>| async move {
            assert_ne!(req.headers()[X_REQUEST_ID], "client-chosen");
            echo(req).await
        });
    assert!(RequestIdLayer::edge().is_edge());
    let res = svc
        .oneshot(request(&[("x-request-id", "client-chosen")]))
        .await
        .unwrap();
    assert!(is_uuid_v7(res.body()));
    assert_eq!(res.headers()[X_REQUEST_ID], res.body().as_str());
    let text = logs.text();
    assert!(text.contains("client_request_id=client-chosen"), "{text}");
    assert!(
        text.contains(&format!("request_id={}", res.body())),
        "{text}"
    );
}

#[tokio::test]
async fn log_lines_carry_request_id_path_and_user_id() {
    let (logs, _guard) = capture_logs();
    let auth = service_fn(|req: Request<()>| {
        // What an authentication layer does in its `call`, before the handler runs.
        record_user_id("user-42");
        echo(req)
    });
    let svc = RequestIdService::new(auth);
    svc.oneshot(request(&[("x-request-id", "log-me")]))
        .await
        .unwrap();
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("handler ran"))
        .unwrap_or_else(|| panic!("no handler line in {text}"));
    assert!(line.contains("request_id=log-me"), "{line}");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("path=/api/things"), "{line}");
    assert!(
        !line.contains("secret"),
        "the query string is not logged: {line}"
    );
    assert!(line.contains("user_id=user-42"), "{line}");
}

#[tokio::test]
async fn response_id_is_inserted_not_appended() {
    let svc = RequestIdService::new(service_fn(|_req: Request<()>| async {
        let mut res = Response::new(());
        res.headers_mut()
            .append(X_REQUEST_ID, HeaderValue::from_static("upstream-1"));
        res.headers_mut()
            .append(X_REQUEST_ID, HeaderValue::from_static("upstream-2"));
        Ok::<_, Infallible>(res)
    }));
    let res = svc
        .oneshot(request(&[("x-request-id", "mine")]))
        .await
        .unwrap();
    let values: Vec<_> = res.headers().get_all(X_REQUEST_ID).iter().collect();
    assert_eq!(values, ["mine"]);
}

#[tokio::test]
async fn errors_pass_through() {
    let svc = RequestIdService::new(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>("boom")
    }));
    assert_eq!(svc.oneshot(request(&[])).await.unwrap_err(), "boom");
}

/// An outbound client that reports the ids it was given.
fn client()
-> impl Service<Request<()>, Response = (Option<String>, Option<String>), Error = Infallible> + Clone
{
    SetRequestId::new(service_fn(|req: Request<()>| async move {
        let get = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        Ok((get(X_REQUEST_ID), get(X_CORRELATION_ID)))
    }))
}

#[tokio::test]
async fn set_request_id_prefers_extension_then_header_then_current() {
    let mut req = request(&[("x-request-id", "stale")]);
    req.extensions_mut()
        .insert(RequestId::parse("from-ext").unwrap());
    let got = client().oneshot(req).await.unwrap();
    assert_eq!(got, (Some("from-ext".into()), Some("from-ext".into())));

    let got = client()
        .oneshot(request(&[("x-correlation-id", "hdr")]))
        .await
        .unwrap();
    assert_eq!(got, (Some("hdr".into()), Some("hdr".into())));

    // Nothing known: the request is left alone.
    let got = client().oneshot(request(&[])).await.unwrap();
    assert_eq!(got, (None, None));

    // Inside a server's request, a fresh outbound request gets the current id.
    let server = RequestIdService::new(service_fn(|_req: Request<()>| async {
        let got = client().oneshot(request(&[])).await?;
        Ok::<_, Infallible>(Response::new(got))
    }));
    let res = server
        .oneshot(request(&[("x-request-id", "inbound-9")]))
        .await
        .unwrap();
    assert_eq!(
        res.into_body(),
        (Some("inbound-9".into()), Some("inbound-9".into()))
    );
    assert_eq!(RequestId::current(), None);
}

#[tokio::test]
async fn works_as_an_axum_layer() {
    use axum::{Extension, Router, body::Body, routing::get};

    let app = Router::new()
        .route(
            "/",
            get(|Extension(id): Extension<RequestId>| async move { id.to_string() }),
        )
        .layer(RequestIdLayer::new());
    let req = Request::builder()
        .uri("/")
        .header("x-request-id", "axum-1")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[X_REQUEST_ID], "axum-1");
}

proptest! {
    /// Arbitrary bytes in `X-Request-ID` and `X-Correlation-ID` never panic and never
    /// produce a 5xx; the first valid one is kept (outside edge mode), anything else
    /// is replaced by a fresh UUIDv7.
    #[test]
    fn arbitrary_inbound_ids(
        request_id in proptest::collection::vec(any::<u8>(), 0..200),
        correlation_id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        edge: bool,
    ) {
        let mut req = Request::new(());
        let mut sent = Vec::new();
        for (name, bytes) in [(X_REQUEST_ID, Some(&request_id)), (X_CORRELATION_ID, correlation_id.as_ref())] {
            // Bytes that are not a header value can never reach the layer.
            if let Some(value) = bytes.and_then(|b| HeaderValue::from_bytes(b).ok()) {
                req.headers_mut().insert(name, value);
                sent.push(bytes.cloned().unwrap_or_default());
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let layer = if edge { RequestIdLayer::edge() } else { RequestIdLayer::new() };
        let svc = ServiceBuilder::new().layer(layer).service_fn(echo);
        let res = rt.block_on(svc.oneshot(req)).unwrap();
        prop_assert!(!res.status().is_server_error());
        let echoed = res.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
        prop_assert!(RequestId::is_valid(echoed.as_bytes()));
        prop_assert_eq!(&echoed, res.body());
        match sent.iter().find(|b| RequestId::is_valid(b)) {
            Some(valid) if !edge => prop_assert_eq!(echoed.as_bytes(), &valid[..]),
            _ => prop_assert!(is_uuid_v7(&echoed)),
        }
    }
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_reads_the_layer_id_and_never_fails() {
    use axum::{Router, body::Body, routing::get};

    let handler = get(|id: RequestId| async move { id.to_string() });
    let with_layer = Router::new()
        .route("/", handler.clone())
        .layer(RequestIdLayer::edge());
    let res = with_layer
        .oneshot(
            Request::get("/")
                .header("x-request-id", "client")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let echoed = res.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
    let body = axum::body::to_bytes(res.into_body(), 256).await.unwrap();
    assert_eq!(body, echoed.as_bytes());
    assert_ne!(echoed, "client");

    // Without the layer: a valid header, else a fresh id.
    let bare = Router::new().route("/", handler);
    let res = bare
        .clone()
        .oneshot(
            Request::get("/")
                .header("x-request-id", "hdr-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        axum::body::to_bytes(res.into_body(), 256).await.unwrap(),
        "hdr-1"
    );
    let res = bare
        .oneshot(
            Request::get("/")
                .header("x-request-id", "bad id")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = axum::body::to_bytes(res.into_body(), 256).await.unwrap();
    assert!(is_uuid_v7(std::str::from_utf8(&body).unwrap()));
}
