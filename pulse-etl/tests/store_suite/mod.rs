//! The store test suite, run against every [`JobStore`] implementation by
//! `store_sqlite.rs` and `store_postgres.rs` through [`store_suite!`].
//!
//! Time is passed to the store explicitly, so leases expire by arithmetic, not by waiting.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pulse_etl::{
    AttemptOutcome, CreateOutcome, InstanceId, JobStore, LeaseStatus, LogLevel, NewRun, Progress,
    RunEventKind, RunId, RunState,
};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

mod attempts;
mod claims;
mod errors;
mod retention;

pub use attempts::{
    cancels_waiting_and_running_runs, expired_lease_is_reclaimed_and_late_writes_are_fenced,
    fatal_errors_fail_at_once, handed_back_attempts_do_not_spend_the_budget,
    retries_wait_for_their_backoff_then_fail, sweeping_the_last_attempt_fails_the_run,
};
pub use claims::{
    claim_many_takes_the_oldest_due_runs_one_per_job, claims_oldest_due_run_of_registered_jobs,
    concurrent_claims_take_each_run_once, each_instance_claims_only_the_jobs_it_runs,
};
#[allow(unused_imports)] // the in-memory store runs the suite without its SQL-only cases
pub use errors::{
    a_closed_pool_is_unavailable, a_schema_the_store_cannot_read_is_a_bug,
    constraint_violations_are_conflicts,
};
pub use retention::retention_prunes_old_events_runs_and_slots_in_batches;

pub const T0: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);
pub const LEASE: Duration = Duration::from_secs(30);

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn new_run(job: &str, at: OffsetDateTime) -> NewRun {
    NewRun {
        id: RunId::new(),
        job_name: job.to_owned(),
        params: json!({"page_size": 50}),
        requested_by: Some("user-1".to_owned()),
        idempotency_key: None,
        max_attempts: 3,
        force: false,
        created_at: at,
    }
}

pub fn jobs(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

pub async fn create(store: &dyn JobStore, new: NewRun) -> pulse_etl::Run {
    match store.create_run(new).await.unwrap() {
        CreateOutcome::Created { run, .. } => run,
        other => panic!("expected a created run, got {other:?}"),
    }
}

pub async fn claim(store: &dyn JobStore, job: &str, now: OffsetDateTime) -> pulse_etl::Claim {
    store
        .claim(InstanceId::new(), &jobs(&[job]), now, LEASE)
        .await
        .unwrap()
        .expect("a run to claim")
}

pub async fn creates_reads_and_lists_runs(store: Arc<dyn JobStore>) {
    let created = create(&*store, new_run("jira_sync", T0)).await;
    assert_eq!(created.state, RunState::Pending);
    assert_eq!(created.attempts, 0);
    assert_eq!(created.params, json!({"page_size": 50}));
    assert_eq!(created.requested_by.as_deref(), Some("user-1"));
    assert_eq!(created.created_at, T0);
    assert_eq!(
        store.get_run(created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.get_run(RunId::new()).await.unwrap(), None);

    let other = create(&*store, new_run("github_sync", T0 + secs(1))).await;
    let all = store.list_runs(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        [other.id, created.id]
    );
    let jira = store.list_runs(Some("jira_sync"), 10).await.unwrap();
    assert_eq!(jira, std::slice::from_ref(&created));
    assert_eq!(store.list_runs(None, 1).await.unwrap().len(), 1);

    let counts = store.count_states().await.unwrap();
    assert_eq!(counts.get(RunState::Pending), 2);
    assert_eq!(store.active_runs(Some("jira_sync")).await.unwrap().len(), 1);
    let latest = store.latest_runs().await.unwrap();
    assert_eq!(latest.len(), 2);

    let events = store.events_since(0, 100).await.unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[0].seq < events[1].seq);
    assert_eq!(events[0].run_id, created.id);
    assert!(matches!(
        events[0].kind,
        RunEventKind::State {
            state: RunState::Pending,
            ..
        }
    ));
    assert_eq!(store.latest_event_seq().await.unwrap(), events[1].seq);
    store.ping().await.unwrap();
}

pub async fn one_active_run_per_job(store: Arc<dyn JobStore>) {
    let first = create(&*store, new_run("jira_sync", T0)).await;
    match store.create_run(new_run("jira_sync", T0)).await.unwrap() {
        CreateOutcome::AlreadyActive(id) => assert_eq!(id, first.id),
        other => panic!("expected AlreadyActive, got {other:?}"),
    }
    // Another job is independent.
    create(&*store, new_run("github_sync", T0)).await;
    // Running and retrying hold the slot too.
    let claimed = claim(&*store, "jira_sync", T0).await;
    assert!(matches!(
        store.create_run(new_run("jira_sync", T0)).await.unwrap(),
        CreateOutcome::AlreadyActive(_)
    ));
    store
        .finish_attempt(
            &claimed.fence,
            AttemptOutcome::Failed {
                error: "HTTP 503".into(),
                retry_at: Some(T0 + secs(5)),
            },
            T0 + secs(1),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.create_run(new_run("jira_sync", T0)).await.unwrap(),
        CreateOutcome::AlreadyActive(_)
    ));
    // Once finished, a new run may start.
    let again = claim(&*store, "jira_sync", T0 + secs(5)).await;
    store
        .finish_attempt(
            &again.fence,
            AttemptOutcome::Succeeded { result: None },
            T0 + secs(6),
        )
        .await
        .unwrap();
    create(&*store, new_run("jira_sync", T0 + secs(7))).await;
}

