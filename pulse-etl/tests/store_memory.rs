//! The shared store suite against [`MemoryStore`]: the same protocol without a database.
//! (The suite's SQL-only cases — a DDL the deployment added, a closed pool, a schema it
//! cannot read — have no in-memory counterpart.)

mod store_suite;

use std::sync::Arc;

use pulse_etl::{JobStore, MemoryStore};

async fn memory_store() -> (Arc<dyn JobStore>, ()) {
    (MemoryStore::new().into_dyn(), ())
}

store_suite!(@portable memory_store, []);

#[tokio::test]
async fn a_taken_run_id_is_a_conflict_and_nothing_is_kept() {
    let store = MemoryStore::new();
    let first =
        store_suite::create(&store, store_suite::new_run("jira_sync", store_suite::T0)).await;
    let mut again = store_suite::new_run("github_sync", store_suite::T0);
    again.id = first.id;
    assert!(matches!(
        store.create_run(again).await,
        Err(pulse_etl::StoreError::Conflict(_))
    ));
    assert_eq!(store.list_runs(None, 10).await.unwrap(), vec![first]);
}
