//! End-to-end tests of the full stack (examples/full_stack) over real loopback sockets:
//! each test starts the frontend, the gateway and the ETL service on ephemeral ports
//! with a temporary data folder, exactly as `cargo run --example full_stack` does.
//!
//! Every wait is a poll with a deadline; nothing sleeps to assert.

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../examples/full_stack/stack/mod.rs"]
mod stack;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use stack::Stack;
use stack::config::{Cli, LogFormat, Service};
use tokio_tungstenite::tungstenite;

/// A generous bound for anything that should take a moment.
const DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ logs

/// Every log line of this test process, as JSON lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        stack::telemetry::init_logs_with(LogFormat::Json, logs.clone());
        logs
    })
}

/// The captured JSON log lines containing `needle`.
fn log_lines_with(needle: &str) -> Vec<Value> {
    let bytes = logs().0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The service (`frontend`, `backend`, `etl`) and the innermost `request` span of a
/// JSON log line.
fn spans_of(line: &Value) -> (Option<String>, Option<Value>) {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    let service = spans
        .iter()
        .find(|s| s["name"] == "service")
        .and_then(|s| s["service"].as_str().map(str::to_owned));
    let request = spans.iter().rev().find(|s| s["name"] == "request").cloned();
    (service, request)
}

// ------------------------------------------------------------------ stack

struct TestStack {
    stack: Stack,
    _dir: Option<tempfile::TempDir>,
    http: Client<HttpConnector, Full<Bytes>>,
}

fn args(data_dir: &std::path::Path) -> Vec<String> {
    [
        "full_stack",
        "--frontend-addr",
        "127.0.0.1:0",
        "--backend-addr",
        "127.0.0.1:0",
        "--etl-addr",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().expect("utf-8 temp path"),
        "--fixture-latency-ms",
        "5",
        "--breaker-open-ms",
        "300",
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--shutdown-grace-ms",
        "500",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn start_in(dir: &std::path::Path) -> Stack {
    start_service(Service::All, dir, &[]).await
}

async fn start_service(service: Service, dir: &std::path::Path, extra: &[&str]) -> Stack {
    let _ = logs();
    let mut args = args(dir);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from_args(args);
    tokio::time::timeout(DEADLINE, Stack::start(service, cli.options))
        .await
        .expect("stack starts in time")
        .expect("stack starts")
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn start() -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = start_in(dir.path()).await;
    TestStack {
        stack,
        _dir: Some(dir),
        http: client(),
    }
}

trait ParseArgs {
    fn try_parse_from_args(args: Vec<String>) -> Cli;
}

impl ParseArgs for Cli {
    fn try_parse_from_args(args: Vec<String>) -> Cli {
        <Cli as clap::Parser>::try_parse_from(args).expect("valid test arguments")
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl TestStack {
    fn backend(&self) -> String {
        format!(
            "http://{}",
            self.stack.backend.as_ref().expect("backend").server.addr
        )
    }
    fn frontend(&self) -> String {
        format!(
            "http://{}",
            self.stack.frontend.as_ref().expect("frontend").addr
        )
    }
    fn etl(&self) -> String {
        format!("http://{}", self.stack.options.etl_addr)
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(url);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::default(),
        };
        let request = builder.body(body).expect("valid request");
        let response = tokio::time::timeout(DEADLINE, self.http.request(request))
            .await
            .expect("answer in time")
            .expect("HTTP exchange");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = tokio::time::timeout(DEADLINE, response.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn login(&self, base: &str, email: &str, password: &str) -> String {
        let answer = self
            .call(
                Method::POST,
                &format!("{base}/api/auth/login"),
                None,
                Some(json!({"email": email, "password": password})),
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "login: {}", answer.body);
        assert_eq!(answer.body["token_type"], "Bearer");
        assert_eq!(answer.body["expires_in"], 3600);
        answer.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Poll the run until it is terminal.
    async fn wait_terminal(&self, token: &str, run_id: &str) -> Value {
        let url = format!("{}/api/etl/runs/{run_id}", self.backend());
        tokio::time::timeout(DEADLINE, async {
            loop {
                let answer = self.call(Method::GET, &url, Some(token), None, &[]).await;
                if answer.status == StatusCode::OK {
                    let state = answer.body["state"].as_str().unwrap_or_default().to_owned();
                    if ["succeeded", "failed", "cancelled"].contains(&state.as_str()) {
                        return answer.body;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the run finishes before the deadline")
    }
}

// ------------------------------------------------------------------ tests

/// The main path, through the frontend like the browser: login, a live WebSocket,
/// start `jira_sync`, its progress over the socket, success. Along the way: the
/// client's `X-User-ID` changes nothing, a second start is a 409 with the active run
/// id, and the request id links the client's, the gateway's and the ETL's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_starts_jira_sync_and_watches_it_succeed() {
    let t = start().await;
    let front = t.frontend();
    let token = t.login(&front, "admin@pulse.local", "admin").await;

    // The live channel, through the frontend's forwarding, token as subprotocol.
    let ws_url = format!(
        "ws://{}/ws/job-status",
        t.stack.frontend.as_ref().expect("frontend").addr
    );
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url).expect("ws request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().expect("header"),
    );
    let (mut socket, handshake) =
        tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")
            .expect("WebSocket handshake");
    assert_eq!(handshake.headers()["sec-websocket-protocol"], "bearer");

    // Start, claiming to be someone else and sending our own request id.
    let started = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            Some(json!({})),
            &[
                ("x-user-id", "mallory"),
                ("X_User_Id", "mallory"),
                ("x-request-id", "client-chosen-id-42"),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(
        started.body["run"]["requested_by"], "admin",
        "identity comes from the token"
    );

    // A second start while it is active: 409 naming the active run.
    let again = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["code"], "run_already_active");
    assert_eq!(again.body["run_id"], run_id.as_str());

    // The socket tells us about progress and the end, without polling.
    let mut saw_progress = false;
    let final_state = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = socket.next().await {
            let Ok(tungstenite::Message::Text(text)) = message else {
                continue;
            };
            let update: Value = serde_json::from_str(text.as_str()).expect("JSON message");
            assert!(
                update["kind"].is_string() && update["run"].is_object(),
                "{update}"
            );
            if update["run"]["id"] != run_id.as_str() {
                continue;
            }
            if update["kind"] == "progress" {
                saw_progress = true;
            }
            let state = update["run"]["state"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "cancelled"].contains(&state) {
                return state.to_owned();
            }
        }
        String::from("socket closed")
    })
    .await
    .expect("the run ends before the deadline");
    assert_eq!(final_state, "succeeded");
    assert!(saw_progress, "progress updates arrive over the socket");
    let _ = socket.send(tungstenite::Message::Close(None)).await;

    // Polling agrees, and the run is recorded as started by the token's user.
    let run = t.wait_terminal(&token, &run_id).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["requested_by"], "admin");
    assert!(run["progress"]["done"].as_u64().unwrap_or(0) > 0);

    // Request ids. The gateway runs in edge mode: it never lets a client choose the id
    // other services log, so the answer carries the id *it* generated (echoed by the
    // frontend hop here, which is an edge too), and the client's value is kept in the
    // logs as `client_request_id`, linking them.
    let direct = t
        .call(
            Method::GET,
            &format!("{}/api/etl/jobs", t.backend()),
            Some(&token),
            None,
            &[("x-request-id", "client-chosen-id-43")],
        )
        .await;
    assert_eq!(direct.status, StatusCode::OK);
    let gateway_id = direct.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(gateway_id, "client-chosen-id-43");
    let linked = tokio::time::timeout(DEADLINE, async {
        loop {
            let lines = log_lines_with(&gateway_id);
            let gateway_line = lines.iter().any(|line| {
                let (service, request) = spans_of(line);
                service.as_deref() == Some("backend")
                    && request.is_some_and(|r| {
                        r["client_request_id"] == "client-chosen-id-43" && r["user_id"] == "admin"
                    })
            });
            let etl_line = lines.iter().any(|line| {
                let (service, request) = spans_of(line);
                service.as_deref() == Some("etl")
                    && request.is_some_and(|r| {
                        r["request_id"] == gateway_id.as_str() && r["path"] == "/api/v1/jobs"
                    })
            });
            if gateway_line && etl_line {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        linked.is_ok(),
        "the gateway logs the client's id with its own, and the ETL logs the gateway's: {:#?}",
        log_lines_with(&gateway_id)
    );
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_permissions() {
    let t = start().await;
    let back = t.backend();

    // No token: 401 with WWW-Authenticate, in the JSON error shape.
    let anonymous = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    assert!(anonymous.body["error"].is_string() && anonymous.body["request_id"].is_string());
    let forged = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some("not.a.token"),
            None,
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    // The viewer may look, not start.
    let viewer = t.login(&back, "viewer@pulse.local", "viewer").await;
    let me = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/me"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user_id"], "viewer");
    assert_eq!(me.body["roles"], json!(["viewer"]));
    assert_eq!(me.body["permissions"], json!(["etl.access"]));
    let jobs = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(jobs.status, StatusCode::OK);
    assert_eq!(jobs.body["jobs"].as_array().map(Vec::len), Some(2));
    let status = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs/status"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(status.status, StatusCode::OK);
    assert!(
        status.body["jobs"]["jira_sync"].is_object(),
        "{}",
        status.body
    );
    // The status the dashboard polls comes from the gateway's cache (1 s TTL) when fresh.
    let mut hit = false;
    for _ in 0..20 {
        let again = t
            .call(
                Method::GET,
                &format!("{back}/api/etl/jobs/status"),
                Some(&viewer),
                None,
                &[],
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        if again.headers.get("x-cache").is_some_and(|v| v == "HIT") {
            hit = true;
            break;
        }
    }
    assert!(hit, "a repeated status request is answered from the cache");
    let start = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN);
    assert_eq!(start.body["code"], "forbidden");
    let start = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/start"),
            Some(&viewer),
            Some(json!({"job_name": "jira_sync"})),
            &[],
        )
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN);

    // Wrong password and unknown user: the same answer.
    let wrong = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "nope"})),
            &[],
        )
        .await;
    let unknown = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "ghost@pulse.local", "password": "nope"})),
            &[],
        )
        .await;
    for answer in [&wrong, &unknown] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["code"], "invalid_credentials");
        assert_eq!(answer.body["error"], "Invalid email or password");
    }
    // Repeated failures of one account are throttled (429 + Retry-After), even with
    // the right password, while other accounts are unaffected.
    // (One failure of ghost above; four more make five.)
    let mut last = StatusCode::OK;
    for _ in 0..4 {
        last = t
            .call(
                Method::POST,
                &format!("{back}/api/auth/login"),
                None,
                Some(json!({"email": "ghost@pulse.local", "password": "nope"})),
                &[],
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::UNAUTHORIZED);
    let throttled = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "ghost@pulse.local", "password": "x"})),
            &[],
        )
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers.contains_key("retry-after"));
    t.login(&back, "admin@pulse.local", "admin").await;

    // The ETL directly: 403 without the internal credential, /health open, the key
    // ring's secret for tools.
    let etl = t.etl();
    let direct = t
        .call(
            Method::GET,
            &format!("{etl}/api/v1/jobs"),
            None,
            None,
            &[("x-user-id", "admin")],
        )
        .await;
    assert_eq!(direct.status, StatusCode::FORBIDDEN);
    assert_eq!(direct.body["error"], "Internal authentication required");
    let health = t
        .call(Method::GET, &format!("{etl}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let secret = t
        .stack
        .secrets
        .primary_internal_secret()
        .expect("key")
        .to_owned();
    let tool = t
        .call(
            Method::GET,
            &format!("{etl}/api/v1/jobs"),
            None,
            None,
            &[("x-internal-auth", &secret)],
        )
        .await;
    assert_eq!(tool.status, StatusCode::OK);

    // Gateway health and metrics.
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    for service in ["backend_service", "etl_service", "database"] {
        assert_eq!(
            health.body["services"][service]["status"], "healthy",
            "{}",
            health.body
        );
    }
    let metrics = t
        .call(Method::GET, &format!("{back}/metrics"), None, None, &[])
        .await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("pulse_http_requests_total"), "{text}");
    assert!(text.contains("pulse_breaker_state"), "{text}");
    assert!(text.contains("pulse_cache_hits_total"), "{text}");

    // The WebSocket with ?access_token= (tools), and without a token: refused.
    let backend_addr = t.stack.backend.as_ref().expect("backend").server.addr;
    let (_socket, answer) = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!(
            "ws://{backend_addr}/ws/job-status?access_token={viewer}"
        )),
    )
    .await
    .expect("handshake in time")
    .expect("a viewer may watch job status");
    assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
    let refused = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!("ws://{backend_addr}/ws/job-status")),
    )
    .await
    .expect("answer in time");
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    t.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_serves_the_dashboard_and_forwards_the_api() {
    let t = start().await;
    let front = t.frontend();
    let index = t
        .call(Method::GET, &format!("{front}/"), None, None, &[])
        .await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers["cache-control"], "no-cache");
    assert_eq!(index.headers["x-content-type-options"], "nosniff");
    assert!(
        index.headers["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .contains("default-src 'self'")
    );
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/api.js", "text/javascript"),
        ("/views.js", "text/javascript"),
        ("/ws.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let asset = t
            .call(Method::GET, &format!("{front}{path}"), None, None, &[])
            .await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert!(
            asset.headers["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with(kind),
            "{path}"
        );
    }
    let health = t
        .call(Method::GET, &format!("{front}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy");
    let anonymous = t
        .call(
            Method::GET,
            &format!("{front}/api/etl/jobs"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    t.stack.shutdown().await;
}

/// ETL stopped → fast 503s, `/health` 503, the circuit opens (503 `circuit_open` with
/// Retry-After); ETL back → the circuit heals and jobs start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etl_outage_opens_the_circuit_and_it_heals() {
    let mut t = start().await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let ok = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    t.stack.stop_etl().await;
    // Fast: connection refused is answered at once (the bound only stops a hang).
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        t.call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        ),
    )
    .await
    .expect("a 503 without waiting for a timeout");
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.body["code"].is_string() && down.body["request_id"].is_string());
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.body["services"]["etl_service"]["status"],
        "unhealthy"
    );
    assert_eq!(
        health.body["services"]["backend_service"]["status"],
        "healthy"
    );
    // The frontend forwards the 503 and its JSON body unchanged (the dashboard's panel).
    let via_frontend = t
        .call(
            Method::GET,
            &format!("{}/health", t.frontend()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(via_frontend.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(via_frontend.body["status"], "unhealthy");

    // Keep calling: the breaker opens and answers for the ETL.
    let open = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t
                .call(
                    Method::GET,
                    &format!("{back}/api/etl/jobs"),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            if answer.body["code"] == "circuit_open" {
                return answer;
            }
        }
    })
    .await
    .expect("the circuit opens");
    assert!(open.headers.contains_key("retry-after"));
    let breaker = t.stack.backend.as_ref().expect("backend").breaker.clone();
    assert_ne!(breaker.state(), pulse_breaker::State::Closed);
    let metrics = t
        .call(Method::GET, &format!("{back}/metrics"), None, None, &[])
        .await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains(r#"pulse_proxy_errors_total{kind="circuit_open"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pulse_breaker_state{upstream="etl"}"#),
        "{text}"
    );

    // ETL back: after the open period a probe goes through and the circuit closes.
    t.stack.restart_etl().await.expect("ETL restarts");
    let started = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t
                .call(
                    Method::POST,
                    &format!("{back}/api/etl/jobs/github_sync/start"),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
            if answer.status == StatusCode::ACCEPTED {
                return answer;
            }
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("jobs start again once the ETL is back");
    assert_eq!(breaker.state(), pulse_breaker::State::Closed);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    let health = tokio::time::timeout(DEADLINE, async {
        loop {
            let health = t
                .call(Method::GET, &format!("{back}/health"), None, None, &[])
                .await;
            if health.status == StatusCode::OK {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("healthy again");
    assert_eq!(health.body["status"], "healthy");
    t.stack.shutdown().await;
}

/// Stopping the whole stack and starting it on the same data folder keeps the run
/// history (same SQLite file) and the generated secrets (old tokens still verify).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_history_and_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TestStack {
        stack: start_in(dir.path()).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    t.stack.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets/jwt_secret"))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let t = TestStack {
        stack: start_in(dir.path()).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let runs = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs/jira_sync/runs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        runs.status,
        StatusCode::OK,
        "the old token verifies: {}",
        runs.body
    );
    let ids: Vec<&str> = runs.body["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&run_id.as_str()), "{}", runs.body);
    t.stack.shutdown().await;
}

/// The same example run as three processes would be: one service per `Stack`, found
/// through PULSE_ETL_URL / PULSE_BACKEND_URL, sharing the secrets generated into one
/// data folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_apart_and_share_generated_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etl = start_service(Service::Etl, dir.path(), &[]).await;
    let etl_url = format!("http://{}", etl.options.etl_addr);
    let backend = start_service(Service::Backend, dir.path(), &["--etl-url", &etl_url]).await;
    let backend_url = format!("http://{}", backend.options.backend_addr);
    let frontend = start_service(
        Service::Frontend,
        dir.path(),
        &["--backend-url", &backend_url],
    )
    .await;
    assert!(etl.backend.is_none() && etl.frontend.is_none());
    assert!(backend.etl.is_none() && frontend.backend.is_none());

    let t = TestStack {
        stack: frontend,
        _dir: None,
        http: client(),
    };
    let front = t.frontend();
    let token = t.login(&front, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/start"),
            Some(&token),
            Some(json!({"job_name": "github_sync"})),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    let run_url = format!("{front}/api/etl/runs/{run_id}");
    let run = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t.call(Method::GET, &run_url, Some(&token), None, &[]).await;
            if answer.body["state"] == "succeeded" {
                return answer.body;
            }
            assert_ne!(answer.body["state"], "failed", "{}", answer.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run succeeds");
    assert_eq!(run["requested_by"], "admin");
    t.stack.shutdown().await;
    backend.shutdown().await;
    etl.shutdown().await;
}

/// `--no-demo` seeds nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_demo_nobody_can_log_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TestStack {
        stack: start_service(Service::All, dir.path(), &["--no-demo"]).await,
        _dir: None,
        http: client(),
    };
    let answer = t
        .call(
            Method::POST,
            &format!("{}/api/auth/login", t.backend()),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "admin"})),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["code"], "invalid_credentials");
    t.stack.shutdown().await;
}

