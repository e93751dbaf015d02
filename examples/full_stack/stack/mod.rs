//! The Pulse full stack: frontend (dashboard), backend (gateway) and ETL service, each
//! on its own listener, talking over real HTTP. `main.rs` parses the command line and
//! calls [`run`]; the integration tests start the same services with [`Stack::start`].

// Wired into the gateway step by step (sessions, admin API, audit).
#[allow(dead_code)]
pub mod accounts;
pub mod backend;
pub mod config;
pub mod etl;
#[path = "../fixture_source.rs"]
pub mod fixture_source;
pub mod frontend;
pub mod keys;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use anyhow::Context;
use tokio::net::TcpListener;

use self::accounts::AccountStore;
use self::accounts::cli::{CliError, Console};
use self::accounts::password::PasswordHashing;
use self::backend::BackendService;
use self::config::{Cli, Command, Options, Secrets, Service};
use self::etl::EtlService;
use self::serve::Running;

/// The services of one process.
pub struct Stack {
    /// The settings it was started with.
    pub options: Options,
    /// The resolved secrets (for restarts).
    #[allow(dead_code)]
    pub secrets: Secrets,
    /// The dashboard, if running here.
    pub frontend: Option<Running>,
    /// The gateway, if running here.
    pub backend: Option<BackendService>,
    /// The ETL service, if running here.
    pub etl: Option<EtlService>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options and secrets are left out on purpose.
        f.debug_struct("Stack")
            .field("frontend", &self.frontend)
            .field("backend", &self.backend)
            .field("etl", &self.etl)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Start `service` (or all) as `options` say. Addresses with port 0 get a free
    /// port, and the URLs the services use to reach each other follow.
    pub async fn start(service: Service, options: Options) -> anyhow::Result<Self> {
        let mut options = options;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating the data folder {}", options.data_dir.display()))?;
        let secrets = Secrets::resolve(&options)?;
        let tls_files = tls::files(&options)?;
        let acceptor = match &tls_files {
            Some((cert, key)) => Some(tls::acceptor(cert, key)?),
            None => None,
        };
        let runs = |s: Service| service == Service::All || service == s;

        // Bind first, so the URLs of port-0 listeners are known before anyone uses them.
        let etl_listener = if runs(Service::Etl) {
            Some(bind(&mut options.etl_addr, "ETL").await?)
        } else {
            None
        };
        let backend_listeners = if runs(Service::Backend) {
            Some((
                bind(&mut options.backend_addr, "backend").await?,
                bind(&mut options.metrics_addr, "metrics").await?,
            ))
        } else {
            None
        };
        let frontend_listener = if runs(Service::Frontend) {
            Some(bind(&mut options.frontend_addr, "frontend").await?)
        } else {
            None
        };

        let etl = match etl_listener {
            Some(listener) => Some(etl::start(&options, &secrets, listener).await?),
            None => None,
        };
        let backend = match backend_listeners {
            Some((listener, metrics)) => {
                Some(backend::start(&options, &secrets, listener, metrics, acceptor.clone()).await?)
            }
            None => None,
        };
        let frontend = match frontend_listener {
            Some(listener) => Some(frontend::start(
                &options,
                &secrets,
                listener,
                acceptor,
                tls_files.as_ref().map(|(cert, _)| cert.as_path()),
            )?),
            None => None,
        };
        Ok(Self {
            options,
            secrets,
            frontend,
            backend,
            etl,
        })
    }

    /// Stop the ETL service alone (the others keep running; used by the tests).
    #[allow(dead_code)]
    pub async fn stop_etl(&mut self) {
        if let Some(etl) = self.etl.take() {
            etl.stop().await;
        }
    }

    /// Start the ETL service again on its address (used by the tests).
    #[allow(dead_code)]
    pub async fn restart_etl(&mut self) -> anyhow::Result<()> {
        self.stop_etl().await;
        let mut addr = self.options.etl_addr;
        let listener = bind(&mut addr, "ETL").await?;
        self.etl = Some(etl::start(&self.options, &self.secrets, listener).await?);
        Ok(())
    }

