//! Several instances: a gateway over two ETL instances, a frontend over two gateways;
//! one instance stopped, nothing fails.

use crate::harness::*;

const JWT_SECRET: &str = "scale-out-test-secret-of-at-least-32-bytes";
const INTERNAL_KEYS: &str = "k1:scale-out-internal-key-of-at-least-32-bytes";

/// A service alone, in its own data folder, with the deployment's shared secrets;
/// `extra` is flag/value pairs, replacing the harness's values.
async fn service(service: Service, dir: &std::path::Path, extra: &[&str]) -> Stack {
    let mut pairs = vec![
        ("--jwt-secret", JWT_SECRET),
        ("--internal-keys", INTERNAL_KEYS),
    ];
    pairs.extend(extra.chunks(2).map(|pair| (pair[0], pair[1])));
    start_args(service, args_overriding(dir, &pairs)).await
}

fn etl_url(stack: &Stack) -> String {
    format!("http://{}", stack.options.etl_addr)
}

fn backend_url(stack: &Stack) -> String {
    format!(
        "http://{}",
        stack.backend.as_ref().expect("backend").server.addr
    )
}

fn harness(stack: Stack) -> TestStack {
    TestStack {
        stack,
        _dir: None,
        http: client(),
    }
}

/// The gateway over two ETL instances: with one stopped, every list, status and start
/// succeeds (a refused request goes to the other instance), `/health` stays healthy and
/// lists both; the stopped one is ejected. With both stopped, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_balances_over_etl_instances_and_survives_one_stopped() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let etl_a = service(Service::Etl, dirs[0].path(), &[]).await;
    let etl_b = service(Service::Etl, dirs[1].path(), &[]).await;
    let (url_a, url_b) = (etl_url(&etl_a), etl_url(&etl_b));
    let list = format!("{url_a},{url_b}");
    let gateway = harness(service(Service::Backend, dirs[2].path(), &["--etl-url", &list]).await);
    let back = backend_url(&gateway.stack);
    let token = gateway.login(&back, "admin@pulse.local", "admin").await;

    let health = gateway
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let instances = health.body["instances"]["etl"]
        .as_array()
        .expect("instances")
        .clone();
    assert_eq!(instances.len(), 2, "{}", health.body);
    assert!(
        instances.iter().all(|i| i["status"] == "healthy"),
        "{}",
        health.body
    );

    etl_a.shutdown().await;
    // Every request still succeeds: balanced away from, or retried off, the dead one.
    for i in 0..30 {
        let jobs = gateway.jobs_status(&back, &token).await;
        assert_eq!(jobs.status, StatusCode::OK, "request {i}: {}", jobs.body);
        let status = gateway
            .call(
                Method::GET,
                &format!("{back}/api/etl/jobs/status"),
                Some(&token),
                None,
                &[],
            )
            .await;
        assert_eq!(
            status.status,
            StatusCode::OK,
            "request {i}: {}",
            status.body
        );
    }
    // A start (a POST with a body) that meets the refused instance was never sent: it
    // goes to the live one.
    let started = gateway
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            Some(json!({"params": {}})),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    let run = gateway
        .call(
            Method::GET,
            &format!("{back}/api/etl/runs/{run_id}"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);

    let pool = &gateway.stack.backend.as_ref().expect("backend").etl;
    let retries = pool.stats().retries();
    assert!(
        retries >= 1,
        "the dead instance was met and retried away from"
    );
    assert!(
        pool.instances()[0].is_ejected(),
        "the dead instance is ejected"
    );
    assert!(!pool.instances()[1].is_ejected());

    let health = gateway
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "healthy while one is: {}",
        health.body
    );
    let instances = &health.body["instances"]["etl"];
    assert_eq!(instances[0]["url"], url_a.as_str());
    assert_eq!(instances[0]["status"], "unhealthy");
    assert_eq!(instances[0]["ejected"], true);
    assert_eq!(instances[1]["status"], "healthy");
    let text = gateway
        .call(
            Method::GET,
            &format!(
                "http://{}/metrics",
                gateway
                    .stack
                    .backend
                    .as_ref()
                    .expect("backend")
                    .metrics
                    .addr
            ),
            None,
            None,
            &[],
        )
        .await;
    let text = text.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("pulse_upstream_retries_total"), "{text}");
    assert!(
        text.contains(&format!(
            r#"pulse_upstream_ejected{{upstream="etl",instance="{url_a}"}} 1"#
        )),
        "{text}"
    );

    etl_b.shutdown().await;
    let down = gateway.jobs_status(&back, &token).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    let health = gateway
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.body
    );
    assert!(health.headers.contains_key("retry-after"));
    gateway.stack.shutdown().await;
}

