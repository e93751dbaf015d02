//! `GET /api/admin/audit`: the audit trail, newest first, with filters and paging.
//!
//! Query: `action` (one of the recorded actions), `actor`, `target` (exact ids),
//! `since` / `until` (RFC 3339), `limit` (1–200, default 50), `before` (the
//! `next_before` of the previous page). Answer: `{events: [..], next_before}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pulse_core::error::{ApiError, ErrorCode};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Actor, account_error};
use crate::stack::accounts::audit::{AuditAction, AuditPage, AuditQuery, DEFAULT_PAGE, MAX_PAGE};
use crate::stack::backend::auth::{Auth, answer};
#[allow(unused_imports)] // named by the `#[utoipa::path]` annotations
use crate::stack::backend::openapi::{
    AccountsUnavailable, AuditInvalid, BadRequest, Forbidden, InternalError, Unauthorized,
};
use utoipa::IntoParams;

/// The longest `actor` or `target` filter (ids are UUIDs, `cli:<user>`, role names).
pub const MAX_FILTER_BYTES: usize = 256;

/// The query string, as sent.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this action (an audit action name).
    action: Option<String>,
    /// Only this actor (at most 256 bytes).
    #[param(max_length = 256)]
    actor: Option<String>,
    /// Only this target (at most 256 bytes).
    #[param(max_length = 256)]
    target: Option<String>,
    /// At or after: RFC 3339 or ms since the epoch.
    since: Option<String>,
    /// Before: RFC 3339 or ms since the epoch.
    until: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<String>,
    /// Older than this event id (the previous page's `next_before`).
    before: Option<String>,
}

/// 422 `invalid_filter` saying what is wrong.
fn invalid(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::new("invalid_filter"),
        message,
    )
}

/// An empty parameter is no filter (a form's empty field).
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

// The parsers answer what is wrong in words; `AuditParams::query` makes it a 422.

fn text_filter(name: &str, value: Option<String>) -> Result<Option<String>, String> {
    match given(value) {
        Some(value) if value.len() > MAX_FILTER_BYTES => {
            Err(format!("{name} may be at most {MAX_FILTER_BYTES} bytes"))
        }
        value => Ok(value),
    }
}

fn time_filter(name: &str, value: Option<String>) -> Result<Option<i64>, String> {
    given(value)
        .map(|value| {
            OffsetDateTime::parse(&value, &Rfc3339)
                .ok()
                .and_then(|at| i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok())
                .ok_or_else(|| {
                    format!("{name} must be an RFC 3339 time such as 2025-01-31T12:00:00Z")
                })
        })
        .transpose()
}

fn number_filter(
    name: &str,
    value: Option<String>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, String> {
    given(value)
        .map(|value| {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "{name} must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    )
                })
        })
        .transpose()
}

impl AuditParams {
    /// The store's query, or what is wrong with a parameter (422 `invalid_filter`).
    pub fn query(self) -> Result<AuditQuery, Box<ApiError>> {
        self.parse().map_err(|message| Box::new(invalid(message)))
    }

    fn parse(self) -> Result<AuditQuery, String> {
        let action = given(self.action)
            .map(|name| {
                AuditAction::parse(&name).ok_or_else(|| {
                    let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                    format!("Unknown action; one of: {}", known.join(", "))
                })
            })
            .transpose()?;
        let limit = number_filter("limit", self.limit, 1..=i64::from(MAX_PAGE))?
            .map_or(DEFAULT_PAGE, |n| u32::try_from(n).unwrap_or(DEFAULT_PAGE));
        let query = AuditQuery {
            action,
            actor: text_filter("actor", self.actor)?,
            target: text_filter("target", self.target)?,
            since: time_filter("since", self.since)?,
            until: time_filter("until", self.until)?,
            limit,
            before: number_filter("before", self.before, 1..=i64::MAX)?,
        };
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since > until
        {
            return Err("since must not be after until".to_owned());
        }
        Ok(query)
    }
}

/// `GET /api/admin/audit`.
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "One page of events, newest first", body = AuditPage),
        (status = 400, response = BadRequest),
        (status = 422, response = AuditInvalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = InternalError),
        (status = 503, response = AccountsUnavailable),))]
pub async fn list(
    State(auth): State<Arc<Auth>>,
    _actor: Actor,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Response {
    answer(
        async {
            let Query(params) = params.map_err(|rejection| {
                ApiError::bad_request(format!(
                    "Bad query string ({rejection}); filters: action, actor, target, since, \
                     until, limit, before"
                ))
            })?;
            let page = auth
                .store()
                .audit_events(&params.query().map_err(|error| *error)?)
                .await
                .map_err(account_error)?;
            Ok(Json(page).into_response())
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<AuditQuery, Box<ApiError>> {
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        let Query(params) = Query::<AuditParams>::try_from_uri(&uri).unwrap();
        params.query()
    }

    #[test]
    fn filters_are_parsed_and_bad_ones_named() {
        let query = params(&[
            ("action", "logout"),
            ("actor", "u1"),
            ("since", "1970-01-01T00:00:01Z"),
            ("until", "1970-01-01T00:00:02.5Z"),
            ("limit", "10"),
            ("before", "99"),
            ("target", ""),
        ])
        .unwrap();
        assert_eq!(query.action, Some(AuditAction::Logout));
        assert_eq!(query.actor.as_deref(), Some("u1"));
        assert_eq!(query.target, None);
        assert_eq!((query.since, query.until), (Some(1_000), Some(2_500)));
        assert_eq!((query.limit, query.before), (10, Some(99)));
        assert_eq!(params(&[]).unwrap().limit, DEFAULT_PAGE);
        for (pairs, says) in [
            (&[("action", "nap")][..], "Unknown action"),
            (&[("limit", "0")][..], "limit must be"),
            (&[("limit", "201")][..], "limit must be"),
            (&[("before", "x")][..], "before must be"),
            (&[("since", "yesterday")][..], "since must be"),
            (
                &[
                    ("since", "2025-01-02T00:00:00Z"),
                    ("until", "2025-01-01T00:00:00Z"),
                ][..],
                "since must not",
            ),
        ] {
            let error = params(pairs).unwrap_err();
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(error.code().as_str(), "invalid_filter");
            assert!(error.message().contains(says), "{}", error.message());
        }
    }
}
