//! Command line, environment and the secrets kept in the data folder.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use rand::RngCore;

use super::accounts::cli::{RolesCommand, UsersCommand};
use super::accounts::{DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, SessionPolicy};
use super::backend::auth::hasher::HashingPool;
use super::serve::{self, Limits};

/// Pulse full stack: dashboard (frontend), API gateway (backend) and ETL job service.
// No `Debug`: the options hold secrets, and nothing should ever print them.
#[derive(Clone, Parser)]
#[command(
    name = "full_stack",
    about = "Pulse: a browser dashboard, an API gateway and an ETL job service, talking over real HTTP.",
    long_about = "Pulse: a browser dashboard (frontend, :3000), an API gateway (backend, :8000) and an \
internal ETL job service (:8001). Without a subcommand all three run in this process, each on its own \
listener; `frontend`, `backend` or `etl` runs one alone (they find each other with PULSE_BACKEND_URL and \
PULSE_ETL_URL). `users` and `roles` manage the gateway's accounts on the same database, also while the \
stack runs.\n\nSecrets not given (PULSE_JWT_SECRET, PULSE_INTERNAL_KEYS) are generated once and kept \
in the data folder (mode 0600), so separate processes and restarts share them. Secrets are never printed."
)]
pub struct Cli {
    /// Which service to run (default: all three), or an accounts command.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every service.
    #[command(flatten)]
    pub options: Options,
}

/// What the program does: run services, or manage accounts.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run services.
    #[command(flatten)]
    Run(Service),
    /// Manage the gateway's users (on the same database; also while the stack runs).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the gateway's roles and their permissions.
    #[command(subcommand)]
    Roles(RolesCommand),
}

/// One service, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Service {
    /// All three services in one process (the default).
    All,
    /// The dashboard: static assets; /api/*, /ws/* and /health forwarded to the backend.
    Frontend,
    /// The API gateway: login, JWT, RBAC, the /api/etl/* proxy, /ws/job-status, /health; /metrics on its own listener.
    Backend,
    /// The internal ETL job service: job engine, store and its API behind internal auth.
    Etl,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every address, key, secret and URL, by flag and by environment variable.
