//! A whole request through [`pulse_proxy::Proxy`] (public API, in-process transport
//! that records what it is sent): the path check and prefix rewrite, and the header
//! hygiene of `pulse_proxy::headers` on the way in and out.
//!
//! Input, as text:
//!
//! ```text
//! /api/etl/jobs?limit=5        request target (origin or absolute form)
//! Connection: x-user-id        request headers, one per line
//! @identity: user-1            options: @identity, @email, @peer (an IP), @trusted
//! @peer: 10.0.0.7              (trusted hops, 0-3), @authz (forward Authorization),
//!                              @norewrite (no prefix rewrite)
//!                              empty line
//! Keep-Alive: timeout=5        response headers the upstream answers with
//! ```
//!
//! Properties: a forwarded path is the rewritten client path (query verbatim) and safe
//! (see `assert_safe_path`); the upstream sees no hop-by-hop header, nothing a
//! `Connection` line named, no reserved or forwarding header but the ones the proxy
//! injects, one request id, the upstream's own `Host`, and every other client header
//! unchanged; the client sees no hop-by-hop or reserved response header and its request
//! id; a refused request gets the JSON error body with its request id.
#![no_main]

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, LazyLock, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, header, request::Parts};
use http_body_util::{BodyExt, Empty, Full};
use libfuzzer_sys::fuzz_target;
use pulse_core::{
    Identity,
    headers::{HOP_BY_HOP, is_forwarded, is_reserved},
};
use pulse_proxy::{ClientAddr, ForwardedPolicy, Proxy, ProxyConfig, transport::InProcessTransport};
use pulse_proxy_fuzz::{assert_safe_path, header_map, trim};
use tower::{ServiceExt, service_fn};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
});

const UPSTREAM: &str = "etl.internal:8001";

#[derive(Default)]
struct Options {
    identity: Option<Identity>,
    peer: Option<IpAddr>,
    trusted: usize,
    authz: bool,
    rewrite: bool,
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(target) = lines.next() else { return };
    let Ok(uri) = Uri::try_from(trim(target)) else {
        return;
    };
    let mut options = Options {
        rewrite: true,
        ..Options::default()
    };
    let mut request_headers = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if !option(&mut options, line) {
            request_headers.push(line);
        }
    }
    let request_headers = header_map(request_headers);
    let response_headers = header_map(lines);
    RUNTIME.block_on(run(uri, request_headers, response_headers, options));
});

/// Reads an `@option` line; `false` for an ordinary header line.
fn option(options: &mut Options, line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"@") else {
        return false;
    };
    let (key, value) = match rest.iter().position(|b| *b == b':') {
        Some(i) => (
            &rest[..i],
            String::from_utf8_lossy(trim(&rest[i + 1..])).into_owned(),
        ),
        None => (rest, String::new()),
    };
    match key {
        b"identity" => options.identity = Some(Identity::new(value)),
        b"email" => {
            let identity = options
                .identity
                .take()
                .unwrap_or_else(|| Identity::new("user"));
            options.identity = Some(identity.with_email(value));
        }
        b"peer" => options.peer = value.parse().ok(),
        b"trusted" => options.trusted = value.parse::<usize>().map_or(0, |n| n % 4),
        b"authz" => options.authz = true,
        b"norewrite" => options.rewrite = false,
        _ => {}
    }
    true
}

