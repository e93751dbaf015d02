//! [`InternalAuthLayer`].

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use super::{CredentialVerifier, InternalAuth, InvalidExemptPath, paths::is_canonical};

/// Applies [`InternalAuth`]: requires a valid internal credential on every path but
/// the exact exempt ones.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct InternalAuthLayer {
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) verifiers: Vec<Arc<dyn CredentialVerifier>>,
    pub(crate) exempt: Vec<String>,
}

impl InternalAuthLayer {
    /// A layer accepting credentials `verifier` finds valid (a
    /// [`KeyRing`](super::KeyRing), an [`InternalTokenVerifier`](super::InternalTokenVerifier)
    /// or your own kind), with no exempt path.
    pub fn new(verifier: impl CredentialVerifier) -> Self {
        Self {
            config: Arc::new(Config {
                verifiers: vec![Arc::new(verifier)],
                exempt: Vec::new(),
            }),
        }
    }

    /// Also accept credentials this verifier finds valid.
    #[must_use]
    pub fn with_verifier(mut self, verifier: impl CredentialVerifier) -> Self {
        Arc::make_mut(&mut self.config)
            .verifiers
            .push(Arc::new(verifier));
        self
    }

    /// Let requests for exactly these paths through without a credential (e.g.
    /// `/health`, `/metrics`). Each must be canonical (see [`InvalidExemptPath`]).
    pub fn with_exempt_paths<I, P>(mut self, paths: I) -> Result<Self, InvalidExemptPath>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        for path in paths {
            let path = path.into();
            if !is_canonical(&path) {
                return Err(InvalidExemptPath(path));
            }
            Arc::make_mut(&mut self.config).exempt.push(path);
        }
        Ok(self)
    }

    /// The exempt paths.
    pub fn exempt_paths(&self) -> &[String] {
        &self.config.exempt
    }
}

impl<S> Layer<S> for InternalAuthLayer {
    type Service = InternalAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InternalAuth::new(inner, self.clone())
    }
}

impl fmt::Debug for InternalAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalAuthLayer")
            .field("verifiers", &self.config.verifiers.len())
            .field("exempt", &self.config.exempt)
            .finish()
    }
}
