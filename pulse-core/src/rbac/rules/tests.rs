use std::convert::Infallible;

use http::StatusCode;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt};

use super::*;

/// The gateway's table from the design: login and health open, starting and cancelling
/// need `etl.jobs.run`, everything else under `/api/etl/` needs `etl.access`.
fn gateway() -> RuleTable {
    RuleTable::builder()
        .public("POST", "/api/auth/login")
        .public("GET", "/health")
        .require(
            "POST",
            "/api/etl/jobs/{name}/start",
            ["etl.jobs.run", "etl.access"],
        )
        .require(
            "POST",
            "/api/etl/jobs/start",
            ["etl.jobs.run", "etl.access"],
        )
        .require(
            "POST",
            "/api/etl/runs/{id}/cancel",
            ["etl.jobs.run", "etl.access"],
        )
        .require("ANY", "/api/etl/{*rest}", ["etl.access"])
        .authenticated("GET", "/ws/job-status")
        .build()
        .unwrap()
}

fn viewer() -> Identity {
    Identity::new("viewer").with_permissions(["etl.access"])
}

fn admin() -> Identity {
    Identity::new("admin").with_permissions(["*"])
}

fn decide(method: Method, path: &str, identity: Option<&Identity>) -> Result<(), Denial> {
    gateway().authorize(&method, path, identity).map(|_| ())
}

#[test]
fn gateway_rules() {
    let v = viewer();
    let a = admin();
    assert_eq!(decide(Method::GET, "/api/etl/jobs", Some(&v)), Ok(()));
    assert_eq!(decide(Method::DELETE, "/api/etl/runs/1", Some(&v)), Ok(()));
    assert_eq!(
        decide(Method::POST, "/api/etl/jobs/nightly/start", Some(&v)),
        Err(Denial::MissingPermission("etl.jobs.run".into()))
    );
    assert_eq!(
        decide(Method::POST, "/api/etl/jobs/nightly/start", Some(&a)),
        Ok(())
    );
    assert_eq!(
        decide(Method::POST, "/api/etl/runs/9/cancel", Some(&v)),
        Err(Denial::MissingPermission("etl.jobs.run".into()))
    );
    assert_eq!(
        decide(Method::GET, "/api/etl/jobs", None),
        Err(Denial::Unauthenticated)
    );
    assert_eq!(decide(Method::POST, "/api/auth/login", None), Ok(()));
    assert_eq!(decide(Method::GET, "/health", None), Ok(()));
    assert_eq!(
        decide(Method::HEAD, "/health", None),
        Ok(()),
        "GET covers HEAD"
    );
    assert_eq!(
        decide(Method::GET, "/ws/job-status", Some(&Identity::new("x"))),
        Ok(())
    );
    // Holding every permission does not help where no rule applies.
    assert_eq!(
        decide(Method::GET, "/metrics", Some(&a)),
        Err(Denial::NoRule)
    );
    assert_eq!(
        decide(Method::GET, "/api/auth/login", None),
        Err(Denial::NoRule)
    );
}

#[test]
fn deny_by_default_edges() {
    let a = admin();
    for path in [
        "/api/etl",
        "/api/etl/",
        "/api/etlx/jobs",
        "/API/etl/jobs",
        "/",
        "/api",
    ] {
        assert_eq!(
            decide(Method::GET, path, Some(&a)),
            Err(Denial::NoRule),
            "{path}"
        );
    }
    assert_eq!(
        RuleTable::new()
            .authorize(&Method::GET, "/", Some(&a))
            .unwrap_err(),
        Denial::NoRule
    );
}

