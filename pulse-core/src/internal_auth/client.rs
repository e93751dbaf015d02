//! [`InternalCredentialLayer`]: adds the internal credential to outbound requests.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{InternalTokenMinter, KeyRing, X_INTERNAL_AUTH, X_INTERNAL_TOKEN};
use crate::identity::Identity;

/// Applies [`InternalCredential`] to an outbound client stack.
///
/// With a key ring, every request gets the ring's primary key in `X-Internal-Auth`;
/// with a minter, every request carrying an [`Identity`] extension gets a token freshly
/// minted for it in `X-Internal-Token`. Headers are inserted (replacing any value
/// already there, e.g. one a client tried to forward) and marked sensitive; a request
/// without identity has any `X-Internal-Token` removed.
#[derive(Clone, Default)]
pub struct InternalCredentialLayer {
    config: Arc<Config>,
}

#[derive(Clone, Default)]
struct Config {
    key: Option<KeyRing>,
    token: Option<(InternalTokenMinter, String)>,
}

impl InternalCredentialLayer {
    /// A layer adding nothing yet; add [`with_key`](Self::with_key) and/or
    /// [`with_token`](Self::with_token).
    pub fn new() -> Self {
        Self::default()
    }

    /// Send the ring's primary key.
    #[must_use]
    pub fn with_key(mut self, ring: KeyRing) -> Self {
        Arc::make_mut(&mut self.config).key = Some(ring);
        self
    }

    /// Send a token minted by `minter` for the request's identity, addressed to the
    /// service `audience`.
    #[must_use]
    pub fn with_token(mut self, minter: InternalTokenMinter, audience: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).token = Some((minter, audience.into()));
        self
    }
}

impl<S> Layer<S> for InternalCredentialLayer {
    type Service = InternalCredential<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InternalCredential {
            inner,
            layer: self.clone(),
        }
    }
}

impl fmt::Debug for InternalCredentialLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalCredentialLayer")
            .field("key", &self.config.key)
            .field("token", &self.config.token)
            .finish()
    }
}

/// Adds the internal credential to each outbound request (see
/// [`InternalCredentialLayer`]).
#[derive(Clone, Debug)]
pub struct InternalCredential<S> {
    inner: S,
    layer: InternalCredentialLayer,
}

impl<S> InternalCredential<S> {
    /// Wrap `inner` with the configuration of `layer`.
    pub const fn new(inner: S, layer: InternalCredentialLayer) -> Self {
        Self { inner, layer }
    }

    /// An empty [`InternalCredentialLayer`] to configure.
    pub fn layer() -> InternalCredentialLayer {
        InternalCredentialLayer::new()
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the middleware.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for InternalCredential<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let config = &*self.layer.config;
        if let Some(ring) = &config.key {
            match ring.primary() {
                Some((_, value)) => {
                    req.headers_mut().insert(X_INTERNAL_AUTH, value);
                }
                None => {
                    req.headers_mut().remove(X_INTERNAL_AUTH);
                }
            }
        }
        if let Some((minter, audience)) = &config.token {
            let minted = req
                .extensions()
                .get::<Identity>()
                .map(|identity| minter.mint_header(identity, audience));
            match minted {
                Some(Ok(value)) => {
                    req.headers_mut().insert(X_INTERNAL_TOKEN, value);
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "minting the internal token failed");
                    req.headers_mut().remove(X_INTERNAL_TOKEN);
                }
                None => {
                    req.headers_mut().remove(X_INTERNAL_TOKEN);
                }
            }
        }
        self.inner.call(req)
    }
}
