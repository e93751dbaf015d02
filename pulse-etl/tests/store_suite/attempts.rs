//! How attempts end: leases that expire and fence late writes, retries after their
//! backoff, fatal errors, cancels, the sweep of a last attempt, and hand-backs.

use std::sync::Arc;

use pulse_etl::{
    AttemptOutcome, CancelOutcome, InstanceId, JobStore, LeaseStatus, LogLevel, Progress, RunId,
    RunState, StoreError,
};
use serde_json::json;

use super::{LEASE, T0, claim, create, jobs, new_run, secs};

pub async fn expired_lease_is_reclaimed_and_late_writes_are_fenced(store: Arc<dyn JobStore>) {
    let run = create(&*store, new_run("jira_sync", T0)).await;
    let stalled = claim(&*store, "jira_sync", T0).await;
    store
        .save_checkpoint(&stalled.fence, &json!({"start_at": 100}), T0 + secs(1))
        .await
        .unwrap();
    // Renewed leases are not swept.
    assert_eq!(
        store
            .heartbeat(&stalled.fence, T0 + secs(20), LEASE)
            .await
            .unwrap(),
        LeaseStatus::Held
    );
    assert!(store.sweep_expired(T0 + secs(40)).await.unwrap().is_empty());
    // Past the lease the run goes back for another attempt.
    let report = store.sweep_expired(T0 + secs(51)).await.unwrap();
    assert_eq!(report.retried, [run.id]);
    let swept = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(swept.state, RunState::Retrying);

    let winner = claim(&*store, "jira_sync", T0 + secs(52)).await;
    assert_eq!(winner.fence.attempt, 2);
    assert_eq!(winner.checkpoint, Some(json!({"start_at": 100})));

    // Every write of the stalled attempt is rejected.
    let late = T0 + secs(53);
    assert_eq!(
        store.heartbeat(&stalled.fence, late, LEASE).await.unwrap(),
        LeaseStatus::Lost
    );
    assert!(matches!(
        store
            .record_progress(&stalled.fence, &Progress::new(1, None), late)
            .await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store
            .append_log(&stalled.fence, LogLevel::Info, "late", late)
            .await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store
            .save_checkpoint(&stalled.fence, &json!({"start_at": 0}), late)
            .await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store
            .finish_attempt(
                &stalled.fence,
                AttemptOutcome::Succeeded {
                    result: Some(json!("stale"))
                },
                late
            )
            .await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        store.check_fence(&stalled.fence).await,
        Err(StoreError::Fenced)
    ));
    store.check_fence(&winner.fence).await.unwrap();

    let done = store
        .finish_attempt(
            &winner.fence,
            AttemptOutcome::Succeeded {
                result: Some(json!({"issues": 7})),
            },
            T0 + secs(60),
        )
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.result, Some(json!({"issues": 7})));
    assert_eq!(done.error, None);
    assert_eq!(done.finished_at, Some(T0 + secs(60)));
    let attempts = store.attempts(run.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("lease_expired"), Some("succeeded")]);
    assert_eq!(attempts[0].checkpoint, Some(json!({"start_at": 100})));
}

pub async fn retries_wait_for_their_backoff_then_fail(store: Arc<dyn JobStore>) {
    let mut new = new_run("jira_sync", T0);
    new.max_attempts = 2;
    let run = create(&*store, new).await;
    let first = claim(&*store, "jira_sync", T0).await;
    let retrying = store
        .finish_attempt(
            &first.fence,
            AttemptOutcome::Failed {
                error: "HTTP 500".into(),
                retry_at: Some(T0 + secs(10)),
            },
            T0 + secs(1),
        )
        .await
        .unwrap();
    assert_eq!(retrying.state, RunState::Retrying);
    assert_eq!(retrying.error.as_deref(), Some("HTTP 500"));
    assert!(retrying.finished_at.is_none());
    let names = jobs(&["jira_sync"]);
    assert!(
        store
            .claim(InstanceId::new(), &names, T0 + secs(9), LEASE)
            .await
            .unwrap()
            .is_none(),
        "not before the backoff"
    );
    let second = claim(&*store, "jira_sync", T0 + secs(10)).await;
    assert_eq!(second.fence.attempt, 2);
    let failed = store
        .finish_attempt(
            &second.fence,
            AttemptOutcome::Failed {
                error: "HTTP 500 again".into(),
                retry_at: Some(T0 + secs(30)),
            },
            T0 + secs(11),
        )
        .await
        .unwrap();
    assert_eq!(failed.state, RunState::Failed, "out of attempts");
    assert_eq!(failed.error.as_deref(), Some("HTTP 500 again"));
    assert_eq!(failed.finished_at, Some(T0 + secs(11)));
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().attempts, 2);
}

