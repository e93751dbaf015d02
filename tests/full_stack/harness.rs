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
    let mut args = args(dir);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    start_args(service, args).await
}

/// `service` started with exactly these arguments.
pub(crate) async fn start_args(service: Service, args: Vec<String>) -> Stack {
    let _ = logs();
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
        let (method, uri) = (request.method().clone(), request.uri().to_string());
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
        if self.serves_the_contract(&uri) {
            crate::contract::check(&method, &uri, status, &headers, &body);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Whether `url` is an operation of the OpenAPI documents: the gateway's and the
    /// ETL's listeners, and the frontend's `/api/*` (proxied to the gateway); not the
    /// metrics listener, nor the frontend's own pages and `/health`.
    fn serves_the_contract(&self, url: &str) -> bool {
        let on = |addr: std::net::SocketAddr| url.starts_with(&format!("http://{addr}/"));
        let backend = self.stack.backend.as_ref();
        if backend.is_some_and(|b| on(b.metrics.addr)) {
            return false;
        }
        match &self.stack.frontend {
            Some(frontend) if on(frontend.addr) => {
                url.starts_with(&format!("http://{}/api/", frontend.addr))
            }
            _ => true,
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
        assert_eq!(answer.body["expires_in"], 900);
        answer.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The user id (`sub`) of `token`, from `GET /api/auth/me` on `base`.
    pub(crate) async fn user_id(&self, base: &str, token: &str) -> String {
        let me = self
            .call(
                Method::GET,
                &format!("{base}/api/auth/me"),
                Some(token),
                None,
                &[],
            )
            .await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.body);
        me.body["user_id"].as_str().expect("user_id").to_owned()
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
    let (method, uri) = (request.method().clone(), request.uri().to_string());
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
    crate::contract::check(&method, &uri, status, &headers, &body);
    Answer {
        status,
        headers,
        body,
    }
}

// ------------------------------------------------------------------ accounts and sessions

pub(crate) use crate::stack::accounts::audit::{AuditAction, AuditQuery};
pub(crate) use crate::stack::accounts::cli::{CliError, Console};
pub(crate) use crate::stack::accounts::password::PasswordHashing;
pub(crate) use crate::stack::accounts::{AccountStore, Origin};
pub(crate) use crate::stack::config::Command;

/// A signed-in session: the access token and the refresh cookie's value.
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) cookie: String,
}

/// The `pulse_refresh` value of an answer's `Set-Cookie` (empty when cleared).
pub(crate) fn set_refresh_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("pulse_refresh="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

/// The whole `Set-Cookie` line of the refresh cookie.
pub(crate) fn refresh_cookie_line(headers: &HeaderMap) -> String {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("pulse_refresh="))
        .unwrap_or_default()
        .to_owned()
}

/// The same cheap Argon2 costs as the test stacks ([`args`]).
pub(crate) fn test_hashing() -> PasswordHashing {
    PasswordHashing::new(1024, 1).expect("argon2 parameters")
}

/// Run `full_stack <args…>` (a `users` or `roles` command) in process on `store`, with
/// `stdin`; its output, or its error.
pub(crate) async fn cli(
    store: &AccountStore,
    args: &[&str],
    stdin: &str,
) -> Result<String, CliError> {
    let mut argv = vec!["full_stack"];
    argv.extend_from_slice(args);
    let cli = <Cli as clap::Parser>::try_parse_from(argv).expect("valid CLI arguments");
    let hashing = test_hashing();
    let mut out = Vec::new();
    let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
    let mut console = Console {
        store,
        hashing: &hashing,
        origin: Origin::cli(),
        out: &mut out,
        input: &mut input,
    };
    match cli.command.expect("a command") {
        Command::Users(command) => console.users(&command).await?,
        Command::Roles(command) => console.roles(&command).await?,
        Command::Run(_) => panic!("not an accounts command"),
    }
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

/// Poll `check` until it holds (it is retried every 50 ms up to [`DEADLINE`]).
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = tokio::time::timeout(DEADLINE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "not in time: {what}");
}

impl TestStack {
    /// The accounts store of the running gateway.
    pub(crate) fn accounts(&self) -> AccountStore {
        self.stack
            .backend
            .as_ref()
            .expect("backend")
            .accounts
            .clone()
    }

    /// A store of its own on the gateway's database, as another process (the CLI) has.
    pub(crate) async fn other_process_store(&self) -> AccountStore {
        AccountStore::open(
            &self.stack.options.database_url(),
            self.stack.options.database_schema.as_deref(),
        )
        .await
        .expect("the accounts database opens")
    }

    /// `POST /api/auth/login` on `base` as is.
    pub(crate) async fn sign_in(&self, base: &str, email: &str, password: &str) -> Answer {
        self.call(
            Method::POST,
            &format!("{base}/api/auth/login"),
            None,
            Some(json!({"email": email, "password": password})),
            &[],
        )
        .await
    }

    /// Sign in on `base`: the token and the refresh cookie.
    pub(crate) async fn session(&self, base: &str, email: &str, password: &str) -> Session {
        let answer = self.sign_in(base, email, password).await;
        assert_eq!(answer.status, StatusCode::OK, "login: {}", answer.body);
        Session {
            token: answer.body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            cookie: set_refresh_cookie(&answer.headers).expect("a refresh cookie"),
        }
    }

    /// `POST /api/auth/refresh` on `base` with this refresh cookie (or none).
    pub(crate) async fn refresh(&self, base: &str, cookie: Option<&str>) -> Answer {
        let cookie = cookie.map(|c| format!("pulse_refresh={c}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        self.call(
            Method::POST,
            &format!("{base}/api/auth/refresh"),
            None,
            None,
            &headers,
        )
        .await
    }

    /// `POST /api/auth/logout` on `base` with this token and cookie.
    pub(crate) async fn logout(
        &self,
        base: &str,
        token: Option<&str>,
        cookie: Option<&str>,
    ) -> Answer {
        let cookie = cookie.map(|c| format!("pulse_refresh={c}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        self.call(
            Method::POST,
            &format!("{base}/api/auth/logout"),
            token,
            None,
            &headers,
        )
        .await
    }

    /// `GET /api/etl/jobs` on `base` with `token`: the status (200, or 401 once revoked).
    pub(crate) async fn jobs_status(&self, base: &str, token: &str) -> Answer {
        self.call(
            Method::GET,
            &format!("{base}/api/etl/jobs"),
            Some(token),
            None,
            &[],
        )
        .await
    }

    /// Wait until `token` is refused as revoked on `base` (the gateway polls the
    /// database's change counter every second).
    pub(crate) async fn until_revoked(&self, base: &str, token: &str) {
        eventually("the token is refused as revoked", || async {
            let answer = self.jobs_status(base, token).await;
            if answer.status == StatusCode::UNAUTHORIZED {
                assert_eq!(answer.body["code"], "token_revoked", "{}", answer.body);
                assert_eq!(
                    answer.headers["www-authenticate"],
                    "Bearer error=\"invalid_token\""
                );
                true
            } else {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                false
            }
        })
        .await;
    }

    /// The audit events of `action`, newest first (read from the database).
    pub(crate) async fn audit(&self, action: AuditAction) -> Vec<Value> {
        let page = self
            .accounts()
            .audit_events(&AuditQuery {
                action: Some(action),
                limit: 200,
                ..AuditQuery::default()
            })
            .await
            .expect("audit events");
        page.events
            .into_iter()
            .map(|e| serde_json::to_value(e).expect("serialisable"))
            .collect()
    }
}
