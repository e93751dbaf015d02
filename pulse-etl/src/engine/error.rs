//! The engine's errors, each mapping to one HTTP status of the contract.

use crate::model::{RunId, RunState};
use crate::store::StoreError;

/// An error of the [`JobEngine`](crate::JobEngine).
///
/// [`status`](EngineError::status) and [`code`](EngineError::code) give the HTTP status
/// and the stable `snake_case` code of the shared JSON error shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No job is registered under that name (422).
    #[error("unknown job `{name}`; allowed jobs: {}", allowed.join(", "))]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The registered names.
        allowed: Vec<String>,
    },
    /// The job already has a run pending, running or retrying (409).
    #[error("job `{job_name}` already has an active run {run_id}")]
    AlreadyActive {
        /// The job.
        job_name: String,
        /// The active run.
        run_id: RunId,
    },
    /// No run with that id (404).
    #[error("run {run_id} not found")]
    NotFound {
        /// The id asked for.
        run_id: RunId,
    },
    /// The run already finished, so it cannot be cancelled (409).
    #[error("run {run_id} already finished ({state})")]
    AlreadyFinished {
        /// The run.
        run_id: RunId,
        /// Its terminal state.
        state: RunState,
    },
    /// The parameters do not fit the job's parameters type (400).
    #[error("invalid parameters for job `{job_name}`: {message}")]
    InvalidParams {
        /// The job.
        job_name: String,
        /// What is wrong.
        message: String,
    },
    /// The engine is shutting down and accepts no new runs (503).
    #[error("the job engine is shutting down")]
    ShuttingDown,
    /// The store failed: 503 when the database is unreachable or overloaded, 409 when
    /// a constraint refused the write, 422 when the database refused a value, 500
    /// otherwise (see [`StoreError`]).
    #[error("job store error: {0}")]
    Store(#[from] StoreError),
}

impl EngineError {
    /// The HTTP status the API answers with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            EngineError::UnknownJob { .. } => 422,
            EngineError::AlreadyActive { .. } | EngineError::AlreadyFinished { .. } => 409,
            EngineError::NotFound { .. } => 404,
            EngineError::InvalidParams { .. } => 400,
            EngineError::ShuttingDown => 503,
            EngineError::Store(StoreError::Unavailable(_)) => 503,
            EngineError::Store(StoreError::Conflict(_)) => 409,
            EngineError::Store(StoreError::InvalidInput(_)) => 422,
            EngineError::Store(_) => 500,
        }
    }

    /// The stable `snake_case` code of the JSON error body.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownJob { .. } => "unknown_job",
            EngineError::AlreadyActive { .. } => "run_already_active",
            EngineError::NotFound { .. } => "run_not_found",
            EngineError::AlreadyFinished { .. } => "run_already_finished",
            EngineError::InvalidParams { .. } => "invalid_params",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            EngineError::Store(StoreError::Conflict(_)) => "conflict",
            EngineError::Store(StoreError::InvalidInput(_)) => "validation_failed",
            EngineError::Store(_) => "internal_error",
        }
    }

    /// The run id the error concerns (the active run of a 409), if any.
    #[must_use]
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            EngineError::AlreadyActive { run_id, .. }
            | EngineError::NotFound { run_id }
            | EngineError::AlreadyFinished { run_id, .. } => Some(*run_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_contract_statuses() {
        let unknown = EngineError::UnknownJob {
            name: "nope".into(),
            allowed: vec!["github_sync".into(), "jira_sync".into()],
        };
        assert_eq!(unknown.status(), 422);
        assert_eq!(
            unknown.to_string(),
            "unknown job `nope`; allowed jobs: github_sync, jira_sync"
        );
        let run_id = RunId::new();
        let active = EngineError::AlreadyActive {
            job_name: "jira_sync".into(),
            run_id,
        };
        assert_eq!(
            (active.status(), active.code()),
            (409, "run_already_active")
        );
        assert_eq!(active.run_id(), Some(run_id));
        assert_eq!(EngineError::NotFound { run_id }.status(), 404);
        assert_eq!(EngineError::Store(StoreError::Fenced).status(), 500);
    }

    #[test]
    fn store_errors_map_by_cause() {
        let store = |err: StoreError| {
            let err = EngineError::Store(err);
            (err.status(), err.code())
        };
        assert_eq!(
            store(StoreError::Unavailable("pool closed".into())),
            (503, "store_unavailable")
        );
        assert_eq!(
            store(StoreError::Conflict("unique".into())),
            (409, "conflict")
        );
        assert_eq!(
            store(StoreError::InvalidInput("out of range".into())),
            (422, "validation_failed")
        );
        assert_eq!(
            store(StoreError::Database("syntax error".into())),
            (500, "internal_error")
        );
        assert_eq!(
            store(StoreError::Corrupt("bad state".into())),
            (500, "internal_error")
        );
    }
}
