//! [`ClientError`].

use http::StatusCode;
use pulse_core::error::ErrorBody;
use serde::Deserialize;

use crate::model::RunId;

/// The error type of transports: anything that can be boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error of the [`EtlClient`](super::EtlClient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service answered with an error status and the shared JSON error body.
    #[error("ETL service answered {status}: {} ({})", body.error, body.code)]
    Api {
        /// The status.
        status: StatusCode,
        /// The error body (synthesised with code `unexpected_response` when the body
        /// was not the shared shape, e.g. from a proxy in between).
        body: ErrorBody,
        /// The run the error is about (the active run of a `409`).
        run_id: Option<RunId>,
    },
    /// The request could not be sent or the answer not received.
    #[error("ETL service unreachable: {0}")]
    Transport(#[source] BoxError),
    /// The answer was not the expected JSON.
    #[error("unexpected answer from the ETL service: {0}")]
    Decode(String),
    /// No answer within the client's timeout.
    #[error("ETL service did not answer in time")]
    Timeout,
    /// An open event stream sent no byte (not even a keep-alive comment) for this long
    /// (see [`EtlClient::with_event_idle_timeout`](super::EtlClient::with_event_idle_timeout)).
    #[error("ETL event stream idle for {0:?}")]
    StreamIdle(std::time::Duration),
    /// The base URL or a built URL is not valid.
    #[error("invalid ETL service URL: {0}")]
    InvalidUrl(String),
    /// A request value cannot be sent (e.g. an `Idempotency-Key` that is not a valid
    /// header value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// The HTTP status of an [`Api`](ClientError::Api) error.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code of an [`Api`](ClientError::Api) error.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The error of a non-2xx answer.
    pub(crate) fn from_answer(status: StatusCode, bytes: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct WithRunId {
            #[serde(flatten)]
            body: ErrorBody,
            run_id: Option<RunId>,
        }
        match serde_json::from_slice::<WithRunId>(bytes) {
            Ok(parsed) => ClientError::Api {
                status,
                body: parsed.body,
                run_id: parsed.run_id,
            },
            Err(_) => ClientError::Api {
                status,
                body: ErrorBody {
                    error: status
                        .canonical_reason()
                        .unwrap_or("Unexpected response")
                        .to_owned(),
                    code: "unexpected_response".to_owned(),
                    request_id: None,
                },
                run_id: None,
            },
        }
    }
}