/// The frontend over two gateways: with one stopped, sign-in and the API through the
/// frontend keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_balances_over_gateways_and_survives_one_stopped() {
    let dirs: Vec<_> = (0..4)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let etl = service(Service::Etl, dirs[0].path(), &[]).await;
    let etl = etl_url_and(etl);
    let gateway_a = service(Service::Backend, dirs[1].path(), &["--etl-url", &etl.1]).await;
    let gateway_b = service(Service::Backend, dirs[2].path(), &["--etl-url", &etl.1]).await;
    let list = format!("{},{}", backend_url(&gateway_a), backend_url(&gateway_b));
    let frontend =
        harness(service(Service::Frontend, dirs[3].path(), &["--backend-url", &list]).await);
    let front = format!(
        "http://{}",
        frontend.stack.frontend.as_ref().expect("frontend").addr
    );
    let token = frontend.login(&front, "admin@pulse.local", "admin").await;
    // `/health` lists every gateway (and, from a healthy one, every ETL instance).
    let health = frontend
        .call(Method::GET, &format!("{front}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let listed = &health.body["instances"]["backend"];
    assert_eq!(listed[0]["url"], backend_url(&gateway_a).as_str());
    assert_eq!(listed[1]["url"], backend_url(&gateway_b).as_str());
    assert_eq!(listed[0]["status"], "healthy", "{}", health.body);
    assert_eq!(listed[1]["status"], "healthy", "{}", health.body);
    assert_eq!(health.body["instances"]["etl"][0]["status"], "healthy");
    let url_a = backend_url(&gateway_a);
    gateway_a.shutdown().await;
    for i in 0..20 {
        let jobs = frontend.jobs_status(&front, &token).await;
        assert_eq!(jobs.status, StatusCode::OK, "request {i}: {}", jobs.body);
        // A sign-in is a POST: never sent to the stopped gateway, it is sent to the other.
        let login = frontend
            .sign_in(&front, "viewer@pulse.local", "viewer")
            .await;
        assert_eq!(login.status, StatusCode::OK, "sign-in {i}: {}", login.body);
    }
    let health = frontend
        .call(Method::GET, &format!("{front}/health"), None, None, &[])
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let listed = &health.body["instances"]["backend"];
    assert_eq!(listed[0]["url"], url_a.as_str());
    assert_eq!(listed[0]["status"], "unhealthy", "{}", health.body);
    assert_eq!(listed[0]["ejected"], true, "{}", health.body);
    assert_eq!(listed[1]["status"], "healthy", "{}", health.body);
    gateway_b.shutdown().await;
    let down = frontend
        .call(Method::GET, &format!("{front}/health"), None, None, &[])
        .await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(down.body["instances"]["backend"][1]["status"], "unhealthy");
    frontend.stack.shutdown().await;
    etl.0.shutdown().await;
}

fn etl_url_and(stack: Stack) -> (Stack, String) {
    let url = etl_url(&stack);
    (stack, url)
}

/// `POST /api/auth/login` with `client`.
async fn login_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    email: &str,
    password: &str,
) -> Answer {
    let request = Request::post(format!("{base}/api/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"email": email, "password": password}).to_string(),
        )))
        .expect("valid request");
    exchange(client, request).await
}

