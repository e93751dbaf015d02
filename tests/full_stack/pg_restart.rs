//! A restart of the PostgreSQL server under the stack, while runs execute: the gateway
//! answers 503 during the outage (never hangs), every run still reaches a terminal
//! state afterwards, and the stack serves again once the server is back.
//!
//! The server is a throwaway cluster this test creates with `initdb` and runs with
//! `pg_ctl` on a port and a data folder of its own (as the `postgres` user: the server
//! refuses to run as root), so no other test is disturbed. Ignored by default; CI runs
//! it with the other `--ignored` tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// A PostgreSQL cluster of this test's own, stopped (immediately) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// `initdb` a cluster in a fresh folder, on a free port.
    fn create() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let cluster = Self { dir, bin, port };
        as_postgres(&["chown", "-R", "postgres", cluster.dir_str()], false);
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster
    }

    fn dir_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir_str())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir_str()
        );
        let log = format!("{}/server.log", self.dir_str());
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server: `fast` ends every session (as a restart or a failover does).
    fn stop(&self, mode: &str) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
        );
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = vec![program.to_str().expect("utf-8 path")];
        command.extend_from_slice(args);
        as_postgres(&command, true);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_ctl)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

/// Runs `command`, as the `postgres` user when `as_user` (else as this process).
fn as_postgres(command: &[&str], as_user: bool) {
    let output = if as_user {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(command)
            .output()
    } else {
        Command::new(command[0]).args(&command[1..]).output()
    }
    .unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The newest installed server's `bin` folder (Debian: /usr/lib/postgresql/<n>/bin).
fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().expect("an installed PostgreSQL server").1
}

/// Runs `f` on a blocking thread (the cluster's commands wait for the server).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's server binaries and root (runs a cluster as the postgres user)"]
async fn a_database_restart_while_runs_execute_strands_no_run_and_never_hangs_the_gateway() {
    let cluster = std::sync::Arc::new(blocking(Cluster::create).await);
    blocking({
        let cluster = std::sync::Arc::clone(&cluster);
        move || cluster.start()
    })
    .await;
    let url = cluster.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = args_overriding(
        dir.path(),
        &[
            // Runs long enough to be cut by the outage.
            ("--fixture-latency-ms", "150"),
            ("--etl-lease-ms", "2000"),
            ("--etl-sweep-ms", "300"),
        ],
    );
    args.extend(["--database-url".to_owned(), url.clone()]);
    let t = TestStack {
        stack: start_args(Service::All, args).await,
        _dir: Some(dir),
        http: client(),
    };
    let back = t.backend();
    let token = t.login(&back, "admin@pulse.local", "admin").await;

    let mut runs = Vec::new();
    for job in ["github_sync", "jira_sync"] {
        let started = t
            .call(
                Method::POST,
                &format!("{back}/api/etl/jobs/{job}/start"),
                Some(&token),
                None,
                &[],
            )
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        runs.push(started.body["run_id"].as_str().expect("run_id").to_owned());
    }
    eventually("a run is executing", || async {
        let answer = t
            .call(
                Method::GET,
                &format!("{back}/api/etl/runs/{}", runs[0]),
                Some(&token),
                None,
                &[],
            )
            .await;
        answer.body["state"] == "running"
    })
    .await;

    // The server goes down under the running attempts.
    blocking({
        let cluster = std::sync::Arc::clone(&cluster);
        move || cluster.stop("fast")
    })
    .await;
    for path in [
        "/api/etl/jobs",
        "/api/etl/jobs/status",
        &format!("/api/etl/runs/{}", runs[1]),
    ] {
        // A hang detector, not a speed assertion: the gateway's own ETL timeout is 30 s.
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            t.call(
                Method::GET,
                &format!("{back}{path}"),
                Some(&token),
                None,
                &[],
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {path} hung while the database was down"));
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "GET {path}: {}",
            answer.body
        );
        assert!(answer.body["code"].is_string(), "{}", answer.body);
        assert!(
            !answer.body.to_string().to_lowercase().contains("sqlx"),
            "no internals: {}",
            answer.body
        );
    }
    let health = t
        .call(Method::GET, &format!("{back}/health"), None, None, &[])
        .await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.body
    );

    // Back up: the stack serves again and every run finishes.
    blocking({
        let cluster = std::sync::Arc::clone(&cluster);
        move || cluster.start()
    })
    .await;
    eventually("the gateway serves the job list again", || async {
        t.call(
            Method::GET,
            &format!("{back}/api/etl/jobs"),
            Some(&token),
            None,
            &[],
        )
        .await
        .status
            == StatusCode::OK
    })
    .await;
    for run in &runs {
        let done = t.wait_terminal(&token, run).await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    // Nothing is left claimed: no run sits in `running` or `retrying` without an end.
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let stranded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM etl_runs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(stranded, 0);
    pool.close().await;
    t.stack.shutdown().await;
}