#[test]
fn the_command_line_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
    let help = <Cli as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    for variable in [
        "PULSE_FRONTEND_ADDR",
        "PULSE_BACKEND_ADDR",
        "PULSE_ETL_ADDR",
        "PULSE_BACKEND_URL",
        "PULSE_ETL_URL",
        "PULSE_DATABASE_URL",
        "PULSE_DATA_DIR",
        "PULSE_JWT_SECRET",
        "PULSE_INTERNAL_KEYS",
        "PULSE_DEMO",
        "PULSE_LOG_FORMAT",
        "PULSE_TLS_CERT",
        "PULSE_TLS_KEY",
        "PULSE_JIRA_URL",
        "PULSE_GITHUB_TOKEN",
    ] {
        assert!(help.contains(variable), "--help mentions {variable}");
    }
}

/// GET `path` over HTTPS, trusting only `cert`; the status line and body.
async fn https_get(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    path: &str,
) -> (String, String) {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("cert file") {
        roots.add(der.expect("PEM")).expect("trusted");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake with the generated certificate");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

/// `--self-signed`: the backend and the frontend serve HTTPS with a generated
/// certificate, and the frontend reaches the backend over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_for_frontend_and_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = start_service(Service::All, dir.path(), &["--self-signed"]).await;
    let cert = dir.path().join("tls/cert.pem");
    assert!(cert.is_file());
    let backend = stack.backend.as_ref().expect("backend").server.addr;
    let frontend = stack.frontend.as_ref().expect("frontend").addr;
    let (status, body) = https_get(backend, &cert, "/health").await;
    assert!(status.contains(" 200"), "{body}");
    // Through the frontend: browser → TLS → frontend → TLS → backend → ETL.
    let (status, body) = https_get(frontend, &cert, "/health").await;
    assert!(status.contains(" 200"), "{body}");
    assert!(body.contains("\"healthy\""), "{body}");
    let (status, body) = https_get(frontend, &cert, "/").await;
    assert!(
        status.contains(" 200") && body.contains("<html"),
        "{status}"
    );
    stack.shutdown().await;
}

/// The stack on PostgreSQL (`PULSE_DATABASE_URL=postgres://…`), in its own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn the_stack_runs_on_postgresql() {
    let url = std::env::var("PULSE_TEST_DATABASE_URL").expect("PULSE_TEST_DATABASE_URL");
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = format!("full_stack_{}", std::process::id());
    let t = TestStack {
        stack: start_service(
            Service::All,
            dir.path(),
            &["--database-url", &url, "--database-schema", &schema],
        )
        .await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.body["services"]["database"]["status"], "healthy");
    t.stack.shutdown().await;
    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await;
    }
}
