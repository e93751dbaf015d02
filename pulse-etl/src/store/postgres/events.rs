//! Event order without a global lock.
//!
//! Event rows take their `seq` from a sequence, and transactions commit in any order, so
//! a reader can see seq 12 committed while seq 11 is still in flight. Writers hold the
//! schema's advisory lock in *shared* mode from just before they draw a `seq` until
//! they commit (taken in the event `INSERT` itself, after every row lock of the
//! transaction), so writers never wait for each other. Readers deliver events in `seq`
//! order up to the first missing number. At a missing number the reader tries the lock
//! in *exclusive* mode without waiting: granted, no writer holds a drawn `seq`
//! uncommitted, so every number up to the largest committed one is final (missing ones
//! were rolled back and never appear), and the reader goes on. Not granted, the number
//! is usually a writer about to commit, whose commit wakes the reader again; one still
//! missing after [`GAP_GRACE`] (a writer stalled for long) is settled by waiting for
//! the exclusive lock, which new writers queue behind for that moment.
//!
//! The store remembers the largest final number (`final_upto`), so later reads,
//! including an SSE resume, pass over settled gaps at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::QUERIES;
use crate::model::RunEvent;
use crate::store::StoreError;
use crate::store::sql::conn::{SqlConn, SqlRow, Stmt};
use crate::store::sql::rows::event_from_row;

/// How long a missing `seq` may stay missing before a reader settles it with the
/// exclusive lock.
pub(super) const GAP_GRACE: Duration = Duration::from_millis(100);

/// What one store knows about the order of committed events.
#[derive(Debug, Default)]
pub(super) struct EventOrder {
    /// Every `seq` at or below this is final: committed, or never will be.
    final_upto: AtomicI64,
    /// The missing `seq` last seen, and since when.
    gap: Mutex<Option<(i64, Instant)>>,
}

/// The events of `events` (after `after`, in `seq` order) a reader may deliver, given
/// that every `seq` at or below `final_upto` is final; and the first missing number
/// when it stopped at one.
fn settle(events: Vec<RunEvent>, after: i64, final_upto: i64) -> (Vec<RunEvent>, Option<i64>) {
    let mut horizon = after.max(final_upto);
    let mut ready = Vec::with_capacity(events.len());
    for event in events {
        if event.seq <= horizon || event.seq == horizon + 1 {
            horizon = horizon.max(event.seq);
            ready.push(event);
        } else {
            return (ready, Some(horizon + 1));
        }
    }
    (ready, None)
}

async fn fetch(pool: &PgPool, after: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
    let stmt = Stmt::new(QUERIES.events_since).bind(after).bind(limit);
    let rows = pool.acquire().await?.all(stmt).await?;
    rows.iter().map(event_from_row).collect()
}

impl EventOrder {
    fn final_upto(&self) -> i64 {
        self.final_upto.load(Ordering::Acquire)
    }

    fn advance(&self, to: i64) {
        self.final_upto.fetch_max(to, Ordering::AcqRel);
    }

    /// `true` when `gap` has been missing for the grace period (and starts its clock
    /// when it is new).
    fn overdue(&self, gap: i64) -> bool {
        let Ok(mut seen) = self.gap.lock() else {
            return true;
        };
        match *seen {
            Some((missing, since)) if missing == gap => since.elapsed() >= GAP_GRACE,
            _ => {
                *seen = Some((gap, Instant::now()));
                false
            }
        }
    }

    /// Waits until no writer holds an uncommitted `seq` (the exclusive lock), and
    /// returns the largest committed one: every number up to it is final.
    pub(super) async fn settle_in_flight(
        &self,
        pool: &PgPool,
        lock_key: i64,
    ) -> Result<i64, StoreError> {
        self.settle(pool, lock_key, true)
            .await?
            .ok_or_else(|| StoreError::Corrupt("the event lock was not granted".to_owned()))
    }

    /// As [`EventOrder::settle_in_flight`] when no writer is in flight at this moment;
    /// `None` (without waiting) when one is.
    async fn settle(
        &self,
        pool: &PgPool,
        lock_key: i64,
        wait: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = pool.begin().await?;
        let lock = if wait {
            include_str!("../../../queries/postgres/event_lock_wait.sql")
        } else {
            include_str!("../../../queries/postgres/event_lock_try.sql")
        };
        let row = tx.optional(Stmt::new(lock).bind(lock_key)).await?;
        if !row.map_or(Ok(false), |row| row.boolean("granted"))? {
            tx.rollback().await?;
            return Ok(None);
        }
        // A statement of its own: its snapshot is taken with the lock held.
        let latest = tx.optional(Stmt::new(QUERIES.latest_event_seq)).await?;
        let latest = latest.map_or(Ok(0), |row| row.int("seq"))?;
        tx.commit().await?;
        self.advance(latest);
        Ok(Some(latest))
    }

