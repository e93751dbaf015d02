//! One protocol over two SQL dialects.
//!
//! Every transaction script of the SQL stores (create with idempotency and the
//! one-active-run rule, claim, heartbeat, fenced finish, sweep, schedule slots, cancel,
//! events, retention) is written once here, over [`SqlBackend`]: a database's
//! connections and transactions, its statements' SQL text (`queries/<dialect>/*.sql`)
//! and how it binds and reads values ([`conn`]). A backend may answer the common cases
//! in one statement ([`SqlBackend::create_unopposed`], [`SqlBackend::finish_running`]);
//! the scripts here are then the general path.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::common::{
    cancel_next, cancel_outcome, finish_transition, from_u64, log_line, parse_state,
    sweep_transition, to_u32, to_u64, truncate_micros,
};
use super::{
    AttemptFence, AttemptOutcome, CancelOutcome, Claim, CreateOutcome, JobStore, LeaseStatus,
    NewRun, PruneBatch, PruneReport, StoreError, StorePool, SweepReport, claim_after_finish,
};
use crate::model::{
    Attempt, InstanceId, LogLevel, LogLine, Progress, Run, RunEvent, RunEventKind, RunId, RunState,
    StateCounts,
};

mod backend;
pub(crate) mod conn;
pub(crate) mod queries;
mod retention;
pub(crate) mod rows;
pub(crate) mod script;

pub(crate) use backend::SqlBackend;
use conn::{SqlConn, SqlRow, Stmt};
use rows::{attempt_from_row, event_from_row, max_attempts, run_from_row};
use script::{Script, event_params, fenced, pending_event, running_event};

/// A script over `conn` with `backend`'s statements.
fn script<'a, B: SqlBackend + ?Sized>(backend: &B, conn: &'a mut B::Conn) -> Script<'a, B::Conn> {
    Script {
        conn,
        q: backend.queries(),
        event_lock: backend.event_lock(),
    }
}

/// A claimed run, from a row of `claim.sql`.
pub(crate) fn claim_from_row(
    row: &impl SqlRow,
    instance: InstanceId,
    expires: OffsetDateTime,
) -> Result<Claim, StoreError> {
    let run = run_from_row(row)?;
    Ok(Claim {
        fence: AttemptFence {
            run_id: run.id,
            attempt: run.attempts,
            instance_id: instance,
        },
        checkpoint: row.opt_json("checkpoint")?,
        lease_expires_at: expires,
        run,
    })
}

/// The create script: its answer, or `None` when a concurrent start won the race
/// between its checks and its insert (roll back and look again).
async fn create_in<C: SqlConn>(
    script: &mut Script<'_, C>,
    new: &NewRun,
) -> Result<Option<CreateOutcome>, StoreError> {
    let q = script.q;
    if let Some(key) = &new.idempotency_key
        && let Some(run) = script.run(q.run_by_key, key.as_str()).await?
    {
        return Ok(Some(CreateOutcome::Existing(run)));
    }
    let holder = if new.force {
        q.slot_holder_for_update
    } else {
        q.slot_holder
    };
    let active = script.run(holder, new.job_name.as_str()).await?;
    if let (Some(active), false) = (&active, new.force) {
        return Ok(Some(CreateOutcome::AlreadyActive(active.id)));
    }
    // Row writes first, event rows (and PostgreSQL's event lock) last, in every
    // transaction: whoever holds the event lock waits for nothing else.
    let mut replaced = None;
    if let Some(active) = active
        && let Some(next) = cancel_next(active.state)
    {
        script
            .set_cancel_state(&active, next, new.created_at)
            .await?;
        replaced = Some((active, next));
    }
    let Some(run) = script.insert_run(new).await? else {
        return Ok(None);
    };
    if let Some((active, next)) = &replaced {
        let event = script::cancel_event(active, *next);
        script
            .insert_event(active.id, &active.job_name, new.created_at, &event)
            .await?;
    }
    script
        .insert_event(run.id, &run.job_name, run.created_at, &pending_event())
        .await?;
    Ok(Some(CreateOutcome::Created {
        run,
        replaced: replaced.map(|(active, _)| active.id),
    }))
}

