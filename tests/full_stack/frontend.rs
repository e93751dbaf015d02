//! The frontend: the dashboard and the forwarding of the API.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_serves_the_dashboard_and_forwards_the_api() {
    let t = start().await;
    let front = t.frontend();
    let index = t
        .call(Method::GET, &format!("{front}/"), None, None, &[])
        .await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.headers["cache-control"], "no-cache");
    assert_eq!(index.headers["x-content-type-options"], "nosniff");
    assert!(
        index.headers["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .contains("default-src 'self'")
    );
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/api.js", "text/javascript"),
        ("/views.js", "text/javascript"),
        ("/ws.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let asset = t
            .call(Method::GET, &format!("{front}{path}"), None, None, &[])
            .await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert!(
            asset.headers["content-type"]
                .to_str()
                .unwrap_or_default()
                .starts_with(kind),
            "{path}"
        );
    }
    let health = t
        .call(Method::GET, &format!("{front}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy");
    let anonymous = t
        .call(
            Method::GET,
            &format!("{front}/api/etl/jobs"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    t.stack.shutdown().await;
}
