//! The shared store suite against [`SqliteStore`] on a real file in WAL mode.

mod store_suite;

use std::sync::Arc;

use pulse_etl::{JobStore, SqliteStore};

async fn sqlite_store() -> (Arc<dyn JobStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("jobs.db")).await.unwrap();
    (store.into_dyn(), dir)
}

store_suite!(sqlite_store);

#[tokio::test]
async fn reopening_keeps_runs_and_applies_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let run = store_suite::create(&store, store_suite::new_run("jira_sync", store_suite::T0)).await;
    store.close().await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.get_run(run.id).await.unwrap(), Some(run));
}

#[tokio::test]
async fn in_memory_store_passes_a_smoke_test() {
    let store = SqliteStore::open_in_memory().await.unwrap().into_dyn();
    store_suite::expired_lease_is_reclaimed_and_late_writes_are_fenced(store).await;
}