pub async fn fatal_errors_fail_at_once(store: Arc<dyn JobStore>) {
    create(&*store, new_run("jira_sync", T0)).await;
    let claimed = claim(&*store, "jira_sync", T0).await;
    let failed = store
        .finish_attempt(
            &claimed.fence,
            AttemptOutcome::Failed {
                error: "HTTP 401".into(),
                retry_at: None,
            },
            T0 + secs(1),
        )
        .await
        .unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert_eq!(failed.attempts, 1);
}

pub async fn cancels_waiting_and_running_runs(store: Arc<dyn JobStore>) {
    let waiting = create(&*store, new_run("a", T0)).await;
    match store
        .request_cancel(waiting.id, T0 + secs(1))
        .await
        .unwrap()
    {
        CancelOutcome::Cancelled(run) => {
            assert_eq!(run.state, RunState::Cancelled);
            assert_eq!(run.finished_at, Some(T0 + secs(1)));
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(matches!(
        store
            .request_cancel(waiting.id, T0 + secs(2))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(_)
    ));
    assert!(matches!(
        store.request_cancel(RunId::new(), T0).await.unwrap(),
        CancelOutcome::NotFound
    ));

    create(&*store, new_run("b", T0)).await;
    let running = claim(&*store, "b", T0).await;
    match store
        .request_cancel(running.run.id, T0 + secs(1))
        .await
        .unwrap()
    {
        CancelOutcome::Cancelling(run) => assert_eq!(run.state, RunState::Cancelling),
        other => panic!("expected Cancelling, got {other:?}"),
    }
    // Asking again changes nothing.
    assert!(matches!(
        store
            .request_cancel(running.run.id, T0 + secs(2))
            .await
            .unwrap(),
        CancelOutcome::Cancelling(_)
    ));
    assert_eq!(
        store
            .heartbeat(&running.fence, T0 + secs(2), LEASE)
            .await
            .unwrap(),
        LeaseStatus::CancelRequested
    );
    // A failure while cancelling ends cancelled, not retrying.
    let done = store
        .finish_attempt(
            &running.fence,
            AttemptOutcome::Failed {
                error: "interrupted".into(),
                retry_at: Some(T0),
            },
            T0 + secs(3),
        )
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Cancelled);

    // A cancelling run whose worker died is cancelled by the sweeper.
    create(&*store, new_run("c", T0)).await;
    let dead = claim(&*store, "c", T0).await;
    store
        .request_cancel(dead.run.id, T0 + secs(1))
        .await
        .unwrap();
    let report = store.sweep_expired(T0 + secs(31)).await.unwrap();
    assert_eq!(report.cancelled, [dead.run.id]);
}

pub async fn sweeping_the_last_attempt_fails_the_run(store: Arc<dyn JobStore>) {
    let mut new = new_run("jira_sync", T0);
    new.max_attempts = 1;
    let run = create(&*store, new).await;
    claim(&*store, "jira_sync", T0).await;
    let report = store.sweep_expired(T0 + secs(31)).await.unwrap();
    assert_eq!(report.failed, [run.id]);
    let failed = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(failed.state, RunState::Failed);
    assert!(failed.error.unwrap().contains("lease expired"));
}

pub async fn handed_back_attempts_do_not_spend_the_budget(store: Arc<dyn JobStore>) {
    let mut new = new_run("jira_sync", T0);
    new.max_attempts = 1;
    create(&*store, new).await;
    let first = claim(&*store, "jira_sync", T0).await;
    let back = store
        .finish_attempt(&first.fence, AttemptOutcome::HandedBack, T0 + secs(1))
        .await
        .unwrap();
    assert_eq!(back.state, RunState::Retrying);
    let second = claim(&*store, "jira_sync", T0 + secs(1)).await;
    assert_eq!(second.fence.attempt, 2);
    // The hand-back did not use up the single allowed failure... and this one is a crash.
    let report = store.sweep_expired(T0 + secs(40)).await.unwrap();
    assert_eq!(report.failed, [second.run.id]);
}
