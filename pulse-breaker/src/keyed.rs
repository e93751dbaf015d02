//! One breaker per key (upstream host, tenant, route), with a bounded number of keys.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::config::{BreakerConfig, ConfigError};
use crate::error::{BoxError, RejectWith503, RejectWithError, Rejection};
use crate::future::ResponseFuture;
use crate::handle::Breaker;
use crate::policy::{Classifier, ErrorClassifier, HttpClassifier};
use crate::state::Snapshot;

/// A bounded set of breakers, one per key, all built from one configuration.
///
/// At most `max_keys` keys get their own breaker; calls for further keys share one
/// overflow breaker, so an unbounded key space (hosts taken from requests, say) cannot
/// grow memory without bound nor evict the breakers of known keys.
///
/// ```
/// use pulse_breaker::{BreakerConfig, KeyedBreakers};
///
/// let breakers = KeyedBreakers::new(BreakerConfig::default(), 2).expect("valid");
/// let a = breakers.get(&"etl-1");
/// assert!(a.same_as(&breakers.get(&"etl-1")));
/// let _b = breakers.get(&"etl-2");
/// // The third key shares the overflow breaker.
/// assert!(breakers.get(&"etl-3").same_as(breakers.overflow()));
/// assert_eq!(breakers.len(), 2);
/// ```
pub struct KeyedBreakers<K> {
    inner: Arc<KeyedInner<K>>,
}

struct KeyedInner<K> {
    config: BreakerConfig,
    max_keys: usize,
    map: RwLock<HashMap<K, Breaker>>,
    overflow: Breaker,
}

impl<K> Clone for KeyedBreakers<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("max_keys", &self.inner.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedBreakers<K> {
    /// Up to `max_keys` breakers built from `config`.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn new(config: BreakerConfig, max_keys: usize) -> Result<Self, ConfigError> {
        let overflow = Breaker::new(config.clone())?;
        Ok(Self {
            inner: Arc::new(KeyedInner {
                config,
                max_keys,
                map: RwLock::new(HashMap::new()),
                overflow,
            }),
        })
    }

    /// The breaker of `key`, created on first use while there is room, else the
    /// overflow breaker.
    pub fn get(&self, key: &K) -> Breaker {
        if let Some(found) = self.get_existing(key) {
            return found;
        }
        let mut map = self
            .inner
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = map.get(key) {
            return found.clone();
        }
        if map.len() >= self.inner.max_keys {
            return self.inner.overflow.clone();
        }
        let breaker =
            Breaker::new(self.inner.config.clone()).unwrap_or_else(|_| self.inner.overflow.clone());
        map.insert(key.clone(), breaker.clone());
        breaker
    }

    /// The breaker of `key` if it has one of its own.
    pub fn get_existing<Q>(&self, key: &Q) -> Option<Breaker>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The breaker shared by the keys beyond `max_keys`.
    pub fn overflow(&self) -> &Breaker {
        &self.inner.overflow
    }

    /// How many keys have a breaker of their own.
    pub fn len(&self) -> usize {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every keyed breaker (not the overflow one).
    pub fn snapshots(&self) -> Vec<(K, Snapshot)> {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, b)| (k.clone(), b.snapshot()))
            .collect()
    }
}

/// Applies a [`KeyedCircuitBreaker`]: the key function picks the breaker per request.
#[derive(Debug, Clone)]
pub struct KeyedCircuitBreakerLayer<K, F, C = ErrorClassifier, R = RejectWithError> {
    breakers: KeyedBreakers<K>,
    key: F,
    classifier: C,
    rejection: R,
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// Breakers from `breakers`, chosen by `key(&request)`.
    #[must_use]
    pub const fn new(breakers: KeyedBreakers<K>, key: F) -> Self {
        Self {
            breakers,
            key,
            classifier: ErrorClassifier,
            rejection: RejectWithError,
        }
    }
}

impl<K, F> KeyedCircuitBreakerLayer<K, F, HttpClassifier, RejectWith503> {
    /// For HTTP services: [`HttpClassifier`] and `503` rejections.
    #[must_use]
    pub const fn http(breakers: KeyedBreakers<K>, key: F) -> Self {
        Self {
            breakers,
            key,
            classifier: HttpClassifier::new(),
            rejection: RejectWith503,
        }
    }
}

impl<K, F, C, R> KeyedCircuitBreakerLayer<K, F, C, R> {
    /// The same layer with another classifier.
    #[must_use]
    pub fn with_classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, F, C2, R> {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers,
            key: self.key,
            classifier,
            rejection: self.rejection,
        }
    }

    /// The same layer with another rejection answer.
    #[must_use]
    pub fn with_rejection<R2>(self, rejection: R2) -> KeyedCircuitBreakerLayer<K, F, C, R2> {
        KeyedCircuitBreakerLayer {
            breakers: self.breakers,
            key: self.key,
            classifier: self.classifier,
            rejection,
        }
    }

    /// The breakers.
    #[must_use]
    pub const fn breakers(&self) -> &KeyedBreakers<K> {
        &self.breakers
    }
}

impl<S, K, F: Clone, C: Clone, R: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C, R> {
    type Service = KeyedCircuitBreaker<S, K, F, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

/// A circuit breaker per key: `key(&request)` selects the breaker of each call.
#[derive(Debug, Clone)]
pub struct KeyedCircuitBreaker<S, K, F, C = ErrorClassifier, R = RejectWithError> {
    inner: S,
    breakers: KeyedBreakers<K>,
    key: F,
    classifier: C,
    rejection: R,
}

impl<S, K, F, C, R> KeyedCircuitBreaker<S, K, F, C, R> {
    /// The breakers.
    pub const fn breakers(&self) -> &KeyedBreakers<K> {
        &self.breakers
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub const fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, F, C, R, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
    C: Classifier<S::Response, S::Error> + Clone,
    R: Rejection<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let breaker = self.breakers.get(&(self.key)(&request));
        match breaker.try_acquire() {
            Ok(permit) => {
                ResponseFuture::admitted(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(open) => ResponseFuture::rejected(self.rejection.reject(&request, open)),
        }
    }
}
