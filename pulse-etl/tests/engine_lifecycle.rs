//! The engine facade: starting, conflicts, idempotency, events, summaries — on the
//! in-memory store in virtual time; what needs a shared database file (a start visible to
//! another connection, an API-only instance) on SQLite.

mod engine_support;

use std::sync::Arc;

use engine_support::{ScriptJob, fast_config, memory_engine, virtual_time, wait_for_state};
use pulse_etl::{
    EngineError, JobEngine, JobRegistry, JobStore, RunEventKind, RunState, SqliteStore,
    StartRequest,
};
use serde_json::json;

fn registry() -> JobRegistry {
    JobRegistry::new()
        .with_job(ScriptJob::new("jira_sync"))
        .with_job(ScriptJob::new("github_sync"))
}

#[tokio::test(start_paused = true)]
async fn runs_a_job_and_streams_its_events_in_order() {
    let (engine, _store) = memory_engine(registry(), virtual_time()).await;
    let mut events = engine.subscribe();
    let started = engine
        .start(
            StartRequest::new("jira_sync")
                .with_params(json!({"steps": 2}))
                .with_requested_by("user-7"),
        )
        .await
        .unwrap();
    assert!(started.created);
    assert_eq!(started.run.state, RunState::Pending);
    assert_eq!(started.run.requested_by.as_deref(), Some("user-7"));

    let run = engine.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 1);
    assert_eq!(run.progress.done, 2);
    assert_eq!(run.progress.total, Some(2));
    assert_eq!(run.result, Some(json!({"attempt": 1, "resumed_from": 0})));
    assert!(run.started_at.is_some() && run.finished_at.is_some());

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("succeeded") {
        let event = events.recv().await.unwrap();
        assert_eq!(event.run_id, run.id);
        seen.push(match event.kind {
            RunEventKind::State { state, .. } => state.to_string(),
            RunEventKind::Progress { .. } => "progress".into(),
            RunEventKind::Log { .. } => "log".into(),
            _ => "other".into(),
        });
    }
    assert_eq!(
        seen,
        [
            "pending",
            "running",
            "progress",
            "log",
            "progress",
            "log",
            "succeeded"
        ]
    );
    let logs = engine.logs(run.id).await.unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].message, "step 1 done");
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn starts_are_validated() {
    let (engine, _store) = memory_engine(registry(), virtual_time()).await;
    match engine.start(StartRequest::new("nope")).await.unwrap_err() {
        EngineError::UnknownJob { name, allowed } => {
            assert_eq!(name, "nope");
            assert_eq!(allowed, ["github_sync", "jira_sync"]);
        }
        other => panic!("expected UnknownJob, got {other:?}"),
    }
    let err = engine
        .start(StartRequest::new("jira_sync").with_params(json!({"steps": "many"})))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidParams { .. }), "{err:?}");
    assert_eq!(err.status(), 400);
    assert!(engine.recent_runs(10).await.unwrap().is_empty());
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_second_start_conflicts_and_force_replaces_the_active_run() {
    let job = ScriptJob::new("jira_sync");
    let release = Arc::clone(&job.release);
    let (engine, _store) = memory_engine(JobRegistry::new().with_job(job), virtual_time()).await;
    let hold = json!({"hold_attempts": 1});
    let first = engine
        .start(StartRequest::new("jira_sync").with_params(hold.clone()))
        .await
        .unwrap();
    wait_for_state(&engine, first.run.id, RunState::Running).await;

    match engine
        .start(StartRequest::new("jira_sync"))
        .await
        .unwrap_err()
    {
        EngineError::AlreadyActive { run_id, .. } => assert_eq!(run_id, first.run.id),
        other => panic!("expected AlreadyActive, got {other:?}"),
    }

    let forced = engine
        .start(
            StartRequest::new("jira_sync")
                .with_params(json!({"steps": 1}))
                .with_force(true),
        )
        .await
        .unwrap();
    assert_eq!(forced.replaced, Some(first.run.id));
    let old = wait_for_state(&engine, first.run.id, RunState::Cancelled).await;
    assert_eq!(old.attempts, 1);
    let new = engine.wait_for_terminal(forced.run.id).await.unwrap();
    assert_eq!(new.state, RunState::Succeeded);
    release.add_permits(10);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retried_start_with_the_same_idempotency_key_returns_the_first_answer() {
    let (engine, _store) = memory_engine(registry(), virtual_time()).await;
    let request = StartRequest::new("jira_sync").with_idempotency_key("req-1");
    let first = engine.start(request.clone()).await.unwrap();
    let second = engine.start(request).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.run.id, first.run.id);
    assert_eq!(engine.runs_for_job("jira_sync", 10).await.unwrap().len(), 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_start_is_committed_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db"))
        .await
        .unwrap()
        .into_dyn();
    let engine = JobEngine::launch(store, registry(), fast_config().with_concurrency(0))
        .await
        .unwrap();
    let started = engine.start(StartRequest::new("jira_sync")).await.unwrap();
    // Another connection (another process could do the same) sees it at once.
    let other = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    let seen = other.get_run(started.run.id).await.unwrap().unwrap();
    assert_eq!(seen, started.run);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_only_instance_leaves_execution_to_workers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let api_store = SqliteStore::open(&path).await.unwrap().into_dyn();
    let api = JobEngine::launch(
        Arc::clone(&api_store),
        registry(),
        fast_config().with_concurrency(0),
    )
    .await
    .unwrap();
    let mut events = api.subscribe();
    let started = api.start(StartRequest::new("github_sync")).await.unwrap();
    assert_eq!(api.health().await.concurrency, 0);

    let worker_store = SqliteStore::open(&path).await.unwrap().into_dyn();
    let worker = JobEngine::launch(worker_store, registry(), fast_config())
        .await
        .unwrap();
    let run = api.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    // The API instance streams the worker's events (read back from the shared file).
    loop {
        let event = events.recv().await.unwrap();
        if let RunEventKind::State {
            state: RunState::Succeeded,
            ..
        } = event.kind
        {
            break;
        }
    }
    worker.shutdown().await;
    api.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn jobs_status_summary_logs_and_health() {
    let (engine, _store) = memory_engine(registry(), virtual_time()).await;
    let jobs = engine.jobs().await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|job| job.latest_run.is_none() && !job.active)
    );

    let started = engine
        .start(StartRequest::new("jira_sync").with_params(json!({"steps": 1})))
        .await
        .unwrap();
    engine.wait_for_terminal(started.run.id).await.unwrap();
    let jobs = engine.jobs().await.unwrap();
    let jira = jobs.iter().find(|job| job.name == "jira_sync").unwrap();
    assert_eq!(jira.state, Some(RunState::Succeeded));
    assert_eq!(jira.latest_run.as_ref().unwrap().id, started.run.id);
    assert_eq!(jira.max_attempts, 3);

    let summary = engine.status_summary().await.unwrap();
    assert_eq!(summary.counts.succeeded, 1);
    assert_eq!(summary.jobs.len(), 2);
    let jira = summary
        .jobs
        .iter()
        .find(|job| job.name == "jira_sync")
        .unwrap();
    assert_eq!(jira.last_run_id, Some(started.run.id));
    assert_eq!(jira.state, Some(RunState::Succeeded));
    assert_eq!(summary.instance_id, engine.instance_id());
    let json = serde_json::to_value(&summary).unwrap();
    assert!(json["generated_at"].is_string());

    assert_eq!(engine.attempts(started.run.id).await.unwrap().len(), 1);
    let missing = pulse_etl::RunId::new();
    assert!(matches!(
        engine.logs(missing).await.unwrap_err(),
        EngineError::NotFound { .. }
    ));
    assert!(matches!(
        engine.runs_for_job("nope", 10).await.unwrap_err(),
        EngineError::UnknownJob { .. }
    ));
    assert!(matches!(
        engine.cancel(started.run.id).await.unwrap_err(),
        EngineError::AlreadyFinished {
            state: RunState::Succeeded,
            ..
        }
    ));

    let health = engine.health().await;
    assert!(health.healthy);
    assert_eq!(health.store, "memory");
    engine.shutdown().await;
    let health = engine.health().await;
    assert!(!health.healthy && health.shutting_down);
    assert!(matches!(
        engine
            .start(StartRequest::new("jira_sync"))
            .await
            .unwrap_err(),
        EngineError::ShuttingDown
    ));
}
