//! Deadlines for hedged requests, kept outside tokio's timer wheel.
//!
//! Every hedgeable request arms a deadline a few milliseconds ahead, and almost all of them
//! are cancelled because the first answer came in time. With tokio's timers, arming a deadline
//! earlier than any the driver had seen at its last park (the tries' own timeouts are seconds
//! ahead) wakes the driver with a system call: measured at 0.27 eventfd writes per request,
//! most of hedging's cost (docs/benchmarks.md). Here, arming is a push onto a locked list; one
//! task ([`HedgeTimers::run`]) fires due entries every [`TICK`] while any are pending and
//! sleeps on a notification otherwise, so an idle proxy does not tick.
//!
//! A hedge fires up to one tick late, which is noise next to its delay (at least 5 ms).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often pending deadlines are checked.
pub const TICK: Duration = Duration::from_millis(1);
/// Arming prunes cancelled deadlines once the list is this long.
const PRUNE_AT: usize = 4096;

/// The pending hedge deadlines of one gateway.
#[derive(Default)]
pub struct HedgeTimers {
    pending: Mutex<Vec<(Instant, Arc<Slot>)>>,
    /// Woken when the list goes from empty to not empty.
    armed: Notify,
}

#[derive(Default)]
struct Slot {
    fired: AtomicBool,
    waker: AtomicWaker,
}

/// Completes at its deadline (or up to one tick later); dropping it cancels it.
pub struct HedgeDeadline {
    slot: Arc<Slot>,
}

impl HedgeTimers {
    /// A deadline at `at`.
    pub fn at(&self, at: Instant) -> HedgeDeadline {
        let slot = Arc::new(Slot::default());
        let mut pending = self.pending.lock();
        let was_empty = pending.is_empty();
        if pending.len() >= PRUNE_AT {
            // The ticker prunes every tick; this bounds the list should it not be running.
            pending.retain(|(_, slot)| Arc::strong_count(slot) > 1);
        }
        pending.push((at, Arc::clone(&slot)));
        drop(pending);
        if was_empty {
            self.armed.notify_one();
        }
        HedgeDeadline { slot }
    }

    /// Fires due deadlines and forgets cancelled ones; returns whether any are left.
    fn fire_due(&self, now: Instant) -> bool {
        let mut pending = self.pending.lock();
        pending.retain(|(at, slot)| {
            // Only this list holds it: its future was dropped (the first try answered).
            if Arc::strong_count(slot) == 1 {
                return false;
            }
            if *at <= now {
                slot.fired.store(true, Ordering::Release);
                slot.waker.wake();
                return false;
            }
            true
        });
        !pending.is_empty()
    }

    /// Ticks while deadlines are pending, until `stop` (the gateway's drain) is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.fire_due(Instant::now()) {
                // Registered before the check below, so an arm in between is not missed.
                let armed = self.armed.notified();
                if self.pending.lock().is_empty() {
                    tokio::select! {
                        () = armed => {}
                        () = stop.cancelled() => return,
                    }
                }
                tick.reset();
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

impl Future for HedgeDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.slot.waker.register(cx.waker());
        // Fired between the check and the registration: the wake went to the old waker.
        if self.slot.fired.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_the_deadline_and_not_before() {
        let timers = Arc::new(HedgeTimers::default());
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&timers).run(stop.clone()));
        let started = Instant::now();
        let deadline = timers.at(started + Duration::from_millis(20));
        // A guard against hanging, not a measure of speed.
        tokio::time::timeout(Duration::from_secs(5), deadline)
            .await
            .expect("the deadline never fired");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(20),
            "fired early: {waited:?}"
        );
        stop.cancel();
    }

    #[test]
    fn cancelled_deadlines_are_forgotten_and_due_ones_fire() {
        let timers = HedgeTimers::default();
        let now = Instant::now();
        let cancelled = timers.at(now);
        drop(cancelled);
        let due = timers.at(now);
        let later = timers.at(now + Duration::from_secs(60));
        assert!(timers.fire_due(now), "the later one is still pending");
        assert!(due.slot.fired.load(Ordering::Acquire));
        assert!(!later.slot.fired.load(Ordering::Acquire));
        assert_eq!(timers.pending.lock().len(), 1);
        drop(later);
        assert!(!timers.fire_due(now), "nothing left");
    }

    #[test]
    fn without_a_ticker_the_list_stays_bounded() {
        let timers = HedgeTimers::default();
        for _ in 0..3 * PRUNE_AT {
            drop(timers.at(Instant::now()));
        }
        assert!(timers.pending.lock().len() <= PRUNE_AT);
    }

    #[tokio::test]
    async fn an_idle_ticker_wakes_when_a_deadline_is_armed() {
        let timers = Arc::new(HedgeTimers::default());
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&timers).run(stop.clone()));
        // Let the ticker find nothing pending and go to sleep.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let fired = tokio::time::timeout(
            Duration::from_secs(5),
            timers.at(Instant::now() + Duration::from_millis(5)),
        )
        .await;
        assert!(fired.is_ok(), "the armed deadline never fired");
        stop.cancel();
    }
}
