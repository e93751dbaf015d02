//! An in-memory [`JobStore`]: the protocol of the SQL stores on plain data structures,
//! for tests (deterministic, no files, paused time) and single-process prototypes.
//!
//! See [`MemoryStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::common::{
    Transition, cancel_next, cancel_outcome, finish_transition, log_line, sweep_transition,
    truncate_micros,
};
use super::{
    AttemptFence, AttemptOutcome, CancelOutcome, Claim, CreateOutcome, JobStore, LeaseStatus,
    NewRun, PruneBatch, PruneReport, StoreError, StorePool, SweepReport,
};
use crate::model::{
    Attempt, InstanceId, LogLevel, LogLine, Progress, Run, RunEvent, RunEventKind, RunId, RunState,
    StateCounts,
};

/// A job store in this process's memory: the protocol of the SQL stores — one active
/// run per job, idempotency keys, fenced writes, leases and sweeps, schedule slots fired
/// once, events in `seq` order, retention — on plain data structures, passing the same
/// store suite. For tests (deterministic, no files, paused time) and single-process
/// prototypes: everything is lost with the process, and it cannot be shared between
/// processes (use `SqliteStore` or `PgStore` for that).
///
/// ```
/// use pulse_etl::{JobStore, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), pulse_etl::StoreError> {
/// let store = MemoryStore::new().into_dyn();
/// assert_eq!(store.kind(), "memory");
/// assert_eq!(store.latest_event_seq().await?, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

/// A run with what the store keeps beside it.
struct Row {
    run: Run,
    max_attempts: u32,
    idempotency_key: Option<String>,
    next_attempt_at: OffsetDateTime,
    lease_owner: Option<InstanceId>,
    lease_expires_at: Option<OffsetDateTime>,
    checkpoint: Option<Value>,
    attempts: Vec<Attempt>,
}

#[derive(Default)]
struct State {
    runs: HashMap<RunId, Row>,
    events: BTreeMap<i64, RunEvent>,
    last_seq: i64,
    slots: BTreeMap<(String, OffsetDateTime), Option<RunId>>,
    pruned_through: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
            }),
        }
    }

    /// This store as the engine takes it.
    #[must_use]
    pub fn into_dyn(self) -> Arc<dyn JobStore> {
        Arc::new(self)
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.shared
            .state
            .lock()
            .map_err(|_| StoreError::Corrupt("the memory store's lock was poisoned".to_owned()))
    }

    fn bump(&self) {
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `f` on the state; wakes subscribers when it says it changed something.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let (value, changed) = f(&mut *self.lock()?)?;
        if changed {
            self.bump();
        }
        Ok(value)
    }
}

impl State {
    fn push_event(
        &mut self,
        run_id: RunId,
        job_name: &str,
        at: OffsetDateTime,
        kind: RunEventKind,
    ) {
        self.last_seq += 1;
        let event = RunEvent {
            seq: self.last_seq,
            run_id,
            job_name: job_name.to_owned(),
            at: truncate_micros(at),
            kind,
        };
        self.events.insert(self.last_seq, event);
    }

    /// The run of `job_name` holding its active slot (pending, running or retrying).
    fn slot_holder(&self, job_name: &str) -> Option<RunId> {
        self.runs
            .values()
            .find(|row| row.run.job_name == job_name && row.run.state.holds_active_slot())
            .map(|row| row.run.id)
    }

    fn insert_run(&mut self, new: &NewRun) -> Run {
        let at = truncate_micros(new.created_at);
        let run = Run {
            id: new.id,
            job_name: new.job_name.clone(),
            state: RunState::Pending,
            params: new.params.clone(),
            requested_by: new.requested_by.clone(),
            created_at: at,
            started_at: None,
            finished_at: None,
            attempts: 0,
            progress: Progress::default(),
            error: None,
            result: None,
        };
        self.runs.insert(
            new.id,
            Row {
                run: run.clone(),
                max_attempts: new.max_attempts.max(1),
                idempotency_key: new.idempotency_key.clone(),
                next_attempt_at: at,
                lease_owner: None,
                lease_expires_at: None,
                checkpoint: None,
                attempts: Vec::new(),
            },
        );
        let kind = RunEventKind::State {
            state: RunState::Pending,
            attempt: 0,
            error: None,
        };
        self.push_event(new.id, &new.job_name, at, kind);
        run
    }

