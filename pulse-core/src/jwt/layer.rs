//! [`JwtAuthLayer`].

use tower_layer::Layer;

use super::{JwtAuth, JwtVerifier};

/// Applies [`JwtAuth`]: verifies the request's bearer token and puts the
/// [`Identity`](crate::Identity) into its extensions, or answers 401.
#[derive(Clone, Debug)]
pub struct JwtAuthLayer {
    verifier: JwtVerifier,
}

impl JwtAuthLayer {
    /// A layer verifying tokens with `verifier`.
    pub const fn new(verifier: JwtVerifier) -> Self {
        Self { verifier }
    }

    /// The verifier.
    pub const fn verifier(&self) -> &JwtVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::new(inner, self.verifier.clone())
    }
}
