//! Authentication and permissions at the gateway.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_permissions() {
    let t = start().await;
    let back = t.backend();

    // No token: 401 with WWW-Authenticate, in the JSON error shape.
    let anonymous = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    assert!(anonymous.body["error"].is_string() && anonymous.body["request_id"].is_string());
    let forged = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some("not.a.token"),
            None,
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    // The viewer may look, not start.
    let viewer = t.login(&back, "viewer@pulse.local", "viewer").await;
    let me = t
        .call(
            Method::GET,
            &format!("{back}/api/auth/me"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert!(me.body["user_id"].is_string(), "{}", me.body);
    assert_eq!(me.body["email"], "viewer@pulse.local");
    assert_eq!(me.body["roles"], json!(["viewer"]));
    assert_eq!(me.body["permissions"], json!(["etl.access"]));
    let jobs = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(jobs.status, StatusCode::OK);
    assert_eq!(jobs.body["jobs"].as_array().map(Vec::len), Some(2));
    let status = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs/status"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(status.status, StatusCode::OK);
    assert!(
        status.body["jobs"]["jira_sync"].is_object(),
        "{}",
        status.body
    );
    // The status the dashboard polls comes from the gateway's cache (1 s TTL) when fresh.
    let mut hit = false;
    for _ in 0..20 {
        let again = t
            .call(
                Method::GET,
                &format!("{back}/api/etl/jobs/status"),
                Some(&viewer),
                None,
                &[],
            )
            .await;
        assert_eq!(again.status, StatusCode::OK);
        if again.headers.get("x-cache").is_some_and(|v| v == "HIT") {
            hit = true;
            break;
        }
    }
    assert!(hit, "a repeated status request is answered from the cache");
    let start = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&viewer),
            None,
            &[],
        )
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN);
    assert_eq!(start.body["code"], "forbidden");
    let start = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/start"),
            Some(&viewer),
            Some(json!({"job_name": "jira_sync"})),
            &[],
        )
        .await;
    assert_eq!(start.status, StatusCode::FORBIDDEN);

    // Wrong password and unknown user: the same answer.
    let wrong = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "nope"})),
            &[],
        )
        .await;
    let unknown = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "ghost@pulse.local", "password": "nope"})),
            &[],
        )
        .await;
    for answer in [&wrong, &unknown] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["code"], "invalid_credentials");
        assert_eq!(answer.body["error"], "Invalid email or password");
    }
    // Repeated failures of one account are throttled (429 + Retry-After), even with
    // the right password, while other accounts are unaffected.
    // (One failure of ghost above; four more make five.)
    let mut last = StatusCode::OK;
    for _ in 0..4 {
        last = t
            .call(
                Method::POST,
                &format!("{back}/api/auth/login"),
                None,
                Some(json!({"email": "ghost@pulse.local", "password": "nope"})),
                &[],
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::UNAUTHORIZED);
    let throttled = t
        .call(
            Method::POST,
            &format!("{back}/api/auth/login"),
            None,
            Some(json!({"email": "ghost@pulse.local", "password": "x"})),
            &[],
        )
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers.contains_key("retry-after"));
    t.login(&back, "admin@pulse.local", "admin").await;

    // The ETL directly: 403 without the internal credential, /health open, the key
    // ring's secret for tools.
    let etl = t.etl();
    let direct = t
        .call(
            Method::GET,
            &format!("{etl}/api/v1/jobs"),
            None,
            None,
            &[("x-user-id", "admin")],
        )
        .await;
    assert_eq!(direct.status, StatusCode::FORBIDDEN);
    assert_eq!(direct.body["error"], "Internal authentication required");
    let health = t
        .call(Method::GET, &format!("{etl}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let secret = t
        .stack
        .secrets
        .primary_internal_secret()
        .expect("key")
        .to_owned();
    let tool = t
        .call(
            Method::GET,
            &format!("{etl}/api/v1/jobs"),
            None,
            None,
            &[("x-internal-auth", &secret)],
        )
        .await;
    assert_eq!(tool.status, StatusCode::OK);

    // Gateway health and metrics.
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    for service in ["backend_service", "etl_service", "database"] {
        assert_eq!(
            health.body["services"][service]["status"], "healthy",
            "{}",
            health.body
        );
    }
    let text = t.metrics_text().await;
    assert!(text.contains("pulse_http_requests_total"), "{text}");
    assert!(text.contains("pulse_breaker_state"), "{text}");
    assert!(text.contains("pulse_cache_hits_total"), "{text}");

    // The WebSocket with ?access_token= (tools), and without a token: refused.
    let backend_addr = t.stack.backend.as_ref().expect("backend").server.addr;
    let (_socket, answer) = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!(
            "ws://{backend_addr}/ws/job-status?access_token={viewer}"
        )),
    )
    .await
    .expect("handshake in time")
    .expect("a viewer may watch job status");
    assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
    let refused = tokio::time::timeout(
        DEADLINE,
        tokio_tungstenite::connect_async(format!("ws://{backend_addr}/ws/job-status")),
    )
    .await
    .expect("answer in time");
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        other => panic!("expected 401, got {other:?}"),
    }
    t.stack.shutdown().await;
}

/// `--no-demo` seeds nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_demo_nobody_can_log_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TestStack {
        stack: start_service(Service::All, dir.path(), &["--no-demo"]).await,
        _dir: None,
        http: client(),
    };
    let answer = t
        .call(
            Method::POST,
            &format!("{}/api/auth/login", t.backend()),
            None,
            Some(json!({"email": "admin@pulse.local", "password": "admin"})),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["code"], "invalid_credentials");
    t.stack.shutdown().await;
}
