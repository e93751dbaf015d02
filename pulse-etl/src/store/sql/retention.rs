//! Retention: old events, finished runs and schedule slots deleted in small batches,
//! one pruner at a time (PostgreSQL: a transaction-level advisory lock that another
//! instance does not wait for; SQLite: the store's write lock).

use uuid::Uuid;

use super::conn::{Param, SqlConn, SqlRow, Stmt};
use super::{SqlBackend, truncate_micros};
use crate::store::{PruneBatch, PruneReport, StoreError};

pub(super) async fn prune<B: SqlBackend>(
    backend: &B,
    batch: PruneBatch,
) -> Result<PruneReport, StoreError> {
    let q = backend.queries();
    let limit = i64::from(batch.limit.max(1));
    let events_before = truncate_micros(batch.events_before);
    let runs_before = truncate_micros(batch.runs_before);
    let mut tx = backend.begin().await?;
    let lock = Stmt::new(q.prune_lock).bind(backend.retention_lock());
    let granted = match tx.optional(lock).await? {
        Some(row) => row.boolean("granted")?,
        None => false,
    };
    if !granted {
        return Ok(PruneReport {
            busy: true,
            ..PruneReport::default()
        });
    }
    let mut report = PruneReport::default();
    let aged = Stmt::new(q.prune_aged_events)
        .bind(events_before)
        .bind(limit);
    let aged = seqs(tx.all(aged).await?)?;
    let mut through = aged.iter().max().copied();
    report.events = count(aged.len());

    let pick = Stmt::new(q.prune_pick_runs).bind(runs_before).bind(limit);
    let runs = tx
        .all(pick)
        .await?
        .iter()
        .map(|row| row.id("id"))
        .collect::<Result<Vec<Uuid>, StoreError>>()?;
    if !runs.is_empty() {
        let ids = || Param::Ids(runs.clone());
        let events = seqs(tx.all(Stmt::new(q.prune_run_events).bind(ids())).await?)?;
        through = through.max(events.iter().max().copied());
        report.events += count(events.len());
        tx.exec(Stmt::new(q.prune_run_attempts).bind(ids())).await?;
        tx.exec(Stmt::new(q.prune_unlink_slots).bind(ids())).await?;
        report.runs = tx.exec(Stmt::new(q.prune_runs).bind(ids())).await?;
    }

    let slots = Stmt::new(q.prune_slots).bind(runs_before).bind(limit);
    report.slots = tx.exec(slots).await?;

    if let Some(seq) = through {
        tx.exec(Stmt::new(q.raise_pruned_through).bind(seq)).await?;
    }
    B::commit(tx).await?;
    Ok(report)
}

fn seqs(rows: Vec<impl SqlRow>) -> Result<Vec<i64>, StoreError> {
    rows.iter().map(|row| row.int("seq")).collect()
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