/// (No `Debug`: it holds secrets.)
#[derive(Clone, Args)]
pub struct Options {
    /// Where the dashboard listens.
    #[arg(long, env = "PULSE_FRONTEND_ADDR", default_value = "127.0.0.1:3000")]
    pub frontend_addr: SocketAddr,
    /// Where the gateway listens.
    #[arg(long, env = "PULSE_BACKEND_ADDR", default_value = "127.0.0.1:8000")]
    pub backend_addr: SocketAddr,
    /// Where the ETL service listens.
    #[arg(long, env = "PULSE_ETL_ADDR", default_value = "127.0.0.1:8001")]
    pub etl_addr: SocketAddr,
    /// Where the gateway serves Prometheus metrics (`GET /metrics`); keep it private.
    #[arg(long, env = "PULSE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// The gateway's URL as the frontend reaches it [default: from --backend-addr].
    #[arg(long, env = "PULSE_BACKEND_URL")]
    pub backend_url: Option<String>,
    /// The ETL service's URL as the gateway reaches it [default: from --etl-addr].
    #[arg(long, env = "PULSE_ETL_URL")]
    pub etl_url: Option<String>,
    /// Redis for what several gateways share: login throttle counters, revocation
    /// announcements, the response cache [default: none, all in this process].
    #[arg(long, env = "PULSE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// How often a gateway reads the accounts database's revocation change counter,
    /// in milliseconds (with Redis, other gateways' changes also arrive at once).
    #[arg(long, env = "PULSE_REVOCATION_POLL_MS", default_value_t = 1000, hide = true,
        value_parser = clap::value_parser!(u64).range(10..))]
    pub revocation_poll_ms: u64,
    /// The job store and the gateway's accounts: `sqlite://path` or `postgres://…`
    /// [default: SQLite file in the data folder].
    #[arg(
        long,
        env = "PULSE_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
    /// PostgreSQL only: keep the tables in this schema (letters, digits, `_`) [default: public].
    #[arg(long, env = "PULSE_DATABASE_SCHEMA", global = true)]
    pub database_schema: Option<String>,
    /// The data folder: SQLite database, generated secrets, self-signed certificate.
    #[arg(long, env = "PULSE_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// HS256 secret of user tokens, at least 32 bytes [default: generated, kept in the data folder].
    #[arg(long, env = "PULSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// More HS256 secrets accepted for user tokens, never used to sign, comma-separated:
    /// the previous PULSE_JWT_SECRET after a rotation, or the next one before the
    /// gateways sign with it [default: the lines of secrets/jwt_verify_secrets in the
    /// data folder, if that file exists].
    #[arg(long, env = "PULSE_JWT_VERIFY_SECRETS", hide_env_values = true)]
    pub jwt_verify_secrets: Option<String>,
    /// Internal keys `id:secret,…`: the first is sent, all are accepted [default: generated, kept in the data folder].
    #[arg(long, env = "PULSE_INTERNAL_KEYS", hide_env_values = true)]
    pub internal_keys: Option<String>,
    /// Lifetime of access tokens (JWT), in seconds.
    #[arg(
        long,
        env = "PULSE_ACCESS_TOKEN_TTL_SECS",
        default_value_t = DEFAULT_ACCESS_TTL.as_secs(),
        value_parser = clap::value_parser!(u64).range(10..=86_400)
    )]
    pub access_token_ttl_secs: u64,
    /// Lifetime of each refresh token (the `pulse_refresh` cookie), in seconds; each
    /// refresh starts a new one.
    #[arg(
        long,
        env = "PULSE_REFRESH_TOKEN_TTL_SECS",
        default_value_t = DEFAULT_REFRESH_TTL.as_secs(),
        value_parser = clap::value_parser!(u64).range(60..=31_536_000)
    )]
    pub refresh_token_ttl_secs: u64,
    /// Days the audit trail keeps its events (older ones are pruned every hour).
    #[arg(
        long,
        env = "PULSE_AUDIT_RETENTION_DAYS",
        default_value_t = 90,
        value_parser = clap::value_parser!(u32).range(1..=36_500)
    )]
    pub audit_retention_days: u32,
    /// Seed the demo users admin@pulse.local/admin and viewer@pulse.local/viewer.
    #[arg(long, env = "PULSE_DEMO", default_value_t = true, action = ArgAction::Set)]
    pub demo: bool,
    /// Seed nobody (same as --demo false).
    #[arg(long)]
    pub no_demo: bool,
    /// Log format.
    #[arg(
        long,
        env = "PULSE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// PEM certificate (chain): the backend and the frontend serve HTTPS.
    #[arg(long, env = "PULSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PULSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate (chain) of the ETL service's listener: it serves HTTPS, and the
    /// gateway's default PULSE_ETL_URL is https://.
    #[arg(long, env = "PULSE_ETL_TLS_CERT", requires = "etl_tls_key")]
    pub etl_tls_cert: Option<PathBuf>,
    /// PEM private key of --etl-tls-cert.
    #[arg(long, env = "PULSE_ETL_TLS_KEY", requires = "etl_tls_cert")]
    pub etl_tls_key: Option<PathBuf>,
    /// Mutual TLS: the ETL service accepts only clients with a certificate signed by
    /// these PEM CA certificates (needs --etl-tls-cert).
    #[arg(long, env = "PULSE_ETL_CLIENT_CA_FILE", requires = "etl_tls_cert")]
    pub etl_client_ca_file: Option<PathBuf>,
    /// Mutual TLS: the gateway's PEM client certificate (chain) for the ETL hop.
    #[arg(long, env = "PULSE_ETL_CLIENT_CERT", requires = "etl_client_key")]
    pub etl_client_cert: Option<PathBuf>,
    /// PEM private key of --etl-client-cert.
    #[arg(long, env = "PULSE_ETL_CLIENT_KEY", requires = "etl_client_cert")]
    pub etl_client_key: Option<PathBuf>,
    /// PEM certificates the gateway trusts for an https:// PULSE_ETL_URL (the CA of the
    /// ETL's certificate) [default: --etl-tls-cert, when this process has it].
    #[arg(long, env = "PULSE_ETL_CA_FILE")]
    pub etl_ca_file: Option<PathBuf>,
    /// Generate a self-signed certificate for localhost into the data folder and serve HTTPS.
    #[arg(long, env = "PULSE_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub self_signed: bool,
    /// Jira base URL for `jira_sync` [default: the bundled fixture source].
    #[arg(long, env = "PULSE_JIRA_URL")]
    pub jira_url: Option<String>,
    /// Jira bearer token.
    #[arg(long, env = "PULSE_JIRA_TOKEN", hide_env_values = true)]
    pub jira_token: Option<String>,
    /// GitHub API base URL for `github_sync` [default: the bundled fixture source].
    #[arg(long, env = "PULSE_GITHUB_URL")]
    pub github_url: Option<String>,
    /// GitHub bearer token.
    #[arg(long, env = "PULSE_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// GitHub repository `owner/repo` for `github_sync`.
    #[arg(long, env = "PULSE_GITHUB_REPO", default_value = "pulse/demo")]
    pub github_repo: String,
    /// Fixture source: wait before every answer, in milliseconds.
    #[arg(
        long,
        env = "PULSE_FIXTURE_LATENCY_MS",
        default_value_t = 400,
        hide = true
    )]
    pub fixture_latency_ms: u64,
    /// ETL: how long a run's lease lasts without a heartbeat, in milliseconds (renewed
    /// every third of it); a dead instance's runs are taken over after it and a sweep.
    #[arg(long, env = "PULSE_ETL_LEASE_MS", default_value_t = 30_000, hide = true,
        value_parser = clap::value_parser!(u64).range(300..))]
    pub etl_lease_ms: u64,
    /// ETL: how often expired leases are swept, in milliseconds.
    #[arg(long, env = "PULSE_ETL_SWEEP_MS", default_value_t = 15_000, hide = true,
        value_parser = clap::value_parser!(u64).range(100..))]
    pub etl_sweep_ms: u64,
    /// ETL: run `github_sync` by itself every this many seconds (each slot fires once
    /// across instances) [default: no schedule].
    #[arg(long, env = "PULSE_GITHUB_EVERY_SECS", hide = true,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub github_every_secs: Option<u64>,
    /// ETL: days finished runs and their logs are kept (the latest run of each job
    /// always is); 0 keeps everything.
    #[arg(long, env = "PULSE_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// ETL: days events (state changes, progress: the live feed's history) are kept, at
    /// most `--retention-days`.
    #[arg(long, env = "PULSE_EVENT_RETENTION_DAYS", default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub event_retention_days: u32,
    /// ETL: what `github_sync`'s schedule does with slots missed while no instance ran:
    /// `skip`, `latest` (one run, for the newest) or `all:<n>` (the newest n, in order).
    #[arg(
        long,
        env = "PULSE_GITHUB_CATCH_UP",
        default_value = "latest",
        hide = true
    )]
    pub github_catch_up: pulse_etl::CatchUp,
    /// Gateway: how long the WebSocket hub waits before subscribing to another ETL
    /// instance when its event stream broke, in milliseconds (tests: events happen
    /// during the switch, and must be replayed).
    #[arg(
        long,
        env = "PULSE_WS_RESUBSCRIBE_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub ws_resubscribe_delay_ms: u64,
    /// ETL: how often an idle event stream sends a keep-alive comment, in milliseconds.
    #[arg(long, env = "PULSE_EVENTS_KEEP_ALIVE_MS", default_value_t = 15_000,
        value_parser = clap::value_parser!(u64).range(100..))]
    pub events_keep_alive_ms: u64,
    /// Gateway: how long the WebSocket hub's ETL event stream may send nothing (not even
    /// a keep-alive comment) before the hub takes it for dead and resubscribes to
    /// another instance, in milliseconds; keep it a few ETL keep-alive intervals.
    #[arg(long, env = "PULSE_WS_UPSTREAM_IDLE_MS", default_value_t = 45_000,
        value_parser = clap::value_parser!(u64).range(100..))]
    pub ws_upstream_idle_ms: u64,
    /// How long the circuit to the ETL service stays open, in milliseconds.
    #[arg(long, env = "PULSE_BREAKER_OPEN_MS", default_value_t = 5000)]
    pub breaker_open_ms: u64,
    /// How long the gateway waits for the ETL service's answer headers (504 after), in
    /// milliseconds; timeouts count against the circuit like refusals and 5xx.
    #[arg(long, env = "PULSE_ETL_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub etl_timeout_ms: u64,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    #[arg(
        long,
        env = "PULSE_ARGON2_MEMORY_KIB",
        default_value_t = 19456,
        hide = true,
        global = true
    )]
    pub argon2_memory_kib: u32,
    /// Argon2id time cost (iterations).
    #[arg(
        long,
        env = "PULSE_ARGON2_ITERATIONS",
        default_value_t = 2,
        hide = true,
        global = true
    )]
    pub argon2_iterations: u32,
    /// Password checks run at once at most (each takes the Argon2id memory cost)
    /// [default: the number of cores].
    #[arg(long, env = "PULSE_LOGIN_HASH_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub login_hash_workers: Option<u16>,
    /// Logins that may wait for a password check; past them a login is answered
    /// 503 at once [default: 4 per worker].
    #[arg(long, env = "PULSE_LOGIN_HASH_QUEUE")]
    pub login_hash_queue: Option<u16>,
    /// Longest wait for in-flight requests at shutdown, in milliseconds.
    #[arg(long, env = "PULSE_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Every listener: longest wait for a complete request head, and for a new
    /// connection's first request, in milliseconds (slowloris).
    #[arg(
        long,
        env = "PULSE_HEADER_READ_TIMEOUT_MS",
        default_value_t = millis(serve::DEFAULT_HEADER_READ_TIMEOUT),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub header_read_timeout_ms: u64,
    /// Every listener: close a connection with no request in flight for this long, in
    /// milliseconds (HTTP/1.1 keep-alive also ends at the header-read timeout).
    #[arg(
        long,
        env = "PULSE_IDLE_TIMEOUT_MS",
        default_value_t = millis(serve::DEFAULT_IDLE_TIMEOUT),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub idle_timeout_ms: u64,
    /// Every TLS listener: longest TLS handshake, in milliseconds.
    #[arg(
        long,
        env = "PULSE_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = millis(serve::DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub tls_handshake_timeout_ms: u64,
    /// Every listener: most connections open at once; beyond it new ones wait in the
    /// kernel's backlog until one closes. Keep the sum below the open-file limit.
    #[arg(
        long,
        env = "PULSE_MAX_CONNECTIONS",
        default_value_t = serve::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
}

