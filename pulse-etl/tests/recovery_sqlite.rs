//! The "no run lost" matrix on SQLite, with real worker processes that are killed
//! (SIGKILL), frozen (SIGSTOP) and resumed. Every wait is on the store's state.

mod engine_support;
mod recovery_support;

use std::collections::HashMap;
use std::time::Duration;

use engine_support::wait_until;
use pulse_etl::{JobEngine, JobRegistry, JobStore, RunEventKind, SqliteStore};
use recovery_support::scenarios::{self, Setup};
use recovery_support::{ChildConfig, ChildMode, StoreSpec};

const ENTRY: &str = "recovery_child";

/// Not a test of its own: the entry point of the child worker processes.
#[test]
fn recovery_child() {
    recovery_support::child_main();
}

async fn sqlite_setup(jobs: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spec = StoreSpec::Sqlite(dir.path().join("jobs.db"));
    Setup::new(ENTRY, dir, spec, jobs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_finished_by_another_worker() {
    scenarios::a_worker_killed_mid_run_is_finished_by_another_worker(sqlite_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_and_restarted_at_once_still_recovers_the_run() {
    scenarios::a_worker_killed_and_restarted_at_once_still_recovers_the_run(sqlite_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_resumed_after_its_lease_has_its_late_writes_rejected() {
    scenarios::a_frozen_worker_resumed_after_its_lease_has_its_late_writes_rejected(sqlite_setup)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_no_run() {
    scenarios::workers_killed_at_random_lose_no_run(sqlite_setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_writing_leaves_a_consistent_store() {
    let jobs: Vec<String> = (0..6).map(|i| format!("noop_{i}")).collect();
    let job_refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    let setup = sqlite_setup(&job_refs).await;
    let mut config = ChildConfig::worker(setup.spec(), &job_refs);
    config.mode = ChildMode::Churn;
    config.concurrency = 4;
    let mut churn = setup.spawn(&config, "churn");
    wait_until("the churn wrote 60 runs", || async {
        setup.store.list_runs(None, 60).await.unwrap().len() >= 60
    })
    .await;
    // Kill at an arbitrary point of the write stream.
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..200))).await;
    churn.kill();
    setup.api.shutdown().await;

    // Reopen the file as a fresh process would.
    let path = setup.dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let pool = store.sqlite_pool().clone();
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_invariants(&store).await;

    // A new worker brings every run to an end.
    let mut registry = JobRegistry::new();
    for job in &job_refs {
        registry.register(engine_support::ScriptJob::new(job));
    }
    let engine = JobEngine::launch(
        store.clone().into_dyn(),
        registry,
        engine_support::fast_config().with_lease(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    wait_until("every run terminal", || async {
        store.active_runs(None).await.unwrap().is_empty()
    })
    .await;
    engine.shutdown().await;
    assert_invariants(&store).await;
    let counts = store.count_states().await.unwrap();
    assert_eq!(counts.failed, 0);
}

/// What must hold in any committed state of the store.
async fn assert_invariants(store: &SqliteStore) {
    let pool = store.sqlite_pool();
    // At most one run per job holds the active slot.
    let doubled: Vec<String> = sqlx::query_scalar(
        "SELECT job_name FROM etl_runs WHERE state IN ('pending','running','retrying') \
         GROUP BY job_name HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "two active runs of {doubled:?}");
    // Every executing run holds a lease, and has one attempt row per attempt.
    let leaseless: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM etl_runs WHERE state IN ('running','cancelling') \
         AND (lease_owner IS NULL OR lease_expires_at IS NULL)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(leaseless, 0);
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM etl_runs r WHERE r.attempts <> \
         (SELECT COUNT(*) FROM etl_attempts a WHERE a.run_id = r.id)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    // Every state change was written with its event: the latest state event of each
    // run names its current state.
    let runs = store.list_runs(None, 100_000).await.unwrap();
    let events = store.events_since(0, 1_000_000).await.unwrap();
    let mut last_state = HashMap::new();
    for event in events {
        if let RunEventKind::State { state, .. } = event.kind {
            last_state.insert(event.run_id, state);
        }
    }
    for run in runs {
        assert_eq!(last_state.get(&run.id), Some(&run.state), "{run:?}");
    }
}