#[test]
fn normalisation_tricks_are_refused_or_matched_strictly() {
    let v = viewer();
    // A trailing slash is the same route, so the stricter rule still applies.
    assert_eq!(
        decide(Method::POST, "/api/etl/jobs/x/start/", Some(&v)),
        Err(Denial::MissingPermission("etl.jobs.run".into()))
    );
    for path in [
        "/api/etl/jobs/x/%73tart",
        "/api/etl/jobs/x/st%61rt",
        "/api/etl//jobs/x/start",
        "/api/etl/jobs/x/start//",
        "/api/etl/./jobs/x/start",
        "/api/etl/jobs/x/y/../start",
        "/api/etl/jobs/x/%2e%2e/start",
        "/api/etl/jobs/x/%2E/start",
        "/api/etl/jobs/x/.%2e/start",
        "/api/etl/jobs%2fx%2fstart",
        "/api/etl/jobs%2Fx/start",
        "/api/etl/jobs/x%5cstart",
        "/api/etl/jobs/x\\start",
        "/api/etl/jobs/x/start;jsessionid=1",
        "/api/etl/jobs/x/%252e%252e/start",
        "/api/etl/jobs/x/%00/start",
        "/api/etl/jobs/x/%c0%ae%c0%ae/start",
        "/api/etl/jobs/x/%C1%9C",
        "/api/etl/jobs/%zz/start",
        "/api/etl/jobs/%4",
        "*",
        "",
        "api/etl/jobs",
    ] {
        assert_eq!(
            decide(Method::POST, path, Some(&admin())),
            Err(Denial::UnsafePath),
            "{path}"
        );
    }
    // Encodings of characters that need encoding are fine.
    assert!(is_safe_path("/api/etl/jobs/a%20b/runs"));
    assert!(is_safe_path("/api/etl/jobs/%C3%A9t%C3%A9"));
    assert!(is_safe_path("/api/etl/v1.2/..x/x.."));
}

#[test]
fn pattern_parsing() {
    for ok in [
        "/",
        "/a",
        "/a/{b}/c",
        "/a/*",
        "/a/{*rest}",
        "/{x}/{y}",
        "/v1.2/a-b_c~",
    ] {
        assert!(PathPattern::parse(ok).is_ok(), "{ok}");
    }
    for bad in [
        "", "a", "//", "/a/", "/a//b", "/*/a", "/{*r}/a", "/{}", "/{a b}", "/{*}", "/a*", "/%61",
        "/a;b", "/./a", "/../a", "/{a",
    ] {
        assert!(
            matches!(
                PathPattern::parse(bad),
                Err(RuleError::InvalidPattern { .. })
            ),
            "{bad}"
        );
    }
    assert_eq!(PathPattern::parse("/a/{b}").unwrap().to_string(), "/a/{b}");
}

#[test]
fn rule_validation() {
    assert!(matches!(
        Rule::new("get", "/", Requirement::Public),
        Err(RuleError::InvalidMethod(_))
    ));
    assert!(matches!(
        Rule::new("", "/", Requirement::Public),
        Err(RuleError::InvalidMethod(_))
    ));
    assert!(Rule::new("PURGE", "/", Requirement::Public).is_ok());
    assert_eq!(
        Rule::new("GET", "/", Requirement::AllOf(vec!["etl.*".into()])),
        Err(RuleError::InvalidPermission("etl.*".into()))
    );
    let err = RuleTable::builder()
        .public("GET", "/ok")
        .require("POST", "no-slash", ["a"])
        .require("POST", "/x", ["b..c"])
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RuleError::InvalidPattern { .. }),
        "first error wins: {err}"
    );
}

#[test]
fn loads_from_toml_and_json() {
    #[derive(serde::Deserialize)]
    struct Config {
        rules: RuleTable,
    }
    let config: Config = toml::from_str(
        r#"
        [[rules]]
        method = "POST"
        path = "/api/auth/login"
        public = true

        [[rules]]
        method = "POST"
        path = "/api/etl/jobs/{name}/start"
        permissions = ["etl.jobs.run", "etl.access"]

        [[rules]]
        method = "ANY"
        path = "/api/etl/*"
        permissions = ["etl.access"]

        [[rules]]
        method = "GET"
        path = "/me"
        "#,
    )
    .unwrap();
    let table = config.rules;
    assert_eq!(table.rules().len(), 4);
    assert_eq!(table.rules()[3].requirement(), &Requirement::Authenticated);
    assert_eq!(
        table
            .authorize(&Method::POST, "/api/etl/jobs/x/start", Some(&viewer()))
            .unwrap_err(),
        Denial::MissingPermission("etl.jobs.run".into())
    );

    let json = r#"[{"method": "GET", "path": "/a", "public": true, "permissions": ["x"]}]"#;
    assert!(serde_json::from_str::<RuleTable>(json).is_err());
    let json = r#"[{"method": "GET", "path": "/a", "permision": ["x"]}]"#;
    assert!(serde_json::from_str::<RuleTable>(json).is_err());
    let json = r#"[{"method": "GET", "path": "/a/{id}", "permissions": ["x.read"]}]"#;
    let table: RuleTable = serde_json::from_str(json).unwrap();
    assert!(table.find(&Method::GET, "/a/1").is_some());
    assert!(table.find(&Method::POST, "/a/1").is_none());
}

