//! Schedules across an engine restart: missed slots go by the job's catch-up policy.

mod engine_support;

use std::sync::Arc;

use engine_support::catch_up_across_a_restart;
use pulse_etl::{CatchUp, JobStore, SqliteStore};
use time::OffsetDateTime;
use time::macros::datetime;

async fn run(policy: CatchUp, caught_up: &[OffsetDateTime]) -> Vec<(OffsetDateTime, bool)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    catch_up_across_a_restart(
        || {
            let path = path.clone();
            async move {
                let store: Arc<dyn JobStore> = SqliteStore::open(path).await.unwrap().into_dyn();
                store
            }
        },
        policy,
        caught_up,
    )
    .await
}

/// Each slot ran (made a run), none consumed without one.
fn ran(slots: &[OffsetDateTime]) -> Vec<(OffsetDateTime, bool)> {
    slots.iter().map(|slot| (*slot, true)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_runs_once_for_the_most_recent_missed_slot() {
    let slots = run(CatchUp::Latest, &[datetime!(2026-01-01 10:40 UTC)]).await;
    assert_eq!(
        slots,
        ran(&[
            datetime!(2026-01-01 09:50 UTC),
            datetime!(2026-01-01 10:00 UTC),
            datetime!(2026-01-01 10:40 UTC),
            datetime!(2026-01-01 10:50 UTC),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_drops_missed_slots_and_fires_the_next_one() {
    let slots = run(CatchUp::Skip, &[]).await;
    assert_eq!(
        slots,
        ran(&[
            datetime!(2026-01-01 09:50 UTC),
            datetime!(2026-01-01 10:00 UTC),
            datetime!(2026-01-01 10:50 UTC),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_runs_the_newest_missed_slots_one_after_the_other() {
    let caught_up = [
        datetime!(2026-01-01 10:20 UTC),
        datetime!(2026-01-01 10:30 UTC),
        datetime!(2026-01-01 10:40 UTC),
    ];
    let slots = run(CatchUp::All { max: 3 }, &caught_up).await;
    // Each made a run: none was consumed by the one-active-run rule while the previous
    // one was still going.
    assert_eq!(
        slots,
        ran(&[
            datetime!(2026-01-01 09:50 UTC),
            datetime!(2026-01-01 10:00 UTC),
            datetime!(2026-01-01 10:20 UTC),
            datetime!(2026-01-01 10:30 UTC),
            datetime!(2026-01-01 10:40 UTC),
            datetime!(2026-01-01 10:50 UTC),
        ])
    );
}
