//! Request coalescing: concurrent misses for one key make one upstream request.
//!
//! The first miss becomes the leader and holds a [`Leader`] guard while its response is
//! fetched and recorded; later misses get a [`Follower`] and wait until the guard drops (the
//! response was stored, found unstorable, or failed), then look in the cache again. A waiter
//! is woken by the guard's drop whatever happened, so no path can leave one waiting; the data
//! path still bounds the wait by the route's timeout.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

type InFlight = Arc<Mutex<HashMap<u64, watch::Receiver<()>>>>;

/// Keys with a request in flight.
#[derive(Default)]
pub struct Coalescer {
    in_flight: InFlight,
}

pub enum Join {
    Leader(Leader),
    Follower(Follower),
}

/// Held by the one request that asks the origin; waiters wake when it drops.
pub struct Leader {
    key: u64,
    in_flight: InFlight,
    // Dropping the sender wakes every receiver.
    _done: watch::Sender<()>,
}

pub struct Follower {
    done: watch::Receiver<()>,
}

impl Coalescer {
    pub fn join(&self, key: u64) -> Join {
        let mut map = self.in_flight.lock();
        if let Some(done) = map.get(&key)
            && done.has_changed().is_ok()
        {
            return Join::Follower(Follower { done: done.clone() });
        }
        let (tx, rx) = watch::channel(());
        map.insert(key, rx);
        Join::Leader(Leader {
            key,
            in_flight: Arc::clone(&self.in_flight),
            _done: tx,
        })
    }

    /// Keys in flight now (for tests and the admin view).
    pub fn len(&self) -> usize {
        self.in_flight.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock();
        // Only our own slot: a waiter that gave up may have led a newer request for the key.
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self._done.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl Follower {
    /// Waits until the leader is done (stored, gave up or failed).
    pub async fn wait(mut self) {
        // Err means the sender dropped: exactly the signal.
        while self.done.changed().await.is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_and_followers_wake_when_it_drops() {
        let c = Coalescer::default();
        let Join::Leader(leader) = c.join(1) else {
            panic!("first is the leader")
        };
        let followers: Vec<_> = (0..10)
            .map(|_| match c.join(1) {
                Join::Follower(f) => tokio::spawn(f.wait()),
                Join::Leader(_) => panic!("second leader"),
            })
            .collect();
        // Another key is independent.
        assert!(matches!(c.join(2), Join::Leader(_)));
        tokio::task::yield_now().await;
        assert!(followers.iter().all(|f| !f.is_finished()));
        drop(leader);
        for f in followers {
            tokio::time::timeout(std::time::Duration::from_secs(1), f)
                .await
                .expect("woken")
                .unwrap();
        }
        assert!(c.is_empty());
        assert!(matches!(c.join(1), Join::Leader(_)));
    }
}
