use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use http::Request;

fn slow(after: Duration, health: Health) -> impl HealthCheck {
    check_fn(move || async move {
        tokio::time::sleep(after).await;
        health
    })
}

async fn json(res: Response<Full<Bytes>>) -> serde_json::Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn all_healthy_is_200() {
    let agg = HealthAggregator::new()
        .with_check("database", slow(Duration::from_millis(30), Health::Healthy))
        .with_check("etl_service", check_fn(|| async { Health::Healthy }));
    let report = agg.check().await;
    assert!(report.is_healthy());
    assert_eq!(
        report.services["database"].latency,
        Duration::from_millis(30)
    );
    let res = report.into_http_response();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = json(res).await;
    assert_eq!(body["status"], "healthy");
    assert_eq!(
        body["services"]["database"],
        serde_json::json!({"status": "healthy", "latency_ms": 30})
    );
    let ts = body["timestamp"].as_str().unwrap();
    assert!(OffsetDateTime::parse(ts, &Rfc3339).is_ok(), "{ts}");
}

#[tokio::test(start_paused = true)]
async fn checks_run_concurrently_under_their_timeouts() {
    let start = tokio::time::Instant::now();
    let agg = HealthAggregator::new()
        .with_timeout(Duration::from_secs(1))
        .with_check("a", slow(Duration::from_millis(900), Health::Healthy))
        .with_check("b", slow(Duration::from_millis(900), Health::Healthy))
        .with_check("hung", slow(Duration::from_secs(3600), Health::Healthy))
        .with_check_timeout(
            "quick",
            slow(Duration::from_millis(200), Health::Healthy),
            Duration::from_millis(100),
        );
    let report = agg.check().await;
    // Concurrent: the whole report takes the longest timeout, not the sum.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(report.services["a"].health.is_healthy());
    assert!(report.services["b"].health.is_healthy());
    assert_eq!(
        report.services["hung"].health,
        Health::unhealthy("timed out")
    );
    assert_eq!(
        report.services["quick"].health,
        Health::unhealthy("timed out")
    );
    assert_eq!(report.status_code(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn unhealthy_report_carries_only_the_fixed_reason() {
    let agg = HealthAggregator::new()
        .with_check(
            "database",
            check_fn(|| async { Health::unhealthy("connection refused") }),
        )
        .with_check(
            "panicky",
            check_fn(|| async { panic!("secret detail: postgres://admin:hunter2@db") }),
        )
        .with_check("ok", check_fn(|| async { Health::Healthy }));
    let res = agg.check().await.into_http_response();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = json(res).await;
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(
        body["services"]["database"],
        serde_json::json!({"status": "unhealthy", "reason": "connection refused", "latency_ms": 0})
    );
    assert_eq!(body["services"]["panicky"]["reason"], "check failed");
    assert!(!body.to_string().contains("hunter2"));
    assert_eq!(body["services"]["ok"]["status"], "healthy");
}

#[tokio::test(start_paused = true)]
async fn no_checks_is_healthy() {
    let report = HealthAggregator::default().check().await;
    assert!(report.is_healthy());
    assert!(report.services.is_empty());
}

struct Counting(Arc<AtomicUsize>);

impl HealthCheck for Counting {
    async fn check(&self) -> Health {
        self.0.fetch_add(1, Ordering::SeqCst);
        Health::Healthy
    }
}

#[tokio::test(start_paused = true)]
async fn service_runs_the_checks_per_request() {
    let count = Arc::new(AtomicUsize::new(0));
    let svc = HealthService::new(
        HealthAggregator::new().with_check("counting", Counting(Arc::clone(&count))),
    );
    assert_eq!(svc.aggregator().names().collect::<Vec<_>>(), ["counting"]);
    for _ in 0..2 {
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn mounts_in_an_axum_router() {
    use axum::{Router, body::Body};

    let app = Router::new().route_service(
        "/health",
        HealthService::new(HealthAggregator::new().with_check(
            "etl_service",
            check_fn(|| async { Health::unhealthy("down") }),
        )),
    );
    let res = app
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["services"]["etl_service"]["reason"], "down");
}

#[tokio::test(start_paused = true)]
async fn service_check_maps_status_and_errors() {
    use std::convert::Infallible;

    use http_body_util::Empty;
    use tower::service_fn;

    let upstream = service_fn(|req: Request<Empty<Bytes>>| async move {
        let status = match req.uri().path() {
            "/health" => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = status;
        Ok::<_, Infallible>(res)
    });
    let failing = service_fn(|_req: Request<Empty<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>("connection refused to 10.0.0.7:8001")
    });
    let report = HealthAggregator::new()
        .with_check(
            "up",
            ServiceCheck::new(upstream, "http://etl/health".parse().unwrap()),
        )
        .with_check(
            "down",
            ServiceCheck::new(upstream, "http://etl/nope".parse().unwrap()),
        )
        .with_check(
            "refused",
            ServiceCheck::new(failing, "http://etl/health".parse().unwrap()),
        )
        .check()
        .await;
    assert_eq!(report.services["up"].health, Health::Healthy);
    assert_eq!(
        report.services["down"].health,
        Health::unhealthy("unexpected status")
    );
    assert_eq!(
        report.services["refused"].health,
        Health::unhealthy("unreachable")
    );
    let body = String::from_utf8(report.to_json().to_vec()).unwrap();
    assert!(!body.contains("10.0.0.7"), "{body}");
}
