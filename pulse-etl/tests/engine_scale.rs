//! The worker pool: concurrency limit, graceful shutdown, lease reclaim and fencing —
//! several instances on one in-memory store, in virtual time — and schedules across
//! instances on one SQLite file.

mod engine_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine_support::{Gauge, ScriptJob, fast_config, virtual_time, wait_for_state, wait_until};
use pulse_etl::{
    InstanceId, JobEngine, JobRegistry, JobStore, ManualWallClock, MemoryStore, RunState, Schedule,
    SqliteStore, StartRequest, StorePool, TokioWallClock, WallClock,
};
use serde_json::json;
use tokio::sync::Semaphore;

async fn file_store(dir: &tempfile::TempDir) -> Arc<dyn JobStore> {
    SqliteStore::open(dir.path().join("jobs.db"))
        .await
        .unwrap()
        .into_dyn()
}

#[tokio::test(start_paused = true)]
async fn the_pool_never_runs_more_than_its_concurrency() {
    let gauge = Arc::new(Gauge::default());
    let release = Arc::new(Semaphore::new(0));
    let mut registry = JobRegistry::new();
    for i in 0..6 {
        registry.register(ScriptJob::new(&format!("job_{i}")).sharing(&gauge, &release));
    }
    let store = MemoryStore::new().into_dyn();
    let engine = JobEngine::launch(
        Arc::clone(&store),
        registry,
        virtual_time().with_concurrency(2),
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let started = engine
            .start(StartRequest::new(format!("job_{i}")).with_params(json!({"hold_attempts": 1})))
            .await
            .unwrap();
        ids.push(started.run.id);
    }
    wait_until("two runs executing", || async {
        gauge.current.load(Ordering::SeqCst) == 2
    })
    .await;
    let counts = store.count_states().await.unwrap();
    assert_eq!((counts.running, counts.pending), (2, 4));
    assert_eq!(engine.running_here(), 2);

    release.add_permits(6);
    for id in ids {
        let run = engine.wait_for_terminal(id).await.unwrap();
        assert_eq!(run.state, RunState::Succeeded);
    }
    assert_eq!(gauge.max.load(Ordering::SeqCst), 2);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_running_attempts_back_to_another_instance() {
    let store = MemoryStore::new().into_dyn();
    let first = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        virtual_time(),
    )
    .await
    .unwrap();
    let started = first
        .start(
            StartRequest::new("job")
                .with_params(json!({"hold_attempts": 1, "ignore_cancel": true, "steps": 1})),
        )
        .await
        .unwrap();
    wait_for_state(&first, started.run.id, RunState::Running).await;
    first.shutdown().await;

    let handed_back = store.get_run(started.run.id).await.unwrap().unwrap();
    assert_eq!(handed_back.state, RunState::Retrying);
    let attempts = store.attempts(started.run.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("handed_back"));

    let second = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        virtual_time(),
    )
    .await
    .unwrap();
    let run = second.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    assert_ne!(second.instance_id(), first.instance_id());
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_short_attempts_finish() {
    let store = MemoryStore::new().into_dyn();
    let engine = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        virtual_time().with_shutdown_grace(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let started = engine
        .start(StartRequest::new("job").with_params(json!({"steps": 3, "step_ms": 50})))
        .await
        .unwrap();
    wait_for_state(&engine, started.run.id, RunState::Running).await;
    engine.shutdown().await;
    let run = store.get_run(started.run.id).await.unwrap().unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_workers_run_is_reclaimed_by_the_sweeper() {
    let clock = TokioWallClock::new(time::OffsetDateTime::now_utc());
    let store = MemoryStore::new().into_dyn();
    let api = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        fast_config()
            .with_clock(Arc::new(clock))
            .with_concurrency(0),
    )
    .await
    .unwrap();
    let started = api
        .start(StartRequest::new("job").with_params(json!({"steps": 1})))
        .await
        .unwrap();
    // A worker that claims the run and dies without a heartbeat.
    let dead = store
        .claim(
            InstanceId::new(),
            &["job".to_owned()],
            clock.now(),
            Duration::from_millis(300),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.run.id, started.run.id);

    let worker = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        fast_config().with_clock(Arc::new(clock)),
    )
    .await
    .unwrap();
    let run = worker.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    let attempts = store.attempts(run.id).await.unwrap();
    assert_eq!(attempts[0].outcome.as_deref(), Some("lease_expired"));
    assert_eq!(attempts[1].instance_id, worker.instance_id());
    worker.shutdown().await;
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fire_each_schedule_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut engines = Vec::new();
    for _ in 0..3 {
        let job =
            ScriptJob::new("tick").with_schedule(Schedule::every(Duration::from_secs(1)).unwrap());
        let engine = JobEngine::launch(
            file_store(&dir).await,
            JobRegistry::new().with_job(job),
            fast_config(),
        )
        .await
        .unwrap();
        engines.push(engine);
    }
    let store = file_store(&dir).await;
    wait_until("three scheduled runs finished", || async {
        store.count_states().await.unwrap().succeeded >= 3
    })
    .await;
    for engine in &engines {
        engine.shutdown().await;
    }
    let runs = store.list_runs(Some("tick"), 100).await.unwrap();
    assert!(runs.iter().all(|run| run.requested_by.is_none()));
    let StorePool::Sqlite(pool) = store.pool() else {
        unreachable!()
    };
    let slots: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM etl_schedule_slots WHERE job_name = 'tick'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let fired: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT run_id) FROM etl_schedule_slots WHERE job_name = 'tick'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Every run belongs to exactly one slot, and every slot made at most one run,
    // although three instances tried each.
    assert_eq!(usize::try_from(fired).unwrap(), runs.len());
    assert!(slots >= fired);
    assert!(runs.iter().all(|run| run.state != RunState::Failed));
}

#[tokio::test(start_paused = true)]
async fn a_manual_clock_expires_leases_and_fences_the_stalled_attempt() {
    let clock = Arc::new(ManualWallClock::new(time::OffsetDateTime::now_utc()));
    let config = || {
        fast_config()
            .with_clock(clock.clone())
            .with_lease(Duration::from_secs(60))
            // Nothing renews or sweeps on its own within the test: only the clock moves.
            .with_heartbeat_interval(Duration::from_secs(3600))
            .with_sweep_interval(Duration::from_secs(3600))
    };
    let store = MemoryStore::new().into_dyn();
    let stalled_job = ScriptJob::new("job");
    let release = Arc::clone(&stalled_job.release);
    let stalled = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(stalled_job),
        config(),
    )
    .await
    .unwrap();
    let started = stalled
        .start(
            StartRequest::new("job")
                .with_params(json!({"hold_attempts": 1, "ignore_cancel": true})),
        )
        .await
        .unwrap();
    wait_for_state(&stalled, started.run.id, RunState::Running).await;

    // Past the lease, a newly started instance recovers the run at start-up.
    clock.advance(Duration::from_secs(61));
    let rescuer = JobEngine::launch(
        Arc::clone(&store),
        JobRegistry::new().with_job(ScriptJob::new("job")),
        config(),
    )
    .await
    .unwrap();
    let run = rescuer.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!((run.state, run.attempts), (RunState::Succeeded, 2));

    // The stalled attempt wakes up and finishes: its late success is rejected.
    release.add_permits(1);
    wait_until("the stalled attempt gave up", || async {
        stalled.running_here() == 0
    })
    .await;
    let attempts = store.attempts(run.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("lease_expired"), Some("succeeded")]);
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap(), run);
    rescuer.shutdown().await;
    stalled.shutdown().await;
}
