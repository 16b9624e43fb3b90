//! The gateway's "draining" signal: set once at shutdown, then connections finish what they
//! are doing and close.
//!
//! A cancellation token alone would serve, but asking it takes a lock, and every HTTP/1.1
//! response asks (to announce `connection: close` while draining). So the signal is a token,
//! for waiting on it, beside a flag, for asking about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    started: Arc<AtomicBool>,
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn start(&self) {
        // The flag first: whoever the token wakes must find it set.
        self.started.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether draining has started: one atomic load.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Completes once draining starts.
    pub fn started(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// The token, for code that takes one.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starting_sets_the_flag_and_wakes_waiters() {
        let drain = Drain::default();
        let copy = drain.clone();
        assert!(!copy.is_started());
        let waiter = tokio::spawn(async move {
            copy.started().await;
            copy.is_started()
        });
        tokio::task::yield_now().await;
        drain.start();
        assert!(
            waiter.await.unwrap(),
            "the flag is set when the waiter wakes"
        );
        assert!(drain.is_started() && drain.token().is_cancelled());
    }
}
