//! [`RequirePermissionLayer`]: guard a service with one or more permissions.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{ResponseFuture, check_permissions};
use crate::{body::ResponseBody, identity::Identity};

/// Requires the request's [`Identity`] to hold every one of a set of permissions.
/// Builds [`RequirePermission`].
///
/// No identity in the request's extensions (no authentication layer ran, or it let an
/// anonymous request through) → 401 `unauthorized`; a permission missing → 403
/// `forbidden`. Both answers use the shared JSON error shape.
#[derive(Clone, Debug)]
pub struct RequirePermissionLayer {
    permissions: Arc<[String]>,
}

impl RequirePermissionLayer {
    /// Require one permission (a plain dotted name such as `etl.jobs.run`).
    pub fn new(permission: impl Into<String>) -> Self {
        Self {
            permissions: Arc::from([permission.into()]),
        }
    }

    /// Require every one of these permissions. With none, any authenticated request
    /// passes.
    pub fn all<I, S>(permissions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            permissions: permissions.into_iter().map(Into::into).collect(),
        }
    }

    /// The required permissions.
    pub fn permissions(&self) -> &[String] {
        &self.permissions
    }
}

impl<S> Layer<S> for RequirePermissionLayer {
    type Service = RequirePermission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermission {
            inner,
            permissions: Arc::clone(&self.permissions),
        }
    }
}

/// Middleware requiring permissions; see [`RequirePermissionLayer`].
#[derive(Clone, Debug)]
pub struct RequirePermission<S> {
    inner: S,
    permissions: Arc<[String]>,
}

impl<S> RequirePermission<S> {
    /// Require one permission in front of `inner`.
    pub fn new(inner: S, permission: impl Into<String>) -> Self {
        RequirePermissionLayer::new(permission).layer(inner)
    }

    /// A layer requiring one permission.
    pub fn layer(permission: impl Into<String>) -> RequirePermissionLayer {
        RequirePermissionLayer::new(permission)
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consume this middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequirePermission<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match check_permissions(req.extensions().get::<Identity>(), &self.permissions) {
            Ok(()) => ResponseFuture::allowed(self.inner.call(req)),
            Err(denial) => {
                tracing::debug!(%denial, "request denied");
                ResponseFuture::denied(
                    denial
                        .into_api_error()
                        .with_request_id_of(&req)
                        .into_response_body(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::request_id::RequestIdLayer;

    fn ok_service()
    -> impl Service<Request<()>, Response = Response<ResponseBody<String>>, Error = Infallible> + Clone
    {
        ServiceBuilder::new()
            .layer(RequirePermissionLayer::all(["etl.access", "etl.jobs.run"]))
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::from("ran")))
            })
    }

    fn with_identity(identity: Option<Identity>) -> Request<()> {
        let mut req = Request::builder()
            .header("x-request-id", "rid-1")
            .body(())
            .unwrap();
        if let Some(identity) = identity {
            req.extensions_mut().insert(identity);
        }
        req
    }

    async fn json(res: Response<ResponseBody<String>>) -> serde_json::Value {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn allows_when_every_permission_is_granted() {
        let id = Identity::new("u").with_permissions(["etl.*"]);
        let res = ok_service().oneshot(with_identity(Some(id))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.body().is_middleware_answer());
    }

    #[tokio::test]
    async fn forbidden_json_when_a_permission_is_missing() {
        let id = Identity::new("u").with_permissions(["etl.access"]);
        let res = ok_service().oneshot(with_identity(Some(id))).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(
            json(res).await,
            serde_json::json!({
                "error": "Permission etl.jobs.run required",
                "code": "forbidden",
                "request_id": "rid-1",
            })
        );
    }

    #[tokio::test]
    async fn unauthorized_json_without_identity() {
        let res = ok_service().oneshot(with_identity(None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_eq!(json(res).await["code"], "unauthorized");
    }

    #[tokio::test]
    async fn request_id_layer_in_front_provides_the_id() {
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .service(ok_service());
        let req = Request::builder()
            .header("x-correlation-id", "corr-5")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "corr-5");
        assert_eq!(json(res).await["request_id"], "corr-5");
    }

    #[tokio::test]
    async fn guards_an_axum_route() {
        use axum::{Router, body::Body, routing::post};

        let app = Router::new().route(
            "/jobs/{name}/start",
            post(|| async { "started" }).layer(RequirePermissionLayer::new("etl.jobs.run")),
        );
        let mut req = Request::post("/jobs/x/start").body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(Identity::new("u").with_permissions(["etl.access"]));
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        let mut req = Request::post("/jobs/x/start").body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(Identity::new("u").with_permissions(["*"]));
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}
