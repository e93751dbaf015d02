//! What a pool tells the outside: an observer called on each event, and counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ProxyError;

/// Receives a [`Pool`](super::Pool)'s events, e.g. to count them in metrics. Every
/// method has an empty default. Observers are called inline on the request path, so
/// they must be cheap and must not block.
pub trait PoolObserver: Send + Sync + 'static {
    /// Outlier detection took `instance` out of the draw for `length`.
    fn on_ejected(&self, instance: &str, length: Duration) {
        let _ = (instance, length);
    }

    /// The ejection of `instance` ended: it is in the draw again. Noticed on the next
    /// pick (or status read) after the ejection's end.
    fn on_restored(&self, instance: &str) {
        let _ = instance;
    }

    /// A request that failed on `from` with `error` is sent again to `to`.
    fn on_retried(&self, from: &str, to: &str, error: &ProxyError) {
        let _ = (from, to, error);
    }

    /// A request that failed on `instance` with `error` could have been sent again, but
    /// the retry budget was spent: the error is returned.
    fn on_budget_exhausted(&self, instance: &str, error: &ProxyError) {
        let _ = (instance, error);
    }
}

/// An observer that does nothing (the same as none).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl PoolObserver for NoopObserver {}

/// A pool's counters since it was built (see [`Pool::stats`](super::Pool::stats)).
#[derive(Debug, Default)]
pub struct PoolStats {
    retries: AtomicU64,
    budget_exhausted: AtomicU64,
    ejections: AtomicU64,
    restorations: AtomicU64,
}

impl PoolStats {
    /// Requests sent a second time, to another instance.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries the budget refused.
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.load(Ordering::Relaxed)
    }

    /// Ejections by outlier detection.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Ejections that ended.
    pub fn restorations(&self) -> u64 {
        self.restorations.load(Ordering::Relaxed)
    }
}

/// The counters and the user's observer, called together.
pub(crate) struct Events {
    pub(crate) stats: PoolStats,
    pub(crate) observer: Box<dyn PoolObserver>,
}

impl Events {
    pub(crate) fn ejected(&self, instance: &str, length: Duration) {
        self.stats.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            instance,
            ejected_for_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
            "upstream instance ejected after consecutive failures"
        );
        self.observer.on_ejected(instance, length);
    }

    pub(crate) fn restored(&self, instance: &str) {
        self.stats.restorations.fetch_add(1, Ordering::Relaxed);
        tracing::info!(instance, "upstream instance back in the draw");
        self.observer.on_restored(instance);
    }

    pub(crate) fn retried(&self, from: &str, to: &str, error: &ProxyError) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(from, to, kind = %error, "sending the request to another instance");
        self.observer.on_retried(from, to, error);
    }

    pub(crate) fn budget_exhausted(&self, instance: &str, error: &ProxyError) {
        self.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(instance, kind = %error, "retry budget spent; not sending again");
        self.observer.on_budget_exhausted(instance, error);
    }
}