/// The general finish: any state, any outcome, in a transaction.
async fn finish_in_transaction<B: SqlBackend>(
    backend: &B,
    fence: &AttemptFence,
    outcome: AttemptOutcome,
    now: OffsetDateTime,
) -> Result<Run, StoreError> {
    let mut tx = backend.begin().await?;
    let mut script = script(backend, &mut tx);
    let stmt = fenced(script.q.fenced_run_for_update, fence);
    let row = script
        .conn
        .optional(stmt)
        .await?
        .ok_or(StoreError::Fenced)?;
    let run = run_from_row(&row)?;
    let transition = finish_transition(run.state, run.attempts, max_attempts(&row)?, outcome, now);
    script
        .apply_transition(run.id, &run.job_name, fence.attempt, &transition, now)
        .await?;
    let run = script.must_run(run.id).await?;
    B::commit(tx).await?;
    backend.committed();
    Ok(run)
}

#[async_trait]
impl<B: SqlBackend> JobStore for B {
    fn kind(&self) -> &'static str {
        B::KIND
    }

    fn pool(&self) -> StorePool {
        self.store_pool()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let stmt = Stmt::new(self.queries().ping);
        self.pooled().await?.exec(stmt).await.map(drop)
    }

    async fn create_run(&self, mut new: NewRun) -> Result<CreateOutcome, StoreError> {
        new.created_at = truncate_micros(new.created_at);
        if !new.force
            && let Some(run) = self.create_unopposed(&new).await?
        {
            self.committed();
            return Ok(CreateOutcome::Created {
                run,
                replaced: None,
            });
        }
        // A concurrent start can win the race between the checks and the insert; the
        // unique indexes catch it, and another pass reports what won.
        for _ in 0..3 {
            let mut tx = self.begin().await?;
            let Some(outcome) = create_in(&mut script(self, &mut tx), &new).await? else {
                continue;
            };
            B::commit(tx).await?;
            if matches!(outcome, CreateOutcome::Created { .. }) {
                self.committed();
            }
            return Ok(outcome);
        }
        Err(StoreError::conflict(
            "create_run kept conflicting with concurrent starts",
        ))
    }

    async fn claim_many(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        if max == 0 || jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = truncate_micros(now);
        let expires = now + lease;
        let q = self.queries();
        let (kind, payload) = event_params(&running_event(0));
        let stmt = Stmt::new(q.claim)
            .bind(instance)
            .bind(expires)
            .bind(now)
            .bind(self.job_filter(jobs).await?)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .bind(kind)
            .bind(payload)
            .bind(self.event_lock());
        let to_claims = |rows: Vec<<B::Conn as SqlConn>::Row>| {
            rows.iter()
                .map(|row| claim_from_row(row, instance, expires))
                .collect::<Result<Vec<_>, StoreError>>()
        };
        let claims = match q.insert_attempt {
            // The statement wrote the attempt rows and events: no transaction needed.
            None => to_claims(self.pooled().await?.all(stmt).await?)?,
            Some(insert_attempt) => {
                let mut tx = self.begin().await?;
                let claims = to_claims(tx.all(stmt).await?)?;
                let mut script = script(self, &mut tx);
                for claim in &claims {
                    let run = &claim.run;
                    let attempt = Stmt::new(insert_attempt)
                        .bind(run.id)
                        .bind(run.attempts)
                        .bind(instance)
                        .bind(now)
                        .bind(expires);
                    script.conn.exec(attempt).await?;
                    let event = running_event(run.attempts);
                    script
                        .insert_event(run.id, &run.job_name, now, &event)
                        .await?;
                }
                B::commit(tx).await?;
                claims
            }
        };
        if !claims.is_empty() {
            self.committed();
        }
        Ok(claims)
    }

    async fn heartbeat(
        &self,
        fence: &AttemptFence,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<LeaseStatus, StoreError> {
        let now = truncate_micros(now);
        let expires = now + lease;
        let q = self.queries();
        let mut tx = self.begin().await?;
        let renew = fenced(q.renew_lease, fence).bind(expires).bind(now);
        let Some(row) = tx.optional(renew).await? else {
            return Ok(LeaseStatus::Lost);
        };
        let attempt = Stmt::new(q.renew_attempt)
            .bind(expires)
            .bind(now)
            .bind(fence.run_id)
            .bind(fence.attempt);
        tx.exec(attempt).await?;
        B::commit(tx).await?;
        Ok(
            if parse_state(&row.text("state")?)? == RunState::Cancelling {
                LeaseStatus::CancelRequested
            } else {
                LeaseStatus::Held
            },
        )
    }

    async fn check_fence(&self, fence: &AttemptFence) -> Result<(), StoreError> {
        let stmt = fenced(self.queries().fence_held, fence);
        let held = self.pooled().await?.optional(stmt).await?;
        held.map(drop).ok_or(StoreError::Fenced)
    }

    async fn record_progress(
        &self,
        fence: &AttemptFence,
        progress: &Progress,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let now = truncate_micros(now);
        let stmt = fenced(self.queries().set_progress, fence)
            .bind(from_u64(progress.done))
            .bind(progress.total.map(from_u64))
            .bind(progress.message.as_deref())
            .bind(now);
        let kind = RunEventKind::Progress {
            progress: progress.clone(),
        };
        self.fenced_event(fence, stmt, now, &kind).await
    }

    async fn append_log(
        &self,
        fence: &AttemptFence,
        level: LogLevel,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let kind = RunEventKind::Log {
            level,
            message: message.to_owned(),
            attempt: fence.attempt,
        };
        let stmt = fenced(self.queries().fenced_job, fence);
        self.fenced_event(fence, stmt, truncate_micros(now), &kind)
            .await
    }

    async fn save_checkpoint(
        &self,
        fence: &AttemptFence,
        cursor: &Value,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let q = self.queries();
        let mut tx = self.begin().await?;
        let run = fenced(q.set_checkpoint, fence).bind(cursor.clone());
        if tx.exec(run).await? == 0 {
            return Err(StoreError::Fenced);
        }
        let attempt = Stmt::new(q.set_attempt_checkpoint)
            .bind(cursor.clone())
            .bind(fence.run_id)
            .bind(fence.attempt);
        tx.exec(attempt).await?;
        B::commit(tx).await
    }

    async fn finish_attempt(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError> {
        let now = truncate_micros(now);
        if let Some((run, _)) = self.finish_running(fence, &outcome, now, None).await? {
            self.committed();
            return Ok(run);
        }
        finish_in_transaction(self, fence, outcome, now).await
    }

    async fn finish_and_claim(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
        jobs: &[String],
        lease: Duration,
    ) -> Result<(Run, Option<Claim>), StoreError> {
        let now = truncate_micros(now);
        if let Some(finished) = self
            .finish_running(fence, &outcome, now, Some((jobs, lease)))
            .await?
        {
            self.committed();
            return Ok(finished);
        }
        let run = finish_in_transaction(self, fence, outcome, now).await?;
        let claim = claim_after_finish(self, fence, now, jobs, lease).await;
        Ok((run, claim))
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StoreError> {
        let now = truncate_micros(now);
        let mut tx = self.begin().await?;
        let mut script = script(self, &mut tx);
        let Some(run) = script.run(script.q.run_by_id_for_update, id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        let Some(next) = cancel_next(run.state) else {
            return Ok(cancel_outcome(run, None));
        };
        script.apply_cancel(&run, next, now).await?;
        let run = script.must_run(id).await?;
        B::commit(tx).await?;
        self.committed();
        Ok(cancel_outcome(run, Some(next)))
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<SweepReport, StoreError> {
        let now = truncate_micros(now);
        let mut tx = self.begin().await?;
        let mut script = script(self, &mut tx);
        let expired = Stmt::new(script.q.expired).bind(now);
        let rows = script.conn.all(expired).await?;
        let mut report = SweepReport::default();
        for row in rows {
            let id = RunId::from_uuid(row.id("id")?);
            let state = parse_state(&row.text("state")?)?;
            let attempts = to_u32(row.int("attempts")?, "attempts")?;
            let transition = sweep_transition(state, attempts, max_attempts(&row)?, now);
            script
                .apply_transition(id, &row.text("job_name")?, attempts, &transition, now)
                .await?;
            report.record(id, transition.state);
        }
        B::commit(tx).await?;
        if !report.is_empty() {
            self.committed();
        }
        Ok(report)
    }

    async fn fire_schedule(
        &self,
        slot: OffsetDateTime,
        mut new: NewRun,
    ) -> Result<Option<Run>, StoreError> {
        let slot = truncate_micros(slot);
        new.created_at = truncate_micros(new.created_at);
        let mut tx = self.begin().await?;
        let mut script = script(self, &mut tx);
        let q = script.q;
        let job = new.job_name.as_str();
        let insert = Stmt::new(q.insert_slot)
            .bind(job)
            .bind(slot)
            .bind(new.created_at);
        if script.conn.exec(insert).await? == 0 {
            return Ok(None);
        }
        // The slot is consumed either way.
        let run = match script.run(q.slot_holder, job).await? {
            Some(_) => None,
            None => script.insert_run(&new).await?,
        };
        if let Some(run) = &run {
            let link = Stmt::new(q.link_slot).bind(run.id).bind(job).bind(slot);
            script.conn.exec(link).await?;
            script
                .insert_event(run.id, job, run.created_at, &pending_event())
                .await?;
        }
        B::commit(tx).await?;
        if run.is_some() {
            self.committed();
        }
        Ok(run)
    }

    async fn prune(&self, batch: PruneBatch) -> Result<PruneReport, StoreError> {
        retention::prune(self, batch).await
    }

    async fn events_pruned_through(&self) -> Result<i64, StoreError> {
        let stmt = Stmt::new(self.queries().pruned_through);
        let row = self.pooled().await?.optional(stmt).await?;
        row.map_or(Ok(0), |row| row.int("seq"))
    }

    async fn last_schedule_slots(&self) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        let stmt = Stmt::new(self.queries().last_slots);
        let rows = self.pooled().await?.all(stmt).await?;
        rows.iter()
            .map(|row| Ok((row.text("job_name")?, row.time("slot")?)))
            .collect()
    }

    async fn get_run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        let mut conn = self.pooled().await?;
        script(self, &mut conn)
            .run(self.queries().run_by_id, id)
            .await
    }

    async fn list_runs(&self, job_name: Option<&str>, limit: u32) -> Result<Vec<Run>, StoreError> {
        let stmt = Stmt::new(self.queries().list_runs)
            .bind(job_name)
            .bind(limit);
        self.runs(stmt).await
    }

    async fn latest_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.runs(Stmt::new(self.queries().latest_runs)).await
    }

    async fn active_runs(&self, job_name: Option<&str>) -> Result<Vec<Run>, StoreError> {
        self.runs(Stmt::new(self.queries().active_runs).bind(job_name))
            .await
    }

    async fn count_states(&self) -> Result<StateCounts, StoreError> {
        let stmt = Stmt::new(self.queries().count_states);
        let mut counts = StateCounts::default();
        for row in self.pooled().await?.all(stmt).await? {
            let state = parse_state(&row.text("state")?)?;
            counts.add(state, to_u64(row.int("n")?, "count")?);
        }
        Ok(counts)
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<Attempt>, StoreError> {
        let stmt = Stmt::new(self.queries().attempts).bind(id);
        let rows = self.pooled().await?.all(stmt).await?;
        rows.iter().map(|row| attempt_from_row(id, row)).collect()
    }

    async fn logs(&self, id: RunId) -> Result<Vec<LogLine>, StoreError> {
        let stmt = Stmt::new(self.queries().logs).bind(id);
        let rows = self.pooled().await?.all(stmt).await?;
        rows.iter()
            .filter_map(|row| match event_from_row(row) {
                Ok(event) => log_line(event).map(Ok),
                Err(err) => Some(Err(err)),
            })
            .collect()
    }

    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        SqlBackend::events_since(self, after_seq, limit).await
    }

    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        SqlBackend::latest_event_seq(self).await
    }
}

/// Helpers of the scripts above that need the backend.
#[async_trait]
trait SqlBackendExt: SqlBackend {
    /// The runs `stmt` selects.
    async fn runs(&self, stmt: Stmt<'_>) -> Result<Vec<Run>, StoreError> {
        let rows = self.pooled().await?.all(stmt).await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs `stmt` (a fenced write returning the run's `job_name`) and writes `kind`
    /// for the run, in one transaction.
    async fn fenced_event(
        &self,
        fence: &AttemptFence,
        stmt: Stmt<'_>,
        now: OffsetDateTime,
        kind: &RunEventKind,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let row = tx.optional(stmt).await?.ok_or(StoreError::Fenced)?;
        script(self, &mut tx)
            .insert_event(fence.run_id, &row.text("job_name")?, now, kind)
            .await?;
        Self::commit(tx).await?;
        self.committed();
        Ok(())
    }
}

impl<B: SqlBackend> SqlBackendExt for B {}
