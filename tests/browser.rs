//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (fantoccini + chromedriver) against the full stack on loopback ports.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`chromedriver` on PATH, or
//! `PULSE_TEST_CHROMEDRIVER`; the browser binary from `PULSE_TEST_CHROMIUM`, else
//! `chromium` on PATH). CI runs it with `cargo test --test browser -- --ignored`.
//! On failure a screenshot goes to `target/test-output/`; on success the dashboard is
//! saved there too, and as `docs/dashboard.png` (the README's picture) when that is
//! missing or `PULSE_UPDATE_SCREENSHOT=1`.

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../examples/full_stack/stack/mod.rs"]
mod stack;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use stack::Stack;
use stack::accounts::users::UserKey;
use stack::accounts::{AccountStore, Origin};
use stack::config::{Cli, LogFormat, Service};

const DEADLINE: Duration = Duration::from_secs(90);

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    // Held so that `kill_on_drop` stops chromedriver with the test.
    _child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn spawn() -> anyhow::Result<Self> {
        let path = std::env::var_os("PULSE_TEST_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_on_path("chromedriver"))
            .context("chromedriver not found (apt-get install chromium-driver)")?;
        let port = free_port();
        let child = tokio::process::Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        tokio::time::timeout(Duration::from_secs(20), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("chromedriver did not start listening")?;
        Ok(Self { _child: child, url })
    }
}

async fn browser(driver: &Driver, profile: &Path) -> anyhow::Result<Client> {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--no-first-run".to_owned(),
        "--window-size=1440,1000".to_owned(),
    ];
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut options = json!({ "args": args });
    if let Some(binary) = std::env::var_os("PULSE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_on_path("chromium"))
    {
        options["binary"] = Value::String(binary.display().to_string());
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .context("opening a WebDriver session")
}

/// The state badge text and the progress value of a job card.
async fn card(client: &Client, job: &str) -> anyhow::Result<(String, Option<f64>, bool)> {
    let script = r#"
        const card = document.querySelector(`[data-testid="job-${arguments[0]}"]`);
        if (!card) return null;
        const badge = card.querySelector('[data-testid="state-badge"]');
        const bar = card.querySelector('[data-testid="progress"]');
        const start = card.querySelector('[data-testid="start-btn"]');
        const now = bar ? bar.getAttribute("aria-valuenow") : null;
        return [badge ? badge.textContent.trim() : "", now === null ? null : Number(now), start ? !start.disabled : false];
    "#;
    let value = client.execute(script, vec![json!(job)]).await?;
    let Some(parts) = value.as_array() else {
        return Ok((String::new(), None, false));
    };
    Ok((
        parts
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        parts.get(1).and_then(Value::as_f64),
        parts.get(2).and_then(Value::as_bool).unwrap_or(false),
    ))
}

async fn login(client: &Client, base: &str, email: &str, password: &str) -> anyhow::Result<()> {
    client.goto(&format!("{base}/")).await?;
    let email_field = client
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css("#email"))
        .await?;
    // The login view is shown once the page has checked for a stored session.
    tokio::time::timeout(DEADLINE, async {
        while !email_field.is_displayed().await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("login form shown")?;
    email_field.clear().await?;
    email_field.send_keys(email).await?;
    let password_field = client.find(Locator::Css("#password")).await?;
    password_field.clear().await?;
    password_field.send_keys(password).await?;
    client
        .find(Locator::Css("#login-submit"))
        .await?
        .click()
        .await?;
    // The dashboard shows the job cards.
    client
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(
            r#"[data-testid="job-jira_sync"] [data-testid="start-btn"]"#,
        ))
        .await?;
    Ok(())
}

/// Poll `script` (a function body returning a value) until it returns true.
async fn until_true(client: &Client, what: &str, script: &str) -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if client.execute(script, vec![]).await? == Value::Bool(true) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .with_context(|| format!("not in time: {what}"))?
}

/// The access token the page holds (this tab's sessionStorage).
async fn page_token(client: &Client) -> anyhow::Result<Option<String>> {
    let value = client
        .execute(
            r#"const s = JSON.parse(sessionStorage.getItem("pulse.session") || "null");
               return s ? s.token : null;"#,
            vec![],
        )
        .await?;
    Ok(value.as_str().map(str::to_owned))
}

/// `fetch` from the page with its token: the answer's status.
async fn page_fetch_status(client: &Client, method: &str, path: &str) -> anyhow::Result<u64> {
    let script = r#"
        const done = arguments[arguments.length - 1];
        const s = JSON.parse(sessionStorage.getItem("pulse.session") || "null");
        fetch(arguments[1], {
            method: arguments[0],
            headers: { Authorization: `Bearer ${s && s.token}`, "Content-Type": "application/json" },
            body: arguments[0] === "GET" ? undefined : "{}",
        }).then((r) => done(r.status), () => done(0));
    "#;
    let status = client
        .execute_async(script, vec![json!(method), json!(path)])
        .await?;
    status.as_u64().context("a status")
}

/// Set a text field.
async fn fill(client: &Client, css: &str, text: &str) -> anyhow::Result<()> {
    let field = client.find(Locator::Css(css)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

/// The access token renews itself before it expires (the test stack issues 10-second
/// tokens): no reload, no sign-in page, and the gateway recorded the refresh.
async fn silent_refresh(client: &Client, base: &str) -> anyhow::Result<()> {
    let before = page_token(client).await?.context("a session token")?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            if page_token(client).await?.is_some_and(|t| t != before) {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .context("the access token is renewed before it expires")??;
    if client
        .find(Locator::Css("#login-view"))
        .await?
        .is_displayed()
        .await?
    {
        bail!("the renewal sent the page back to sign-in");
    }
    // The renewed token works.
    let status = page_fetch_status(client, "GET", &format!("{base}/api/etl/jobs")).await?;
    if status != 200 {
        bail!("GET /api/etl/jobs with the renewed token: {status}");
    }
    Ok(())
}

/// The admin page: the admin adds a viewer; the viewer signs in and cannot start a job
/// (the button is disabled, and the gateway refuses the call itself).
async fn admin_adds_a_viewer(
    client: &Client,
    base: &str,
    accounts: &AccountStore,
) -> anyhow::Result<()> {
    login(client, base, "admin@pulse.local", "admin").await?;
    client
        .find(Locator::Css(r#"[data-testid="nav-admin"]"#))
        .await?
        .click()
        .await?;
    client
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(r#"[data-testid="new-role-viewer"]"#))
        .await?;
    until_true(
        client,
        "the users are listed",
        r#"return !!document.querySelector('tr[data-user="viewer@pulse.local"]');"#,
    )
    .await?;
    fill(client, "#new-email", "vera@example.org").await?;
    fill(client, "#new-password", "vera reads the dashboards").await?;
    client
        .find(Locator::Css(r#"[data-testid="new-role-viewer"]"#))
        .await?
        .click()
        .await?;
    client
        .find(Locator::Css(r#"[data-testid="add-user-submit"]"#))
        .await?
        .click()
        .await?;
    until_true(
        client,
        "the new user is listed as a viewer",
        r#"const row = document.querySelector('tr[data-user="vera@example.org"]');
           return !!row && row.textContent.includes("viewer") && row.textContent.includes("active");"#,
    )
    .await?;
    client
        .find(Locator::Css(r#"[data-testid="logout"]"#))
        .await?
        .click()
        .await?;

    login(
        client,
        base,
        "vera@example.org",
        "vera reads the dashboards",
    )
    .await?;
    tokio::time::timeout(DEADLINE, async {
        while card(client, "jira_sync").await?.0.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("the new viewer's dashboard loads")??;
    if card(client, "jira_sync").await?.2 {
        bail!("the new viewer's start button is enabled");
    }
    if client
        .find(Locator::Css(r#"[data-testid="nav-admin"]"#))
        .await?
        .is_displayed()
        .await?
    {
        bail!("the new viewer is offered the admin page");
    }
    let status = page_fetch_status(
        client,
        "POST",
        &format!("{base}/api/etl/jobs/jira_sync/start"),
    )
    .await?;
    if status != 403 {
        bail!("the new viewer's start was answered {status}, not 403");
    }
    let status = page_fetch_status(client, "GET", &format!("{base}/api/admin/users")).await?;
    if status != 403 {
        bail!("the new viewer's admin call was answered {status}, not 403");
    }
    // Disabled from the command line while signed in: the page goes back to sign-in
    // and says why (at its next call or renewal, within a token's life).
    accounts
        .set_disabled(UserKey::Email("vera@example.org"), true, &Origin::cli())
        .await?;
    until_true(
        client,
        "the page returns to sign-in with a message",
        r#"const notice = document.getElementById("login-notice");
           return !document.getElementById("login-view").hidden && !!notice && !notice.hidden
               && notice.textContent.includes("sign in again");"#,
    )
    .await?;
    Ok(())
}

async fn scenario(client: &Client, base: &str, accounts: &AccountStore) -> anyhow::Result<()> {
    login(client, base, "admin@pulse.local", "admin").await?;
    silent_refresh(client, base)
        .await
        .context("silent refresh")?;
    tokio::time::timeout(DEADLINE, async {
        while !card(client, "jira_sync").await?.2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("the admin's start button becomes enabled")??;
    client
        .find(Locator::Css(
            r#"[data-testid="job-jira_sync"] [data-testid="start-btn"]"#,
        ))
        .await?
        .click()
        .await?;

    // Watch without reloading: the bar moves and the badge ends at `succeeded`.
    let mut seen = BTreeSet::new();
    let mut states = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let (state, progress, _) = card(client, "jira_sync").await?;
            if let Some(p) = progress {
                seen.insert((p * 10.0) as i64);
            }
            if states.last() != Some(&state) {
                states.push(state.clone());
            }
            if state == "succeeded" {
                return anyhow::Ok(());
            }
            if state == "failed" || state == "cancelled" {
                bail!("the run ended {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .with_context(|| format!("the run succeeds in the page (states seen {states:?})"))??;
    let moving: Vec<_> = seen.iter().filter(|p| **p > 0 && **p < 1000).collect();
    if moving.is_empty() {
        bail!("the progress bar never showed an intermediate value: {seen:?} (states {states:?})");
    }
    if !states.iter().any(|s| s == "running") {
        bail!("the badge never showed running: {states:?}");
    }

    // The screenshot for the README: the finished run on the dashboard, once the bar's
    // CSS transition has settled (for the picture only; nothing is asserted after it).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Always into the test output folder; into docs/ (committed, shown by the README)
    // only when it is missing or PULSE_UPDATE_SCREENSHOT=1, so test runs leave the
    // checkout clean.
    let png = client.screenshot().await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/test-output");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("dashboard.png"), &png)?;
    let committed = root.join("docs/dashboard.png");
    if !committed.exists() || std::env::var_os("PULSE_UPDATE_SCREENSHOT").is_some_and(|v| v == "1")
    {
        std::fs::create_dir_all(root.join("docs"))?;
        std::fs::write(committed, png)?;
    }

    // The viewer sees the same jobs, with the start button disabled.
    client
        .find(Locator::Css(r#"[data-testid="logout"]"#))
        .await?
        .click()
        .await?;
    login(client, base, "viewer@pulse.local", "viewer").await?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let (state, _, start_enabled) = card(client, "jira_sync").await?;
            if state == "succeeded" {
                if start_enabled {
                    bail!("the viewer's start button is enabled");
                }
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("the viewer's dashboard loads")??;
    let start = client
        .find(Locator::Css(
            r#"[data-testid="job-jira_sync"] [data-testid="start-btn"]"#,
        ))
        .await?;
    if start.is_enabled().await? {
        bail!("the viewer's start button is enabled");
    }
    client
        .find(Locator::Css(r#"[data-testid="logout"]"#))
        .await?
        .click()
        .await?;
    admin_adds_a_viewer(client, base, accounts)
        .await
        .context("the admin page")?;
    Ok(())
}

/// The stack and a browser on it.
struct BrowserRun {
    stack: Stack,
    driver: Driver,
    client: Client,
    base: String,
    _dir: tempfile::TempDir,
}

impl BrowserRun {
    /// The stack with the test flags and `extra` ones, and a browser session.
    async fn start(extra: &[&str]) -> Self {
        stack::telemetry::init_logs(LogFormat::Text);
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let mut args = vec![
            "full_stack",
            "--frontend-addr",
            "127.0.0.1:0",
            "--backend-addr",
            "127.0.0.1:0",
            "--etl-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().expect("utf-8"),
            // Slow enough pages that the bar visibly moves.
            "--fixture-latency-ms",
            "300",
            "--argon2-memory-kib",
            "1024",
            "--argon2-iterations",
            "1",
            "--shutdown-grace-ms",
            "500",
        ];
        args.extend_from_slice(extra);
        let cli = <Cli as clap::Parser>::try_parse_from(args).expect("arguments");
        let stack = tokio::time::timeout(DEADLINE, Stack::start(Service::All, cli.options))
            .await
            .expect("stack starts in time")
            .expect("stack starts");
        let base = format!("http://{}", stack.frontend.as_ref().expect("frontend").addr);
        let driver = Driver::spawn().await.expect("chromedriver");
        let client = browser(&driver, &dir.path().join("profile"))
            .await
            .expect("browser session");
        Self {
            stack,
            driver,
            client,
            base,
            _dir: dir,
        }
    }

    /// Close everything; panic with `outcome`'s error (a screenshot saved first).
    async fn finish(self, outcome: anyhow::Result<()>) {
        if let Err(error) = &outcome {
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
            let _ = std::fs::create_dir_all(&out);
            if let Ok(png) = self.client.screenshot().await {
                let _ = std::fs::write(out.join("browser-failure.png"), png);
            }
            eprintln!(
                "browser test failed: {error:#}; screenshot in {}",
                out.display()
            );
        }
        let _ = self.client.close().await;
        drop(self.driver);
        self.stack.shutdown().await;
        if let Err(error) = outcome {
            panic!("{error:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromedriver (Debian chromium-driver)"]
async fn the_dashboard_runs_a_job_live_and_respects_permissions() {
    // Short-lived access tokens: the page renews them silently while the test runs.
    let run = BrowserRun::start(&["--access-token-ttl-secs", "10"]).await;
    let accounts = run
        .stack
        .backend
        .as_ref()
        .expect("backend")
        .accounts
        .clone();
    let mut outcome = scenario(&run.client, &run.base, &accounts).await;
    if outcome.is_ok() {
        // The renewals went through the gateway, which recorded them.
        let query = stack::accounts::audit::AuditQuery {
            action: Some(stack::accounts::audit::AuditAction::Refresh),
            limit: 10,
            ..Default::default()
        };
        let backend = run.stack.backend.as_ref().expect("backend");
        outcome = match backend.accounts.audit_events(&query).await {
            Ok(page) if !page.events.is_empty() => Ok(()),
            Ok(_) => Err(anyhow::anyhow!("no refresh in the audit trail")),
            Err(error) => Err(error.into()),
        };
    }
    run.finish(outcome).await;
}

/// Without the demo and with nobody in the database, the sign-in page says how to
/// create the first administrator and offers no demo users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromedriver (Debian chromium-driver)"]
async fn the_login_page_says_how_to_create_the_first_administrator() {
    let run = BrowserRun::start(&["--no-demo"]).await;
    let outcome = async {
        run.client.goto(&format!("{}/", run.base)).await?;
        until_true(
            &run.client,
            "the first-administrator hint is shown",
            r#"const hint = document.getElementById("setup-hint");
               return !!hint && !hint.hidden && hint.offsetParent !== null;"#,
        )
        .await?;
        let text = run
            .client
            .find(Locator::Css(r#"[data-testid="setup-hint"]"#))
            .await?
            .text()
            .await?;
        if !text.contains("full_stack users add you@example.com --role admin") {
            bail!("the hint does not give the command: {text:?}");
        }
        if run
            .client
            .find(Locator::Css("#demo-users"))
            .await?
            .is_displayed()
            .await?
        {
            bail!("demo users are offered without the demo");
        }
        anyhow::Ok(())
    }
    .await;
    run.finish(outcome).await;
}
