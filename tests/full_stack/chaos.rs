//! The chaos test of the scale-out topology (issue 11): three ETL instances on one
//! PostgreSQL schema and two gateways sharing one Redis, each a real process, under
//! steady client traffic through both gateways (logins, job lists, status, starts of
//! both jobs, run reads, WebSocket clients on each gateway), while the test kills
//! (SIGKILL) and restarts every ETL instance and every gateway in turn and freezes
//! (SIGSTOP) the ETL instance running an attempt until another instance has taken its
//! run over. Then it checks, from the database and the clients' records:
//!
//! - no run lost: every accepted start, every run, reaches a terminal state;
//! - never two active runs of one job, and no write by a fenced attempt;
//! - every schedule slot (`github_sync` every 3 s) fired once;
//! - every WebSocket client got every stored event of its span, once, in order;
//! - through a live gateway no request failed; requests to a killed gateway failed
//!   only until the client moved to the other one;
//! - the login throttle and a logout hold across gateways (through Redis);
//!
//! and prints the figures (the table in the README's scale-out section is one run's).
//!
//! Each service is this test binary run again as the example's `main`
//! (`cli::command_line_process`): the code under test is this checkout's, whatever
//! another checkout left under a shared target folder. About a minute; ignored without
//! `PULSE_TEST_DATABASE_URL` and `PULSE_TEST_REDIS_URL`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::harness::*;

