//! `Retry-After` of the gateway's 503s (issue 9, defect 9): what the breaker knows,
//! never a made-up constant.

use crate::harness::*;

/// The `Retry-After` seconds of an answer.
fn retry_after(answer: &Answer) -> u64 {
    answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Retry-After: {:?}", answer.headers))
}

/// With `--breaker-open-ms 3000`: the circuit-open answer says 1–3 s (the rest of the
/// open period), the refused calls before it and `/health` say no more than that, and
/// a forced-open breaker still gives a hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_follows_the_breaker() {
    let mut t = start_overriding(&[("--breaker-open-ms", "3000")]).await;
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let jobs = format!("{back}/api/etl/jobs");
    t.stack.stop_etl().await;

    // Refused while the circuit is still closed: retry soon, not in 5 s.
    let refused = t.call(Method::GET, &jobs, Some(&token), None, &[]).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_ne!(refused.body["code"], "circuit_open", "{}", refused.body);
    assert_eq!(retry_after(&refused), 1, "{:?}", refused.headers);

    let open = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t.call(Method::GET, &jobs, Some(&token), None, &[]).await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            if answer.body["code"] == "circuit_open" {
                return answer;
            }
        }
    })
    .await
    .expect("the circuit opens");
    let secs = retry_after(&open);
    assert!((1..=3).contains(&secs), "Retry-After: {secs}");

    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    let secs = retry_after(&health);
    assert!((1..=3).contains(&secs), "Retry-After: {secs}");

    // Forced open: pulse-breaker knows no end; the answer still tells clients to back off.
    let breaker = t.stack.backend.as_ref().expect("backend").breaker.clone();
    breaker.force_open();
    let forced = t.call(Method::GET, &jobs, Some(&token), None, &[]).await;
    assert_eq!(forced.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(forced.body["code"], "circuit_open");
    assert!(retry_after(&forced) >= 1);
    breaker.reset();
    t.stack.shutdown().await;
}
