//! What the seed-job tests share: an engine over a SQLite file in a temp dir, fast
//! retry settings, and helpers to read runs, logs and requests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use pulse_etl::jobs::{FetchPolicy, SeedJobsConfig, register_seed_jobs};
use pulse_etl::{
    EngineConfig, JobEngine, JobRegistry, JobStore, LogLine, RetryPolicy, Run, RunEventKind, RunId,
    SqliteStore, StartRequest, StorePool,
};
use wiremock::MockServer;

/// An engine running both seed jobs, over a SQLite file that lives as long as it.
pub struct Harness {
    pub engine: JobEngine,
    pub pool: StorePool,
    _dir: tempfile::TempDir,
}

/// Retries of one request: 2, after 10 ms then 20 ms.
pub fn fast_fetch() -> FetchPolicy {
    FetchPolicy::default()
        .with_max_retries(2)
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50))
}

/// Run attempts: `max`, 10 ms apart.
pub fn fast_retry(max: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_attempts(max)
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(10))
        .with_jitter(0.0)
}

/// Both jobs against `base`, fast fetch retries, `attempts` attempts per run.
pub fn config(base: &str, attempts: u32) -> SeedJobsConfig {
    let mut config = SeedJobsConfig::against(base).with_fetch_policy(fast_fetch());
    config.jira = config.jira.with_retry_policy(fast_retry(attempts));
    config.github = config.github.with_retry_policy(fast_retry(attempts));
    config
}

impl Harness {
    /// Over a SQLite file in a temp dir.
    pub async fn start(config: SeedJobsConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
        Self::start_on(store.into_dyn(), dir, config).await
    }

    /// Over `store` (`dir` lives as long as the harness).
    pub async fn start_on(
        store: Arc<dyn JobStore>,
        dir: tempfile::TempDir,
        config: SeedJobsConfig,
    ) -> Self {
        let pool = store.pool();
        let mut registry = JobRegistry::new();
        register_seed_jobs(&mut registry, config).unwrap();
        let engine = JobEngine::launch(
            store,
            registry,
            EngineConfig::default()
                .with_poll_interval(Duration::from_millis(20))
                // A job that ignored its cancel would hang its test rather than be
                // aborted quietly after the grace.
                .with_cancel_grace(Duration::from_secs(3600))
                .with_schedules(false),
        )
        .await
        .unwrap();
        Self {
            engine,
            pool,
            _dir: dir,
        }
    }

    /// Starts a run of `job` with `params`.
    pub async fn start_run(&self, job: &str, params: serde_json::Value) -> RunId {
        let started = self
            .engine
            .start(StartRequest::new(job).with_params(params))
            .await
            .unwrap();
        started.run.id
    }

    /// Runs `job` to its end.
    pub async fn run(&self, job: &str, params: serde_json::Value) -> Run {
        let id = self.start_run(job, params).await;
        self.engine.wait_for_terminal(id).await.unwrap()
    }

    pub async fn logs(&self, id: RunId) -> Vec<LogLine> {
        self.engine.logs(id).await.unwrap()
    }

    /// Waits (on the event stream, not a timer) until run `id` reports `done >= at_least`.
    pub async fn progress_reached(&self, id: RunId, at_least: u64) {
        let mut events = self.engine.subscribe();
        if self.engine.run(id).await.unwrap().progress.done >= at_least {
            return;
        }
        loop {
            let event = events.recv().await.unwrap();
            if let RunEventKind::Progress { progress } = event.kind
                && event.run_id == id
                && progress.done >= at_least
            {
                return;
            }
        }
    }

    pub async fn count(&self, source: &str) -> u64 {
        pulse_etl::jobs::count_items(&self.pool, source)
            .await
            .unwrap()
    }
}

/// How many requests `server` received whose query has `name=value`.
pub async fn hits(server: &MockServer, name: &str, value: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|request| {
            request
                .url
                .query_pairs()
                .any(|(key, val)| key == name && val == value)
        })
        .count()
}

/// Every text the run exposes: its log lines, error and result.
pub async fn exposed_text(harness: &Harness, run: &Run) -> String {
    let mut text = String::new();
    for line in harness.logs(run.id).await {
        text.push_str(&line.message);
        text.push('\n');
    }
    text.push_str(&format!("{:?}\n{:?}\n", run.error, run.result));
    for event in harness.engine.events_since(0, 10_000).await.unwrap() {
        text.push_str(&serde_json::to_string(&event).unwrap());
    }
    text
}
