//! [`EtlClient::follow`] over an in-process transport that breaks the first event
//! stream: the follower reconnects and resumes after the last event it received.

#[path = "api_support/mod.rs"]
mod api_support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use api_support::api_only;
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use pulse_etl::api::RunUpdateKind;
use pulse_etl::client::{EtlClient, StartOptions};
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn a_followed_stream_resumes_after_a_broken_connection() {
    let app = api_only().await;
    let router = app.router.clone();
    let subscriptions = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&subscriptions);
    // The first event stream ends after one event, as if the connection broke.
    let transport = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let router = router.clone();
        let counted = Arc::clone(&counted);
        async move {
            let is_events = request.uri().path() == "/api/v1/events";
            let response = router.oneshot(request).await?;
            if is_events && counted.fetch_add(1, Ordering::SeqCst) == 0 {
                let (parts, body) = response.into_parts();
                let first = body
                    .into_data_stream()
                    .take(1)
                    .map(|data| data.map(Frame::data));
                return Ok(Response::from_parts(
                    parts,
                    Body::new(StreamBody::new(first)),
                ));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let client = EtlClient::new("http://etl.internal", transport)
        .unwrap()
        .with_key_ring(app.ring.clone());

    let first = client
        .start_job("jira_sync", StartOptions::new())
        .await
        .unwrap();
    // From the beginning of the store's events, so the order of start and connect
    // does not matter.
    let mut updates = Box::pin(client.follow(Some(0)));
    let update = updates.next().await.unwrap();
    assert_eq!(update.kind, RunUpdateKind::StateChanged);
    assert_eq!(update.run.id, first.run_id);

    // The first stream is gone; this run's event arrives over the second one, replayed
    // or live, and the first run's event is not repeated.
    let second = client
        .start_job("github_sync", StartOptions::new())
        .await
        .unwrap();
    let update = updates.next().await.unwrap();
    assert_eq!(update.run.id, second.run_id);
    assert_eq!(subscriptions.load(Ordering::SeqCst), 2);
}