    /// Graceful shutdown, outside in: frontend, backend, then the ETL service (whose
    /// engine hands running attempts back to the store).
    pub async fn shutdown(self) {
        if let Some(frontend) = self.frontend {
            frontend.stop().await;
        }
        if let Some(backend) = self.backend {
            backend.stop().await;
        }
        if let Some(etl) = self.etl {
            etl.stop().await;
        }
    }

    /// What to print at start-up: where things are, and the demo users.
    pub fn banner(&self) -> String {
        let scheme = self.options.public_scheme();
        let mut lines = vec![String::new()];
        if let Some(frontend) = &self.frontend {
            lines.push(format!(
                "  Pulse dashboard  {scheme}://{}/",
                config::connectable(frontend.addr)
            ));
        }
        if let Some(backend) = &self.backend {
            let addr = config::connectable(backend.server.addr);
            lines.push(format!(
                "  gateway          {scheme}://{addr}  (/api, /ws/job-status, /health)"
            ));
            lines.push(format!(
                "  metrics          http://{}/metrics  (Prometheus; keep it private)",
                config::connectable(backend.metrics.addr)
            ));
        }
        if let Some(etl) = &self.etl {
            lines.push(format!(
                "  ETL service      http://{}  (internal)",
                config::connectable(etl.server.addr)
            ));
            if let Some(fixture) = &etl.fixture {
                lines.push(format!(
                    "  fixture source   http://{}  (fake Jira/GitHub)",
                    fixture.addr
                ));
            }
        }
        if let Some(backend) = &self.backend {
            if self.options.demo_enabled() {
                lines.push(String::new());
                lines.push(
                    "  demo users:  admin@pulse.local / admin    (role admin: every permission)"
                        .to_owned(),
                );
                lines.push(
                    "               viewer@pulse.local / viewer  (role viewer: etl.access only)"
                        .to_owned(),
                );
            } else {
                lines.push("  no demo users seeded (--no-demo)".to_owned());
            }
            if backend.bootstrap_required {
                lines.push(format!("  {}", accounts::seed::NO_ADMINISTRATOR));
            }
        }
        lines.push(String::new());
        lines.push(format!(
            "  data folder: {}   Ctrl-C stops gracefully",
            self.options.data_dir.display()
        ));
        lines.push(String::new());
        lines.join("\n")
    }
}

/// Bind `addr`; a port-0 address is updated to the port the system chose.
async fn bind(addr: &mut std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(*addr)
        .await
        .with_context(|| format!("binding the {what} address {addr}"))?;
    *addr = listener.local_addr()?;
    Ok(listener)
}

/// Run the command: an accounts command, or the services until Ctrl-C (or SIGTERM),
/// then shut down gracefully.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let service = match cli.command {
        None => Service::All,
        Some(Command::Run(service)) => service,
        Some(command) => return accounts_command(&cli.options, &command).await,
    };
    telemetry::init_logs(cli.options.log_format);
    let _ = telemetry::prometheus();
    let stack = Stack::start(service, cli.options).await?;
    println!("{}", stack.banner());
    shutdown_signal().await;
    tracing::info!("shutting down");
    stack.shutdown().await;
    Ok(())
}

/// Run an accounts command on the database of `options`, with standard input and output.
async fn accounts_command(options: &Options, command: &Command) -> anyhow::Result<()> {
    // Warnings only: the command's own output is what the user reads.
    telemetry::init_cli_logs();
    let store = AccountStore::open(&options.database_url(), options.database_schema.as_deref())
        .await?
        .with_policy(options.session_policy());
    let hashing = PasswordHashing::new(options.argon2_memory_kib, options.argon2_iterations)?;
    let mut stdout = std::io::stdout().lock();
    let mut stdin = std::io::stdin().lock();
    let mut console = Console {
        store: &store,
        hashing: &hashing,
        origin: accounts::Origin::cli(),
        out: &mut stdout,
        input: &mut stdin,
    };
    let done: Result<(), CliError> = match command {
        Command::Users(command) => console.users(command).await,
        Command::Roles(command) => console.roles(command).await,
        Command::Run(_) => Ok(()),
    };
    Ok(done?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