const JWT_SECRET: &str = "chaos-test-jwt-secret-of-at-least-32-bytes";
const INTERNAL_KEYS: &str = "k1:chaos-test-internal-key-of-at-least-32-bytes";
/// The ETL lease: a dead or frozen instance's run is taken over after it (and a sweep).
const LEASE_MS: &str = "3000";
const SWEEP_MS: &str = "500";
/// `github_sync` runs by itself at every slot of this many seconds.
const SCHEDULE_SECS: u64 = 3;
/// The gateway's per-try ETL timeout: a frozen instance's request is sent elsewhere after it.
const ETL_TIMEOUT_MS: &str = "1500";
/// How long a client stays on the other gateway after one failed it.
const AWAY: Duration = Duration::from_secs(3);
const CLIENTS: usize = 4;
const WS_PER_GATEWAY: usize = 2;
const TERMINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// One service as a process of its own: this test binary running the example's `main`
/// with `argv` (see `cli::command_line_process`), its output appended to `log`.
struct Process {
    name: String,
    argv: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(name: &str, dir: &Path, argv: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            argv,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "cli::command_line_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "PULSE_TEST_CLI_ARGS",
                serde_json::to_string(&self.argv).expect("JSON"),
            )
            .env("RUST_LOG", "info")
            .env_remove("PULSE_DATABASE_URL")
            .env_remove("PULSE_REDIS_URL")
            .env_remove("PULSE_ETL_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the service starts");
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send `signal` (`-STOP`, `-CONT`) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// The engine's instance id, from its last "job engine started" log line.
    fn instance_id(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .rev()
            .filter(|line| line.contains("job engine started"))
            .find_map(|line| {
                let key = "\"instance_id\":\"";
                let at = line.find(key)? + key.len();
                line.get(at..at + 36).map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{} logged no instance id:\n{}", self.name, self.tail()))
    }

    /// The last lines of its log (for a failure's message).
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `base/health` answers 200 (its body), the process still running.
async fn ready(process: &mut Process, base: &str) -> Value {
    let http = client();
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            !process.exited(),
            "{} exited:\n{}",
            process.name,
            process.tail()
        );
        assert!(
            Instant::now() < deadline,
            "{} not ready in time:\n{}",
            process.name,
            process.tail()
        );
        let request = Request::get(format!("{base}/health"))
            .body(Full::default())
            .expect("request");
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(2), http.request(request)).await
            && response.status() == StatusCode::OK
            && let Ok(body) = response.into_body().collect().await
        {
            return serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client request and what came of it.
#[derive(Debug, Clone)]
struct Record {
    client: usize,
    gateway: usize,
    op: &'static str,
    start: Instant,
    end: Instant,
    /// The status and the error code of the answer, or the transport error.
    result: Result<(u16, String), String>,
}

/// A gateway's outage: killed at `from`, answering again at `to`.
#[derive(Debug, Clone, Copy)]
struct Outage {
    gateway: usize,
    from: Instant,
    to: Instant,
}

/// Send one request with a deadline; the answer's status and JSON body.
async fn send(
    http: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> Result<(u16, Value), String> {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let body = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(body.to_string()))
        }
        None => Full::default(),
    };
    let request = builder.body(body).expect("valid request");
    let exchange = async {
        let response = http.request(request).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 15 s".to_owned()))
}

/// The shared records of the traffic.
#[derive(Default)]
struct Traffic {
    records: Mutex<Vec<Record>>,
    accepted: Mutex<Vec<String>>,
}

/// One client: its home gateway, or the other one for [`AWAY`] after home failed it.
async fn client_loop(
    index: usize,
    gateways: Arc<Vec<String>>,
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
) {
    let http = client();
    let home = index % gateways.len();
    let mut away_until: Option<Instant> = None;
    let mut token: Option<String> = None;
    let mut last_run: Option<String> = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let gateway = if away_until.is_some_and(|until| Instant::now() < until) {
            (home + 1) % gateways.len()
        } else {
            home
        };
        let base = &gateways[gateway];
        let job = if (n / 7 + index as u64).is_multiple_of(2) {
            "jira_sync"
        } else {
            "github_sync"
        };
        let (op, method, url, body, headers): (_, _, _, _, Vec<(&str, String)>) =
            if token.is_none() || n % 40 == 39 {
                (
                    "login",
                    Method::POST,
                    format!("{base}/api/auth/login"),
                    Some(json!({"email": "admin@pulse.local", "password": "admin"})),
                    vec![],
                )
            } else {
                match n % 7 {
                    0 => (
                        "start",
                        Method::POST,
                        format!("{base}/api/etl/jobs/{job}/start"),
                        Some(json!({})),
                        vec![("idempotency-key", uuid::Uuid::new_v4().to_string())],
                    ),
                    1 | 4 => (
                        "status",
                        Method::GET,
                        format!("{base}/api/etl/jobs/status"),
                        None,
                        vec![],
                    ),
                    3 | 6 if last_run.is_some() => (
                        "run",
                        Method::GET,
                        format!(
                            "{base}/api/etl/runs/{}",
                            last_run.as_deref().unwrap_or_default()
                        ),
                        None,
                        vec![],
                    ),
                    _ => (
                        "jobs",
                        Method::GET,
                        format!("{base}/api/etl/jobs"),
                        None,
                        vec![],
                    ),
                }
            };
        let start = Instant::now();
        let bearer = if op == "login" {
            None
        } else {
            token.as_deref()
        };
        let result = send(&http, method, &url, bearer, body, &headers).await;
        let end = Instant::now();
        match &result {
            Err(_) => {
                // Failed by its gateway: move to the other one (or back home).
                away_until = if gateway == home {
                    Some(end + AWAY)
                } else {
                    None
                };
            }
            Ok((200, body)) if op == "login" => {
                token = body["access_token"].as_str().map(str::to_owned);
            }
            Ok((202, body)) if op == "start" => {
                if let Some(id) = body["run_id"].as_str() {
                    traffic
                        .accepted
                        .lock()
                        .expect("records")
                        .push(id.to_owned());
                    last_run = Some(id.to_owned());
                }
            }
            Ok(_) => {}
        }
        traffic.records.lock().expect("records").push(Record {
            client: index,
            gateway,
            op,
            start,
            end,
            result: result.map(|(status, body)| {
                (status, body["code"].as_str().unwrap_or_default().to_owned())
            }),
        });
        n += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

/// One WebSocket connection's record: the event ids received, in order.
#[derive(Debug, Default, Clone)]
struct WsSession {
    gateway: usize,
    ids: Vec<i64>,
    closed: bool,
}

/// A WebSocket client of one gateway: connected again whenever its connection ends
/// (its gateway killed), each connection a session of its own.
async fn ws_loop(
    gateway: usize,
    base: String,
    token: String,
    sessions: Arc<Mutex<Vec<WsSession>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws/job-status",
            base.trim_start_matches("http://")
        ))
        .expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().expect("header"),
        );
        let Ok(Ok((socket, _))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(request),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let index = {
            let mut all = sessions.lock().expect("sessions");
            all.push(WsSession {
                gateway,
                ..WsSession::default()
            });
            all.len() - 1
        };
        let (_, mut incoming) = socket.split();
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = async {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                } => return,
            };
            match next {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    let id = value["event_id"].as_i64().expect("event_id");
                    sessions.lock().expect("sessions")[index].ids.push(id);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        sessions.lock().expect("sessions")[index].closed = true;
    }
}