pub async fn concurrent_starts_create_one_run(store: Arc<dyn JobStore>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.create_run(new_run("jira_sync", T0)).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut refused = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            CreateOutcome::Created { .. } => created += 1,
            CreateOutcome::AlreadyActive(id) => {
                refused.insert(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert!(refused.len() <= 1);
    assert_eq!(store.active_runs(Some("jira_sync")).await.unwrap().len(), 1);
}

pub async fn idempotency_key_returns_the_first_answer(store: Arc<dyn JobStore>) {
    let mut first = new_run("jira_sync", T0);
    first.idempotency_key = Some("key-1".into());
    let run = create(&*store, first.clone()).await;
    let mut retried = new_run("jira_sync", T0 + secs(3));
    retried.idempotency_key = Some("key-1".into());
    retried.params = json!({"other": true});
    match store.create_run(retried).await.unwrap() {
        CreateOutcome::Existing(existing) => assert_eq!(existing, run),
        other => panic!("expected Existing, got {other:?}"),
    }
    // Even after the run finished.
    store.request_cancel(run.id, T0 + secs(4)).await.unwrap();
    match store.create_run(first).await.unwrap() {
        CreateOutcome::Existing(existing) => assert_eq!(existing.id, run.id),
        other => panic!("expected Existing, got {other:?}"),
    }
    assert_eq!(store.list_runs(None, 10).await.unwrap().len(), 1);
}

pub async fn force_replaces_the_active_run(store: Arc<dyn JobStore>) {
    // A pending run is cancelled at once.
    let pending = create(&*store, new_run("jira_sync", T0)).await;
    let mut forced = new_run("jira_sync", T0 + secs(1));
    forced.force = true;
    let replacement = match store.create_run(forced).await.unwrap() {
        CreateOutcome::Created { run, replaced } => {
            assert_eq!(replaced, Some(pending.id));
            run
        }
        other => panic!("expected Created, got {other:?}"),
    };
    let old = store.get_run(pending.id).await.unwrap().unwrap();
    assert_eq!(old.state, RunState::Cancelled);
    assert!(old.finished_at.is_some());

    // A running run goes to `cancelling`, and the new run waits until it has stopped.
    let running = claim(&*store, "jira_sync", T0 + secs(2)).await;
    assert_eq!(running.run.id, replacement.id);
    let mut forced = new_run("jira_sync", T0 + secs(3));
    forced.force = true;
    let newest = match store.create_run(forced).await.unwrap() {
        CreateOutcome::Created { run, replaced } => {
            assert_eq!(replaced, Some(replacement.id));
            run
        }
        other => panic!("expected Created, got {other:?}"),
    };
    let cancelling = store.get_run(replacement.id).await.unwrap().unwrap();
    assert_eq!(cancelling.state, RunState::Cancelling);
    let none = store
        .claim(
            InstanceId::new(),
            &jobs(&["jira_sync"]),
            T0 + secs(4),
            LEASE,
        )
        .await
        .unwrap();
    assert!(none.is_none(), "never two executing runs of one job");
    assert_eq!(
        store
            .heartbeat(&running.fence, T0 + secs(4), LEASE)
            .await
            .unwrap(),
        LeaseStatus::CancelRequested
    );
    let stopped = store
        .finish_attempt(&running.fence, AttemptOutcome::Cancelled, T0 + secs(5))
        .await
        .unwrap();
    assert_eq!(stopped.state, RunState::Cancelled);
    let next = claim(&*store, "jira_sync", T0 + secs(6)).await;
    assert_eq!(next.run.id, newest.id);
}

pub async fn progress_logs_and_events_are_stored_in_order(store: Arc<dyn JobStore>) {
    let run = create(&*store, new_run("jira_sync", T0)).await;
    let claimed = claim(&*store, "jira_sync", T0).await;
    let progress = Progress::new(2, Some(4)).with_message("page 1 of 2");
    store
        .record_progress(&claimed.fence, &progress, T0 + secs(1))
        .await
        .unwrap();
    store
        .append_log(
            &claimed.fence,
            LogLevel::Info,
            "fetched 2 issues",
            T0 + secs(2),
        )
        .await
        .unwrap();
    store
        .append_log(&claimed.fence, LogLevel::Warn, "rate limited", T0 + secs(3))
        .await
        .unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.progress, progress);
    let logs = store.logs(run.id).await.unwrap();
    assert_eq!(
        logs.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["fetched 2 issues", "rate limited"]
    );
    assert_eq!(logs[1].level, LogLevel::Warn);
    assert_eq!(logs[0].attempt, 1);
    store
        .finish_attempt(
            &claimed.fence,
            AttemptOutcome::Succeeded { result: None },
            T0 + secs(4),
        )
        .await
        .unwrap();
    let events = store.events_since(0, 100).await.unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match &e.kind {
            RunEventKind::State { state, .. } => state.to_string(),
            RunEventKind::Progress { .. } => "progress".to_owned(),
            RunEventKind::Log { .. } => "log".to_owned(),
            _ => "other".to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["pending", "running", "progress", "log", "log", "succeeded"]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let tail = store.events_since(events[3].seq, 100).await.unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(store.events_since(0, 2).await.unwrap().len(), 2);
}

pub async fn schedule_slots_fire_once(store: Arc<dyn JobStore>) {
    let slot = T0 + secs(300);
    let mut fired = 0;
    for _ in 0..3 {
        if store
            .fire_schedule(slot, new_run("jira_sync", slot))
            .await
            .unwrap()
            .is_some()
        {
            fired += 1;
        }
    }
    assert_eq!(fired, 1);
    // The next slot while the first run is still active is consumed without a run.
    let next = slot + secs(300);
    assert!(
        store
            .fire_schedule(next, new_run("jira_sync", next))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.list_runs(Some("jira_sync"), 10).await.unwrap().len(),
        1
    );
}

pub async fn changes_are_announced(store: Arc<dyn JobStore>) {
    let mut changes = store.changes();
    let before = *changes.borrow_and_update();
    create(&*store, new_run("jira_sync", T0)).await;
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("a change notification")
        .unwrap();
    assert_ne!(*changes.borrow(), before);
}

/// Generates one `#[tokio::test]` per suite function for a store made by `$make`.
#[macro_export]
macro_rules! store_suite {
    ($make:path $(, #[$attr:meta])*) => {
        $crate::store_suite!(@portable $make, [$(#[$attr])*]);
        // What only a SQL store has: DDL the deployment added, a pool, a schema.
        $crate::store_suite!(@tests $make, [$(#[$attr])*] ;
            constraint_violations_are_conflicts,
            a_closed_pool_is_unavailable,
            a_schema_the_store_cannot_read_is_a_bug
        );
    };
    // The protocol every store keeps, the in-memory one included.
    (@portable $make:path, $attrs:tt) => {
        $crate::store_suite!(@tests $make, $attrs ;
            creates_reads_and_lists_runs,
            one_active_run_per_job,
            concurrent_starts_create_one_run,
            idempotency_key_returns_the_first_answer,
            force_replaces_the_active_run,
            claims_oldest_due_run_of_registered_jobs,
            each_instance_claims_only_the_jobs_it_runs,
            claim_many_takes_the_oldest_due_runs_one_per_job,
            concurrent_claims_take_each_run_once,
            expired_lease_is_reclaimed_and_late_writes_are_fenced,
            retries_wait_for_their_backoff_then_fail,
            fatal_errors_fail_at_once,
            cancels_waiting_and_running_runs,
            sweeping_the_last_attempt_fails_the_run,
            handed_back_attempts_do_not_spend_the_budget,
            progress_logs_and_events_are_stored_in_order,
            schedule_slots_fire_once,
            changes_are_announced,
            retention_prunes_old_events_runs_and_slots_in_batches
        );
    };
    (@tests $make:path, $attrs:tt ; $($name:ident),* $(,)?) => {
        $( $crate::store_suite!(@one $make, $attrs, $name); )*
    };
    (@one $make:path, [$(#[$attr:meta])*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $name() {
            let (store, _guard) = $make().await;
            store_suite::$name(store).await;
        }
    };
}
