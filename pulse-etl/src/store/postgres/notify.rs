//! The `NOTIFY` that tells other instances of a commit.

use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

/// The least time between two `NOTIFY`s of one store. The first commit after a quiet
/// spell is announced at once; under load, the commits of each interval share one
/// notification (measured in the queued benchmark: one `NOTIFY` per commit cost 13 % of
/// the throughput, every other instance's listener waking for each).
pub(super) const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);

/// Sends one `NOTIFY` on `channel` whenever woken, however many commits woke it since
/// the last one and at most one per [`NOTIFY_INTERVAL`], on a connection of its own with
/// asynchronous commit: a `NOTIFY` inside the writing transactions would serialise their
/// commits (PostgreSQL orders the notification queue by holding one lock through each
/// notifying commit).
pub(super) async fn notify_others_task(
    connect: PgConnectOptions,
    channel: String,
    tag: String,
    wake: Arc<Notify>,
) {
    let mut conn: Option<sqlx::PgConnection> = None;
    loop {
        wake.notified().await;
        // A broken connection is replaced once per wake-up; a database that stays away
        // costs one failed connect per wake-up, and the other instances poll meanwhile.
        for retry in [false, true] {
            if conn.is_none() {
                match connect.connect().await {
                    Ok(fresh) => conn = Some(fresh),
                    Err(err) => {
                        tracing::warn!(error = %err, "NOTIFY connection failed");
                        break;
                    }
                }
            }
            let Some(open) = conn.as_mut() else { break };
            match sqlx::query(include_str!("../../../queries/postgres/notify.sql"))
                .bind(&channel)
                .bind(&tag)
                .execute(open)
                .await
            {
                Ok(_) => break,
                Err(err) => {
                    conn = None;
                    if retry {
                        tracing::warn!(error = %err, "NOTIFY failed");
                    }
                }
            }
        }
        // Wake-ups meanwhile leave one permit: the next `NOTIFY` covers them all.
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}
