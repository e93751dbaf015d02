//! The main path: a job started through the frontend, watched live, linked in the logs.

use crate::harness::*;

/// The main path, through the frontend like the browser: login, a live WebSocket,
/// start `jira_sync`, its progress over the socket, success. Along the way: the
/// client's `X-User-ID` changes nothing, a second start is a 409 with the active run
/// id, and the request id links the client's, the gateway's and the ETL's logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_starts_jira_sync_and_watches_it_succeed() {
    let t = start().await;
    let front = t.frontend();
    let token = t.login(&front, "admin@pulse.local", "admin").await;

    // The live channel, through the frontend's forwarding, token as subprotocol.
    let ws_url = format!(
        "ws://{}/ws/job-status",
        t.stack.frontend.as_ref().expect("frontend").addr
    );
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url).expect("ws request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().expect("header"),
    );
    let (mut socket, handshake) =
        tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
            .await
            .expect("handshake in time")
            .expect("WebSocket handshake");
    assert_eq!(handshake.headers()["sec-websocket-protocol"], "bearer");

    // Start, claiming to be someone else and sending our own request id.
    let started = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            Some(json!({})),
            &[
                ("x-user-id", "mallory"),
                ("X_User_Id", "mallory"),
                ("x-request-id", "client-chosen-id-42"),
            ],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    let admin_id = t.user_id(&front, &token).await;
    assert_eq!(
        started.body["run"]["requested_by"], admin_id,
        "identity comes from the token"
    );

    // A second start while it is active: 409 naming the active run.
    let again = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["code"], "run_already_active");
    assert_eq!(again.body["run_id"], run_id.as_str());

    // The socket tells us about progress and the end, without polling.
    let mut saw_progress = false;
    let final_state = tokio::time::timeout(DEADLINE, async {
        while let Some(message) = socket.next().await {
            let Ok(tungstenite::Message::Text(text)) = message else {
                continue;
            };
            let update: Value = serde_json::from_str(text.as_str()).expect("JSON message");
            assert!(
                update["kind"].is_string() && update["run"].is_object(),
                "{update}"
            );
            if update["run"]["id"] != run_id.as_str() {
                continue;
            }
            if update["kind"] == "progress" {
                saw_progress = true;
            }
            let state = update["run"]["state"].as_str().unwrap_or_default();
            if ["succeeded", "failed", "cancelled"].contains(&state) {
                return state.to_owned();
            }
        }
        String::from("socket closed")
    })
    .await
    .expect("the run ends before the deadline");
    assert_eq!(final_state, "succeeded");
    assert!(saw_progress, "progress updates arrive over the socket");
    let _ = socket.send(tungstenite::Message::Close(None)).await;

    // Polling agrees, and the run is recorded as started by the token's user.
    let run = t.wait_terminal(&token, &run_id).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["requested_by"], admin_id);
    assert!(run["progress"]["done"].as_u64().unwrap_or(0) > 0);

    // Request ids. The gateway runs in edge mode: it never lets a client choose the id
    // other services log, so the answer carries the id *it* generated (echoed by the
    // frontend hop here, which is an edge too), and the client's value is kept in the
    // logs as `client_request_id`, linking them.
    let direct = t
        .call(
            Method::GET,
            &format!("{}/api/etl/jobs", t.backend()),
            Some(&token),
            None,
            &[("x-request-id", "client-chosen-id-43")],
        )
        .await;
    assert_eq!(direct.status, StatusCode::OK);
    let gateway_id = direct.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(gateway_id, "client-chosen-id-43");
    let linked = tokio::time::timeout(DEADLINE, async {
        loop {
            let lines = log_lines_with(&gateway_id);
            let gateway_line = lines.iter().any(|line| {
                let (service, request) = spans_of(line);
                service.as_deref() == Some("backend")
                    && request.is_some_and(|r| {
                        r["client_request_id"] == "client-chosen-id-43"
                            && r["user_id"] == admin_id.as_str()
                    })
            });
            let etl_line = lines.iter().any(|line| {
                let (service, request) = spans_of(line);
                service.as_deref() == Some("etl")
                    && request.is_some_and(|r| {
                        r["request_id"] == gateway_id.as_str() && r["path"] == "/api/v1/jobs"
                    })
            });
            if gateway_line && etl_line {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        linked.is_ok(),
        "the gateway logs the client's id with its own, and the ETL logs the gateway's: {:#?}",
        log_lines_with(&gateway_id)
    );
    t.stack.shutdown().await;
}
