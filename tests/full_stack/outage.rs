//! An ETL outage: fast answers, a circuit that opens and heals.

use crate::harness::*;

/// ETL stopped → fast 503s, `/health` 503, the circuit opens (503 `circuit_open` with
/// Retry-After); ETL back → the circuit heals and jobs start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etl_outage_opens_the_circuit_and_it_heals() {
    let mut t = start().await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let ok = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    t.stack.stop_etl().await;
    // Fast: connection refused is answered at once (the bound only stops a hang).
    let down = tokio::time::timeout(
        Duration::from_secs(5),
        t.call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        ),
    )
    .await
    .expect("a 503 without waiting for a timeout");
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.body["code"].is_string() && down.body["request_id"].is_string());
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.body["services"]["etl_service"]["status"],
        "unhealthy"
    );
    assert_eq!(
        health.body["services"]["backend_service"]["status"],
        "healthy"
    );
    // The frontend forwards the 503 and its JSON body unchanged (the dashboard's panel).
    let via_frontend = t
        .call(
            Method::GET,
            &format!("{}/health", t.frontend()),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(via_frontend.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(via_frontend.body["status"], "unhealthy");

    // Keep calling: the breaker opens and answers for the ETL.
    let open = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t
                .call(
                    Method::GET,
                    &format!("{back}/api/etl/jobs"),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            if answer.body["code"] == "circuit_open" {
                return answer;
            }
        }
    })
    .await
    .expect("the circuit opens");
    assert!(open.headers.contains_key("retry-after"));
    let breaker = t.stack.backend.as_ref().expect("backend").breaker.clone();
    assert_ne!(breaker.state(), pulse_breaker::State::Closed);
    let text = t.metrics_text().await;
    assert!(
        text.contains(r#"pulse_proxy_errors_total{kind="circuit_open"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pulse_breaker_state{upstream="etl"}"#),
        "{text}"
    );

    // ETL back: after the open period a probe goes through and the circuit closes.
    t.stack.restart_etl().await.expect("ETL restarts");
    let started = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t
                .call(
                    Method::POST,
                    &format!("{back}/api/etl/jobs/github_sync/start"),
                    Some(&token),
                    None,
                    &[],
                )
                .await;
            if answer.status == StatusCode::ACCEPTED {
                return answer;
            }
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("jobs start again once the ETL is back");
    assert_eq!(breaker.state(), pulse_breaker::State::Closed);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    let health = tokio::time::timeout(DEADLINE, async {
        loop {
            let health = t
                .call(Method::GET, &format!("{back}/health"), None, None, &[])
                .await;
            if health.status == StatusCode::OK {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("healthy again");
    assert_eq!(health.body["status"], "healthy");
    t.stack.shutdown().await;
}