    /// Events after `after` in `seq` order, at most `limit`, never past a number that
    /// may still commit.
    pub(super) async fn events_since(
        &self,
        pool: &PgPool,
        lock_key: i64,
        after: i64,
        limit: u32,
    ) -> Result<Vec<RunEvent>, StoreError> {
        let known = self.final_upto();
        let (ready, gap) = settle(fetch(pool, after, limit).await?, after, known);
        // Only a walk from a final position proves what follows final (a client's
        // Last-Event-ID may point anywhere).
        if after <= known
            && let Some(last) = ready.last()
        {
            self.advance(last.seq);
        }
        let Some(gap) = gap else {
            return Ok(ready);
        };
        // No writer in flight right now: the gap is final, and so is everything read.
        // Else wait for the gap to fill; one that outlasts the grace is settled by
        // waiting for the writers.
        let known = match self.settle(pool, lock_key, false).await? {
            Some(known) => known,
            None if !self.overdue(gap) || !ready.is_empty() => return Ok(ready),
            None => self.settle_in_flight(pool, lock_key).await?,
        };
        Ok(settle(fetch(pool, after, limit).await?, after, known).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunEventKind, RunId, RunState};

    fn events(seqs: &[i64]) -> Vec<RunEvent> {
        seqs.iter()
            .map(|&seq| RunEvent {
                seq,
                run_id: RunId::new(),
                job_name: "job".to_owned(),
                at: time::OffsetDateTime::UNIX_EPOCH,
                kind: RunEventKind::State {
                    state: RunState::Pending,
                    attempt: 0,
                    error: None,
                },
            })
            .collect()
    }

    fn seqs(events: &[RunEvent]) -> Vec<i64> {
        events.iter().map(|event| event.seq).collect()
    }

    #[test]
    fn delivery_stops_at_the_first_number_that_may_still_commit() {
        let (ready, gap) = settle(events(&[4, 5, 7, 8]), 3, 0);
        assert_eq!((seqs(&ready), gap), (vec![4, 5], Some(6)));
        let (ready, gap) = settle(events(&[5]), 3, 0);
        assert_eq!((seqs(&ready), gap), (vec![], Some(4)));
        let (ready, gap) = settle(events(&[4, 5, 6]), 3, 0);
        assert_eq!((seqs(&ready), gap), (vec![4, 5, 6], None));
    }

    #[test]
    fn settled_gaps_are_passed_over() {
        // 2 and 5 are known final (rolled back): nothing waits for them.
        let (ready, gap) = settle(events(&[1, 3, 4, 6, 8]), 0, 6);
        assert_eq!((seqs(&ready), gap), (vec![1, 3, 4, 6], Some(7)));
    }

    #[test]
    fn a_gap_is_overdue_only_after_the_grace() {
        let order = EventOrder::default();
        assert!(!order.overdue(7));
        assert!(!order.overdue(7));
        assert!(!order.overdue(9), "a new gap restarts the clock");
        if let Ok(mut seen) = order.gap.lock() {
            *seen = Some((9, Instant::now() - GAP_GRACE));
        }
        assert!(order.overdue(9));
    }

    /// Against a real database: writers that commit out of `seq` order, roll back, or
    /// stall past the grace never make a reader skip or repeat an event.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL (PULSE_TEST_DATABASE_URL)"]
    async fn readers_wait_for_writers_that_hold_a_lower_seq() {
        use sqlx::Connection;

        use crate::store::JobStore;
        use crate::store::postgres::tests::test_support::{fresh_store, start};

        let (store, url, schema) = fresh_store().await;
        // A writer of the store's protocol, held open: draws a seq, does not commit.
        let statement = format!(
            "INSERT INTO \"{schema}\".etl_events (run_id, job_name, at, kind, payload) \
             SELECT gen_random_uuid(), 'raw', now(), 'state', \
             '{{\"type\":\"state\",\"state\":\"pending\",\"attempt\":0,\"error\":null}}' \
             FROM (SELECT pg_advisory_xact_lock_shared({})) AS writer RETURNING seq",
            store.inner.lock_key
        );
        async fn writer<'c>(
            conn: &'c mut sqlx::PgConnection,
            statement: &str,
        ) -> (sqlx::Transaction<'c, sqlx::Postgres>, i64) {
            let mut tx = conn.begin().await.unwrap();
            let seq: i64 = sqlx::query_scalar(statement)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            (tx, seq)
        }
        let mut raw = sqlx::PgConnection::connect(&url).await.unwrap();
        let delivered = |events: Vec<RunEvent>| seqs(&events);
        const NONE: [i64; 0] = [];

        store.create_run(start("a")).await.unwrap();
        let first = store.latest_event_seq().await.unwrap();

        // Committed out of order: nothing past the open writer's seq is delivered.
        let (open, held) = writer(&mut raw, &statement).await;
        store.create_run(start("b")).await.unwrap();
        assert_eq!(
            delivered(store.events_since(first, 100).await.unwrap()),
            NONE
        );
        open.commit().await.unwrap();
        assert_eq!(
            delivered(store.events_since(first, 100).await.unwrap()),
            [held, held + 1]
        );

        // A rolled-back writer leaves a gap for good: with no writer in flight, the
        // reader passes over it at once.
        let (open, lost) = writer(&mut raw, &statement).await;
        open.rollback().await.unwrap();
        store.create_run(start("c")).await.unwrap();
        assert_eq!(
            delivered(store.events_since(lost - 1, 100).await.unwrap()),
            [lost + 1]
        );

        // A writer stalled past the grace: the reader waits for it rather than skip it.
        let (open, stalled) = writer(&mut raw, &statement).await;
        store.create_run(start("d")).await.unwrap();
        assert_eq!(
            delivered(store.events_since(stalled - 1, 100).await.unwrap()),
            NONE
        );
        tokio::time::sleep(GAP_GRACE + Duration::from_millis(20)).await;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move { store.events_since(stalled - 1, 100).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        open.commit().await.unwrap();
        assert_eq!(
            delivered(reader.await.unwrap().unwrap()),
            [stalled, stalled + 1]
        );

        store.close().await;
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&mut raw)
            .await
            .unwrap();
    }
}
