//! Store errors sorted by cause, against a real database: a constraint the database
//! enforces is a conflict, a closed pool is unavailable, a schema or row the store
//! cannot read is a bug — never "unavailable", which would invite endless retries.

use std::sync::Arc;

use pulse_etl::{JobStore, NewRun, RunId, StoreError, StorePool};

use super::{T0, create, new_run};

/// Runs `sql` on the store's own pool (for PostgreSQL, in the store's schema).
async fn execute(store: &dyn JobStore, sql: &str) {
    match store.pool() {
        StorePool::Sqlite(pool) => sqlx::query(sql).execute(&pool).await.map(drop),
        StorePool::Postgres(pool) => sqlx::query(sql).execute(&pool).await.map(drop),
        _ => unreachable!("a store of another kind"),
    }
    .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// Closes `pool` for every later call. Closing a pool also waits for its checked-out
/// connections (PostgreSQL's LISTEN connection is one for the store's life): that
/// wait goes on in a task of its own.
async fn mark_closed<DB: sqlx::Database>(pool: sqlx::Pool<DB>) {
    tokio::spawn({
        let pool = pool.clone();
        async move { pool.close().await }
    });
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
}

#[track_caller]
fn assert_kind(result: Result<impl std::fmt::Debug, StoreError>, expected: &str) {
    let err = result.expect_err("the store should fail");
    let kind = match &err {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Conflict(_) => "conflict",
        StoreError::InvalidInput(_) => "invalid_input",
        StoreError::Database(_) => "database",
        _ => "other",
    };
    assert_eq!(kind, expected, "{err}");
}

fn with_id(mut new: NewRun, id: RunId) -> NewRun {
    new.id = id;
    new
}

pub async fn constraint_violations_are_conflicts(store: Arc<dyn JobStore>) {
    let first = create(&*store, new_run("jira_sync", T0)).await;
    // a run id that is taken
    assert_kind(
        store
            .create_run(with_id(new_run("github_sync", T0), first.id))
            .await,
        "conflict",
    );
    // a unique index the deployment added, violated by the next event row
    execute(
        &*store,
        "CREATE UNIQUE INDEX test_one_event_per_kind ON etl_events (kind)",
    )
    .await;
    assert_kind(
        store.create_run(new_run("github_sync", T0)).await,
        "conflict",
    );
    // nothing of the refused writes was kept
    assert_eq!(store.list_runs(None, 10).await.unwrap(), vec![first]);
}

pub async fn a_closed_pool_is_unavailable(store: Arc<dyn JobStore>) {
    let run = create(&*store, new_run("jira_sync", T0)).await;
    match store.pool() {
        StorePool::Sqlite(pool) => mark_closed(pool).await,
        StorePool::Postgres(pool) => mark_closed(pool).await,
        _ => unreachable!("a store of another kind"),
    }
    assert_kind(store.get_run(run.id).await, "unavailable");
    assert_kind(store.ping().await, "unavailable");
    assert_kind(
        store.create_run(new_run("github_sync", T0)).await,
        "unavailable",
    );
}

pub async fn a_schema_the_store_cannot_read_is_a_bug(store: Arc<dyn JobStore>) {
    let run = create(&*store, new_run("jira_sync", T0)).await;
    // a column of another type: its values do not decode
    match store.pool() {
        StorePool::Sqlite(_) => {
            execute(&*store, "UPDATE etl_runs SET attempts = 'many'").await;
        }
        _ => {
            execute(
                &*store,
                "ALTER TABLE etl_runs ALTER COLUMN attempts TYPE TEXT",
            )
            .await;
        }
    }
    assert_kind(store.get_run(run.id).await, "database");
    // a table that is missing: an SQL error
    execute(&*store, "DROP TABLE etl_events").await;
    assert_kind(store.events_since(0, 10).await, "database");
    assert!(matches!(
        store.create_run(new_run("github_sync", T0)).await,
        Err(StoreError::Database(_))
    ));
    // and none of it is mistaken for an outage
    assert!(store.ping().await.is_ok());
}
