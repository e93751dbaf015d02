//! The gateway's periodic clean-up of its tables: audit events past the retention
//! (`PULSE_AUDIT_RETENTION_DAYS`, default 90), deleted a small batch per transaction so
//! that no sign-in waits long on SQLite's write lock; expired revocations, refresh
//! tokens and stamps.

use std::time::Duration;

use tokio::sync::watch;

use super::{AccountError, AccountStore, duration_millis};

/// How often the clean-up runs (and once at start).
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// Audit events deleted per transaction.
pub const BATCH: u32 = 500;

/// How long things are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Audit events older than this go.
    pub audit: Duration,
    /// Events deleted per transaction.
    pub batch: u32,
}

impl Retention {
    /// Audit events kept `days` days, deleted [`BATCH`] at a time.
    pub const fn days(days: u32) -> Self {
        Self {
            audit: Duration::from_secs(days as u64 * 86_400),
            batch: BATCH,
        }
    }
}

impl AccountStore {
    /// Delete every audit event older than `retention.audit`, a batch per transaction,
    /// yielding between batches. Returns how many went.
    pub async fn prune_audit_older_than(&self, retention: Retention) -> Result<u64, AccountError> {
        let before = self.now() - duration_millis(retention.audit);
        let batch = retention.batch.max(1);
        let mut total = 0;
        loop {
            let deleted = self.prune_audit(before, batch).await?;
            total += deleted;
            if deleted < u64::from(batch) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// One clean-up: the audit trail past its retention, expired session rows.
    pub async fn clean_up(&self, retention: Retention) -> Result<(u64, u64), AccountError> {
        let events = self.prune_audit_older_than(retention).await?;
        let sessions = self.prune_sessions(self.now()).await?;
        Ok((events, sessions))
    }

    /// Run [`AccountStore::clean_up`] now and every `interval` until `stop` turns true;
    /// a failure is logged and tried again next time.
    pub fn spawn_clean_up(
        &self,
        retention: Retention,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match store.clean_up(retention).await {
                    Ok((0, 0)) => {}
                    Ok((events, rows)) => {
                        tracing::info!(
                            audit_events = events,
                            session_rows = rows,
                            "accounts cleaned up"
                        );
                    }
                    Err(error) => tracing::warn!(%error, "cleaning up the accounts tables failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use serde_json::json;

    use super::super::Origin;
    use super::super::audit::{AuditAction, AuditEvent, AuditQuery};
    use super::super::test_support::store;
    use super::*;

    const DAY: i64 = 86_400_000;

    #[tokio::test]
    async fn events_past_the_retention_go_in_batches_and_the_rest_stay() {
        let clock = Arc::new(AtomicI64::new(10 * DAY));
        let now = Arc::clone(&clock);
        let store = store().await.with_clock(move || now.load(Ordering::SeqCst));
        let event = AuditEvent::new(AuditAction::Logout, &Origin::default(), None, json!({}));
        // Seven old events (day 10), two recent ones (day 100).
        for _ in 0..7 {
            store.record(&event).await.unwrap();
        }
        clock.store(100 * DAY, Ordering::SeqCst);
        for _ in 0..2 {
            store.record(&event).await.unwrap();
        }
        let retention = Retention {
            audit: Duration::from_secs(90 * 86_400),
            batch: 3,
        };
        // Day 100 + 1 ms: the day-10 events are 90 days and 1 ms old.
        clock.store(100 * DAY + 1, Ordering::SeqCst);
        assert_eq!(store.prune_audit_older_than(retention).await.unwrap(), 7);
        assert_eq!(store.prune_audit_older_than(retention).await.unwrap(), 0);
        let left = store
            .audit_events(&AuditQuery {
                limit: 50,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(left.events.len(), 2);
        assert_eq!(Retention::days(90).audit, Duration::from_secs(7_776_000));
    }
}
