//! pulse-core — the shared vocabulary of Pulse services.
//!
//! Every Pulse service — the gateway, the internal ETL service, and your own — speaks
//! the same language: one JSON error shape, one correlation id from the browser to the
//! database, one verified [`Identity`] per request, and dotted permissions with
//! wildcards. This crate provides each piece as a tower `Layer`/`Service` in the
//! tower-http style, so it fits plain tower, hyper and axum alike.
//!
//! | module | what it gives you |
//! | --- | --- |
//! | [`error`] | [`ApiError`]: `{"error", "code", "request_id"}` answers with a stable [`ErrorCode`], never internal detail |
//! | [`request_id`] | [`RequestIdLayer`] (accept or generate a UUIDv7, tracing span, echo; edge mode) and [`SetRequestIdLayer`] for clients |
//! | [`identity`] | [`Identity`]: the verified caller, put in request extensions by an authentication layer |
//! | [`jwt`] | user JWT verification (`JwtAuthLayer`), keys, JWKS, a token issuer |
//! | [`rbac`] | [`grants`](rbac::grants) with `etl.*` wildcards, [`RoleMap`], [`RequirePermissionLayer`], the gateway's deny-by-default [`RuleTable`] with [`AuthorizeLayer`] |
//! | [`internal_auth`] | service-to-service authentication: key ring and signed internal tokens |
//! | [`headers`] | header hygiene: strip hop-by-hop, reserved (`X-Internal-*`, `X-User-*`) and forwarding headers |
//! | [`health`] | [`HealthAggregator`](health::HealthAggregator): concurrent checks with timeouts → 200/503 report |
//! | [`body`] | [`ResponseBody`]: the body of middleware that may answer on its own |
//!
//! # Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | (core) | always | [`error`], [`request_id`], [`identity`], [`rbac`], [`headers`], [`body`] |
//! | `jwt` | no | the [`jwt`] module (jsonwebtoken 12 with its RustCrypto backend: RSA, ECDSA, Ed25519, HMAC; a verified-token cache) |
//! | `jwks` | no | fetching verification keys from a JWKS URL (implies `jwt`) |
//! | `internal-auth` | no | the [`internal_auth`] module (implies `jwt`) |
//! | `health` | no | the [`health`] module |
//! | `axum` | no | axum extractors ([`Identity`], [`RequestId`]) and `IntoResponse` for [`ApiError`] and health reports |
//! | `full` | no | all of the above |
//!
//! # Example
//!
//! A service that needs `etl.jobs.run`, with correlation ids. In a real stack
//! `JwtAuthLayer` sits between the two layers and puts the [`Identity`] in the
//! request's extensions; here the test requests carry one already.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response, StatusCode};
//! use http_body_util::BodyExt;
//! use pulse_core::{Identity, RequestId, RequestIdLayer, RequirePermissionLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = ServiceBuilder::new()
//!     // Outermost: every answer, even a 403, carries the correlation id.
//!     .layer(RequestIdLayer::new())
//!     // Then the permission check, in front of the handler.
//!     .layer(RequirePermissionLayer::new("etl.jobs.run"))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let id = req.extensions().get::<RequestId>().map(RequestId::to_string);
//!         Ok::<_, Infallible>(Response::new(format!("started by request {}", id.unwrap_or_default())))
//!     }));
//!
//! let as_user = |grants: &[&str]| {
//!     let mut req = Request::post("/jobs/nightly/start")
//!         .header("x-request-id", "req-42")
//!         .body(())
//!         .unwrap();
//!     req.extensions_mut()
//!         .insert(Identity::new("user-1").with_permissions(grants.iter().copied()));
//!     req
//! };
//!
//! // `etl.*` grants `etl.jobs.run`.
//! let res = app.clone().oneshot(as_user(&["etl.*"])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["x-request-id"], "req-42");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "started by request req-42");
//!
//! // `etl.access` does not: 403 in the shared JSON shape, with the request id.
//! let res = app.oneshot(as_user(&["etl.access"])).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.headers()["x-request-id"], "req-42");
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(json["code"], "forbidden");
//! assert_eq!(json["request_id"], "req-42");
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod body;
pub mod error;
pub mod headers;
#[cfg(feature = "health")]
pub mod health;
pub mod identity;
#[cfg(feature = "internal-auth")]
pub mod internal_auth;
#[cfg(feature = "jwt")]
pub mod jwt;
pub mod rbac;
pub mod request_id;

pub use body::ResponseBody;
pub use error::{ApiError, ErrorCode};
pub use identity::Identity;
pub use rbac::{AuthorizeLayer, RequirePermissionLayer, RoleMap, RuleTable};
pub use request_id::{RequestId, RequestIdLayer, SetRequestIdLayer};

/// The README's Rust blocks, compiled and run as doctests (they use these features).
#[cfg(all(doctest, feature = "jwt", feature = "axum"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
