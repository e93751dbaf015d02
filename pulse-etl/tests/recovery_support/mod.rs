//! Child-process workers for the "no run lost" tests.
//!
//! A recovery test binary re-executes itself (`std::env::current_exe()`) running only
//! its `recovery_child` test, with [`CHILD_ENV`] holding a [`ChildConfig`]: the child
//! then acts as one engine instance until it is killed (or its life runs out), so the
//! parent can SIGKILL, SIGSTOP and SIGCONT a real worker process.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use pulse_etl::{
    EngineConfig, EngineError, JobEngine, JobRegistry, JobStore, PgStore, PgStoreOptions,
    SqliteStore, StartRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine_support::ScriptJob;

pub mod scenarios;

/// The environment variable that turns a test binary into a child worker.
pub const CHILD_ENV: &str = "PULSE_ETL_RECOVERY_CHILD";

/// Which store a child opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoreSpec {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database and schema.
    Postgres { url: String, schema: String },
}

impl StoreSpec {
    pub async fn open(&self) -> Arc<dyn JobStore> {
        match self {
            StoreSpec::Sqlite(path) => SqliteStore::open(path).await.unwrap().into_dyn(),
            StoreSpec::Postgres { url, schema } => {
                PgStore::connect_with(PgStoreOptions::new(url).with_schema(schema))
                    .await
                    .unwrap()
                    .into_dyn()
            }
        }
    }
}

/// What a child does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildMode {
    /// Executes runs of `jobs`.
    Worker,
    /// Executes runs and keeps starting new no-op runs of `jobs`, as fast as it can.
    Churn,
}

/// A child's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildConfig {
    pub store: StoreSpec,
    pub mode: ChildMode,
    pub jobs: Vec<String>,
    pub concurrency: usize,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub sweep_ms: u64,
    /// The child exits by itself after this long, so none outlives a failed test.
    pub max_life_secs: u64,
}

impl ChildConfig {
    pub fn worker(store: StoreSpec, jobs: &[&str]) -> Self {
        Self {
            store,
            mode: ChildMode::Worker,
            jobs: jobs.iter().map(|job| (*job).to_owned()).collect(),
            concurrency: 1,
            lease_ms: 2000,
            heartbeat_ms: 200,
            sweep_ms: 200,
            max_life_secs: 120,
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig::default()
            .with_concurrency(self.concurrency)
            .with_lease(Duration::from_millis(self.lease_ms))
            .with_heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
            .with_sweep_interval(Duration::from_millis(self.sweep_ms))
            .with_poll_interval(Duration::from_millis(25))
            .with_cancel_grace(Duration::from_millis(200))
            .with_shutdown_grace(Duration::from_millis(200))
    }

    pub fn registry(&self) -> JobRegistry {
        let mut registry = JobRegistry::new();
        for job in &self.jobs {
            registry.register(ScriptJob::new(job));
        }
        registry
    }
}

/// The body of each recovery binary's `recovery_child` test: a no-op unless this
/// process was started as a child.
pub fn child_main() {
    let Ok(config) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: ChildConfig = serde_json::from_str(&config).unwrap();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("pulse_etl=debug")
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = config.store.open().await;
        let engine = JobEngine::launch(store, config.registry(), config.engine_config())
            .await
            .unwrap();
        eprintln!("child ready: instance {}", engine.instance_id());
        let life = tokio::time::sleep(Duration::from_secs(config.max_life_secs));
        match config.mode {
            ChildMode::Worker => life.await,
            ChildMode::Churn => {
                tokio::select! {
                    () = life => {}
                    () = churn(&engine, &config.jobs) => {}
                }
            }
        }
        engine.shutdown().await;
    });
}

async fn churn(engine: &JobEngine, jobs: &[String]) {
    let mut i = 0_usize;
    loop {
        let job = &jobs[i % jobs.len()];
        i += 1;
        match engine
            .start(StartRequest::new(job.clone()).with_params(json!({"steps": 1})))
            .await
        {
            Ok(_) | Err(EngineError::AlreadyActive { .. }) => {}
            Err(err) => panic!("churn start failed: {err}"),
        }
        tokio::task::yield_now().await;
    }
}

/// A running child process; killed (SIGKILL) when dropped.
pub struct ChildProcess {
    child: Child,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Starts a child of this test binary running `entry` (its `recovery_child` test).
    pub fn spawn(entry: &str, config: &ChildConfig, log_dir: &Path, name: &str) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, serde_json::to_string(config).unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process freezes, heartbeats and all.
    pub fn stop(&self) {
        signal("-STOP", self.pid());
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal("-CONT", self.pid());
    }

    /// What the child logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid} failed");
}
