//! Retries with backoff, fatal errors, panics, timeouts, cancels and checkpoints — on
//! the in-memory store in virtual time (`start_paused`, a wall clock following tokio's),
//! so backoffs and grace periods pass without waiting and every run decides alike.

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::{ScriptJob, memory_engine, virtual_time, wait_for_state, wait_until};
use pulse_etl::{JobEngine, JobRegistry, JobStore, RetryPolicy, RunState, StartRequest};
use serde_json::{Value, json};

async fn engine_with(job: ScriptJob) -> (JobEngine, Arc<dyn JobStore>) {
    memory_engine(JobRegistry::new().with_job(job), virtual_time()).await
}

async fn run_script(engine: &JobEngine, params: Value) -> pulse_etl::Run {
    let started = engine
        .start(StartRequest::new("job").with_params(params))
        .await
        .unwrap();
    engine.wait_for_terminal(started.run.id).await.unwrap()
}

fn outcomes(attempts: &[pulse_etl::Attempt]) -> Vec<&str> {
    attempts
        .iter()
        .map(|a| a.outcome.as_deref().unwrap_or("-"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_backoff_until_success() {
    let (engine, _store) = engine_with(ScriptJob::new("job")).await;
    let run = run_script(&engine, json!({"fail_attempts": 2, "steps": 1})).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 3);
    assert_eq!(run.error, None);
    let attempts = engine.attempts(run.id).await.unwrap();
    assert_eq!(outcomes(&attempts), ["failed", "failed", "succeeded"]);
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 503 on attempt 1"));
    // Each retry waited at least the jittered backoff after the failure.
    for pair in attempts.windows(2) {
        let failed_at = pair[0].finished_at.unwrap();
        assert!(pair[1].started_at >= failed_at + Duration::from_millis(12));
    }
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_out_of_attempts_fails_with_the_last_error() {
    let job = ScriptJob::new("job").with_policy(
        RetryPolicy::default()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(10)),
    );
    let (engine, _store) = engine_with(job).await;
    let run = run_script(&engine, json!({"fail_attempts": 10})).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 2);
    assert_eq!(run.error.as_deref(), Some("HTTP 503 on attempt 2"));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_are_not_retried() {
    let (engine, _store) = engine_with(ScriptJob::new("job")).await;
    let run = run_script(&engine, json!({"fatal": true})).await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.attempts, 1);
    assert_eq!(run.error.as_deref(), Some("bad credentials"));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_is_retried() {
    let (engine, _store) = engine_with(ScriptJob::new("job")).await;
    let run = run_script(&engine, json!({"panic": true, "fail_attempts": 1})).await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    let attempts = engine.attempts(run.id).await.unwrap();
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("script panic on attempt 1")
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_aborted_and_retried() {
    let job = ScriptJob::new("job").with_timeout(Duration::from_millis(200));
    let (engine, _store) = engine_with(job).await;
    // The first attempt ignores its cancellation token: the engine aborts it after the
    // cancel grace.
    let run = run_script(
        &engine,
        json!({"hold_attempts": 1, "ignore_cancel": true, "steps": 1}),
    )
    .await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    let attempts = engine.attempts(run.id).await.unwrap();
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("timed out after 0.2s")
    );
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cooperative_job_stops_when_cancelled() {
    let (engine, _store) = engine_with(ScriptJob::new("job")).await;
    let started = engine
        .start(StartRequest::new("job").with_params(json!({"hold_attempts": 1})))
        .await
        .unwrap();
    wait_for_state(&engine, started.run.id, RunState::Running).await;
    let cancelling = engine.cancel(started.run.id).await.unwrap();
    assert_eq!(cancelling.state, RunState::Cancelling);
    let run = engine.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.attempts, 1);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_ignoring_its_cancel_is_aborted_after_the_grace() {
    let job = ScriptJob::new("job");
    let release = Arc::clone(&job.release);
    let (engine, _store) = engine_with(job).await;
    let started = engine
        .start(
            StartRequest::new("job")
                .with_params(json!({"hold_attempts": 1, "ignore_cancel": true})),
        )
        .await
        .unwrap();
    wait_for_state(&engine, started.run.id, RunState::Running).await;
    engine.cancel(started.run.id).await.unwrap();
    let run = engine.wait_for_terminal(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    // The aborted attempt gives its worker slot back.
    wait_until("the worker slot freed", || async {
        engine.running_here() == 0
    })
    .await;
    release.add_permits(1);
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_run_is_cancelled_at_once() {
    let (engine, _store) = memory_engine(
        JobRegistry::new().with_job(ScriptJob::new("job")),
        virtual_time().with_concurrency(0),
    )
    .await;
    let started = engine.start(StartRequest::new("job")).await.unwrap();
    let run = engine.cancel(started.run.id).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert!(matches!(
        engine.cancel(pulse_etl::RunId::new()).await.unwrap_err(),
        pulse_etl::EngineError::NotFound { .. }
    ));
    engine.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_retried_attempt_resumes_from_the_checkpoint() {
    let (engine, _store) = engine_with(ScriptJob::new("job")).await;
    let run = run_script(
        &engine,
        json!({"steps": 5, "fail_at_step": 4, "fail_attempts": 1}),
    )
    .await;
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.attempts, 2);
    assert_eq!(run.result, Some(json!({"attempt": 2, "resumed_from": 3})));
    let logs = engine.logs(run.id).await.unwrap();
    let second: Vec<_> = logs
        .iter()
        .filter(|line| line.attempt == 2)
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(second, ["step 4 done", "step 5 done"]);
    engine.shutdown().await;
}