    /// Moves `id` to `next` (`cancelling` or `cancelled`), with its event.
    fn cancel(&mut self, id: RunId, next: RunState, now: OffsetDateTime) -> Option<Run> {
        let row = self.runs.get_mut(&id)?;
        row.run.state = next;
        if next == RunState::Cancelled {
            row.run.finished_at = Some(now);
        }
        let (run, attempt) = (row.run.clone(), row.run.attempts);
        let kind = RunEventKind::State {
            state: next,
            attempt,
            error: None,
        };
        self.push_event(id, &run.job_name, now, kind);
        Some(run)
    }

    /// The row `fence` names, while its attempt still holds it.
    fn fenced(&mut self, fence: &AttemptFence) -> Result<&mut Row, StoreError> {
        self.runs
            .get_mut(&fence.run_id)
            .filter(|row| holds(row, fence))
            .ok_or(StoreError::Fenced)
    }

    /// Ends attempt `attempt` of `id` with `transition`, with its event.
    fn apply(&mut self, id: RunId, attempt: u32, transition: Transition, now: OffsetDateTime) {
        let Some(row) = self.runs.get_mut(&id) else {
            return;
        };
        let event = transition.event(attempt);
        row.run.state = transition.state;
        row.run.error = transition.error;
        if transition.result.is_some() {
            row.run.result = transition.result;
        }
        if let Some(next) = transition.next_attempt_at {
            row.next_attempt_at = truncate_micros(next);
        }
        row.run.finished_at = transition.finished_at.map(truncate_micros);
        row.lease_owner = None;
        row.lease_expires_at = None;
        row.max_attempts = row
            .max_attempts
            .saturating_add(u32::try_from(transition.extra_attempts).unwrap_or(0));
        if let Some(ended) = row
            .attempts
            .iter_mut()
            .find(|a| a.number == attempt && a.finished_at.is_none())
        {
            ended.finished_at = Some(now);
            ended.outcome = Some(transition.attempt_outcome.to_owned());
            ended.error = transition.attempt_error;
        }
        let job_name = row.run.job_name.clone();
        self.push_event(id, &job_name, now, event);
    }

    fn claim(
        &mut self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
    ) -> Option<Claim> {
        let executing = |job: &str| {
            self.runs.values().any(|row| {
                row.run.job_name == job
                    && matches!(row.run.state, RunState::Running | RunState::Cancelling)
            })
        };
        let id = self
            .runs
            .values()
            .filter(|row| {
                matches!(row.run.state, RunState::Pending | RunState::Retrying)
                    && row.next_attempt_at <= now
                    && jobs.contains(&row.run.job_name)
                    && !executing(&row.run.job_name)
            })
            .min_by_key(|row| (row.next_attempt_at, row.run.created_at, row.run.id))?
            .run
            .id;
        let expires = truncate_micros(now + lease);
        let row = self.runs.get_mut(&id)?;
        row.run.state = RunState::Running;
        row.run.attempts += 1;
        row.run.started_at = row.run.started_at.or(Some(now));
        row.lease_owner = Some(instance);
        row.lease_expires_at = Some(expires);
        let number = row.run.attempts;
        row.attempts.push(Attempt {
            run_id: id,
            number,
            instance_id: instance,
            started_at: now,
            lease_expires_at: expires,
            heartbeat_at: now,
            finished_at: None,
            outcome: None,
            error: None,
            checkpoint: None,
        });
        let claim = Claim {
            run: row.run.clone(),
            fence: AttemptFence {
                run_id: id,
                attempt: number,
                instance_id: instance,
            },
            checkpoint: row.checkpoint.clone(),
            lease_expires_at: expires,
        };
        let kind = RunEventKind::State {
            state: RunState::Running,
            attempt: number,
            error: None,
        };
        let job_name = claim.run.job_name.clone();
        self.push_event(id, &job_name, now, kind);
        Some(claim)
    }

