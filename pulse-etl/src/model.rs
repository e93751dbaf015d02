//! The engine's vocabulary: runs, their states, attempts, progress and events.
//!
//! Every type here serialises to the JSON shapes of the HTTP contract (timestamps as
//! RFC 3339, enums in `snake_case`), so the API layer can return them as they are.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The id of a run: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct RunId(Uuid);

impl RunId {
    /// A fresh, time-ordered id (UUIDv7).
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    #[must_use]
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

impl From<Uuid> for RunId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

/// The id of one engine process. A fresh one is drawn at every start, so a restarted
/// worker never mistakes the runs of its previous life for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(Uuid);

impl InstanceId {
    /// A fresh instance id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The UUID inside.
    #[must_use]
    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for InstanceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Uuid> for InstanceId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

/// The state of a run.
///
/// `pending → running → succeeded | failed | cancelled`, with `retrying` between
/// attempts and `cancelling` while a cancel is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, waiting for a worker.
    Pending,
    /// An attempt holds a lease and is executing.
    Running,
    /// An attempt failed with a retryable error; the next one waits for its backoff.
    Retrying,
    /// A cancel was requested while an attempt was running; the worker is stopping it.
    Cancelling,
    /// Finished successfully.
    Succeeded,
    /// Finished with a fatal error or out of attempts.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 7] = [
        RunState::Pending,
        RunState::Running,
        RunState::Retrying,
        RunState::Cancelling,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The `snake_case` name used in JSON and in the stores.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Retrying => "retrying",
            RunState::Cancelling => "cancelling",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// `true` for `succeeded`, `failed` and `cancelled`: nothing will happen to the run again.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }

    /// `true` for the states that hold the job's single active slot (`pending`,
    /// `running`, `retrying`): a start of the same job is refused with 409 meanwhile.
    #[must_use]
    pub const fn holds_active_slot(self) -> bool {
        matches!(
            self,
            RunState::Pending | RunState::Running | RunState::Retrying
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown run state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run state `{0}`")]
pub struct UnknownRunState(pub String);

impl FromStr for RunState {
    type Err = UnknownRunState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownRunState(s.to_owned()))
    }
}

/// How far a run has got: `{done, total, message}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub struct Progress {
    /// Units of work done so far.
    pub done: u64,
    /// Units of work in all, when known.
    pub total: Option<u64>,
    /// A short human description of the current step.
    pub message: Option<String>,
}

impl Progress {
    /// Progress of `done` out of an optional `total`, without a message.
    #[must_use]
    pub const fn new(done: u64, total: Option<u64>) -> Self {
        Self {
            done,
            total,
            message: None,
        }
    }

    /// Sets the message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// A run: one execution request of a job, with its whole history.
///
/// Serialises as `{id, job_name, state, params, requested_by, created_at, started_at,
/// finished_at, attempts, progress: {done, total, message}, error}`; `result` is added
/// only when the job returned one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
pub struct Run {
    /// The run's id.
    pub id: RunId,
    /// The registered job it runs.
    pub job_name: String,
    /// Its current state.
    pub state: RunState,
    /// The parameters it was started with (a JSON object).
    pub params: Value,
    /// The user id of the verified identity that started it (`None` for schedules).
    pub requested_by: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its first attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a terminal state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// How many attempts have started (the fencing number of the latest one).
    pub attempts: u32,
    /// The latest progress report.
    pub progress: Progress,
    /// The error of the latest failed attempt, or of the run.
    pub error: Option<String>,
    /// The job's output, when it succeeded with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// One attempt of a run: the unit that holds a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The run it belongs to.
    pub run_id: RunId,
    /// Its number, from 1; every write of the attempt is fenced by it.
    pub number: u32,
    /// The engine instance that claimed it.
    pub instance_id: InstanceId,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When its lease runs out unless renewed.
    #[serde(with = "time::serde::rfc3339")]
    pub lease_expires_at: OffsetDateTime,
    /// Its latest heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// How it ended (`succeeded`, `failed`, `cancelled`, `lease_expired`, `handed_back`).
    pub outcome: Option<String>,
    /// Its error, when it failed.
    pub error: Option<String>,
    /// The checkpoint cursor it had reached.
    pub checkpoint: Option<Value>,
}

/// The level of a run's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "api", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Fine detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd that did not stop the run.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The `snake_case` name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its position in the store's event sequence.
    pub seq: i64,
    /// The attempt that wrote it (0 for lines written by the engine outside an attempt).
    pub attempt: u32,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Its level.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// An event the store wrote: a state change, a progress report or a log line.
///
/// Serialises flat, tagged by `type`:
/// `{"seq":7,"run_id":"…","job_name":"jira_sync","at":"…","type":"state","state":"running","attempt":1,"error":null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The store's sequence number: strictly increasing, usable as an SSE `id`.
    pub seq: i64,
    /// The run it concerns.
    pub run_id: RunId,
    /// The run's job.
    pub job_name: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: RunEventKind,
}

impl RunEvent {
    /// The SSE event name: `state`, `progress` or `log`.
    #[must_use]
    pub const fn event_name(&self) -> &'static str {
        match self.kind {
            RunEventKind::State { .. } => "state",
            RunEventKind::Progress { .. } => "progress",
            RunEventKind::Log { .. } => "log",
        }
    }
}

/// What a [`RunEvent`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEventKind {
    /// The run entered a new state.
    State {
        /// The new state.
        state: RunState,
        /// The attempt number at the time.
        attempt: u32,
        /// The error, when the change is a failure.
        error: Option<String>,
    },
    /// The run reported progress.
    Progress {
        /// The new progress.
        progress: Progress,
    },
    /// The run wrote a log line.
    Log {
        /// Its level.
        level: LogLevel,
        /// Its text.
        message: String,
        /// The attempt that wrote it.
        attempt: u32,
    },
}

