//! Request coalescing: concurrent misses for one key make one upstream call.
//!
//! The first miss for a (key, generation) becomes the *leader* and holds a
//! [`FlightGuard`]; later misses become *waiters* and wait for the leader's
//! [`Outcome`]. A leader that is dropped (client gone, task aborted) publishes
//! [`Outcome::Abandoned`] from the guard's `Drop`, and its waiters start over: one of
//! them leads the next flight. The generation is part of the flight's identity, so a
//! request that starts after an invalidation never joins a flight that began before it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use super::{key::CacheKey, store::CachedResponse};

/// How a flight ended.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// The leader's response: answer with it. `stored` is false for a server error,
    /// shared with the waiters of its flight but never stored.
    Shared {
        response: Arc<CachedResponse>,
        stored: bool,
    },
    /// The leader's answer is not shareable (too large, `no-store`, `Set-Cookie`, an
    /// `Err` from the inner service): go upstream yourself.
    GoUpstream,
    /// The leader was dropped before it knew: start over.
    Abandoned,
}

type FlightId = (Arc<str>, u64);

/// The flights in progress, shared by every service of one layer.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<FlightId, Arc<watch::Sender<Option<Outcome>>>>>,
}

/// What a miss should do.
pub(crate) enum Role {
    /// Call upstream, then complete the guard.
    Leader(FlightGuard),
    /// Wait for the leader.
    Waiter(watch::Receiver<Option<Outcome>>),
}

impl Flights {
    /// Joins the flight for `key` at `generation`, or starts it.
    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey, generation: u64) -> Role {
        let id: FlightId = (key.as_arc().clone(), generation);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = map.get(&id) {
            return Role::Waiter(sender.subscribe());
        }
        let sender = Arc::new(watch::Sender::new(None));
        map.insert(id.clone(), sender.clone());
        Role::Leader(FlightGuard {
            flights: self.clone(),
            id,
            sender,
            done: false,
        })
    }

    fn finish(&self, id: &FlightId, sender: &Arc<watch::Sender<Option<Outcome>>>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(id).is_some_and(|s| Arc::ptr_eq(s, sender)) {
            map.remove(id);
        }
    }

    /// The number of flights in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader's obligation to publish an outcome; dropping it publishes
/// [`Outcome::Abandoned`].
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    id: FlightId,
    sender: Arc<watch::Sender<Option<Outcome>>>,
    done: bool,
}

impl std::fmt::Debug for FlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightGuard")
            .field("key", &self.id.0)
            .finish_non_exhaustive()
    }
}

impl FlightGuard {
    /// Ends the flight with `outcome`.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        // Remove first, so a waiter that starts over opens a new flight.
        self.flights.finish(&self.id, &self.sender);
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.publish(Outcome::Abandoned);
    }
}

/// Waits for the leader's outcome.
pub(crate) async fn wait(mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Outcome::Abandoned),
        Err(_) => Outcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey::new("GET /a", vec![Arc::<str>::from("")])
    }

    #[tokio::test]
    async fn second_join_waits_for_the_leader() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(guard) = flights.join(&key(), 0) else {
            panic!("first join leads")
        };
        let Role::Waiter(rx) = flights.join(&key(), 0) else {
            panic!("second join waits")
        };
        // Another generation is another flight.
        assert!(matches!(flights.join(&key(), 1), Role::Leader(_)));
        guard.complete(Outcome::GoUpstream);
        assert!(matches!(wait(rx).await, Outcome::GoUpstream));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn dropped_leader_abandons() {
        let flights = Arc::new(Flights::default());
        let leader = flights.join(&key(), 0);
        let Role::Waiter(rx) = flights.join(&key(), 0) else {
            panic!("second join waits")
        };
        drop(leader);
        assert!(matches!(wait(rx).await, Outcome::Abandoned));
        assert!(matches!(flights.join(&key(), 0), Role::Leader(_)));
    }
}
