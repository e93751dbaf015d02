//! The ETL API's OpenAPI document: committed to `docs/openapi/etl.json` and current.
//!
//! Regenerate it with `PULSE_UPDATE_OPENAPI=1 cargo test -p pulse-etl --test openapi`.

use std::path::PathBuf;

use pulse_etl::api::etl_openapi;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/etl.json")
}

#[test]
fn the_committed_document_is_current() {
    let current = etl_openapi()
        .to_pretty_json()
        .expect("the document serialises")
        + "\n";
    let path = committed_path();
    if std::env::var_os("PULSE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("docs/openapi/etl.json is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi/etl.json is stale: regenerate it with \
         `PULSE_UPDATE_OPENAPI=1 cargo test -p pulse-etl --test openapi` and commit it"
    );
}

#[test]
fn every_route_and_error_code_is_documented() {
    let doc = serde_json::to_value(etl_openapi()).expect("the document serialises");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/status",
        "/api/v1/jobs/start",
        "/api/v1/jobs/{name}/start",
        "/api/v1/jobs/{name}/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/runs/{id}/logs",
        "/api/v1/events",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
    let text = doc.to_string();
    for code in [
        "bad_request",
        "invalid_params",
        "internal_auth_required",
        "run_not_found",
        "run_already_active",
        "run_already_finished",
        "idempotency_key_reused",
        "payload_too_large",
        "unsupported_media_type",
        "unknown_job",
        "store_unavailable",
        "shutting_down",
        "internal_error",
    ] {
        assert!(
            text.contains(&format!("\"{code}\"")),
            "{code} is not documented"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["internal_key"]["name"], "X-Internal-Auth");
    assert_eq!(schemes["internal_token"]["name"], "X-Internal-Token");
}

/// Found by Schemathesis: the event stream was documented as `type: string`, but a
/// tool reads each server-sent event as `{event, id, data}`.
#[test]
fn the_event_stream_is_documented_event_by_event() {
    let doc = serde_json::to_value(etl_openapi()).expect("the document serialises");
    let schema = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(
        schema["properties"]["event"]["enum"],
        serde_json::json!([
            pulse_etl::api::RUN_EVENT,
            pulse_etl::api::POSITION_EVENT,
            pulse_etl::api::RESET_EVENT
        ])
    );
    assert_eq!(
        schema["properties"]["data"]["contentMediaType"],
        "application/json"
    );
}
