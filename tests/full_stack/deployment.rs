//! Restarts, separate processes and the command line.

use crate::harness::*;

/// Stopping the whole stack and starting it on the same data folder keeps the run
/// history (same SQLite file) and the generated secrets (old tokens still verify).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_history_and_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = TestStack {
        stack: start_in(dir.path()).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{back}/api/etl/jobs/jira_sync/start"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    assert_eq!(t.wait_terminal(&token, &run_id).await["state"], "succeeded");
    t.stack.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets/jwt_secret"))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let t = TestStack {
        stack: start_in(dir.path()).await,
        _dir: None,
        http: client(),
    };
    let back = t.backend();
    let runs = t
        .call(
            Method::GET,
            &format!("{back}/api/etl/jobs/jira_sync/runs"),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(
        runs.status,
        StatusCode::OK,
        "the old token verifies: {}",
        runs.body
    );
    let ids: Vec<&str> = runs.body["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(ids.contains(&run_id.as_str()), "{}", runs.body);
    t.stack.shutdown().await;
}

/// The same example run as three processes would be: one service per `Stack`, found
/// through PULSE_ETL_URL / PULSE_BACKEND_URL, sharing the secrets generated into one
/// data folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_run_apart_and_share_generated_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etl = start_service(Service::Etl, dir.path(), &[]).await;
    let etl_url = format!("http://{}", etl.options.etl_addr);
    let backend = start_service(Service::Backend, dir.path(), &["--etl-url", &etl_url]).await;
    let backend_url = format!("http://{}", backend.options.backend_addr);
    let frontend = start_service(
        Service::Frontend,
        dir.path(),
        &["--backend-url", &backend_url],
    )
    .await;
    assert!(etl.backend.is_none() && etl.frontend.is_none());
    assert!(backend.etl.is_none() && frontend.backend.is_none());

    let t = TestStack {
        stack: frontend,
        _dir: None,
        http: client(),
    };
    let front = t.frontend();
    let token = t.login(&front, "admin@pulse.local", "admin").await;
    let started = t
        .call(
            Method::POST,
            &format!("{front}/api/etl/jobs/start"),
            Some(&token),
            Some(json!({"job_name": "github_sync"})),
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run_id = started.body["run_id"].as_str().expect("run_id").to_owned();
    let run_url = format!("{front}/api/etl/runs/{run_id}");
    let run = tokio::time::timeout(DEADLINE, async {
        loop {
            let answer = t.call(Method::GET, &run_url, Some(&token), None, &[]).await;
            if answer.body["state"] == "succeeded" {
                return answer.body;
            }
            assert_ne!(answer.body["state"], "failed", "{}", answer.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run succeeds");
    assert_eq!(run["requested_by"], t.user_id(&front, &token).await);
    t.stack.shutdown().await;
    backend.shutdown().await;
    etl.shutdown().await;
}

#[test]
fn the_command_line_is_consistent() {
    <Cli as clap::CommandFactory>::command().debug_assert();
    let help = <Cli as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    for variable in [
        "PULSE_FRONTEND_ADDR",
        "PULSE_BACKEND_ADDR",
        "PULSE_ETL_ADDR",
        "PULSE_BACKEND_URL",
        "PULSE_ETL_URL",
        "PULSE_DATABASE_URL",
        "PULSE_DATA_DIR",
        "PULSE_JWT_SECRET",
        "PULSE_INTERNAL_KEYS",
        "PULSE_DEMO",
        "PULSE_LOG_FORMAT",
        "PULSE_TLS_CERT",
        "PULSE_TLS_KEY",
        "PULSE_JIRA_URL",
        "PULSE_GITHUB_TOKEN",
    ] {
        assert!(help.contains(variable), "--help mentions {variable}");
    }
}