/// A registered job with its latest run, as `GET /api/v1/jobs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's name.
    pub name: String,
    /// Its schedule, when it has one (`every 300s` or the cron expression).
    pub schedule: Option<String>,
    /// What its schedule does with missed slots (`skip`, `latest`, `all:<n>`), when it
    /// has a schedule.
    #[serde(default)]
    pub catch_up: Option<String>,
    /// The next slot of its schedule.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_slot: Option<OffsetDateTime>,
    /// The newest slot fired (by any instance; it made no run when the job was busy).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_slot: Option<OffsetDateTime>,
    /// Its timeout per attempt, in seconds.
    pub timeout_secs: u64,
    /// The most attempts one run may take.
    pub max_attempts: u32,
    /// The state of its latest run, if it ever ran.
    pub state: Option<RunState>,
    /// `true` while a run is pending, running, retrying or cancelling.
    pub active: bool,
    /// Its latest run.
    pub latest_run: Option<Run>,
}

/// The status summary the dashboard polls (`GET /api/v1/jobs/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSummary {
    /// One entry per registered job, by name.
    pub jobs: Vec<JobStatus>,
    /// How many runs are in each state (all jobs, all time).
    pub counts: StateCounts,
    /// How many attempts this instance is executing now.
    pub running_here: usize,
    /// This instance's id.
    pub instance_id: InstanceId,
    /// When the summary was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
}

/// One job's line in the [`StatusSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// The state of its latest run, if it ever ran.
    pub state: Option<RunState>,
    /// Its latest run's id.
    pub last_run_id: Option<RunId>,
    /// When its latest run finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_finished_at: Option<OffsetDateTime>,
    /// The latest run's progress.
    pub progress: Option<Progress>,
    /// The latest run's error.
    pub error: Option<String>,
    /// `true` while a run is pending, running, retrying or cancelling.
    pub active: bool,
}

/// How many runs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Runs pending.
    pub pending: u64,
    /// Runs running.
    pub running: u64,
    /// Runs retrying.
    pub retrying: u64,
    /// Runs cancelling.
    pub cancelling: u64,
    /// Runs succeeded.
    pub succeeded: u64,
    /// Runs failed.
    pub failed: u64,
    /// Runs cancelled.
    pub cancelled: u64,
}

impl StateCounts {
    /// Adds `n` runs in `state`.
    pub fn add(&mut self, state: RunState, n: u64) {
        let slot = match state {
            RunState::Pending => &mut self.pending,
            RunState::Running => &mut self.running,
            RunState::Retrying => &mut self.retrying,
            RunState::Cancelling => &mut self.cancelling,
            RunState::Succeeded => &mut self.succeeded,
            RunState::Failed => &mut self.failed,
            RunState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// The number of runs in `state`.
    #[must_use]
    pub const fn get(&self, state: RunState) -> u64 {
        match state {
            RunState::Pending => self.pending,
            RunState::Running => self.running,
            RunState::Retrying => self.retrying,
            RunState::Cancelling => self.cancelling,
            RunState::Succeeded => self.succeeded,
            RunState::Failed => self.failed,
            RunState::Cancelled => self.cancelled,
        }
    }
}

/// The engine's health, for `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineHealth {
    /// `true` when the store answers and the engine is not shutting down.
    pub healthy: bool,
    /// The store's kind: `sqlite` or `postgres`.
    pub store: String,
    /// The store's error, when it did not answer.
    pub store_error: Option<String>,
    /// This instance's id.
    pub instance_id: InstanceId,
    /// Attempts executing on this instance.
    pub running: usize,
    /// The most attempts this instance executes at once (0: API only, no workers).
    pub concurrency: usize,
    /// `true` once shutdown has begun.
    pub shutting_down: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_serialises_to_the_contract_shape() {
        let at = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let run = Run {
            id: RunId::new(),
            job_name: "jira_sync".into(),
            state: RunState::Running,
            params: json!({"project": "PUL"}),
            requested_by: Some("u1".into()),
            created_at: at,
            started_at: Some(at),
            finished_at: None,
            attempts: 1,
            progress: Progress::new(3, Some(10)).with_message("page 1"),
            error: None,
            result: None,
        };
        let value = serde_json::to_value(&run).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "attempts",
                "created_at",
                "error",
                "finished_at",
                "id",
                "job_name",
                "params",
                "progress",
                "requested_by",
                "started_at",
                "state"
            ]
        );
        assert_eq!(value["state"], "running");
        assert_eq!(value["created_at"], "2026-01-02T03:04:05Z");
        assert_eq!(
            value["progress"],
            json!({"done": 3, "total": 10, "message": "page 1"})
        );
        let back: Run = serde_json::from_value(value).unwrap();
        assert_eq!(back, run);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>().unwrap(), state);
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::from(state.as_str())
            );
        }
        assert!("paused".parse::<RunState>().is_err());
    }

    #[test]
    fn event_serialises_flat_with_a_type_tag() {
        let event = RunEvent {
            seq: 7,
            run_id: RunId::new(),
            job_name: "github_sync".into(),
            at: time::macros::datetime!(2026-01-02 03:04:05 UTC),
            kind: RunEventKind::State {
                state: RunState::Retrying,
                attempt: 2,
                error: Some("HTTP 500".into()),
            },
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["type"], "state");
        assert_eq!(value["state"], "retrying");
        assert_eq!(value["seq"], 7);
        assert_eq!(event.event_name(), "state");
        let back: RunEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }
}
