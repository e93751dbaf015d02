//! The gateway's OpenAPI document: committed to `docs/openapi/gateway.json` and current,
//! served at `GET /api/openapi.json` without authentication; the ETL's served behind
//! internal auth.
//!
//! Regenerate it with
//! `PULSE_UPDATE_OPENAPI=1 cargo test --test full_stack openapi::the_committed`.

use crate::harness::*;
use crate::stack::backend::openapi::gateway_openapi;

#[test]
fn the_committed_gateway_document_is_current() {
    let current = serde_json::to_string_pretty(&gateway_openapi()).expect("serialises") + "\n";
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi/gateway.json");
    if std::env::var_os("PULSE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("docs/openapi/gateway.json is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi/gateway.json is stale: regenerate it with \
         `PULSE_UPDATE_OPENAPI=1 cargo test --test full_stack openapi::the_committed` and commit it"
    );
}

#[test]
fn the_etl_surface_is_the_etls_own_behind_the_bearer_scheme() {
    let doc = gateway_openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let start = &doc["paths"]["/api/etl/jobs/{name}/start"]["post"];
    assert_eq!(start["security"], json!([{"bearer": []}]));
    for status in [
        "202", "400", "401", "403", "409", "422", "429", "502", "503", "504",
    ] {
        assert!(!start["responses"][status].is_null(), "{status} missing");
    }
    assert_eq!(
        start["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/StartResponse"
    );
    assert!(doc["components"]["schemas"]["Run"].is_object());
    assert!(doc["paths"]["/api/etl/openapi.json"].is_null());
    let text = doc.to_string();
    for secret in ["PULSE_JWT_SECRET", "X-Internal-Auth", "internal_key"] {
        assert!(!text.contains(secret), "{secret} in the public document");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_documents_are_served_the_etls_only_behind_internal_auth() {
    let stack = start().await;
    let public = stack
        .call(
            Method::GET,
            &format!("{}/api/openapi.json", stack.backend()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(public.status, StatusCode::OK);
    assert_eq!(public.body, gateway_openapi());
    let url = format!("{}/api/v1/openapi.json", stack.etl());
    let anonymous = stack.call(Method::GET, &url, None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.body["code"], "internal_auth_required");
    let secret = stack
        .stack
        .secrets
        .primary_internal_secret()
        .expect("key")
        .to_owned();
    let internal = stack
        .call(
            Method::GET,
            &url,
            None,
            None,
            &[("x-internal-auth", &secret)],
        )
        .await;
    assert_eq!(internal.status, StatusCode::OK);
    // The ETL serves its registry's job names; the gateway's document names the same.
    let job_name = &internal.body["components"]["schemas"]["StartNamedJobBody"]["properties"]["job_name"]
        ["enum"];
    assert_eq!(*job_name, json!(crate::stack::etl::SEED_JOBS));
    assert_eq!(
        gateway_openapi()["components"]["schemas"]["StartNamedJobBody"]["properties"]["job_name"]["enum"],
        *job_name
    );
    stack.stack.shutdown().await;
}

/// Found by Schemathesis against the gateway: a password reset's `password: null`
/// (generate one) was documented as invalid, and a change with neither field was
/// documented as valid.
#[test]
fn the_admin_bodies_say_what_the_handlers_accept() {
    let doc = gateway_openapi();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["PasswordReset"]["properties"]["password"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        schemas["PasswordReset"]["properties"]["password"]["minLength"],
        12
    );
    assert_eq!(schemas["UserChange"]["minProperties"], 1);
    assert_eq!(
        schemas["LoginBody"]["properties"]["email"]["maxLength"],
        254
    );
}
