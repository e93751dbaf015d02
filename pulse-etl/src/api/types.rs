//! The JSON bodies of the API, shared by the router and the [`EtlClient`](crate::client::EtlClient).
//!
//! Runs are returned as the engine's [`Run`] (its serialisation is the contract's run
//! shape); everything else has a dedicated type here so that the wire shape does not
//! move when the engine's model does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::model::{LogLevel, LogLine, Progress, Run, RunId, RunState};

/// A job's `state` in listings: its latest run's [`RunState`], or `idle` (`None`) when it
/// never ran. One enum serves runs and jobs; this is only its wire form.
pub(crate) mod latest_state {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use utoipa::openapi::{ObjectBuilder, Type, schema::SchemaType};

    use crate::model::RunState;

    /// The name of a job that never ran.
    pub(crate) const IDLE: &str = "idle";

    pub(crate) fn serialize<S: Serializer>(
        state: &Option<RunState>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(state.map_or(IDLE, RunState::as_str))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<RunState>, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        if name == IDLE {
            return Ok(None);
        }
        name.parse().map(Some).map_err(D::Error::custom)
    }

    /// The schema: `idle` or one of [`RunState::ALL`].
    pub(crate) fn schema() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "The latest run's state, or `idle` when the job never ran.",
            ))
            .enum_values(Some(
                std::iter::once(IDLE).chain(RunState::ALL.map(RunState::as_str)),
            ))
    }
}

/// One job of `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// A human description, when the service configured one.
    pub description: Option<String>,
    /// Its schedule (`every 300s` or the cron expression), if any.
    pub schedule: Option<String>,
    /// The latest run's state; `None` (`"idle"` on the wire) when the job never ran.
    #[serde(with = "latest_state")]
    #[schema(schema_with = latest_state::schema, required = true)]
    pub state: Option<RunState>,
    /// Its latest run.
    pub latest_run: Option<Run>,
}

/// `GET /api/v1/jobs`: `{"jobs": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobsResponse {
    /// Every registered job, sorted by name.
    pub jobs: Vec<JobView>,
}

/// One job's entry in the [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatusView {
    /// The latest run's state; `None` (`"idle"` on the wire) when the job never ran.
    #[serde(with = "latest_state")]
    #[schema(schema_with = latest_state::schema, required = true)]
    pub state: Option<RunState>,
    /// The latest run's id.
    pub run_id: Option<RunId>,
    /// The latest run's progress.
    pub progress: Option<Progress>,
    /// When the latest run's first attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When the latest run finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// `GET /api/v1/jobs/status`: the summary the dashboard polls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// One entry per registered job, by name.
    pub jobs: BTreeMap<String, JobStatusView>,
    /// Runs pending, running, retrying or cancelling, over all jobs.
    pub active_runs: u64,
    /// When the summary was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

/// The body of `POST /api/v1/jobs/{name}/start`; an empty body means `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartJobBody {
    /// Cancel the job's active run, if any, and start anew.
    #[serde(default)]
    pub force: bool,
    /// The run's parameters (absent or `null`: none); each job validates its own
    /// (`400 invalid_params`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<Object>)]
    pub params: Value,
}

/// The body of `POST /api/v1/jobs/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartNamedJobBody {
    /// The job to start.
    pub job_name: String,
    /// Cancel the job's active run, if any, and start anew.
    #[serde(default)]
    pub force: bool,
    /// The run's parameters (absent or `null`: none); each job validates its own
    /// (`400 invalid_params`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<Object>)]
    pub params: Value,
}

/// `202` answer of both start routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StartResponse {
    /// Always `true`.
    pub success: bool,
    /// `Job <name> started`.
    pub message: String,
    /// The run's id.
    pub run_id: RunId,
    /// The run as committed.
    pub run: Run,
}

/// `202` answer of `POST /api/v1/runs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    /// Always `true`.
    pub success: bool,
    /// What happened (cancelled at once, or cancelling).
    pub message: String,
    /// The run after the cancel request.
    pub run: Run,
}

/// `GET /api/v1/jobs/{name}/runs`: `{"runs": [...]}`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunsResponse {
    /// The runs, newest first.
    pub runs: Vec<Run>,
}

/// One line of a run's log: `{"at", "level", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Its level.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

impl From<LogLine> for LogEntry {
    fn from(line: LogLine) -> Self {
        Self {
            at: line.at,
            level: line.level,
            message: line.message,
        }
    }
}

/// `GET /api/v1/runs/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogsResponse {
    /// The run.
    pub run_id: RunId,
    /// Its log, oldest first.
    pub logs: Vec<LogEntry>,
}

/// What a [`RunUpdate`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunUpdateKind {
    /// The run entered a new state.
    StateChanged,
    /// The run reported progress.
    Progress,
    /// The run wrote a log line (in [`RunUpdate::log`]).
    Log,
    /// The run as it is now, after a `reset` (the events a resuming subscriber missed
    /// were deleted by retention): one per job, its latest run.
    Snapshot,
}

/// The `data` of one server-sent event of `GET /api/v1/events` (event name `run`):
/// `{"kind": "state_changed|progress|log|snapshot", "run": <Run>, "log"?: {...}}`.
///
/// `run` is the run as stored when the event was sent, so it may already be ahead of
/// the change that triggered the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunUpdate {
    /// What happened.
    pub kind: RunUpdateKind,
    /// The run.
    pub run: Run,
    /// The log line, for [`RunUpdateKind::Log`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogEntry>,
}
