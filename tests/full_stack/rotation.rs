//! Key rotation without failed requests, as the README's runbook does it: the user-token
//! secret (PULSE_JWT_SECRET / PULSE_JWT_VERIFY_SECRETS) and the internal key
//! (PULSE_INTERNAL_KEYS) are rotated in three steps — accept the next key everywhere,
//! sign with it, drop the old one — by rolling gateway instances (a new one starts, the
//! old one leaves) and restarting the ETL service, while a user's requests flow
//! through every gateway all along. No valid user gets a 401, no gateway a 403 from
//! the ETL; the only failures are 503s while the ETL service itself restarts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::harness::*;

const S1: &str = "user-token-secret-one-0123456789abcdef";
const S2: &str = "user-token-secret-two-0123456789abcdef";
const A: &str = "internal-key-a-0123456789abcdef0123456789";
const B: &str = "internal-key-b-0123456789abcdef0123456789";

/// One request of the flow: the phase it started in, where it went, with which token,
/// and the answer (`None`: no HTTP answer at all).
struct Seen {
    phase: &'static str,
    gateway: String,
    token: &'static str,
    status: Option<StatusCode>,
    body: String,
}

/// A user calling `GET /api/etl/jobs` through every gateway in the pool with every
/// token it holds, over and over.
#[derive(Default)]
struct Flow {
    gateways: Mutex<Vec<String>>,
    tokens: Mutex<Vec<(&'static str, String)>>,
    phase: Mutex<&'static str>,
    seen: Mutex<Vec<Seen>>,
    rounds: AtomicUsize,
    stop: AtomicBool,
}

impl Flow {
    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    fn set_gateways(&self, gateways: &[&str]) {
        *self.gateways.lock().unwrap() = gateways.iter().map(|g| (*g).to_owned()).collect();
    }

