//! Internal authentication in front of the ETL API: `/health` (exactly) is open,
//! everything else needs a credential, and `requested_by` comes only from a signed
//! internal token.

mod api_support;

use api_support::{KEY, api_only, error_code, keyed};
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::Value;

#[tokio::test(start_paused = true)]
async fn api_routes_need_an_internal_credential() {
    let app = api_only().await;
    for (method, path) in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/status"),
        ("POST", "/api/v1/jobs/jira_sync/start"),
        ("POST", "/api/v1/jobs/start"),
        ("GET", "/api/v1/jobs/jira_sync/runs"),
        ("GET", "/api/v1/runs/0190f0b4-0000-7000-8000-000000000000"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/unknown"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let answer = app.send(request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(error_code(&answer), "internal_auth_required");
        assert_eq!(answer.body["error"], "Internal authentication required");
    }
    // Nothing was started.
    assert!(app.engine.recent_runs(10).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wrong_credential_is_refused() {
    let app = api_only().await;
    for (name, value) in [
        ("x-internal-auth", "wrong-key-wrong-key-wrong-key-wrong"),
        ("x-internal-token", "not.a.token"),
    ] {
        let request = Request::get("/api/v1/jobs")
            .header(name, value)
            .body(Body::empty())
            .unwrap();
        let answer = app.send(request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{name}");
    }
    // A right key does not rescue a wrong token.
    let request = keyed(Request::get("/api/v1/jobs"))
        .header("x-internal-token", "not.a.token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test(start_paused = true)]
async fn only_the_exact_health_path_is_exempt() {
    let app = api_only().await;
    let open = app
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(open.status, StatusCode::OK);
    for path in [
        "/health/",
        "//health",
        "/health/../api/v1/jobs",
        "/./health",
        "/%68ealth",
        "/HEALTH",
    ] {
        let answer = app
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(error_code(&answer), "internal_auth_required");
    }
    // With a credential, these spellings are simply unknown routes.
    let answer = app.get("/health/../api/v1/jobs").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn requested_by_comes_from_the_signed_identity_only() {
    let app = api_only().await;
    // A plain X-User-ID with a key: no verified identity, so no requester.
    let spoofed = keyed(Request::post("/api/v1/jobs/jira_sync/start"))
        .header("x-user-id", "mallory")
        .header("x-user-email", "mallory@evil.test")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(spoofed).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["run"]["requested_by"], Value::Null);

    // A signed token: its subject, whatever X-User-ID says.
    let signed = Request::post("/api/v1/jobs/github_sync/start")
        .header("x-internal-auth", KEY)
        .header("x-internal-token", app.token_for("user-7"))
        .header("x-user-id", "mallory")
        .body(Body::empty())
        .unwrap();
    let answer = app.send(signed).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["run"]["requested_by"], "user-7");

    // The token alone is a credential too.
    let token_only = Request::post("/api/v1/jobs/jira_sync/start")
        .header("x-internal-token", app.token_for("user-8"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"force": true}"#))
        .unwrap();
    let answer = app.send(token_only).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["run"]["requested_by"], "user-8");
}

#[tokio::test(start_paused = true)]
async fn without_configured_auth_the_api_fails_closed() {
    let app = api_only().await;
    let router = pulse_etl::api::EtlApi::new(app.engine.clone()).into_router();
    let health = tower::ServiceExt::oneshot(
        router.clone(),
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let jobs = tower::ServiceExt::oneshot(
        router,
        keyed(Request::get("/api/v1/jobs"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(jobs.status(), StatusCode::FORBIDDEN);
}
