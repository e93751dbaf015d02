//! The engine's background tasks: claiming, executing attempts, sweeping expired
//! leases, firing schedules and pumping stored events to subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::job::{ErasedJob, JobContext, JobError, JobOutput};
use crate::model::RunId;
use crate::store::{AttemptFence, AttemptOutcome, Claim, LeaseStatus, NewRun, StoreError};

/// An attempt executing on this instance, or a cancel waiting for one.
pub(crate) struct LocalAttempt {
    cancel_requested: Arc<Notify>,
    /// Set while no attempt of the run has started here: the cancel of a run whose
    /// claim committed a moment ago, before its attempt was registered (on SQLite the
    /// cancel waits for the claim's write lock, then lands in exactly that gap). The
    /// attempt that starts next picks it up; unclaimed ones go after
    /// [`EARLY_CANCEL_TTL`].
    early_since: Option<std::time::Instant>,
}

impl LocalAttempt {
    /// Whether an attempt is executing (not only a cancel waiting for one).
    pub(crate) const fn is_executing(&self) -> bool {
        self.early_since.is_none()
    }
}

/// How long a cancel waits for an attempt of its run to start on this instance (the
/// run may be executing on another instance, which learns of it by its heartbeat).
const EARLY_CANCEL_TTL: Duration = Duration::from_secs(60);

/// Spawns the claim loop, the sweeper, the schedules and the event pump.
pub(super) fn spawn_background(inner: &Arc<Inner>, last_seq: i64) {
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(pump_events(Arc::clone(inner), last_seq)));
    tasks.push(tokio::spawn(sweep_leases(Arc::clone(inner))));
    if inner.config.concurrency > 0 {
        tasks.push(tokio::spawn(claim_loop(Arc::clone(inner))));
    }
    if let Some(retention) = inner.config.retention {
        tasks.push(tokio::spawn(retain(Arc::clone(inner), retention)));
    }
    if inner.config.schedules {
        for info in inner.registry.infos() {
            if let Some(schedule) = info.schedule {
                tasks.push(tokio::spawn(fire_schedule(
                    Arc::clone(inner),
                    info.name,
                    schedule,
                    info.retry_policy.max_attempts,
                )));
            }
        }
    }
    if let Ok(mut slot) = inner.tasks.lock() {
        slot.extend(tasks);
    }
}

/// Tells the local attempt of `run_id` that a cancel was requested; without one yet,
/// leaves the cancel for the attempt that may be about to start.
pub(super) fn signal_cancel(inner: &Inner, run_id: RunId) {
    if let Ok(mut running) = inner.running.lock() {
        let now = std::time::Instant::now();
        running.retain(|_, attempt| {
            attempt
                .early_since
                .is_none_or(|since| now.duration_since(since) < EARLY_CANCEL_TTL)
        });
        match running.get(&run_id) {
            Some(attempt) => attempt.cancel_requested.notify_one(),
            None => {
                // A stored permit: the attempt's first wait for a cancel ends at once.
                let cancel_requested = Arc::new(Notify::new());
                cancel_requested.notify_one();
                running.insert(
                    run_id,
                    LocalAttempt {
                        cancel_requested,
                        early_since: Some(now),
                    },
                );
            }
        }
    }
}