async fn run(uri: Uri, request_headers: HeaderMap, response_headers: HeaderMap, options: Options) {
    let mut config = ProxyConfig::new(Uri::from_static("http://etl.internal:8001"))
        .expect("an absolute upstream")
        .with_forwarded(ForwardedPolicy::untrusted().with_trusted_hops(options.trusted))
        .with_forward_authorization(options.authz);
    if options.rewrite {
        config = config.with_prefix_rewrite("/api/etl/", "/api/v1/");
    }
    let seen: Arc<Mutex<Option<Parts>>> = Arc::default();
    let upstream = service_fn({
        let seen = seen.clone();
        let response_headers = response_headers.clone();
        move |req: Request<_>| {
            let (parts, _body) = req.into_parts();
            *seen.lock().expect("not poisoned") = Some(parts);
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.headers_mut() = response_headers.clone();
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let proxy = Proxy::new(InProcessTransport::new(upstream), config);

    let mut request = Request::get(uri.clone())
        .body(Empty::<Bytes>::new())
        .expect("valid parts");
    *request.headers_mut() = request_headers.clone();
    if let Some(identity) = &options.identity {
        request.extensions_mut().insert(identity.clone());
    }
    if let Some(ip) = options.peer {
        request
            .extensions_mut()
            .insert(ClientAddr(SocketAddr::new(ip, 40000)));
    }
    let response = proxy
        .oneshot(request)
        .await
        .expect("the proxy is infallible");
    let forwarded = seen.lock().expect("not poisoned").take();

    let (parts, body) = response.into_parts();
    let client_id = single(&parts.headers, "x-request-id");
    let Some(outbound) = forwarded else {
        // Refused by the proxy itself: the shared JSON error, with the request id.
        assert!(
            parts.status.is_client_error(),
            "{uri}: refused with {}",
            parts.status
        );
        let body = body
            .collect()
            .await
            .expect("an error body is in memory")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
        for field in ["error", "code", "request_id"] {
            assert!(
                json[field].is_string(),
                "{uri}: error body without {field}: {json}"
            );
        }
        assert_eq!(
            json["request_id"].as_str(),
            client_id.as_deref(),
            "{uri}: error id"
        );
        return;
    };
    drop(body);

    check_path(&uri, &outbound.uri, options.rewrite);
    check_outbound(&request_headers, &outbound.headers, &options);
    let upstream_id = single(&outbound.headers, "x-request-id");
    assert_eq!(single(&outbound.headers, "x-correlation-id"), upstream_id);
    check_response(&response_headers, &parts.headers);
    assert_eq!(client_id, upstream_id, "the client sees another request id");
}

fn check_path(client: &Uri, outbound: &Uri, rewrite: bool) {
    assert_eq!(outbound.authority().map(|a| a.as_str()), Some(UPSTREAM));
    let client_path = client.path_and_query().map_or("/", |pq| pq.path());
    let path = outbound.path();
    assert_safe_path(path);
    if rewrite {
        let expected = match client_path.strip_prefix("/api/etl/") {
            Some(rest) => format!("/api/v1/{rest}"),
            None => {
                assert_eq!(
                    client_path, "/api/etl",
                    "{client}: forwarded outside the prefix"
                );
                "/api/v1".to_owned()
            }
        };
        assert_eq!(path, expected, "{client}: rewritten");
    } else {
        assert_eq!(path, client_path, "{client}: not rewritten");
    }
    assert_eq!(outbound.query(), client.query(), "{client}: query changed");
}

/// What the proxy itself sets on the way to the upstream.
fn injected(name: &HeaderName) -> bool {
    [
        "host",
        "te",
        "x-user-id",
        "x-user-email",
        "x-request-id",
        "x-correlation-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ]
    .contains(&name.as_str())
}

fn check_outbound(client: &HeaderMap, out: &HeaderMap, options: &Options) {
    let named: Vec<HeaderName> = client
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(trim(token)).ok())
        .collect();
    for name in out.keys() {
        let values: Vec<&HeaderValue> = out.get_all(name).iter().collect();
        if *name == header::TE {
            assert_eq!(values, ["trailers"], "TE forwarded as is");
            continue;
        }
        // `Trailer` is end-to-end (RFC 9110); the proxy keeps what the client declared.
        if *name == header::TRAILER {
            assert_eq!(values, client.get_all(name).iter().collect::<Vec<_>>());
            continue;
        }
        assert!(!HOP_BY_HOP.contains(name), "hop-by-hop {name} forwarded");
        assert!(
            injected(name) || !named.contains(name),
            "{name} named by Connection forwarded"
        );
        assert!(
            injected(name) || !is_reserved(name),
            "reserved {name} forwarded"
        );
        assert!(
            injected(name) || !is_forwarded(name),
            "forwarding header {name} forwarded"
        );
        if injected(name) {
            assert_eq!(values.len(), 1, "{name} injected {} times", values.len());
        }
    }
    let identity = options.identity.as_ref();
    let expect = |value: Option<&str>| value.and_then(|v| HeaderValue::from_str(v).ok());
    assert_eq!(
        out.get("x-user-id"),
        expect(identity.map(|i| i.subject.as_str())).as_ref()
    );
    assert_eq!(
        out.get("x-user-email"),
        expect(identity.and_then(|i| i.email.as_deref())).as_ref()
    );
    assert_eq!(
        out.get(header::HOST).map(|h| h.as_bytes()),
        Some(UPSTREAM.as_bytes())
    );
    if options.trusted == 0 {
        let peer = options.peer.map(|ip| ip.to_string());
        assert_eq!(
            out.get("x-forwarded-for").map(|v| v.to_str().ok()),
            peer.as_deref().map(Some)
        );
    }
    if !options.authz {
        assert!(
            out.get(header::AUTHORIZATION).is_none(),
            "Authorization forwarded"
        );
    }
    // Nothing else is lost: every other client header arrives with all its values.
    for name in client.keys() {
        let stripped = HOP_BY_HOP.contains(name)
            || named.contains(name)
            || is_reserved(name)
            || is_forwarded(name)
            || injected(name)
            || *name == header::AUTHORIZATION;
        if !stripped {
            let want: Vec<_> = client.get_all(name).iter().collect();
            let got: Vec<_> = out.get_all(name).iter().collect();
            assert_eq!(got, want, "{name} changed on the way");
        }
    }
}

fn check_response(upstream: &HeaderMap, client: &HeaderMap) {
    let named: Vec<HeaderName> = upstream
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(trim(token)).ok())
        .collect();
    for name in client.keys() {
        if *name == header::TRAILER || *name == "x-request-id" || *name == "x-correlation-id" {
            continue;
        }
        assert!(
            !HOP_BY_HOP.contains(name),
            "hop-by-hop {name} in the response"
        );
        assert!(
            !named.contains(name),
            "{name} named by Connection in the response"
        );
        assert!(!is_reserved(name), "reserved {name} in the response");
        let want: Vec<_> = upstream.get_all(name).iter().collect();
        let got: Vec<_> = client.get_all(name).iter().collect();
        assert_eq!(got, want, "response header {name} changed");
    }
    // Nothing else is lost on the way back.
    for name in upstream.keys() {
        let stripped = HOP_BY_HOP.contains(name)
            || named.contains(name)
            || is_reserved(name)
            || *name == "x-request-id"
            || *name == "x-correlation-id";
        if !stripped {
            let want: Vec<_> = upstream.get_all(name).iter().collect();
            let got: Vec<_> = client.get_all(name).iter().collect();
            assert_eq!(got, want, "response header {name} lost");
        }
    }
}

/// The single value of a header, as text.
fn single(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    assert!(values.next().is_none(), "{name} sent twice");
    Some(first.to_str().expect("an ASCII id").to_owned())
}
