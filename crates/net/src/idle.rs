//! [`IdleWatch`]: a timeout on silence for something that usually does not wait.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

/// The longest a transfer may go without progress (an upstream that sends nothing, a client
/// that takes none of its response). No timer exists until the transfer first has to wait
/// (most never do), and then one timer serves the transfer's whole life: when it fires, a
/// transfer that moved since it was armed gets another period from now, so silence is
/// detected between one and two periods after the last byte. That spares a clock read and a
/// timer update per byte moved.
pub struct IdleWatch {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    moved: bool,
}

impl IdleWatch {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            moved: false,
        }
    }

    /// A watch whose first period ends at `deadline` rather than a whole period after the
    /// first wait (time already spent, a TLS handshake say, counts against it).
    pub fn armed_until(deadline: tokio::time::Instant, timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
            moved: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes moved: the current period does not count as silent.
    #[inline]
    pub fn moved(&mut self) {
        self.moved = true;
    }

    /// Watches one poll of the transfer: what it gave (any answer counts as movement), or
    /// `Ready(None)` when it waits and has been silent too long.
    #[inline]
    pub fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: std::task::Poll<T>,
    ) -> std::task::Poll<Option<T>> {
        match polled {
            std::task::Poll::Ready(value) => {
                self.moved();
                std::task::Poll::Ready(Some(value))
            }
            std::task::Poll::Pending if self.poll_expired(cx) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// Called while the transfer waits: whether it has been silent too long (else the waker is
    /// registered for the timer).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !std::mem::take(&mut self.moved) {
                return true;
            }
            // From now, not from the old deadline: the transfer may have gone unpolled for
            // longer than a period (waiting on its other side), and a deadline already past
            // would end it at once.
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
    }

    /// Resolves once the transfer has been silent too long.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| {
            if self.poll_expired(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Waits on `ready` (a socket's readiness) while watching for silence: None when the
    /// transfer was silent for too long.
    pub async fn wait<T>(
        &mut self,
        mut ready: impl FnMut(&mut Context<'_>) -> std::task::Poll<T>,
    ) -> Option<T> {
        std::future::poll_fn(|cx| match ready(cx) {
            std::task::Poll::Ready(value) => std::task::Poll::Ready(Some(value)),
            std::task::Poll::Pending if self.poll_expired(cx) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;
    use tokio::time::Instant;

    const PERIOD: Duration = Duration::from_secs(10);

    /// Waits on something that never becomes ready; returns when the watch gives up.
    async fn wait_forever(watch: &mut IdleWatch) {
        assert!(watch.wait(|_| Poll::<()>::Pending).await.is_none());
    }

    /// Waits on a timer of `secs` through the watch (the watch does not give up first).
    async fn wait_ready(watch: &mut IdleWatch, secs: u64) {
        let mut ready = Box::pin(tokio::time::sleep(Duration::from_secs(secs)));
        assert!(watch.wait(|cx| ready.as_mut().poll(cx)).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_transfer_ends_after_one_period() {
        let start = Instant::now();
        wait_forever(&mut IdleWatch::new(PERIOD)).await;
        assert_eq!(start.elapsed(), PERIOD);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_in_a_period_earns_another() {
        let start = Instant::now();
        let mut watch = IdleWatch::new(PERIOD);
        wait_ready(&mut watch, 3).await; // arms the timer at 0 s for 10 s
        watch.moved();
        wait_forever(&mut watch).await;
        assert_eq!(start.elapsed(), 2 * PERIOD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_unwatched_gap_does_not_count_as_silence() {
        let start = Instant::now();
        let mut watch = IdleWatch::new(PERIOD);
        wait_ready(&mut watch, 3).await;
        watch.moved();
        // Not waiting through the watch (the transfer waits on its other side) for 5 periods.
        tokio::time::sleep(5 * PERIOD).await;
        wait_forever(&mut watch).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3) + 5 * PERIOD + PERIOD
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_answer_passes_through_and_counts_as_movement() {
        let start = Instant::now();
        let mut watch = IdleWatch::new(PERIOD);
        // Pending arms the timer at 0 s; an answer at 3 s is handed on and earns a new period.
        let pending = std::future::poll_fn(|cx| Poll::Ready(watch.watch(cx, Poll::<u8>::Pending)));
        assert!(pending.await.is_pending());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answered = std::future::poll_fn(|cx| Poll::Ready(watch.watch(cx, Poll::Ready(7u8))));
        assert_eq!(answered.await, Poll::Ready(Some(7)));
        // Silence from here: the watch gives None one period after the first deadline, not at it.
        let silent = std::future::poll_fn(|cx| match watch.watch(cx, Poll::<u8>::Pending) {
            Poll::Ready(given) => Poll::Ready(given),
            Poll::Pending => Poll::Pending,
        });
        assert_eq!(silent.await, None);
        assert_eq!(start.elapsed(), 2 * PERIOD);
    }

    #[tokio::test(start_paused = true)]
    async fn an_armed_watch_ends_its_first_period_at_the_deadline() {
        let start = Instant::now();
        let mut silent = IdleWatch::armed_until(start + Duration::from_secs(3), PERIOD);
        wait_forever(&mut silent).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let start = Instant::now();
        let mut served = IdleWatch::armed_until(start + Duration::from_secs(3), PERIOD);
        served.moved();
        wait_forever(&mut served).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3) + PERIOD);
    }
}