/// `duration` in whole milliseconds (for the flags' defaults).
const fn millis(duration: Duration) -> u64 {
    duration.as_secs() * 1000 + duration.subsec_millis() as u64
}

impl Options {
    /// Whether the demo users are seeded.
    pub fn demo_enabled(&self) -> bool {
        self.demo && !self.no_demo
    }

    /// The password-hashing pool's threads and queue.
    pub fn login_hash_pool(&self) -> (usize, usize) {
        let workers = self
            .login_hash_workers
            .map_or_else(HashingPool::default_workers, usize::from);
        let queue = self
            .login_hash_queue
            .map_or_else(|| HashingPool::default_queue(workers), usize::from);
        (workers, queue)
    }

    /// How long access and refresh tokens live.
    pub fn session_policy(&self) -> SessionPolicy {
        SessionPolicy {
            access_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
        }
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The limits of every listener.
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            max_connections: self.max_connections,
            grace: self.shutdown_grace(),
        }
    }

    /// The scheme the backend and the frontend serve.
    pub fn public_scheme(&self) -> &'static str {
        if self.tls_cert.is_some() || self.self_signed {
            "https"
        } else {
            "http"
        }
    }

    /// The gateway's URL as the frontend reaches it.
    pub fn backend_url(&self) -> String {
        self.backend_url.clone().unwrap_or_else(|| {
            format!(
                "{}://{}",
                self.public_scheme(),
                connectable(self.backend_addr)
            )
        })
    }

    /// The ETL service's URL as the gateway reaches it.
    pub fn etl_url(&self) -> String {
        self.etl_url.clone().unwrap_or_else(|| {
            let scheme = if self.etl_tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", connectable(self.etl_addr))
        })
    }

    /// The database URL (the job store's and the gateway's accounts).
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("pulse.db").display()))
    }
}

