//! The engine on PostgreSQL with several instances: runs, conflicts, schedules fired
//! once, and events fanned out to every instance through LISTEN/NOTIFY.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::{ScriptJob, fast_config, wait_until};
use pulse_etl::{
    EngineError, JobEngine, JobRegistry, JobStore, PgStore, PgStoreOptions, RunEventKind, RunState,
    Schedule, StartRequest, StorePool,
};
use serde_json::json;
use sqlx::Connection;

struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new() -> Self {
        Self {
            url: std::env::var("PULSE_TEST_DATABASE_URL")
                .expect("PULSE_TEST_DATABASE_URL must name the test database"),
            name: format!("etl_engine_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn store(&self) -> Arc<dyn JobStore> {
        PgStore::connect_with(PgStoreOptions::new(&self.url).with_schema(&self.name))
            .await
            .unwrap()
            .into_dyn()
    }

    async fn drop_schema(self) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn runs_conflicts_and_events_across_instances() {
    let schema = Schema::new();
    let registry = || {
        JobRegistry::new()
            .with_job(ScriptJob::new("jira_sync"))
            .with_job(ScriptJob::new("github_sync"))
    };
    // One API-only instance and two workers, each with its own pool and listener.
    let api = JobEngine::launch(
        schema.store().await,
        registry(),
        fast_config().with_concurrency(0),
    )
    .await
    .unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            JobEngine::launch(schema.store().await, registry(), fast_config())
                .await
                .unwrap(),
        );
    }
    let mut events = api.subscribe();
    let started = api
        .start(
            StartRequest::new("jira_sync")
                .with_params(json!({"steps": 3}))
                .with_requested_by("user-1")
                .with_idempotency_key("k1"),
        )
        .await
        .unwrap();
    let replay = api
        .start(StartRequest::new("jira_sync").with_idempotency_key("k1"))
        .await
        .unwrap();
    assert!(!replay.created);
    assert_eq!(replay.run.id, started.run.id);

    let run = api.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.progress.done, 3);
    // The API instance saw the workers' events, in order, through NOTIFY.
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(RunEventKind::State { state, .. }) if *state == RunState::Succeeded)
    {
        let event = events.recv().await.unwrap();
        seen.push(event.kind);
    }
    assert!(matches!(
        seen[0],
        RunEventKind::State {
            state: RunState::Pending,
            ..
        }
    ));
    assert_eq!(
        seen.iter()
            .filter(|kind| matches!(kind, RunEventKind::Progress { .. }))
            .count(),
        3
    );

    let hold = api
        .start(StartRequest::new("github_sync").with_params(json!({"hold_attempts": 1})))
        .await
        .unwrap();
    wait_until("the held run executing", || async {
        api.run(hold.run.id).await.unwrap().state == RunState::Running
    })
    .await;
    assert!(matches!(
        api.start(StartRequest::new("github_sync")).await.unwrap_err(),
        EngineError::AlreadyActive { run_id, .. } if run_id == hold.run.id
    ));
    // A cancel through the API instance reaches the worker that runs it.
    api.cancel(hold.run.id).await.unwrap();
    let cancelled = api.wait_for_terminal(hold.run.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);

    for worker in &workers {
        worker.shutdown().await;
    }
    api.shutdown().await;
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn three_instances_fire_each_schedule_slot_once() {
    let schema = Schema::new();
    let mut engines = Vec::new();
    for _ in 0..3 {
        let job =
            ScriptJob::new("tick").with_schedule(Schedule::every(Duration::from_secs(1)).unwrap());
        engines.push(
            JobEngine::launch(
                schema.store().await,
                JobRegistry::new().with_job(job),
                fast_config(),
            )
            .await
            .unwrap(),
        );
    }
    let store = schema.store().await;
    wait_until("three scheduled runs finished", || async {
        store.count_states().await.unwrap().succeeded >= 3
    })
    .await;
    for engine in &engines {
        engine.shutdown().await;
    }
    let runs = store.list_runs(Some("tick"), 100).await.unwrap();
    let StorePool::Postgres(pool) = store.pool() else {
        unreachable!()
    };
    let fired: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT run_id) FROM etl_schedule_slots WHERE job_name = 'tick'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(usize::try_from(fired).unwrap(), runs.len());
    assert!(runs.iter().all(|run| run.state != RunState::Failed));
    drop(store);
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
async fn missed_slots_are_caught_up_across_a_restart() {
    use time::macros::datetime;
    let schema = Schema::new();
    let caught_up = [
        datetime!(2026-01-01 10:30 UTC),
        datetime!(2026-01-01 10:40 UTC),
    ];
    let slots = engine_support::catch_up_across_a_restart(
        || schema.store(),
        pulse_etl::CatchUp::All { max: 2 },
        &caught_up,
    )
    .await;
    let expected: Vec<_> = [
        datetime!(2026-01-01 09:50 UTC),
        datetime!(2026-01-01 10:00 UTC),
        datetime!(2026-01-01 10:30 UTC),
        datetime!(2026-01-01 10:40 UTC),
        datetime!(2026-01-01 10:50 UTC),
    ]
    .into_iter()
    .map(|slot| (slot, true))
    .collect();
    assert_eq!(slots, expected);
    schema.drop_schema().await;
}
