//! The gateway's "draining" signal: set once at shutdown, then connections finish what they
//! are doing and close.
//!
//! A cancellation token alone would serve, but asking it takes a lock, and every HTTP/1.1
//! response asks (to announce `connection: close` while draining). So the signal is a token,
//! for waiting on it, beside a flag, for asking about it. Waiting is cheap too: an idle
//! keep-alive connection polls [`Drain::started`] once per request, and a poll with the waker
//! already registered reads the flag and nothing else (the token's own future takes its lock on
//! every poll).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
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
    pub fn started(&self) -> Started<'_> {
        Started {
            drain: self,
            cancelled: self.token.cancelled(),
            registered: None,
        }
    }

    /// The token, for code that waits on one. Never cancel it: only [`Drain::start`] may, as it
    /// sets the flag first, which [`Started`] relies on to skip the token. (A child token per
    /// connection would make that impossible, at the price of two locks of the parent per
    /// connection.)
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

pin_project_lite::pin_project! {
    /// See [`Drain::started`].
    pub struct Started<'a> {
        drain: &'a Drain,
        #[pin]
        cancelled: WaitForCancellationFuture<'a>,
        // The waker the token will wake, once registered.
        registered: Option<Waker>,
    }
}

impl Future for Started<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.drain.is_started() {
            return Poll::Ready(());
        }
        // Registered with this very waker: `start` sets the flag before it wakes us.
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.cancelled.poll(cx);
        if polled.is_pending() {
            *this.registered = Some(cx.waker().clone());
        }
        polled
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

    #[tokio::test]
    async fn a_waiter_polled_many_times_still_wakes() {
        let drain = Drain::default();
        let copy = drain.clone();
        let (polled, mut polls) = tokio::sync::mpsc::unbounded_channel();
        let waiter = tokio::spawn(async move {
            let mut started = std::pin::pin!(copy.started());
            // Polled again and again with the same waker, as an idle connection does.
            loop {
                tokio::select! {
                    biased;
                    () = started.as_mut() => return copy.is_started(),
                    () = tokio::task::yield_now() => {
                        let _ = polled.send(());
                    }
                }
            }
        });
        for _ in 0..5 {
            polls.recv().await.unwrap();
        }
        drain.start();
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn a_new_waker_registers_again() {
        let drain = Drain::default();
        let mut started = std::pin::pin!(drain.started());
        let first = waker_of(std::sync::Arc::new(Flag::default()));
        let second_flag = std::sync::Arc::new(Flag::default());
        let second = waker_of(std::sync::Arc::clone(&second_flag));
        assert!(
            started
                .as_mut()
                .poll(&mut Context::from_waker(&first))
                .is_pending()
        );
        assert!(
            started
                .as_mut()
                .poll(&mut Context::from_waker(&second))
                .is_pending()
        );
        drain.start();
        assert!(
            second_flag.0.load(Ordering::SeqCst),
            "the latest waker was woken"
        );
        assert!(
            started
                .as_mut()
                .poll(&mut Context::from_waker(&second))
                .is_ready()
        );
    }

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn waker_of(flag: std::sync::Arc<Flag>) -> Waker {
        Waker::from(flag)
    }
}