/// A listen address as a client can reach it (`0.0.0.0` → `127.0.0.1`).
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// The secrets every service needs, resolved once.
#[derive(Clone)]
pub struct Secrets {
    /// HS256 secret of user tokens.
    pub jwt_secret: String,
    /// More secrets user tokens are verified with (a rotation's previous or next).
    pub jwt_verify_secrets: Vec<String>,
    /// `id:secret,…`.
    pub internal_keys: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

impl Secrets {
    /// From the options, else from (or newly into) the data folder.
    pub fn resolve(options: &Options) -> anyhow::Result<Self> {
        let dir = options.data_dir.join("secrets");
        let jwt_secret = match &options.jwt_secret {
            Some(secret) => secret.clone(),
            None => load_or_create(&dir.join("jwt_secret"), || random_hex(32))?,
        };
        if jwt_secret.len() < 32 {
            bail!("PULSE_JWT_SECRET must be at least 32 bytes");
        }
        let verify = match &options.jwt_verify_secrets {
            Some(list) => list.clone(),
            None => fs::read_to_string(dir.join("jwt_verify_secrets")).unwrap_or_default(),
        };
        // Comma-separated, or one per line; a line starting with `#` is a comment.
        let jwt_verify_secrets: Vec<String> = verify
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(str::to_owned)
            .collect();
        if jwt_verify_secrets.iter().any(|secret| secret.len() < 32) {
            bail!("every PULSE_JWT_VERIFY_SECRETS secret must be at least 32 bytes");
        }
        let internal_keys = match &options.internal_keys {
            Some(keys) => keys.clone(),
            None => load_or_create(&dir.join("internal_keys"), || {
                format!("gw:{}", random_hex(32))
            })?,
        };
        Ok(Self {
            jwt_secret,
            jwt_verify_secrets,
            internal_keys,
        })
    }

    /// The secret of the first (sent) internal key: also the key signing internal
    /// tokens (the tests call the ETL with it).
    #[allow(dead_code)]
    pub fn primary_internal_secret(&self) -> anyhow::Result<&str> {
        self.internal_keys
            .split(',')
            .next()
            .and_then(|entry| entry.trim().split_once(':'))
            .map(|(_, secret)| secret)
            .context("PULSE_INTERNAL_KEYS must be `id:secret,…`")
    }
}

/// `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trimmed content of `path`, or `make()` written there first (mode 0600).
fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(existing) = fs::read_to_string(path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let value = make();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(value.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(value)
        }
        // Another process created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(fs::read_to_string(path)?.trim().to_owned())
        }
        Err(err) => Err(err).with_context(|| format!("creating {}", path.display())),
    }
}