/// A gateway's counters: `pulse_upstream_retries_total{upstream="etl"}` and
/// `pulse_ws_resubscriptions_total` (0 when it does not answer).
async fn gateway_counters(metrics: &str) -> (u64, u64) {
    let http = client();
    let Ok((_, body)) = send_text(&http, &format!("{metrics}/metrics")).await else {
        return (0, 0);
    };
    let sum = |name: &str, label: &str| -> u64 {
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    (
        sum("pulse_upstream_retries_total", "\"etl\""),
        sum("pulse_ws_resubscriptions_total", ""),
    )
}

async fn send_text(
    http: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<(u16, String), String> {
    let request = Request::get(url).body(Full::default()).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(5), http.request(request))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// What one kill or freeze was, for the figures.
#[derive(Debug, Clone)]
struct Disruption {
    what: String,
    /// The ETL instance id that died (ETL kills and the freeze).
    instance: Option<String>,
    at: Instant,
    at_epoch: f64,
    /// When it answered again (restart) or was thawed.
    back: Instant,
    gateway: Option<usize>,
}

/// `(run, number, instance, started, finished, outcome)` of `etl_attempts`.
type AttemptRow = (String, i32, String, f64, Option<f64>, Option<String>);

/// The rows the checks read.
struct Db {
    events: Vec<(i64, String, String, String, Value)>,
    runs: HashMap<String, (String, String, i32, f64)>,
    attempts: Vec<AttemptRow>,
    slots: Vec<(f64, Option<String>)>,
}

async fn read_db(pool: &sqlx::PgPool, schema: &str) -> Db {
    let events: Vec<(i64, String, String, String, Value)> = sqlx::query_as(&format!(
        "SELECT seq, run_id::text, job_name, kind, payload FROM \"{schema}\".etl_events ORDER BY seq"
    ))
    .fetch_all(pool)
    .await
    .expect("events");
    let runs: Vec<(String, String, String, i32, f64)> = sqlx::query_as(&format!(
        "SELECT id::text, job_name, state, attempts, extract(epoch FROM created_at)::float8 \
         FROM \"{schema}\".etl_runs"
    ))
    .fetch_all(pool)
    .await
    .expect("runs");
    let attempts = sqlx::query_as(&format!(
        "SELECT run_id::text, number, instance_id::text, extract(epoch FROM started_at)::float8, \
         extract(epoch FROM finished_at)::float8, outcome FROM \"{schema}\".etl_attempts"
    ))
    .fetch_all(pool)
    .await
    .expect("attempts");
    let slots = sqlx::query_as(&format!(
        "SELECT extract(epoch FROM slot)::float8, run_id::text FROM \"{schema}\".etl_schedule_slots \
         WHERE job_name = 'github_sync'"
    ))
    .fetch_all(pool)
    .await
    .expect("slots");
    Db {
        events,
        runs: runs
            .into_iter()
            .map(|(id, job, state, attempts, created)| (id, (job, state, attempts, created)))
            .collect(),
        attempts,
        slots,
    }
}

/// The common flags of every service.
fn common(dir: &Path) -> Vec<String> {
    [
        "full_stack",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
        "--jwt-secret",
        JWT_SECRET,
        "--internal-keys",
        INTERNAL_KEYS,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
        "--shutdown-grace-ms",
        "500",
        // One JSON object a line: the test reads the ETL's instance id from its log.
        "--log-format",
        "json",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Redis: set PULSE_TEST_DATABASE_URL and PULSE_TEST_REDIS_URL"]
#[allow(clippy::too_many_lines)]
async fn chaos_kills_and_freezes_lose_nothing() {
    let (Ok(_), Ok(redis)) = (
        std::env::var("PULSE_TEST_DATABASE_URL"),
        std::env::var("PULSE_TEST_REDIS_URL"),
    ) else {
        eprintln!("PULSE_TEST_DATABASE_URL or PULSE_TEST_REDIS_URL not set; skipped");
        return;
    };
    let schema = crate::postgres::Schema::new("chaos");
    let dir = tempfile::tempdir().expect("temp dir");
    let db_flags: Vec<String> = schema.flags().map(str::to_owned).to_vec();

    // The topology: 3 ETL instances, then 2 gateways over them, one at a time (the
    // first of each runs the migrations).
    let etl_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let etl_urls: Vec<String> = etl_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut etls: Vec<Process> = etl_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let data = dir.path().join(format!("etl{i}"));
            let mut argv = common(&data);
            argv.extend(db_flags.iter().cloned());
            argv.extend(
                [
                    "--etl-addr",
                    &format!("127.0.0.1:{port}"),
                    "--fixture-latency-ms",
                    "100",
                    "--etl-lease-ms",
                    LEASE_MS,
                    "--etl-sweep-ms",
                    SWEEP_MS,
                    "--github-every-secs",
                    &SCHEDULE_SECS.to_string(),
                    // A comment on idle event streams, so a hub notices a freeze.
                    "--events-keep-alive-ms",
                    "500",
                    "etl",
                ]
                .map(str::to_owned),
            );
            Process::new(&format!("etl{i}"), dir.path(), argv)
        })
        .collect();
    let mut instance_ids: Vec<String> = Vec::new();
    for (etl, url) in etls.iter_mut().zip(&etl_urls) {
        etl.spawn();
        ready(etl, url).await;
        instance_ids.push(etl.instance_id());
    }
    let etl_list = etl_urls.join(",");
    let gateway_ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let gateway_urls: Vec<String> = gateway_ports
        .iter()
        .map(|(p, _)| format!("http://127.0.0.1:{p}"))
        .collect();
    let metrics_urls: Vec<String> = gateway_ports
        .iter()
        .map(|(_, m)| format!("http://127.0.0.1:{m}"))
        .collect();
    let mut gateways: Vec<Process> = gateway_ports
        .iter()
        .enumerate()
        .map(|(i, (port, metrics))| {
            let data = dir.path().join(format!("gateway{i}"));
            let mut argv = common(&data);
            argv.extend(db_flags.iter().cloned());
            argv.extend(
                [
                    "--backend-addr",
                    &format!("127.0.0.1:{port}"),
                    "--metrics-addr",
                    &format!("127.0.0.1:{metrics}"),
                    "--etl-url",
                    &etl_list,
                    "--redis-url",
                    &redis,
                    // Only Redis can carry a logout to the other gateway in time.
                    "--revocation-poll-ms",
                    "600000",
                    "--etl-timeout-ms",
                    ETL_TIMEOUT_MS,
                    "--breaker-open-ms",
                    "1000",
                    // Events happen while a hub moves: only its resume brings them.
                    "--ws-resubscribe-delay-ms",
                    "300",
                    // A frozen instance's stream goes silent: the hub moves after 2 s.
                    "--ws-upstream-idle-ms",
                    "2000",
                    "backend",
                ]
                .map(str::to_owned),
            );
            Process::new(&format!("gateway{i}"), dir.path(), argv)
        })
        .collect();
    for (gateway, url) in gateways.iter_mut().zip(&gateway_urls) {
        gateway.spawn();
        let health = ready(gateway, url).await;
        assert_eq!(
            health["instances"]["etl"].as_array().map(Vec::len),
            Some(3),
            "{health}"
        );
    }

    // The traffic: HTTP clients, WebSocket clients on each gateway.
    let pool = sqlx::PgPool::connect(schema.url())
        .await
        .expect("PostgreSQL");
    let started_epoch = now_epoch();
    let gateway_list = Arc::new(gateway_urls.clone());
    let traffic = Arc::new(Traffic::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_ws = Arc::new(AtomicBool::new(false));
    let sessions = Arc::new(Mutex::new(Vec::<WsSession>::new()));
    let admin = {
        let http = client();
        let (status, body) = send(
            &http,
            Method::POST,
            &format!("{}/api/auth/login", gateway_urls[0]),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "admin"})),
            &[],
        )
        .await
        .expect("login");
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("token").to_owned()
    };
    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        tasks.push(tokio::spawn(client_loop(
            index,
            Arc::clone(&gateway_list),
            Arc::clone(&traffic),
            Arc::clone(&stop),
        )));
    }
    let mut ws_tasks = Vec::new();
    for (gateway, url) in gateway_urls.iter().enumerate() {
        for _ in 0..WS_PER_GATEWAY {
            ws_tasks.push(tokio::spawn(ws_loop(
                gateway,
                url.clone(),
                admin.clone(),
                Arc::clone(&sessions),
                Arc::clone(&stop_ws),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every ETL instance killed and restarted in turn, then every gateway.
    let mut disruptions: Vec<Disruption> = Vec::new();
    let mut outages: Vec<Outage> = Vec::new();
    for i in 0..etls.len() {
        let (at, at_epoch) = (Instant::now(), now_epoch());
        etls[i].kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        etls[i].spawn();
        ready(&mut etls[i], &etl_urls[i]).await;
        disruptions.push(Disruption {
            what: format!("SIGKILL etl{i}"),
            instance: Some(instance_ids[i].clone()),
            at,
            at_epoch,
            back: Instant::now(),
            gateway: None,
        });
        instance_ids[i] = etls[i].instance_id();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (mut gateway_retries, mut hub_moves) = (0, 0);
    for g in 0..gateways.len() {
        let (retries, moves) = gateway_counters(&metrics_urls[g]).await;
        gateway_retries += retries;
        hub_moves += moves;
        let (at, at_epoch) = (Instant::now(), now_epoch());
        gateways[g].kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        gateways[g].spawn();
        ready(&mut gateways[g], &gateway_urls[g]).await;
        let back = Instant::now();
        outages.push(Outage {
            gateway: g,
            from: at,
            to: back,
        });
        disruptions.push(Disruption {
            what: format!("SIGKILL gateway{g}"),
            instance: None,
            at,
            at_epoch,
            back,
            gateway: Some(g),
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Freeze the instance running an attempt until another one has taken its run over
    // (the lease expired), then thaw it: its late writes must all be fenced.
    let running = || async {
        let rows: Vec<(String, i32, String)> = sqlx::query_as(&format!(
            "SELECT a.run_id::text, a.number, a.instance_id::text FROM \"{}\".etl_attempts a \
             JOIN \"{}\".etl_runs r ON r.id = a.run_id \
             WHERE a.finished_at IS NULL AND r.state = 'running' AND r.attempts = a.number",
            schema.name(),
            schema.name()
        ))
        .fetch_all(&pool)
        .await
        .expect("attempts");
        rows
    };
    let held = tokio::time::timeout(DEADLINE, async {
        let http = client();
        for round in 0_u32.. {
            if let Some(row) = running()
                .await
                .into_iter()
                .find(|(_, _, instance)| instance_ids.contains(instance))
            {
                return row;
            }
            // None running now: start one (a 409 means one is about to run).
            if round % 20 == 0 {
                let _ = send(
                    &http,
                    Method::POST,
                    &format!("{}/api/etl/jobs/jira_sync/start", gateway_urls[0]),
                    Some(&admin),
                    Some(json!({})),
                    &[],
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unreachable!("the loop returns")
    })
    .await
    .expect("an attempt runs");
    let (frozen_run, frozen_attempt, frozen_instance) = held;
    let frozen = instance_ids
        .iter()
        .position(|id| *id == frozen_instance)
        .expect("a known instance");
    let (at, at_epoch) = (Instant::now(), now_epoch());
    etls[frozen].signal("-STOP");
    let taken_over = tokio::time::timeout(DEADLINE, async {
        loop {
            let (attempts, state): (i32, String) = sqlx::query_as(&format!(
                "SELECT attempts, state FROM \"{}\".etl_runs WHERE id = $1::uuid",
                schema.name()
            ))
            .bind(&frozen_run)
            .fetch_one(&pool)
            .await
            .expect("run");
            if attempts > frozen_attempt || TERMINAL.contains(&state.as_str()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    etls[frozen].signal("-CONT");
    taken_over.expect("the frozen instance's run is taken over");
    disruptions.push(Disruption {
        what: format!("SIGSTOP etl{frozen}"),
        instance: Some(frozen_instance.clone()),
        at,
        at_epoch,
        back: Instant::now(),
        gateway: None,
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The login throttle and a logout hold across gateways (both restarted since:
    // the state is in Redis, not in either process).
    let nonce = u8::try_from(std::process::id() % 200).expect("small") + 20;
    let stranger = client_from([127, 0, 9, nonce]);
    for _ in 0..5 {
        let (status, body) = send(
            &stranger,
            Method::POST,
            &format!("{}/api/auth/login", gateway_urls[0]),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "guess"})),
            &[],
        )
        .await
        .expect("answer");
        // 429 when an earlier run from this address is still counted (15 minutes).
        assert!(status == 401 || status == 429, "{status} {body}");
    }
    let (status, body) = send(
        &stranger,
        Method::POST,
        &format!("{}/api/auth/login", gateway_urls[1]),
        None,
        Some(json!({"email": "admin@pulse.local", "password": "admin"})),
        &[],
    )
    .await
    .expect("answer");
    assert_eq!(status, 429, "the other gateway throttles too: {body}");
    let http = client();
    let (status, body) = send(
        &http,
        Method::POST,
        &format!("{}/api/auth/login", gateway_urls[1]),
        None,
        Some(json!({"email": "viewer@pulse.local", "password": "viewer"})),
        &[],
    )
    .await
    .expect("login");
    assert_eq!(status, 200, "{body}");
    let viewer = body["access_token"].as_str().expect("token").to_owned();
    let jobs_on = |g: usize| {
        let http = &http;
        let url = format!("{}/api/etl/jobs", gateway_urls[g]);
        let viewer = viewer.clone();
        async move {
            send(http, Method::GET, &url, Some(&viewer), None, &[])
                .await
                .expect("answer")
        }
    };
    assert_eq!(jobs_on(0).await.0, 200);
    let (status, body) = send(
        &http,
        Method::POST,
        &format!("{}/api/auth/logout", gateway_urls[1]),
        Some(&viewer),
        None,
        &[],
    )
    .await
    .expect("logout");
    assert!((200..300).contains(&status), "{status} {body}");
    let revoked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, body) = jobs_on(0).await;
            if status == 401 {
                return body["code"].as_str().unwrap_or_default().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the logout reaches the other gateway through Redis");
    assert_eq!(revoked, "token_revoked");

    // Stop the traffic; every run must end.
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client");
    }
    let stopped_epoch = now_epoch();
    for metrics in &metrics_urls {
        let (retries, moves) = gateway_counters(metrics).await;
        gateway_retries += retries;
        hub_moves += moves;
    }
    let db = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let db = read_db(&pool, schema.name()).await;
            let open = db
                .runs
                .values()
                .filter(|(_, state, _, created)| {
                    *created <= stopped_epoch && !TERMINAL.contains(&state.as_str())
                })
                .count();
            if open == 0 {
                return db;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every run started during the test ends");
    // Every WebSocket client still connected receives up to the last stored event.
    let last_seq = db.events.last().map_or(0, |e| e.0);
    eventually(
        "every open WebSocket session reaches the last event",
        || {
            let sessions = Arc::clone(&sessions);
            async move {
                sessions
                    .lock()
                    .expect("sessions")
                    .iter()
                    .filter(|s| !s.closed)
                    .all(|s| s.ids.last().is_some_and(|id| *id >= last_seq))
            }
        },
    )
    .await;
    stop_ws.store(true, Ordering::Relaxed);
    for task in ws_tasks {
        task.await.expect("ws client");
    }
    let records = traffic.records.lock().expect("records").clone();
    let accepted = traffic.accepted.lock().expect("records").clone();
    let sessions = sessions.lock().expect("sessions").clone();

    let mut failures: Vec<String> = Vec::new();

    // 1. No run lost.
    for id in &accepted {
        match db.runs.get(id) {
            Some((_, state, _, _)) if TERMINAL.contains(&state.as_str()) => {}
            other => failures.push(format!("accepted run {id} not terminal: {other:?}")),
        }
    }

    // 2. One active run per job at any moment (spans in the event sequence, from its
    // first event to its terminal state), and no write by a fenced attempt: no log line
    // of attempt n after attempt n+1 started running.
    let mut spans: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    let mut first_seq: HashMap<&str, (i64, &str)> = HashMap::new();
    let mut end_seq: HashMap<&str, i64> = HashMap::new();
    let mut running_seq: HashMap<(&str, u64), i64> = HashMap::new();
    for (seq, run, job, kind, payload) in &db.events {
        first_seq.entry(run).or_insert((*seq, job));
        if kind == "state" {
            let state = payload["state"].as_str().unwrap_or_default();
            if TERMINAL.contains(&state) {
                end_seq.entry(run).or_insert(*seq);
            }
            if state == "running" {
                let attempt = payload["attempt"].as_u64().unwrap_or_default();
                running_seq.entry((run, attempt)).or_insert(*seq);
            }
        }
    }
    for (run, (first, job)) in &first_seq {
        spans.entry((*job).to_owned()).or_default().push((
            *first,
            end_seq.get(run).copied().unwrap_or(i64::MAX),
            (*run).to_owned(),
        ));
    }
    for (job, spans) in &mut spans {
        spans.sort();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                failures.push(format!(
                    "{job}: runs {} and {} active at once (events {}–{} and {}–{})",
                    pair[0].2, pair[1].2, pair[0].0, pair[0].1, pair[1].0, pair[1].1
                ));
            }
        }
    }
    let mut fenced_checked = 0;
    for (seq, run, _, kind, payload) in &db.events {
        if kind != "log" {
            continue;
        }
        let attempt = payload["attempt"].as_u64().unwrap_or_default();
        if attempt == 0 {
            continue;
        }
        fenced_checked += 1;
        if let Some(later) = running_seq.get(&(run.as_str(), attempt + 1))
            && later < seq
        {
            failures.push(format!(
                "run {run}: attempt {attempt} wrote event {seq} after attempt {} started (event {later})",
                attempt + 1
            ));
        }
    }
    // The frozen attempt was ended by the sweep and stays so: its thawed worker's
    // finish was fenced.
    let frozen_row = db
        .attempts
        .iter()
        .find(|a| a.0 == frozen_run && a.1 == frozen_attempt);
    match frozen_row {
        Some((_, _, _, _, _, Some(outcome))) if outcome == "lease_expired" => {}
        other => failures.push(format!(
            "the frozen attempt {frozen_run}#{frozen_attempt} is not lease_expired: {other:?}"
        )),
    }

    // 3. Every schedule slot in the traffic's span fired once (a run, or skipped while
    // the job was busy) — the primary key forbids twice, so none is missing.
    let fired: HashSet<u64> = db.slots.iter().map(|(at, _)| at.round() as u64).collect();
    let first_slot = (started_epoch as u64 / SCHEDULE_SECS + 1) * SCHEDULE_SECS;
    let mut slots_expected = 0;
    let mut slot = first_slot;
    while (slot as f64) < stopped_epoch - 1.0 {
        slots_expected += 1;
        if !fired.contains(&slot) {
            failures.push(format!("schedule slot {slot} never fired"));
        }
        slot += SCHEDULE_SECS;
    }
    let slot_runs = db.slots.iter().filter(|(_, run)| run.is_some()).count();
    for (at, run) in &db.slots {
        if let Some(run) = run
            && *at <= stopped_epoch
            && !db
                .runs
                .get(run)
                .is_some_and(|r| TERMINAL.contains(&r.1.as_str()))
        {
            failures.push(format!("the run {run} of slot {at} did not end"));
        }
    }

    // 4. Every WebSocket session saw every stored event of its span once, in order.
    let all_seqs: Vec<i64> = db.events.iter().map(|e| e.0).collect();
    let mut events_delivered = 0;
    for (i, session) in sessions.iter().enumerate() {
        let (Some(first), Some(last)) = (session.ids.first(), session.ids.last()) else {
            continue;
        };
        let stored: Vec<i64> = all_seqs
            .iter()
            .copied()
            .filter(|s| s >= first && s <= last)
            .collect();
        events_delivered += session.ids.len();
        if session.ids != stored {
            let seen: HashSet<i64> = session.ids.iter().copied().collect();
            let missing: Vec<i64> = stored
                .iter()
                .filter(|s| !seen.contains(s))
                .copied()
                .collect();
            failures.push(format!(
                "WebSocket session {i} (gateway{}): {} events received, {} stored in its span; missing {:?}",
                session.gateway,
                session.ids.len(),
                stored.len(),
                &missing[..missing.len().min(10)]
            ));
        }
    }

    if hub_moves == 0 {
        failures.push("no WebSocket hub moved to another ETL instance".to_owned());
    }

    // 5. No request failed through a live gateway; one failed by a killed gateway only
    // until its client moved (its next request, on the other gateway, succeeded).
    let down = |r: &Record| {
        outages
            .iter()
            .any(|o| o.gateway == r.gateway && r.start <= o.to && r.end >= o.from)
    };
    let expected = |r: &Record| match (r.op, &r.result) {
        ("start", Ok((202 | 409, _))) => true,
        ("start" | "login", _) => matches!(r.result, Ok((200, _))),
        (_, Ok((200, _))) => true,
        _ => false,
    };
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        *by_op.entry(record.op).or_default() += 1;
        let kind = match &record.result {
            Ok((409, _)) if record.op == "start" => "409 job busy (start)".to_owned(),
            Ok((202, _)) => "202 accepted (start)".to_owned(),
            _ if expected(record) => "ok".to_owned(),
            Err(_) if down(record) => "killed gateway (client moves)".to_owned(),
            Err(error) => {
                failures.push(format!(
                    "{} on gateway{} failed: {error}",
                    record.op, record.gateway
                ));
                "FAILED: transport".to_owned()
            }
            Ok((status, code)) => {
                failures.push(format!(
                    "{} on gateway{} answered {status} {code}",
                    record.op, record.gateway
                ));
                format!("FAILED: {status} {code}")
            }
        };
        if record.result.is_err() && down(record) {
            let next = records[i + 1..].iter().find(|r| r.client == record.client);
            if let Some(next) = next
                && (next.gateway == record.gateway || !expected(next))
            {
                failures.push(format!(
                    "client {} failed again after gateway{} failed it: {:?}",
                    record.client, record.gateway, next.result
                ));
            }
        }
        *by_kind.entry(kind).or_default() += 1;
    }

    // The figures.
    let extra_attempts: i32 = db.runs.values().map(|r| (r.2 - 1).max(0)).sum();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for run in db.runs.values() {
        *states.entry(run.1.as_str()).or_default() += 1;
    }
    let mut table = String::new();
    table.push_str("| figure | value |\n|---|---|\n");
    table.push_str(&format!(
        "| client requests | {} ({}) |\n",
        records.len(),
        by_op
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (kind, n) in &by_kind {
        table.push_str(&format!("| answers: {kind} | {n} |\n"));
    }
    table.push_str(&format!(
        "| runs | {} ({}); {} accepted starts |\n",
        db.runs.len(),
        states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        accepted.len()
    ));
    table.push_str(&format!(
        "| extra attempts (runs taken over or retried) | {extra_attempts} |\n"
    ));
    table.push_str(&format!(
        "| requests sent again to another ETL instance (gateways) | {gateway_retries} |\n"
    ));
    table.push_str(&format!(
        "| WebSocket hub moves to another ETL instance (gateways) | {hub_moves} |\n"
    ));
    table.push_str(&format!(
        "| schedule slots in the span / fired once / with a run | {slots_expected} / {} / {slot_runs} |\n",
        slots_expected
    ));
    table.push_str(&format!(
        "| WebSocket sessions / events delivered / log lines fence-checked | {} / {events_delivered} / {fenced_checked} |\n",
        sessions.len()
    ));
    table.push_str(&format!("| kills and freezes | {} |\n", disruptions.len()));
    for d in &disruptions {
        let recovery = if let Some(g) = d.gateway {
            // The slowest client to be served again after the kill.
            let clients: HashSet<usize> = records
                .iter()
                .filter(|r| r.gateway == g && r.result.is_err() && r.end >= d.at)
                .map(|r| r.client)
                .collect();
            let worst = clients
                .iter()
                .filter_map(|c| {
                    records
                        .iter()
                        .find(|r| r.client == *c && r.end >= d.at && expected(r))
                        .map(|r| r.end.duration_since(d.at))
                })
                .max();
            format!(
                "{} clients moved, all served again after {}; back after {:.1} s",
                clients.len(),
                worst.map_or("—".to_owned(), |w| format!("{:.2} s", w.as_secs_f64())),
                d.back.duration_since(d.at).as_secs_f64()
            )
        } else {
            // The runs it was executing: how long until another instance ran them.
            let instance = d.instance.as_deref().unwrap_or_default();
            let held: Vec<_> = db
                .attempts
                .iter()
                .filter(|a| {
                    a.2 == instance && a.3 <= d.at_epoch && a.4.is_none_or(|f| f >= d.at_epoch)
                })
                .collect();
            let taken: Vec<f64> = held
                .iter()
                .filter_map(|a| {
                    db.attempts
                        .iter()
                        .find(|b| b.0 == a.0 && b.1 == a.1 + 1)
                        .map(|b| b.3 - d.at_epoch)
                })
                .collect();
            format!(
                "{} runs held, taken over after {}; back after {:.1} s",
                held.len(),
                if taken.is_empty() {
                    "—".to_owned()
                } else {
                    taken
                        .iter()
                        .map(|t| format!("{t:.2} s"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                d.back.duration_since(d.at).as_secs_f64()
            )
        };
        table.push_str(&format!("| {} | {recovery} |\n", d.what));
    }
    println!("\nchaos figures:\n{table}");

    pool.close().await;
    for mut process in etls.into_iter().chain(gateways) {
        process.kill();
    }
    if !failures.is_empty() {
        // The services' logs, for the post-mortem.
        eprintln!(
            "chaos: the services' logs are kept in {}",
            dir.keep().display()
        );
    }
    assert!(
        failures.is_empty(),
        "{} property violations:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
