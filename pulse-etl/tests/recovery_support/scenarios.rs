//! The recovery scenarios, run against each store by `recovery_sqlite.rs` and
//! `recovery_postgres.rs`.

use std::sync::Arc;
use std::time::Duration;

use pulse_etl::{
    EngineConfig, JobEngine, JobRegistry, JobStore, RunEventKind, RunState, StartRequest,
};
use serde_json::json;

use super::{ChildConfig, ChildProcess, StoreSpec};
use crate::engine_support::{self, create_output_table, output_writes, wait_for_run, wait_until};

/// A store shared with child workers, and an API-only engine of the parent on it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub spec: StoreSpec,
    pub store: Arc<dyn JobStore>,
    pub api: JobEngine,
    pub entry: &'static str,
}

impl Setup {
    /// Opens `spec` in the parent, registers `jobs` and starts the API-only engine.
    pub async fn new(
        entry: &'static str,
        dir: tempfile::TempDir,
        spec: StoreSpec,
        jobs: &[&str],
    ) -> Self {
        let store = spec.open().await;
        create_output_table(&*store).await;
        let mut registry = JobRegistry::new();
        for job in jobs {
            registry.register(engine_support::ScriptJob::new(job));
        }
        // The parent only starts runs and observes: it executes nothing and does not sweep
        // (a sweep interval longer than any test), so recovery is the children's work.
        let api = JobEngine::launch(
            Arc::clone(&store),
            registry,
            EngineConfig::default()
                .with_concurrency(0)
                .with_sweep_interval(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        Self {
            dir,
            spec,
            store,
            api,
            entry,
        }
    }

    pub fn spec(&self) -> StoreSpec {
        self.spec.clone()
    }

    /// SIGSTOPs `child`. On SQLite, at a moment when it holds no write lock on the
    /// file: a process frozen inside a write blocks every other process of a SQLite
    /// file (PostgreSQL ends such a session by its idle-in-transaction timeout).
    pub async fn freeze(&self, child: &ChildProcess) {
        let StoreSpec::Sqlite(path) = &self.spec else {
            child.stop();
            return;
        };
        use sqlx::ConnectOptions;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_millis(300));
        loop {
            child.stop();
            let mut conn = options.connect().await.unwrap();
            let free = sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .is_ok();
            if free {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
                return;
            }
            child.resume();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    pub fn spawn(&self, config: &ChildConfig, name: &str) -> ChildProcess {
        ChildProcess::spawn(self.entry, config, self.dir.path(), name)
    }
}

pub fn slow_job() -> serde_json::Value {
    json!({"steps": 20, "step_ms": 100, "write_output": true})
}

pub async fn outcomes(store: &dyn JobStore, run_id: pulse_etl::RunId) -> Vec<String> {
    store
        .attempts(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome.unwrap_or_default())
        .collect()
}

pub async fn a_worker_killed_mid_run_is_finished_by_another_worker(
    make: impl AsyncFnOnce(&[&str]) -> Setup,
) {
    let setup = make(&["job"]).await;
    let started = setup
        .api
        .start(StartRequest::new("job").with_params(slow_job()))
        .await
        .unwrap();
    let config = ChildConfig::worker(setup.spec(), &["job"]);
    let mut first = setup.spawn(&config, "first");
    wait_for_run(&*setup.store, started.run.id, "two steps done", |run| {
        run.state == RunState::Running && run.progress.done >= 2
    })
    .await;
    first.kill();
    let _second = setup.spawn(&config, "second");

    let run = wait_for_run(&*setup.store, started.run.id, "terminal", |run| {
        run.state.is_terminal()
    })
    .await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    assert_eq!(
        outcomes(&*setup.store, run.id).await,
        ["lease_expired", "succeeded"]
    );
    assert_eq!(output_writes(&*setup.store, run.id).await, 1);
    // The second attempt resumed from the first one's checkpoint (step 1 at least:
    // the kill may fall between a progress report and its checkpoint).
    let resumed = run.result.unwrap()["resumed_from"].as_u64().unwrap();
    assert!(resumed >= 1, "resumed from {resumed}");
}

pub async fn a_worker_killed_and_restarted_at_once_still_recovers_the_run(
    make: impl AsyncFnOnce(&[&str]) -> Setup,
) {
    let setup = make(&["job"]).await;
    let started = setup
        .api
        .start(StartRequest::new("job").with_params(slow_job()))
        .await
        .unwrap();
    let config = ChildConfig::worker(setup.spec(), &["job"]);
    let mut first = setup.spawn(&config, "first");
    wait_for_run(&*setup.store, started.run.id, "one step done", |run| {
        run.progress.done >= 1
    })
    .await;
    first.kill();
    // The same configuration at once: a fresh instance id, so the old attempt is not
    // mistaken for its own; the lease sweep hands the run to it.
    let restarted = setup.spawn(&config, "restarted");

    let run = wait_for_run(&*setup.store, started.run.id, "terminal", |run| {
        run.state.is_terminal()
    })
    .await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    let attempts = setup.store.attempts(run.id).await.unwrap();
    assert_ne!(attempts[0].instance_id, attempts[1].instance_id);
    assert!(restarted.log_text().contains("child ready"));
    assert_eq!(output_writes(&*setup.store, run.id).await, 1);
}

pub async fn a_frozen_worker_resumed_after_its_lease_has_its_late_writes_rejected(
    make: impl AsyncFnOnce(&[&str]) -> Setup,
) {
    let setup = make(&["job"]).await;
    let started = setup
        .api
        .start(StartRequest::new("job").with_params(slow_job()))
        .await
        .unwrap();
    let config = ChildConfig::worker(setup.spec(), &["job"]);
    let frozen = setup.spawn(&config, "frozen");
    wait_for_run(&*setup.store, started.run.id, "two steps done", |run| {
        run.progress.done >= 2
    })
    .await;
    setup.freeze(&frozen).await;
    let _winner = setup.spawn(&config, "winner");
    wait_for_run(&*setup.store, started.run.id, "second attempt", |run| {
        run.attempts == 2
    })
    .await;
    frozen.resume();

    let run = wait_for_run(&*setup.store, started.run.id, "terminal", |run| {
        run.state.is_terminal()
    })
    .await;
    // The resumed worker finds out it lost the run and writes nothing.
    wait_until("the frozen worker noticed its lost lease", || async {
        let log = frozen.log_text();
        log.contains("lost its lease") || log.contains("rejected by the fence")
    })
    .await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    assert_eq!(
        outcomes(&*setup.store, run.id).await,
        ["lease_expired", "succeeded"]
    );
    assert_eq!(output_writes(&*setup.store, run.id).await, 1);
    // No line of the first attempt was stored after the run was reclaimed.
    let events = setup.store.events_since(0, 10_000).await.unwrap();
    let reclaimed_at = events
        .iter()
        .find(|e| {
            matches!(
                e.kind,
                RunEventKind::State {
                    state: RunState::Retrying,
                    ..
                }
            )
        })
        .unwrap()
        .seq;
    let late: Vec<_> = events
        .iter()
        .filter(|e| e.seq > reclaimed_at)
        .filter(|e| matches!(e.kind, RunEventKind::Log { attempt: 1, .. }))
        .collect();
    assert!(late.is_empty(), "late writes of attempt 1: {late:?}");
}

pub async fn workers_killed_at_random_lose_no_run(make: impl AsyncFnOnce(&[&str]) -> Setup) {
    const RUNS: usize = 12;
    const KILLS: usize = 4;
    let names: Vec<String> = (0..RUNS).map(|i| format!("job_{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let setup = make(&name_refs).await;
    let mut config = ChildConfig::worker(setup.spec(), &name_refs);
    // A generous lease, so a busy machine does not cause reclaims that no kill caused.
    config.lease_ms = 3000;
    config.heartbeat_ms = 200;
    let mut workers: Vec<ChildProcess> = (0..3)
        .map(|i| setup.spawn(&config, &format!("worker-{i}")))
        .collect();
    let mut ids = Vec::new();
    for name in &names {
        let started = setup
            .api
            .start(
                StartRequest::new(name.clone())
                    .with_params(json!({"steps": 6, "step_ms": 80, "write_output": true})),
            )
            .await
            .unwrap();
        ids.push(started.run.id);
    }

    // Kill a worker whenever the store shows progress since the last kill; restart it.
    let mut kills = 0;
    let mut last_done = 0;
    let mut restarts = 0;
    let deadline = tokio::time::Instant::now() + engine_support::PATIENCE;
    while kills < KILLS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kills never happened"
        );
        let counts = setup.store.count_states().await.unwrap();
        let done = counts.succeeded + counts.failed + counts.cancelled;
        if usize::try_from(done).unwrap() == RUNS {
            break;
        }
        let progressed = setup
            .store
            .active_runs(None)
            .await
            .unwrap()
            .iter()
            .map(|run| run.progress.done)
            .sum::<u64>()
            + done * 100;
        if progressed > last_done && counts.running > 0 {
            let victim = rand::random_range(0..workers.len());
            workers[victim].kill();
            restarts += 1;
            workers[victim] = setup.spawn(&config, &format!("restart-{restarts}"));
            kills += 1;
            last_done = progressed;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut extra_attempts = 0;
    let mut extra_writes = 0;
    for id in &ids {
        let run = wait_for_run(&*setup.store, *id, "terminal", |run| {
            run.state.is_terminal()
        })
        .await;
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        extra_attempts += run.attempts - 1;
        extra_writes += output_writes(&*setup.store, *id).await - 1;
        // Attempts of one run never overlap: each starts after the previous one ended.
        let attempts = setup.store.attempts(*id).await.unwrap();
        for pair in attempts.windows(2) {
            assert!(pair[1].started_at >= pair[0].finished_at.unwrap());
        }
    }
    assert!(
        extra_attempts as usize <= kills,
        "{extra_attempts} extra attempts for {kills} kills"
    );
    assert!(usize::try_from(extra_writes).unwrap() <= kills);
}

impl Drop for Setup {
    fn drop(&mut self) {
        // A PostgreSQL test's schema goes with it (best effort; Drop cannot await).
        let StoreSpec::Postgres { url, schema } = self.spec.clone() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
