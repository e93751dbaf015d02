//! Retention: what [`JobStore::prune`] deletes and what it keeps.

use std::sync::Arc;

use pulse_etl::{AttemptOutcome, JobStore, LogLevel, PruneBatch, RunEventKind, RunId};

use super::{T0, claim, create, new_run, secs};

/// Runs `job` from creation to success at `at` (+1 s), with one log line.
async fn finished_run(store: &dyn JobStore, job: &str, at: time::OffsetDateTime) -> RunId {
    let run = create(store, new_run(job, at)).await;
    let claimed = claim(store, job, at).await;
    store
        .append_log(&claimed.fence, LogLevel::Info, "page 1", at)
        .await
        .unwrap();
    store
        .finish_attempt(
            &claimed.fence,
            AttemptOutcome::Succeeded { result: None },
            at + secs(1),
        )
        .await
        .unwrap();
    run.id
}

fn is_log(kind: &RunEventKind) -> bool {
    matches!(kind, RunEventKind::Log { .. })
}

pub async fn retention_prunes_old_events_runs_and_slots_in_batches(store: Arc<dyn JobStore>) {
    let store = store.as_ref();
    let old = finished_run(store, "jira_sync", T0).await;
    let newer = finished_run(store, "jira_sync", T0 + secs(10)).await;
    let only = finished_run(store, "github_sync", T0 + secs(20)).await;
    for slot in [T0, T0 + secs(300)] {
        store
            .fire_schedule(slot, new_run("tick", slot))
            .await
            .unwrap();
    }
    assert_eq!(store.events_pruned_through().await.unwrap(), 0);
    let before = store.events_since(0, 1000).await.unwrap();

    // Events older than the cut-off go in batches, log lines stay with their run.
    let day = T0 + secs(86_400);
    let events_only = PruneBatch {
        events_before: day,
        runs_before: T0 - secs(1),
        limit: 2,
    };
    let first = store.prune(events_only).await.unwrap();
    assert_eq!((first.events, first.runs, first.slots), (2, 0, 0));
    assert!(first.is_full(2) && !first.busy);
    let mark = store.events_pruned_through().await.unwrap();
    assert_eq!(mark, before[1].seq, "the mark is the highest deleted seq");
    while store.prune(events_only).await.unwrap().is_full(2) {}
    let left = store.events_since(0, 1000).await.unwrap();
    assert!(
        !left.is_empty() && left.iter().all(|event| is_log(&event.kind)),
        "{left:?}"
    );
    assert_eq!(store.logs(old).await.unwrap().len(), 1);
    let mark = store.events_pruned_through().await.unwrap();
    let newest_state = before
        .iter()
        .filter(|event| !is_log(&event.kind))
        .map(|event| event.seq)
        .max()
        .unwrap();
    assert_eq!(mark, newest_state);

    // Runs finished before the cut-off go with their attempts and log lines, but the
    // latest run of each job stays; old slots go, each job's newest stays.
    let all = PruneBatch {
        events_before: day,
        runs_before: day,
        limit: 100,
    };
    let report = store.prune(all).await.unwrap();
    assert_eq!((report.runs, report.slots), (1, 1));
    assert!(!report.is_full(100));
    assert_eq!(store.get_run(old).await.unwrap(), None);
    assert!(store.logs(old).await.unwrap().is_empty());
    assert!(store.attempts(old).await.unwrap().is_empty());
    for kept in [newer, only] {
        assert!(store.get_run(kept).await.unwrap().is_some());
        assert_eq!(store.logs(kept).await.unwrap().len(), 1);
    }
    let slots = store.last_schedule_slots().await.unwrap();
    assert_eq!(slots, [("tick".to_owned(), T0 + secs(300))]);
    // The mark never goes down; nothing left to delete is a no-op.
    assert!(store.events_pruned_through().await.unwrap() >= mark);
    let again = store.prune(all).await.unwrap();
    assert_eq!((again.events, again.runs, again.slots), (0, 0, 0));
    // Active runs are never deleted, however old.
    let active = create(store, new_run("tick_manual", T0)).await;
    store.prune(all).await.unwrap();
    assert!(store.get_run(active.id).await.unwrap().is_some());
}
