//! The "no run lost" matrix on PostgreSQL: worker processes killed, frozen and resumed,
//! and database connections dropped under the engine's feet. Each test uses a fresh
//! schema of the database named by `PULSE_TEST_DATABASE_URL`.

mod engine_support;
mod recovery_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine_support::{ScriptJob, create_output_table, fast_config, output_writes, wait_until};
use pulse_etl::{
    JobEngine, JobRegistry, JobStore, PgStore, PgStoreOptions, RetryPolicy, RunEventKind, RunState,
    StartRequest,
};
use recovery_support::StoreSpec;
use recovery_support::scenarios::{self, Setup};
use serde_json::json;
use sqlx::Connection;

const ENTRY: &str = "recovery_child";

/// Not a test of its own: the entry point of the child worker processes.
#[test]
fn recovery_child() {
    recovery_support::child_main();
}

fn database_url() -> String {
    std::env::var("PULSE_TEST_DATABASE_URL")
        .expect("PULSE_TEST_DATABASE_URL must name the test database")
}

fn fresh_schema() -> String {
    format!("etl_recovery_{}", uuid::Uuid::new_v4().simple())
}

async fn pg_setup(jobs: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spec = StoreSpec::Postgres {
        url: database_url(),
        schema: fresh_schema(),
    };
    Setup::new(ENTRY, dir, spec, jobs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn a_worker_killed_mid_run_is_finished_by_another_worker() {
    scenarios::a_worker_killed_mid_run_is_finished_by_another_worker(pg_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn a_worker_killed_and_restarted_at_once_still_recovers_the_run() {
    scenarios::a_worker_killed_and_restarted_at_once_still_recovers_the_run(pg_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn a_frozen_worker_resumed_after_its_lease_has_its_late_writes_rejected() {
    scenarios::a_frozen_worker_resumed_after_its_lease_has_its_late_writes_rejected(pg_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn workers_killed_at_random_lose_no_run() {
    scenarios::workers_killed_at_random_lose_no_run(pg_setup).await;
}

/// Terminates every server connection of the stores under test, over and over, while
/// two engines claim, heartbeat, report, finish and sweep: a database restart as the
/// engines see it. Afterwards every run must have finished, none stranded `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn connections_dropped_during_claim_finish_and_sweep_strand_no_run() {
    const RUNS: usize = 8;
    let url = database_url();
    let schema = fresh_schema();
    let application = format!("pulse_chaos_{}", &schema[13..25]);
    let options = PgStoreOptions::new(&url)
        .with_schema(&schema)
        .with_application_name(&application);
    let names: Vec<String> = (0..RUNS).map(|i| format!("job_{i}")).collect();
    let registry = || {
        let mut registry = JobRegistry::new();
        for name in &names {
            registry.register(
                ScriptJob::new(name).with_policy(
                    RetryPolicy::default()
                        .with_max_attempts(50)
                        .with_initial_backoff(Duration::from_millis(20))
                        .with_max_backoff(Duration::from_millis(200)),
                ),
            );
        }
        registry
    };
    let mut engines = Vec::new();
    let mut stores: Vec<Arc<dyn JobStore>> = Vec::new();
    for _ in 0..2 {
        let store = PgStore::connect_with(options.clone())
            .await
            .unwrap()
            .into_dyn();
        stores.push(Arc::clone(&store));
        engines.push(
            JobEngine::launch(store, registry(), fast_config())
                .await
                .unwrap(),
        );
    }
    let observer = PgStore::connect_with(PgStoreOptions::new(&url).with_schema(&schema))
        .await
        .unwrap();
    create_output_table(&observer).await;
    let mut ids = Vec::new();
    for name in &names {
        let started = engines[0]
            .start(
                StartRequest::new(name.clone())
                    .with_params(json!({"steps": 8, "step_ms": 40, "write_output": true})),
            )
            .await
            .unwrap();
        ids.push(started.run.id);
    }

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut terminated = 0_i64;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS killed",
        )
        .bind(&application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        terminated += killed;
    }
    assert!(terminated > 0, "the chaos must have hit some connections");

    wait_until("every run finished", || async {
        observer.active_runs(None).await.unwrap().is_empty()
    })
    .await;
    for engine in &engines {
        engine.shutdown().await;
    }

    let mut last_state = HashMap::new();
    for event in observer.events_since(0, 1_000_000).await.unwrap() {
        if let RunEventKind::State { state, .. } = event.kind {
            last_state.insert(event.run_id, state);
        }
    }
    for id in ids {
        let run = observer.get_run(id).await.unwrap().unwrap();
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        assert_eq!(last_state.get(&id), Some(&RunState::Succeeded));
        let attempts = observer.attempts(id).await.unwrap();
        assert_eq!(attempts.len(), run.attempts as usize);
        assert!(attempts.iter().all(|a| a.finished_at.is_some()));
        assert!(output_writes(&observer, id).await >= 1);
    }
    drop(stores);
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut admin)
        .await;
}