    /// Whether `run` is the latest run (by creation) of its job.
    fn is_latest(&self, run: &Run) -> bool {
        !self.runs.values().any(|other| {
            other.run.job_name == run.job_name
                && (other.run.created_at, other.run.id) > (run.created_at, run.id)
        })
    }
}

fn holds(row: &Row, fence: &AttemptFence) -> bool {
    row.run.attempts == fence.attempt
        && row.lease_owner == Some(fence.instance_id)
        && matches!(row.run.state, RunState::Running | RunState::Cancelling)
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl JobStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn pool(&self) -> StorePool {
        StorePool::Memory
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(drop)
    }

    async fn create_run(&self, new: NewRun) -> Result<CreateOutcome, StoreError> {
        self.write(|state| {
            if let Some(key) = &new.idempotency_key {
                let existing = state
                    .runs
                    .values()
                    .find(|row| row.idempotency_key.as_ref() == Some(key));
                if let Some(row) = existing {
                    return Ok((CreateOutcome::Existing(row.run.clone()), false));
                }
            }
            if state.runs.contains_key(&new.id) {
                return Err(StoreError::conflict(format!("run {} exists", new.id)));
            }
            let now = truncate_micros(new.created_at);
            let replaced = match state.slot_holder(&new.job_name) {
                Some(active) if !new.force => {
                    return Ok((CreateOutcome::AlreadyActive(active), false));
                }
                Some(active) => {
                    let running = state.runs[&active].run.state == RunState::Running;
                    let next = if running {
                        RunState::Cancelling
                    } else {
                        RunState::Cancelled
                    };
                    state.cancel(active, next, now);
                    Some(active)
                }
                None => None,
            };
            let run = state.insert_run(&new);
            Ok((CreateOutcome::Created { run, replaced }, true))
        })
    }

    async fn claim_many(
        &self,
        instance: InstanceId,
        jobs: &[String],
        now: OffsetDateTime,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let now = truncate_micros(now);
        self.write(|state| {
            let claims: Vec<Claim> = std::iter::from_fn(|| state.claim(instance, jobs, now, lease))
                .take(max)
                .collect();
            let changed = !claims.is_empty();
            Ok((claims, changed))
        })
    }

    async fn heartbeat(
        &self,
        fence: &AttemptFence,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<LeaseStatus, StoreError> {
        let now = truncate_micros(now);
        let expires = truncate_micros(now + lease);
        self.write(|state| {
            let Ok(row) = state.fenced(fence) else {
                return Ok((LeaseStatus::Lost, false));
            };
            row.lease_expires_at = Some(expires);
            if let Some(attempt) = row.attempts.iter_mut().find(|a| a.number == fence.attempt) {
                attempt.lease_expires_at = expires;
                attempt.heartbeat_at = now;
            }
            let status = if row.run.state == RunState::Cancelling {
                LeaseStatus::CancelRequested
            } else {
                LeaseStatus::Held
            };
            Ok((status, false))
        })
    }

    async fn check_fence(&self, fence: &AttemptFence) -> Result<(), StoreError> {
        self.lock()?.fenced(fence).map(drop)
    }

    async fn record_progress(
        &self,
        fence: &AttemptFence,
        progress: &Progress,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|state| {
            let row = state.fenced(fence)?;
            row.run.progress = progress.clone();
            let job_name = row.run.job_name.clone();
            let kind = RunEventKind::Progress {
                progress: progress.clone(),
            };
            state.push_event(fence.run_id, &job_name, now, kind);
            Ok(((), true))
        })
    }

    async fn append_log(
        &self,
        fence: &AttemptFence,
        level: LogLevel,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|state| {
            let job_name = state.fenced(fence)?.run.job_name.clone();
            let kind = RunEventKind::Log {
                level,
                message: message.to_owned(),
                attempt: fence.attempt,
            };
            state.push_event(fence.run_id, &job_name, now, kind);
            Ok(((), true))
        })
    }

    async fn save_checkpoint(
        &self,
        fence: &AttemptFence,
        cursor: &Value,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write(|state| {
            let row = state.fenced(fence)?;
            row.checkpoint = Some(cursor.clone());
            if let Some(attempt) = row.attempts.iter_mut().find(|a| a.number == fence.attempt) {
                attempt.checkpoint = Some(cursor.clone());
            }
            Ok(((), false))
        })
    }

    async fn finish_attempt(
        &self,
        fence: &AttemptFence,
        outcome: AttemptOutcome,
        now: OffsetDateTime,
    ) -> Result<Run, StoreError> {
        let now = truncate_micros(now);
        self.write(|state| {
            let row = state.fenced(fence)?;
            let transition = finish_transition(
                row.run.state,
                row.run.attempts,
                row.max_attempts,
                outcome,
                now,
            );
            state.apply(fence.run_id, fence.attempt, transition, now);
            Ok((state.runs[&fence.run_id].run.clone(), true))
        })
    }

    async fn request_cancel(
        &self,
        id: RunId,
        now: OffsetDateTime,
    ) -> Result<CancelOutcome, StoreError> {
        let now = truncate_micros(now);
        self.write(|state| {
            let Some(row) = state.runs.get(&id) else {
                return Ok((CancelOutcome::NotFound, false));
            };
            let Some(next) = cancel_next(row.run.state) else {
                return Ok((cancel_outcome(row.run.clone(), None), false));
            };
            let run = state
                .cancel(id, next, now)
                .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))?;
            Ok((cancel_outcome(run, Some(next)), true))
        })
    }

    async fn sweep_expired(&self, now: OffsetDateTime) -> Result<SweepReport, StoreError> {
        let now = truncate_micros(now);
        self.write(|state| {
            let mut expired: Vec<(RunId, RunState, u32, u32)> = state
                .runs
                .values()
                .filter(|row| {
                    matches!(row.run.state, RunState::Running | RunState::Cancelling)
                        && row.lease_expires_at.is_some_and(|until| until < now)
                })
                .map(|row| {
                    (
                        row.run.id,
                        row.run.state,
                        row.run.attempts,
                        row.max_attempts,
                    )
                })
                .collect();
            expired.sort_by_key(|(id, ..)| *id);
            let mut report = SweepReport::default();
            for (id, run_state, attempts, max_attempts) in expired {
                let transition = sweep_transition(run_state, attempts, max_attempts, now);
                report.record(id, transition.state);
                state.apply(id, attempts, transition, now);
            }
            let changed = !report.is_empty();
            Ok((report, changed))
        })
    }

    async fn fire_schedule(
        &self,
        slot: OffsetDateTime,
        new: NewRun,
    ) -> Result<Option<Run>, StoreError> {
        let key = (new.job_name.clone(), truncate_micros(slot));
        self.write(|state| {
            if state.slots.contains_key(&key) {
                return Ok((None, false));
            }
            state.slots.insert(key.clone(), None);
            if state.slot_holder(&new.job_name).is_some() {
                return Ok((None, false));
            }
            let run = state.insert_run(&new);
            state.slots.insert(key, Some(run.id));
            Ok((Some(run), true))
        })
    }

    async fn prune(&self, batch: PruneBatch) -> Result<PruneReport, StoreError> {
        let limit = usize::try_from(batch.limit.max(1)).unwrap_or(usize::MAX);
        self.write(|state| {
            let mut report = PruneReport::default();
            let aged: Vec<i64> = state
                .events
                .values()
                .filter(|event| {
                    event.at < batch.events_before
                        && !matches!(event.kind, RunEventKind::Log { .. })
                })
                .map(|event| event.seq)
                .take(limit)
                .collect();
            let mut through = aged.iter().max().copied();
            for seq in &aged {
                state.events.remove(seq);
            }
            report.events = count(aged.len());

            let mut old: Vec<(OffsetDateTime, RunId)> = state
                .runs
                .values()
                .filter(|row| {
                    row.run.state.is_terminal()
                        && row.run.finished_at.is_some_and(|at| at < batch.runs_before)
                        && !state.is_latest(&row.run)
                })
                .filter_map(|row| Some((row.run.finished_at?, row.run.id)))
                .collect();
            old.sort();
            old.truncate(limit);
            for (_, id) in &old {
                let seqs: Vec<i64> = state
                    .events
                    .values()
                    .filter(|event| event.run_id == *id)
                    .map(|event| event.seq)
                    .collect();
                through = through.max(seqs.iter().max().copied());
                report.events += count(seqs.len());
                for seq in seqs {
                    state.events.remove(&seq);
                }
                for run in state.slots.values_mut() {
                    if *run == Some(*id) {
                        *run = None;
                    }
                }
                state.runs.remove(id);
            }
            report.runs = count(old.len());

            let newest: HashMap<String, OffsetDateTime> =
                state
                    .slots
                    .keys()
                    .fold(HashMap::new(), |mut newest, (job, slot)| {
                        let entry = newest.entry(job.clone()).or_insert(*slot);
                        *entry = (*entry).max(*slot);
                        newest
                    });
            let mut slots: Vec<(String, OffsetDateTime)> = state
                .slots
                .keys()
                .filter(|(job, slot)| *slot < batch.runs_before && Some(slot) < newest.get(job))
                .cloned()
                .collect();
            slots.sort_by_key(|(_, slot)| *slot);
            slots.truncate(limit);
            for key in &slots {
                state.slots.remove(key);
            }
            report.slots = count(slots.len());
            if let Some(seq) = through {
                state.pruned_through = state.pruned_through.max(seq);
            }
            Ok((report, false))
        })
    }

    async fn events_pruned_through(&self) -> Result<i64, StoreError> {
        Ok(self.lock()?.pruned_through)
    }

    async fn last_schedule_slots(&self) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
        let state = self.lock()?;
        let mut newest: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
        for (job, slot) in state.slots.keys() {
            let entry = newest.entry(job.clone()).or_insert(*slot);
            *entry = (*entry).max(*slot);
        }
        Ok(newest.into_iter().collect())
    }

    async fn get_run(&self, id: RunId) -> Result<Option<Run>, StoreError> {
        Ok(self.lock()?.runs.get(&id).map(|row| row.run.clone()))
    }

    async fn list_runs(&self, job_name: Option<&str>, limit: u32) -> Result<Vec<Run>, StoreError> {
        let state = self.lock()?;
        let mut runs: Vec<Run> = state
            .runs
            .values()
            .filter(|row| job_name.is_none_or(|job| row.run.job_name == job))
            .map(|row| row.run.clone())
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse((run.created_at, run.id)));
        runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(runs)
    }

    async fn latest_runs(&self) -> Result<Vec<Run>, StoreError> {
        let state = self.lock()?;
        let mut latest: Vec<Run> = state
            .runs
            .values()
            .filter(|row| state.is_latest(&row.run))
            .map(|row| row.run.clone())
            .collect();
        latest.sort_by(|a, b| a.job_name.cmp(&b.job_name));
        Ok(latest)
    }

    async fn active_runs(&self, job_name: Option<&str>) -> Result<Vec<Run>, StoreError> {
        let state = self.lock()?;
        let mut runs: Vec<Run> = state
            .runs
            .values()
            .filter(|row| {
                !row.run.state.is_terminal() && job_name.is_none_or(|job| row.run.job_name == job)
            })
            .map(|row| row.run.clone())
            .collect();
        runs.sort_by_key(|run| (run.created_at, run.id));
        Ok(runs)
    }

    async fn count_states(&self) -> Result<StateCounts, StoreError> {
        let mut counts = StateCounts::default();
        for row in self.lock()?.runs.values() {
            counts.add(row.run.state, 1);
        }
        Ok(counts)
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .lock()?
            .runs
            .get(&id)
            .map(|row| row.attempts.clone())
            .unwrap_or_default())
    }

    async fn logs(&self, id: RunId) -> Result<Vec<LogLine>, StoreError> {
        Ok(self
            .lock()?
            .events
            .values()
            .filter(|event| event.run_id == id)
            .cloned()
            .filter_map(log_line)
            .collect())
    }

    async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Vec<RunEvent>, StoreError> {
        let state = self.lock()?;
        Ok(state
            .events
            .range(after_seq.saturating_add(1)..)
            .map(|(_, event)| event.clone())
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        Ok(self.lock()?.events.keys().next_back().copied().unwrap_or(0))
    }
}
