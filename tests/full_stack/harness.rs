//! The shared harness of the end-to-end tests: the stack on ephemeral loopback ports
//! with a temporary data folder, an HTTP client, the captured JSON logs.

#![allow(dead_code)]

pub(crate) use std::io::Write;
pub(crate) use std::sync::{Arc, Mutex, OnceLock};
pub(crate) use std::time::Duration;

pub(crate) use bytes::Bytes;
pub(crate) use futures_util::{SinkExt, StreamExt};
pub(crate) use http::{HeaderMap, Method, Request, StatusCode};
pub(crate) use http_body_util::{BodyExt, Full};
pub(crate) use hyper_util::client::legacy::Client;
pub(crate) use hyper_util::client::legacy::connect::HttpConnector;
pub(crate) use hyper_util::rt::TokioExecutor;
pub(crate) use serde_json::{Value, json};
pub(crate) use tokio_tungstenite::tungstenite;

pub(crate) use crate::stack::config::{Cli, LogFormat, Service};
pub(crate) use crate::stack::{self, Stack};

/// A generous bound for anything that should take a moment.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ logs

/// Every log line of this test process, as JSON lines.
#[derive(Clone, Default)]
pub(crate) struct Logs(pub(crate) Arc<Mutex<Vec<u8>>>);

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

pub(crate) fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        stack::telemetry::init_logs_with(LogFormat::Json, logs.clone());
        logs
    })
}

/// The captured JSON log lines containing `needle`.
pub(crate) fn log_lines_with(needle: &str) -> Vec<Value> {
    let bytes = logs().0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The service (`frontend`, `backend`, `etl`) and the innermost `request` span of a
/// JSON log line.
pub(crate) fn spans_of(line: &Value) -> (Option<String>, Option<Value>) {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    let service = spans
        .iter()
        .find(|s| s["name"] == "service")
        .and_then(|s| s["service"].as_str().map(str::to_owned));
    let request = spans.iter().rev().find(|s| s["name"] == "request").cloned();
    (service, request)
}

// ------------------------------------------------------------------ stack

pub(crate) struct TestStack {
    pub(crate) stack: Stack,
    pub(crate) _dir: Option<tempfile::TempDir>,
    pub(crate) http: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) fn args(data_dir: &std::path::Path) -> Vec<String> {
    [
        "full_stack",
        "--frontend-addr",
        "127.0.0.1:0",
        "--backend-addr",
        "127.0.0.1:0",
        "--etl-addr",
        "127.0.0.1:0",
        "--metrics-addr",
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

pub(crate) async fn start_in(dir: &std::path::Path) -> Stack {
    start_service(Service::All, dir, &[]).await
}

pub(crate) async fn start_service(
    service: Service,
    dir: &std::path::Path,
    extra: &[&str],
) -> Stack {
    let _ = logs();
    let mut args = args(dir);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from_args(args);
    tokio::time::timeout(DEADLINE, Stack::start(service, cli.options))
        .await
        .expect("stack starts in time")
        .expect("stack starts")
}

/// [`args`] with the given flags' values replaced (or added): `("--breaker-open-ms", "3000")`.
pub(crate) fn args_overriding(
    data_dir: &std::path::Path,
    overrides: &[(&str, &str)],
) -> Vec<String> {
    let mut args = args(data_dir);
    for (flag, value) in overrides {
        match args.iter().position(|arg| arg == flag) {
            Some(at) => args[at + 1] = (*value).to_owned(),
            None => args.extend([(*flag).to_owned(), (*value).to_owned()]),
        }
    }
    args
}

/// The whole stack, on ephemeral ports, with some flags of [`args`] overridden.
pub(crate) async fn start_overriding(overrides: &[(&str, &str)]) -> TestStack {
    let _ = logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let cli = Cli::try_parse_from_args(args_overriding(dir.path(), overrides));
    let stack = tokio::time::timeout(DEADLINE, Stack::start(Service::All, cli.options))
        .await
        .expect("stack starts in time")
        .expect("stack starts");
    TestStack {
        stack,
        _dir: Some(dir),
        http: client(),
    }
}

pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) async fn start() -> TestStack {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = start_in(dir.path()).await;
    TestStack {
        stack,
        _dir: Some(dir),
        http: client(),
    }
}

pub(crate) trait ParseArgs {
    fn try_parse_from_args(args: Vec<String>) -> Cli;
}

impl ParseArgs for Cli {
    fn try_parse_from_args(args: Vec<String>) -> Cli {
        <Cli as clap::Parser>::try_parse_from(args).expect("valid test arguments")
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl TestStack {
    pub(crate) fn backend(&self) -> String {
        format!(
            "http://{}",
            self.stack.backend.as_ref().expect("backend").server.addr
        )
    }
    pub(crate) fn frontend(&self) -> String {
        format!(
            "http://{}",
            self.stack.frontend.as_ref().expect("frontend").addr
        )
    }
    pub(crate) fn etl(&self) -> String {
        format!("http://{}", self.stack.options.etl_addr)
    }
    /// The gateway's metrics listener.
    pub(crate) fn metrics(&self) -> String {
        format!(
            "http://{}",
            self.stack.backend.as_ref().expect("backend").metrics.addr
        )
    }
    /// The gateway's Prometheus text.
    pub(crate) async fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.metrics());
        let answer = self.call(Method::GET, &url, None, None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body.as_str().unwrap_or_default().to_owned()
    }

    pub(crate) async fn call(
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

    pub(crate) async fn login(&self, base: &str, email: &str, password: &str) -> String {
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
    pub(crate) async fn wait_terminal(&self, token: &str, run_id: &str) -> Value {
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

// ------------------------------------------------------------------ clients by address

/// An HTTP client whose connections leave from `ip` (any of 127.0.0.0/8 on Linux), so a
/// test can act as several clients with distinct addresses.
pub(crate) fn client_from(ip: [u8; 4]) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(std::net::IpAddr::from(ip)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Send `request` with `client` and read the whole answer (JSON when it parses).
pub(crate) async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    let response = tokio::time::timeout(DEADLINE, client.request(request))
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