pub(super) async fn shutdown(inner: &Arc<Inner>) {
    if inner.shutting_down.swap(true, Ordering::AcqRel) {
        return;
    }
    inner.stop.cancel();
    // Wait for running attempts to finish, for at most the shutdown grace.
    let all = u32::try_from(inner.config.concurrency).unwrap_or(u32::MAX);
    let finished = tokio::time::timeout(
        inner.config.shutdown_grace,
        Arc::clone(&inner.permits).acquire_many_owned(all),
    )
    .await;
    if finished.is_err() {
        inner.hand_back.cancel();
        // Hand-back is prompt: each attempt aborts its job and writes one row.
        let _ = Arc::clone(&inner.permits).acquire_many_owned(all).await;
    }
    let tasks = inner
        .tasks
        .lock()
        .map(|mut tasks| std::mem::take(&mut *tasks))
        .unwrap_or_default();
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits for a change notification, the poll interval or the stop signal; `false` on stop.
async fn idle(
    inner: &Inner,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    wait: Duration,
) -> bool {
    tokio::select! {
        () = inner.stop.cancelled() => false,
        _ = changes.changed() => true,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Claims one instance keeps in flight at once. A claim waits for its commit (a WAL
/// flush); a worker that frees up meanwhile gets a claim of its own instead of waiting
/// behind it, and the database flushes the concurrent commits together.
const CLAIMS_IN_FLIGHT: usize = 4;

async fn claim_loop(inner: Arc<Inner>) {
    let mut changes = inner.store.changes();
    let names = Arc::clone(&inner.job_names);
    let claimers = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
    // Set by a claim that found fewer due runs than free workers (or failed): the next
    // claim waits for a change.
    let drained = Arc::new(AtomicBool::new(false));
    loop {
        if drained.swap(false, Ordering::AcqRel)
            && !idle(&inner, &mut changes, inner.config.poll_interval).await
        {
            return;
        }
        let acquired = tokio::select! {
            () = inner.stop.cancelled() => return,
            acquired = async {
                let claimer = Arc::clone(&claimers).acquire_owned().await.ok()?;
                let permit = Arc::clone(&inner.permits).acquire_owned().await.ok()?;
                Some((claimer, permit))
            } => acquired,
        };
        let Some((claimer, permit)) = acquired else {
            return;
        };
        if inner.stop.is_cancelled() {
            return;
        }
        // One claim for every free worker: a busy instance claims in batches.
        let mut permits = vec![permit];
        while let Ok(permit) = Arc::clone(&inner.permits).try_acquire_owned() {
            permits.push(permit);
        }
        // Changes from here on wake the idle wait above.
        changes.borrow_and_update();
        tokio::spawn(claim(
            Arc::clone(&inner),
            Arc::clone(&names),
            permits,
            Arc::clone(&drained),
            claimer,
        ));
    }
}

/// Claims a run for each of `permits` and starts them; flags `drained` when fewer were due.
async fn claim(
    inner: Arc<Inner>,
    names: Arc<Vec<String>>,
    mut permits: Vec<OwnedSemaphorePermit>,
    drained: Arc<AtomicBool>,
    _claimer: OwnedSemaphorePermit,
) {
    let wanted = permits.len();
    let now = inner.config.clock.now();
    match inner
        .store
        .claim_many(inner.instance_id, &names, now, inner.config.lease, wanted)
        .await
    {
        Ok(claims) => {
            if claims.len() < wanted {
                drained.store(true, Ordering::Release);
            }
            for (claim, permit) in claims.into_iter().zip(permits.drain(..)) {
                start_attempt(&inner, claim, permit);
            }
        }
        Err(err) => {
            drained.store(true, Ordering::Release);
            tracing::warn!(error = %err, "claim failed");
        }
    }
}

/// Runs a claimed attempt on its own task, holding one worker permit.
fn start_attempt(inner: &Arc<Inner>, claim: Claim, permit: OwnedSemaphorePermit) {
    let run_id = claim.run.id;
    let Some(job) = inner.registry.get(&claim.run.job_name).cloned() else {
        // Claims are filtered by registered names, so this cannot happen.
        tracing::error!(%run_id, "claimed a run of an unregistered job");
        return;
    };
    tracing::debug!(%run_id, attempt = claim.fence.attempt, "claimed");
    // A cancel that arrived since the claim committed is waiting here already.
    let cancel_requested = match inner.running.lock() {
        Ok(mut running) => {
            let attempt = running.entry(run_id).or_insert_with(|| LocalAttempt {
                cancel_requested: Arc::new(Notify::new()),
                early_since: None,
            });
            attempt.early_since = None;
            Arc::clone(&attempt.cancel_requested)
        }
        Err(_) => Arc::new(Notify::new()),
    };
    tokio::spawn(execute(
        Arc::clone(inner),
        job,
        claim,
        cancel_requested,
        permit,
    ));
}

/// Why the engine stopped a job before it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Timeout,
    HandBack,
}

enum Ending {
    Returned(Result<JobOutput, JobError>),
    Panicked(String),
    Aborted,
    LeaseLost,
}

async fn execute(
    inner: Arc<Inner>,
    job: Arc<dyn ErasedJob>,
    claim: Claim,
    cancel_requested: Arc<Notify>,
    permit: OwnedSemaphorePermit,
) {
    let fence = claim.fence;
    let timeout = job.timeout();
    let retry_policy = job.retry_policy();
    let token = CancellationToken::new();
    let ctx = JobContext {
        job_name: Arc::from(claim.run.job_name.as_str()),
        fence,
        params: Arc::new(claim.run.params.clone()),
        cancel: token.clone(),
        store: Arc::clone(&inner.store),
        clock: Arc::clone(&inner.config.clock),
        checkpoint: Arc::new(std::sync::Mutex::new(claim.checkpoint.clone())),
    };
    let mut handle = tokio::spawn(job.run_boxed(ctx));
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut heartbeat = tokio::time::interval_at(
        Instant::now() + inner.config.heartbeat_interval,
        inner.config.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reason: Option<StopReason> = None;
    let abort_at = tokio::time::sleep(Duration::MAX);
    tokio::pin!(abort_at);
    let mut abort_armed = false;

    let ending = loop {
        tokio::select! {
            joined = &mut handle => break match joined {
                Ok(result) => Ending::Returned(result),
                Err(err) if err.is_panic() => Ending::Panicked(panic_message(err)),
                Err(_) => Ending::Aborted,
            },
            _ = heartbeat.tick() => {
                let now = inner.config.clock.now();
                match inner.store.heartbeat(&fence, now, inner.config.lease).await {
                    Ok(LeaseStatus::Held) => {}
                    Ok(LeaseStatus::CancelRequested) => {
                        abort_armed |= begin_stop(&mut reason, StopReason::Cancel, &token, abort_at.as_mut(), inner.config.cancel_grace);
                    }
                    Ok(LeaseStatus::Lost) => {
                        token.cancel();
                        handle.abort();
                        break Ending::LeaseLost;
                    }
                    Err(err) => tracing::warn!(run_id = %fence.run_id, error = %err, "heartbeat failed"),
                }
            }
            () = cancel_requested.notified(), if reason.is_none() => {
                abort_armed |= begin_stop(&mut reason, StopReason::Cancel, &token, abort_at.as_mut(), inner.config.cancel_grace);
            }
            () = &mut deadline, if reason.is_none() => {
                abort_armed |= begin_stop(&mut reason, StopReason::Timeout, &token, abort_at.as_mut(), inner.config.cancel_grace);
            }
            () = inner.hand_back.cancelled(), if reason.is_none() || reason == Some(StopReason::Cancel) => {
                // Hand back at once: the shutdown grace has already passed.
                reason = Some(StopReason::HandBack);
                token.cancel();
                handle.abort();
                break Ending::Aborted;
            }
            () = &mut abort_at, if abort_armed => {
                handle.abort();
                break Ending::Aborted;
            }
        }
    };

    let outcome = decide(&inner, &fence, reason, ending, timeout, &retry_policy);
    let next = match outcome {
        Some(outcome) => finish(&inner, &fence, outcome).await,
        None => None,
    };
    if let Ok(mut running) = inner.running.lock() {
        running.remove(&fence.run_id);
    }
    // The worker goes on with the run its finish claimed, if any; else it is free for
    // the claim loop.
    match next {
        Some(claim) => start_attempt(&inner, claim, permit),
        None => drop(permit),
    }
}

/// Cancels the job's token and arms the forced abort, unless a stop is under way.
fn begin_stop(
    reason: &mut Option<StopReason>,
    why: StopReason,
    token: &CancellationToken,
    abort_at: std::pin::Pin<&mut tokio::time::Sleep>,
    grace: Duration,
) -> bool {
    if reason.is_some() {
        return false;
    }
    *reason = Some(why);
    token.cancel();
    abort_at.reset(Instant::now() + grace);
    true
}

fn decide(
    inner: &Inner,
    fence: &AttemptFence,
    reason: Option<StopReason>,
    ending: Ending,
    timeout: Duration,
    policy: &super::RetryPolicy,
) -> Option<AttemptOutcome> {
    let now = inner.config.clock.now();
    let retry = |error: String, at_least: Option<Duration>| {
        let wait = policy
            .delay_after(fence.attempt)
            .max(at_least.unwrap_or_default());
        AttemptOutcome::Failed {
            error,
            retry_at: Some(now + wait),
        }
    };
    let timed_out = || retry(format!("timed out after {}s", timeout.as_secs_f64()), None);
    match (ending, reason) {
        (Ending::LeaseLost, _) | (Ending::Returned(Err(JobError::LeaseLost)), _) => {
            tracing::warn!(run_id = %fence.run_id, attempt = fence.attempt, "attempt lost its lease");
            None
        }
        (Ending::Returned(Ok(output)), _) => Some(AttemptOutcome::Succeeded {
            result: output.result,
        }),
        (_, Some(StopReason::HandBack)) => Some(AttemptOutcome::HandedBack),
        (_, Some(StopReason::Cancel)) | (Ending::Returned(Err(JobError::Cancelled)), None) => {
            Some(AttemptOutcome::Cancelled)
        }
        (_, Some(StopReason::Timeout)) => Some(timed_out()),
        (
            Ending::Returned(Err(JobError::Retryable {
                message,
                retry_after,
            })),
            None,
        ) => Some(retry(message, retry_after)),
        (Ending::Returned(Err(err)), None) => Some(AttemptOutcome::Failed {
            error: err.to_string(),
            retry_at: None,
        }),
        (Ending::Panicked(message), None) => Some(retry(format!("job panicked: {message}"), None)),
        (Ending::Aborted, None) => Some(retry("job was aborted".to_owned(), None)),
    }
}

/// Writes the attempt's outcome and, unless the engine is stopping, claims the worker's
/// next run in the same call; returns that claim.
async fn finish(inner: &Inner, fence: &AttemptFence, outcome: AttemptOutcome) -> Option<Claim> {
    // A store hiccup must not lose the outcome: retry until the lease would have run
    // out, after which the sweeper owns the run anyway.
    let give_up = Instant::now() + inner.config.lease;
    let mut wait = Duration::from_millis(50);
    loop {
        let now = inner.config.clock.now();
        let finished = if inner.stop.is_cancelled() {
            inner
                .store
                .finish_attempt(fence, outcome.clone(), now)
                .await
                .map(|run| (run, None))
        } else {
            inner
                .store
                .finish_and_claim(
                    fence,
                    outcome.clone(),
                    now,
                    &inner.job_names,
                    inner.config.lease,
                )
                .await
        };
        match finished {
            Ok((run, next)) => {
                tracing::debug!(run_id = %fence.run_id, state = %run.state, "attempt finished");
                return next;
            }
            Err(StoreError::Fenced) => {
                tracing::warn!(run_id = %fence.run_id, attempt = fence.attempt, "late finish rejected by the fence");
                return None;
            }
            Err(err) if Instant::now() + wait < give_up => {
                tracing::warn!(run_id = %fence.run_id, error = %err, "finishing the attempt failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                tracing::error!(run_id = %fence.run_id, error = %err, "could not finish the attempt; the sweeper will reclaim it");
                return None;
            }
        }
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    let payload = err.into_panic();
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}

async fn sweep_leases(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(inner.config.sweep_interval) => {}
        }
        match inner.store.sweep_expired(inner.config.clock.now()).await {
            Ok(report) if !report.is_empty() => tracing::info!(?report, "reclaimed expired leases"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "lease sweep failed"),
        }
    }
}

/// Fires one job's schedule: each slot once (across instances, by the store's unique
/// `(job, slot)` row), missed slots by the schedule's [`CatchUp`](super::CatchUp) policy.
async fn fire_schedule(
    inner: Arc<Inner>,
    job_name: String,
    schedule: super::Schedule,
    max_attempts: u32,
) {
    let policy = schedule.catch_up();
    // Missed slots count from the newest one recorded; a job that never fired starts
    // with its next slot.
    let recorded = match inner.store.last_schedule_slots().await {
        Ok(slots) => slots
            .into_iter()
            .find_map(|(job, slot)| (job == job_name).then_some(slot)),
        Err(err) => {
            tracing::warn!(job = %job_name, error = %err, "reading the last schedule slot failed; missed slots are not caught up");
            None
        }
    };
    let mut after = recorded.unwrap_or_else(|| inner.config.clock.now());
    let mut changes = inner.store.changes();
    loop {
        let now = inner.config.clock.now();
        let due = schedule.due(after, now);
        if due.dropped > 0 {
            tracing::warn!(
                job = %job_name,
                dropped = due.dropped,
                %policy,
                since = %after,
                "missed schedule slots dropped"
            );
        }
        for slot in due.fire {
            let late = now - slot > super::CatchUp::ON_TIME;
            // A missed slot, or any slot under `all`, waits for the job's active run: it
            // must run, not be consumed by the one-active-run rule.
            if (late || matches!(policy, super::CatchUp::All { .. }))
                && !wait_until_idle(&inner, &job_name, &mut changes).await
            {
                return;
            }
            fire_slot(&inner, &job_name, slot, max_attempts, late).await;
        }
        if let Some(newest) = due.newest {
            after = after.max(newest);
        }
        let Some(next) = schedule.next_after(after.max(now)) else {
            return;
        };
        let wait = duration_until(inner.config.clock.now(), next);
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Waits until `job_name` has no active run; `false` when the engine stops first.
async fn wait_until_idle(
    inner: &Inner,
    job_name: &str,
    changes: &mut tokio::sync::watch::Receiver<u64>,
) -> bool {
    loop {
        match inner.store.active_runs(Some(job_name)).await {
            Ok(active) if active.is_empty() => return true,
            Ok(_) => {}
            Err(err) => tracing::warn!(job = %job_name, error = %err, "reading active runs failed"),
        }
        if !idle(inner, changes, inner.config.poll_interval).await {
            return false;
        }
    }
}

async fn fire_slot(
    inner: &Inner,
    job_name: &str,
    slot: OffsetDateTime,
    max_attempts: u32,
    late: bool,
) {
    let new = NewRun {
        id: RunId::new(),
        job_name: job_name.to_owned(),
        params: serde_json::Value::Object(serde_json::Map::new()),
        requested_by: None,
        idempotency_key: None,
        max_attempts: max_attempts.max(1),
        force: false,
        created_at: inner.config.clock.now(),
    };
    match inner.store.fire_schedule(slot, new).await {
        Ok(Some(run)) => {
            tracing::info!(job = %job_name, run_id = %run.id, %slot, catch_up = late, "schedule fired");
        }
        Ok(None) => tracing::debug!(job = %job_name, %slot, "schedule slot taken or job busy"),
        Err(err) => {
            tracing::warn!(job = %job_name, %slot, error = %err, "firing a schedule failed")
        }
    }
}

/// Deletes what `retention` lets go every [`Retention::interval`](super::Retention),
/// the first pass a minute (at most an interval) after start-up.
async fn retain(inner: Arc<Inner>, retention: super::Retention) {
    let mut wait = retention.interval().min(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = retention.interval();
        match prune_pass(&inner, retention).await {
            Ok(report) if report.events + report.runs + report.slots > 0 => tracing::info!(
                events = report.events,
                runs = report.runs,
                slots = report.slots,
                "retention deleted old rows"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "retention pass failed"),
        }
    }
}

/// Batches of [`JobStore::prune`](crate::JobStore::prune) until one is not full, with a
/// pause between them so writers get the database in between.
pub(super) async fn prune_pass(
    inner: &Inner,
    retention: super::Retention,
) -> Result<crate::PruneReport, StoreError> {
    let now = inner.config.clock.now();
    let batch = crate::PruneBatch {
        events_before: now - retention.events(),
        runs_before: now - retention.runs(),
        limit: retention.batch(),
    };
    let mut total = crate::PruneReport::default();
    loop {
        let report = inner.store.prune(batch).await?;
        total.add(report);
        if report.busy || !report.is_full(batch.limit) || inner.stop.is_cancelled() {
            return Ok(total);
        }
        tokio::time::sleep(retention.pause()).await;
    }
}

fn duration_until(now: OffsetDateTime, then: OffsetDateTime) -> Duration {
    Duration::try_from(then - now).unwrap_or_default()
}

async fn pump_events(inner: Arc<Inner>, mut last_seq: i64) {
    const BATCH: u32 = 500;
    let mut changes = inner.store.changes();
    loop {
        loop {
            match inner.store.events_since(last_seq, BATCH).await {
                Ok(events) => {
                    let full = events.len() >= BATCH as usize;
                    for event in events {
                        last_seq = last_seq.max(event.seq);
                        // No subscriber is fine.
                        let _ = inner.events.send(event);
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading events failed");
                    break;
                }
            }
        }
        if !idle(&inner, &mut changes, inner.config.poll_interval).await {
            return;
        }
    }
}