    fn set_tokens(&self, tokens: &[(&'static str, &str)]) {
        *self.tokens.lock().unwrap() = tokens.iter().map(|(l, t)| (*l, (*t).to_owned())).collect();
    }

    async fn run(self: Arc<Self>) {
        let http = client();
        while !self.stop.load(Ordering::SeqCst) {
            let gateways = self.gateways.lock().unwrap().clone();
            let tokens = self.tokens.lock().unwrap().clone();
            for gateway in &gateways {
                for (label, token) in &tokens {
                    let phase = *self.phase.lock().unwrap();
                    let request = Request::get(format!("{gateway}/api/etl/jobs"))
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::default())
                        .expect("request");
                    let (status, body) = match http.request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.into_body().collect().await;
                            let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                            (Some(status), String::from_utf8_lossy(&body).into_owned())
                        }
                        Err(error) => (None, error.to_string()),
                    };
                    self.seen.lock().unwrap().push(Seen {
                        phase,
                        gateway: gateway.clone(),
                        token: label,
                        status,
                        body,
                    });
                }
            }
            self.rounds.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until `n` more whole rounds have run (each over the pool as it is now).
    async fn rounds(&self, n: usize) {
        let target = self.rounds.load(Ordering::SeqCst) + n + 1;
        eventually("the flow goes on", || async {
            self.rounds.load(Ordering::SeqCst) >= target
        })
        .await;
    }
}

fn url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

async fn etl(dir: &std::path::Path, addr: &str, keys: &str) -> Stack {
    let args = args_overriding(dir, &[("--etl-addr", addr), ("--internal-keys", keys)]);
    start_args(Service::Etl, args).await
}

async fn gateway(dir: &std::path::Path, etl: &str, jwt: &str, verify: &str, keys: &str) -> Stack {
    let mut overrides = vec![
        ("--etl-url", etl),
        ("--jwt-secret", jwt),
        ("--internal-keys", keys),
    ];
    if !verify.is_empty() {
        overrides.push(("--jwt-verify-secrets", verify));
    }
    start_args(Service::Backend, args_overriding(dir, &overrides)).await
}

fn backend_url(stack: &Stack) -> String {
    url(stack.backend.as_ref().expect("backend").server.addr)
}

async fn login(base: &str) -> String {
    let request = Request::post(format!("{base}/api/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"email": "viewer@pulse.local", "password": "viewer"}).to_string(),
        )))
        .expect("request");
    let answer = exchange(&client(), request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    exchange(&client(), request.body(Full::default()).expect("request"))
        .await
        .status
}

/// Restart the ETL service on its address with `keys`, the flow marking what it sends
/// meanwhile; back when every gateway gets through to it again.
async fn restart_etl(
    flow: &Flow,
    dir: &std::path::Path,
    old: Stack,
    keys: &str,
    token: &str,
    then: &'static str,
) -> Stack {
    let addr = old.options.etl_addr.to_string();
    flow.set_phase("etl restarting");
    // A request that read the previous phase may still be on its way: let it finish.
    flow.rounds(1).await;
    old.shutdown().await;
    let new = etl(dir, &addr, keys).await;
    let gateways = flow.gateways.lock().unwrap().clone();
    for gateway in gateways {
        // The breaker may have opened while the ETL was away: wait until it has healed.
        let jobs = format!("{gateway}/api/etl/jobs");
        let bearer = format!("Bearer {token}");
        eventually("the gateway reaches the restarted ETL", || async {
            get(&jobs, &[("authorization", &bearer)]).await == StatusCode::OK
        })
        .await;
    }
    flow.set_phase(then);
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_rotate_while_requests_flow_without_401s_or_403s() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let (a, b, ab, ba) = (
        format!("a:{A}"),
        format!("b:{B}"),
        format!("a:{A},b:{B}"),
        format!("b:{B},a:{A}"),
    );

    // Before: everyone on S1 and internal key a.
    let mut etl_stack = etl(dir, "127.0.0.1:0", &a).await;
    let etl_url = url(etl_stack.options.etl_addr);
    let g1 = gateway(dir, &etl_url, S1, "", &a).await;
    let t1 = login(&backend_url(&g1)).await;
    let flow = Arc::new(Flow::default());
    flow.set_phase("before");
    flow.set_gateways(&[&backend_url(&g1)]);
    flow.set_tokens(&[("t1 (S1)", &t1)]);
    let running = tokio::spawn(Arc::clone(&flow).run());
    flow.rounds(3).await;

    // Step 1, accept the next keys everywhere: the ETL takes b as well as a; a new
    // gateway accepts S2 besides S1 and b besides a, but still signs and sends S1 / a.
    etl_stack = restart_etl(&flow, dir, etl_stack, &ab, &t1, "1: accept next").await;
    let g2 = gateway(dir, &etl_url, S1, S2, &ab).await;
    flow.set_gateways(&[&backend_url(&g1), &backend_url(&g2)]);
    flow.rounds(3).await;
    flow.set_gateways(&[&backend_url(&g2)]);
    flow.rounds(1).await;
    g1.shutdown().await;
    flow.rounds(3).await;

    // Step 2, sign with the next keys: a gateway signing S2 and sending b joins; the
    // user's old and new tokens go through both gateways, whose internal calls carry
    // a and b side by side.
    flow.set_phase("2: sign with next");
    let g3 = gateway(dir, &etl_url, S2, S1, &ba).await;
    let t2 = login(&backend_url(&g3)).await;
    flow.set_tokens(&[("t1 (S1)", &t1), ("t2 (S2)", &t2)]);
    flow.set_gateways(&[&backend_url(&g2), &backend_url(&g3)]);
    flow.rounds(5).await;
    flow.set_gateways(&[&backend_url(&g3)]);
    flow.rounds(1).await;
    g2.shutdown().await;
    flow.rounds(3).await;

    // Step 3, after the grace period (every S1 token has expired; here: the user only
    // holds t2 now): drop S1 and a.
    flow.set_tokens(&[("t2 (S2)", &t2)]);
    flow.rounds(1).await;
    etl_stack = restart_etl(&flow, dir, etl_stack, &b, &t2, "3: drop old").await;
    let g4 = gateway(dir, &etl_url, S2, "", &b).await;
    flow.set_gateways(&[&backend_url(&g3), &backend_url(&g4)]);
    flow.rounds(3).await;
    flow.set_gateways(&[&backend_url(&g4)]);
    flow.rounds(1).await;
    g3.shutdown().await;
    flow.rounds(3).await;

    flow.stop.store(true, Ordering::SeqCst);
    running.await.expect("the flow ends");
    let seen = std::mem::take(&mut *flow.seen.lock().unwrap());
    let mut by_phase = std::collections::BTreeMap::<&str, usize>::new();
    for s in seen.iter() {
        *by_phase.entry(s.phase).or_default() += 1;
        let status = s.status.unwrap_or_else(|| {
            panic!(
                "{} via {} with {}: no answer: {}",
                s.phase, s.gateway, s.token, s.body
            )
        });
        let expected = status == StatusCode::OK
            || (s.phase == "etl restarting" && status == StatusCode::SERVICE_UNAVAILABLE);
        if !expected {
            // What the services logged about this request, to tell why.
            let request_id = serde_json::from_str::<Value>(&s.body)
                .ok()
                .and_then(|b| b["request_id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let logged = log_lines_with(&request_id);
            panic!(
                "{} via {} with {}: {status} {}\nlogged: {logged:#?}",
                s.phase, s.gateway, s.token, s.body
            );
        }
    }
    for phase in [
        "before",
        "1: accept next",
        "2: sign with next",
        "3: drop old",
    ] {
        assert!(
            by_phase.get(phase).copied().unwrap_or(0) >= 3,
            "{by_phase:?}"
        );
    }
    // Both tokens crossed both gateways of step 2.
    for token in ["t1 (S1)", "t2 (S2)"] {
        let gateways: std::collections::BTreeSet<&str> = seen
            .iter()
            .filter(|s| s.phase == "2: sign with next" && s.token == token)
            .map(|s| s.gateway.as_str())
            .collect();
        assert_eq!(gateways.len(), 2, "{token}: {gateways:?}");
    }

    // Afterwards the old keys are gone: an S1 token is refused, and so is key a.
    let g4_url = backend_url(&g4);
    let jobs = format!("{g4_url}/api/etl/jobs");
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(
        get(&jobs, &[("authorization", &bearer(&t1))]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&jobs, &[("authorization", &bearer(&t2))]).await,
        StatusCode::OK
    );
    let direct = format!("{etl_url}/api/v1/jobs");
    assert_eq!(
        get(&direct, &[("x-internal-auth", A)]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&direct, &[("x-internal-auth", B)]).await,
        StatusCode::OK
    );

    g4.shutdown().await;
    etl_stack.shutdown().await;
}

/// With generated secrets, the rotation edits the files in `<data>/secrets/`:
/// `jwt_verify_secrets` (one secret per line, `#` comments) is read beside `jwt_secret`,
/// and a short secret there is refused at start-up.
#[test]
fn the_verify_secrets_file_in_the_data_folder_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets folder");
    std::fs::write(secrets.join("jwt_secret"), S2).expect("write");
    std::fs::write(
        secrets.join("jwt_verify_secrets"),
        format!("# the previous secret, until its tokens have expired\n{S1}\n"),
    )
    .expect("write");
    let options = |dir: &std::path::Path| {
        <Cli as clap::Parser>::try_parse_from(args(dir))
            .expect("valid arguments")
            .options
    };
    let resolved = stack::config::Secrets::resolve(&options(dir.path())).expect("secrets");
    assert_eq!(resolved.jwt_secret, S2);
    assert_eq!(resolved.jwt_verify_secrets, [S1]);
    let mut kids = resolved.user_token_keys().expect("keys").kids();
    kids.sort();
    let mut expected = vec![stack::keys::user_key_id(S1), stack::keys::user_key_id(S2)];
    expected.sort();
    assert_eq!(kids, expected);

    std::fs::write(secrets.join("jwt_verify_secrets"), "too-short\n").expect("write");
    let refused = stack::config::Secrets::resolve(&options(dir.path()));
    let message = format!("{:#}", refused.expect_err("a short secret is refused"));
    assert!(message.contains("PULSE_JWT_VERIFY_SECRETS"), "{message}");
}