/// Two gateways on one accounts database and one Redis: the login throttle counted on
/// one refuses on the other, and a logout on one is refused on the other at once —
/// announced through Redis (the database poll is set to ten minutes here, so only the
/// announcement can carry it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set PULSE_TEST_REDIS_URL"]
async fn throttle_and_logout_hold_across_gateways_through_redis() {
    let Ok(redis) = std::env::var("PULSE_TEST_REDIS_URL") else {
        eprintln!("PULSE_TEST_REDIS_URL not set; skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let etl = service(Service::Etl, dir.path(), &[]).await;
    let etl_list = etl_url(&etl);
    let shared = [
        "--etl-url",
        etl_list.as_str(),
        "--redis-url",
        redis.as_str(),
        "--revocation-poll-ms",
        "600000",
    ];
    // Both on the same data folder: one accounts database (SQLite here, PostgreSQL in
    // a deployment), the same secrets.
    let a = harness(service(Service::Backend, dir.path(), &shared).await);
    let b = harness(service(Service::Backend, dir.path(), &shared).await);
    let (back_a, back_b) = (backend_url(&a.stack), backend_url(&b.stack));

    // A fresh client address each run: the counters live in Redis for 15 minutes.
    let nonce = u8::try_from(std::process::id() % 200).expect("small") + 20;
    let stranger = client_from([127, 0, 7, nonce]);
    for _ in 0..5 {
        let answer = login_with(&stranger, &back_a, "admin@pulse.local", "guess").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
    let refused = login_with(&stranger, &back_b, "admin@pulse.local", "admin").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the other gateway refuses the pair: {}",
        refused.body
    );
    assert_eq!(refused.body["code"], "rate_limited");

    // A logout on A: B refuses the token as revoked.
    let session = a.session(&back_a, "admin@pulse.local", "admin").await;
    assert_eq!(
        b.jobs_status(&back_b, &session.token).await.status,
        StatusCode::OK
    );
    let out = a
        .logout(&back_a, Some(&session.token), Some(&session.cookie))
        .await;
    assert!(out.status.is_success(), "{}", out.body);
    b.until_revoked(&back_b, &session.token).await;
    // The refresh token is dead on B too (its row is in the shared database).
    let refresh = b.refresh(&back_b, Some(&session.cookie)).await;
    assert_eq!(refresh.status, StatusCode::UNAUTHORIZED, "{}", refresh.body);

    a.stack.shutdown().await;
    b.stack.shutdown().await;
    etl.shutdown().await;
}

/// The WebSocket hub over two ETL instances on one PostgreSQL database: the hub's
/// instance is stopped before any event (the hub resumes after the `position` it was
/// given), then the other one mid-run; the hub waits 400 ms before each move while runs
/// write events, resubscribes with `Last-Event-ID`, and a WebSocket client sees exactly
/// the events the database holds — every one once, in order, none missing. (Without
/// the resume, or without the position, the events of the switch are missing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PULSE_TEST_DATABASE_URL"]
async fn the_hub_resubscribes_to_another_instance_without_a_gap_or_a_repeat() {
    if std::env::var("PULSE_TEST_DATABASE_URL").is_err() {
        eprintln!("PULSE_TEST_DATABASE_URL not set; skipped");
        return;
    }
    let schema = crate::postgres::Schema::new("hub_resubscribe");
    let db = schema.flags();
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let slow: Vec<&str> = db
        .iter()
        .copied()
        .chain(["--fixture-latency-ms", "150"])
        .collect();
    let etl_a = service(Service::Etl, dirs[0].path(), &slow).await;
    let etl_b = service(Service::Etl, dirs[1].path(), &slow).await;
    let (url_a, url_b) = (etl_url(&etl_a), etl_url(&etl_b));
    let list = format!("{url_a},{url_b}");
    // The hub waits 400 ms before it moves to another instance: runs write events
    // meanwhile, which only a resume with `Last-Event-ID` brings back.
    let gateway = harness(
        service(
            Service::Backend,
            dirs[2].path(),
            &["--etl-url", &list, "--ws-resubscribe-delay-ms", "400"],
        )
        .await,
    );
    let back = backend_url(&gateway.stack);
    let token = gateway.login(&back, "admin@pulse.local", "admin").await;
    let hub = gateway.stack.backend.as_ref().expect("backend").hub.clone();
    eventually("the hub is subscribed", || {
        let hub = hub.clone();
        async move { hub.upstream_up() }
    })
    .await;

    // The client's record: every event id, in the order received.
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws/job-status",
        back.trim_start_matches("http://")
    ))
    .expect("ws request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().expect("header"),
    );
    let (socket, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("WebSocket handshake");
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let record = Arc::clone(&seen);
    let reader = tokio::spawn(async move {
        let (_, mut incoming) = socket.split();
        while let Some(Ok(message)) = incoming.next().await {
            if let tungstenite::Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).expect("JSON message");
                let id = value["event_id"].as_i64().expect("event_id");
                record.lock().expect("record").push(id);
            }
        }
    });

    let start = |job: &'static str| {
        let gateway = &gateway;
        let back = back.clone();
        let token = token.clone();
        async move {
            let started = gateway
                .call(
                    Method::POST,
                    &format!("{back}/api/etl/jobs/{job}/start"),
                    Some(&token),
                    Some(json!({})),
                    &[],
                )
                .await;
            assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
            started.body["run_id"].as_str().expect("run_id").to_owned()
        }
    };
    let finish = |run_id: String| {
        let gateway = &gateway;
        let token = token.clone();
        async move {
            let done = gateway.wait_terminal(&token, &run_id).await;
            assert_eq!(done["state"], "succeeded", "{done}");
        }
    };
    // Runs are slow (the fixture source answers after 150 ms), so events keep coming
    // while the hub moves. First its instance stops before any event was stored (the
    // hub resumes after the position that instance gave it), then the other one
    // mid-run (the hub resumes after the last event it forwarded).
    let mut etls = [Some(etl_a), Some(etl_b)];
    let urls = [url_a.clone(), url_b.clone()];
    let first_on = hub.instance().expect("subscribed");
    let addr = etls[first_on]
        .as_ref()
        .expect("running")
        .options
        .etl_addr
        .to_string();
    etls[first_on].take().expect("running").shutdown().await;
    let first = start("jira_sync").await;
    let second = start("github_sync").await;
    finish(first).await;
    finish(second).await;
    let mut again: Vec<&str> = vec!["--etl-addr", &addr];
    again.extend_from_slice(&slow);
    etls[first_on] = Some(service(Service::Etl, dirs[first_on].path(), &again).await);
    let third = start("jira_sync").await;
    let fourth = start("github_sync").await;
    eventually("the hub is on the other instance", || {
        let hub = hub.clone();
        async move { hub.instance() == Some(1 - first_on) }
    })
    .await;
    etls[1 - first_on].take().expect("running").shutdown().await;
    finish(third).await;
    finish(fourth).await;
    assert!(hub.resubscriptions() >= 2, "the hub moved twice");

    // Everything the database holds (the client connected before any event was
    // stored), replayed by the instance still running.
    let ring = pulse_core::internal_auth::KeyRing::parse(INTERNAL_KEYS).expect("keys");
    let etl = pulse_etl::client::EtlClient::http(&urls[first_on])
        .expect("client")
        .with_key_ring(ring);
    let seen_now = seen.lock().expect("record").clone();
    let last = *seen_now.last().expect("events");
    let mut replay = etl.events_after(Some(0)).await.expect("replay");
    let mut stored = Vec::new();
    while stored.last().is_none_or(|id| *id < last) {
        let _ = tokio::time::timeout(DEADLINE, replay.next())
            .await
            .expect("replayed in time")
            .expect("an event");
        stored.push(replay.last_event_id().expect("an id"));
    }
    eventually("the client has every event up to the last", || {
        let seen = Arc::clone(&seen);
        async move { seen.lock().expect("record").last() >= Some(&last) }
    })
    .await;
    let seen_now = seen.lock().expect("record").clone();
    assert_eq!(
        seen_now
            .iter()
            .take_while(|id| **id <= last)
            .copied()
            .collect::<Vec<_>>(),
        stored,
        "the client saw every stored event once, in order"
    );
    reader.abort();
    gateway.stack.shutdown().await;
    for etl in etls.into_iter().flatten() {
        etl.shutdown().await;
    }
}