async fn call(
    identity: Option<Identity>,
    method: Method,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    let svc = ServiceBuilder::new()
        .layer(AuthorizeLayer::new(gateway()))
        .service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from(r#"{"ok":true}"#)))
        });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-request-id", "rid-7")
        .body(())
        .unwrap();
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
    }
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn layer_answers_with_json_errors() {
    let (status, body) = call(Some(viewer()), Method::GET, "/api/etl/jobs?x=1").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({"ok": true}))
    );

    let (status, body) = call(Some(viewer()), Method::POST, "/api/etl/jobs/a/start").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        serde_json::json!({
            "error": "Permission etl.jobs.run required",
            "code": "forbidden",
            "request_id": "rid-7",
        })
    );

    let (status, body) = call(None, Method::GET, "/api/etl/jobs").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &"unauthorized".into())
    );

    let (status, body) = call(Some(admin()), Method::GET, "/nothing-here").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::FORBIDDEN, &"forbidden".into())
    );

    let (status, _) = call(Some(admin()), Method::GET, "/api/etl/a/%2e%2e/b").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn layer_in_front_of_an_axum_router() {
    use axum::{Router, body::Body, routing::get};

    let app = Router::new()
        .route("/api/etl/jobs", get(|| async { "jobs" }))
        .route("/admin", get(|| async { "secret" }))
        .layer(AuthorizeLayer::new(gateway()));
    let request = |path: &str| {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut().insert(viewer());
        req
    };
    let res = app.clone().oneshot(request("/api/etl/jobs")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.oneshot(request("/admin")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

/// Pattern segments over a tiny alphabet, so that patterns and paths collide often.
#[derive(Clone, Debug)]
enum ModelSegment {
    Literal(&'static str),
    Param,
}

/// Reference model of pattern matching, over segment lists.
fn model_matches(pattern: &[ModelSegment], rest: bool, path: &[&str]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => !rest,
        (None, Some(_)) => rest,
        (Some(_), None) => false,
        (Some((ModelSegment::Literal(l), p)), Some((s, q))) => l == s && model_matches(p, rest, q),
        (Some((ModelSegment::Param, p)), Some((_, q))) => model_matches(p, rest, q),
    }
}

fn model_pattern() -> impl Strategy<Value = (Vec<ModelSegment>, bool)> {
    let segment = prop_oneof![
        prop::sample::select(vec!["a", "b", "etl"]).prop_map(ModelSegment::Literal),
        Just(ModelSegment::Param),
    ];
    (prop::collection::vec(segment, 0..4), any::<bool>())
}

fn render(pattern: &[ModelSegment], rest: bool) -> String {
    let mut out = String::new();
    for segment in pattern {
        out.push('/');
        out.push_str(match segment {
            ModelSegment::Literal(l) => l,
            ModelSegment::Param => "{p}",
        });
    }
    if rest {
        out.push_str("/*");
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

proptest! {
    /// Pattern matching agrees with the reference model on safe paths (with and
    /// without a trailing slash).
    #[test]
    fn matching_agrees_with_model(
        (pattern, rest) in model_pattern(),
        path in prop::collection::vec(prop::sample::select(vec!["a", "b", "etl", "c"]), 0..6),
        trailing_slash: bool,
    ) {
        let compiled = PathPattern::parse(&render(&pattern, rest)).unwrap();
        let mut raw = format!("/{}", path.join("/"));
        if trailing_slash && !path.is_empty() {
            raw.push('/');
        }
        prop_assert_eq!(compiled.matches(&raw), model_matches(&pattern, rest, &path),
            "pattern {} path {}", compiled, raw);
    }

    /// Arbitrary paths never panic; unsafe ones are always refused, whoever asks,
    /// and nothing outside the rules is ever allowed.
    #[test]
    fn arbitrary_paths_fail_closed(path in r"[/a-z.%;\\0-9A-F]{0,24}") {
        let table = gateway();
        let decision = table.authorize(&Method::POST, &path, Some(&admin()));
        if !is_safe_path(&path) {
            prop_assert_eq!(decision.unwrap_err(), Denial::UnsafePath);
        } else if decision.is_ok() {
            prop_assert!(path.starts_with("/api/etl/") || path == "/api/auth/login"
                || path == "/api/auth/login/");
        }
    }
}
