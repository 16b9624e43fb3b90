//! A sliding time window made of a ring of fixed-width time slices.
//!
//! Statistics that must forget old events (outlier latency histograms here; breaker failure
//! ratios and retry budgets in gatehouse-resilience) keep one value per slice. A slice that has
//! fallen out of the window is reset the next time its slot comes round, so recording is O(1)
//! with no timers and no per-event storage. The price is granularity: the live part of the
//! window covers between `(slices - 1) / slices` of the window and the whole window, depending on
//! how far `now` is into the newest slice.

use std::time::Duration;

use crate::time::saturating_nanos;

/// Upper bound on slices, so a misconfigured count cannot allocate without limit; finer
/// slices than this buy no useful precision.
const MAX_SLICES: usize = 1024;

/// A ring of `T`s, one per time slice, covering a sliding window of time.
#[derive(Debug, Clone)]
pub struct SlidingWindow<T> {
    /// Width of one slice; at least 1 ns so the epoch division is always defined.
    slice_nanos: u64,
    /// `(epoch + 1, value)` per slot. Tag 0 marks a slot that never held data, so that time 0
    /// (a fresh clock) is a valid epoch rather than an "empty" marker.
    slots: Box<[(u64, T)]>,
    /// Latest time seen. An earlier `now` is treated as this one, so time going backwards
    /// (reports racing from several threads) neither panics nor writes into a slice that has
    /// already been recycled.
    latest_nanos: u64,
}

impl<T: Default> SlidingWindow<T> {
    /// A window of `window` split into `slices` slices (clamped to 1..=1024). A zero window
    /// still works: every slice is then 1 ns wide, so values are forgotten almost at once.
    pub fn new(window: Duration, slices: usize) -> Self {
        let slices = slices.clamp(1, MAX_SLICES);
        let slice_nanos = (saturating_nanos(window) / slices as u64).max(1);
        Self {
            slice_nanos,
            slots: (0..slices).map(|_| (0, T::default())).collect(),
            latest_nanos: 0,
        }
    }

    /// The value of the slice containing `now`, reset first if its slot last held an older
    /// slice.
    pub fn current_mut(&mut self, now_nanos: u64) -> &mut T {
        let now = self.observe(now_nanos);
        let epoch = now / self.slice_nanos;
        let tag = epoch.saturating_add(1);
        let len = self.slots.len() as u64;
        // `epoch % len` is below `slots.len()`, so the index is in bounds.
        let slot = &mut self.slots[(epoch % len) as usize];
        if slot.0 != tag {
            *slot = (tag, T::default());
        }
        &mut slot.1
    }

    /// The values of the slices still inside the window at `now`, in no particular order.
    pub fn live(&self, now_nanos: u64) -> impl Iterator<Item = &T> {
        let now = now_nanos.max(self.latest_nanos);
        let newest = (now / self.slice_nanos).saturating_add(1);
        let oldest = newest.saturating_sub(self.slots.len() as u64 - 1);
        self.slots
            .iter()
            .filter(move |(tag, _)| *tag != 0 && *tag >= oldest && *tag <= newest)
            .map(|(_, value)| value)
    }

    /// Forgets everything (keeps the latest time seen, so time still never goes backwards).
    pub fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            *slot = (0, T::default());
        }
    }

    /// Moves the window's notion of time forward to `now` (never backwards) and returns the
    /// time to use.
    pub fn observe(&mut self, now_nanos: u64) -> u64 {
        self.latest_nanos = self.latest_nanos.max(now_nanos);
        self.latest_nanos
    }

    /// The latest time seen (0 before any).
    pub fn latest_nanos(&self) -> u64 {
        self.latest_nanos
    }

    /// Width of one slice in nanoseconds.
    pub fn slice_nanos(&self) -> u64 {
        self.slice_nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn sum(window: &SlidingWindow<u64>, now: u64) -> u64 {
        window.live(now).sum()
    }

    #[test]
    fn counts_within_the_window_and_forgets_older_slices() {
        let mut window = SlidingWindow::<u64>::new(Duration::from_secs(10), 10);
        assert_eq!(window.slice_nanos(), SEC);
        for second in 0..10 {
            *window.current_mut(second * SEC) += 1;
        }
        assert_eq!(sum(&window, 9 * SEC), 10);
        // At 10 s the slice [0 s, 1 s) has left the window.
        assert_eq!(sum(&window, 10 * SEC), 9);
        assert_eq!(sum(&window, 15 * SEC), 4);
        assert_eq!(sum(&window, 19 * SEC), 0);
    }

    #[test]
    fn a_recycled_slot_starts_from_zero() {
        let mut window = SlidingWindow::<u64>::new(Duration::from_secs(4), 4);
        *window.current_mut(0) += 5;
        // Same slot (epoch 4 % 4 == 0), later slice: the old 5 must not leak in.
        *window.current_mut(4 * SEC) += 1;
        assert_eq!(sum(&window, 4 * SEC), 1);
    }

    #[test]
    fn time_zero_is_a_real_slice() {
        let mut window = SlidingWindow::<u64>::new(Duration::from_secs(1), 2);
        *window.current_mut(0) += 3;
        assert_eq!(sum(&window, 0), 3);
    }

    #[test]
    fn time_going_backwards_writes_to_the_newest_slice() {
        let mut window = SlidingWindow::<u64>::new(Duration::from_secs(10), 10);
        *window.current_mut(20 * SEC) += 1;
        *window.current_mut(3 * SEC) += 1;
        assert_eq!(window.latest_nanos(), 20 * SEC);
        assert_eq!(sum(&window, 20 * SEC), 2);
        // Reading at an earlier time reads at the latest time instead.
        assert_eq!(sum(&window, 0), 2);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut window = SlidingWindow::<u64>::new(Duration::from_secs(10), 10);
        *window.current_mut(SEC) += 7;
        window.clear();
        assert_eq!(sum(&window, SEC), 0);
        assert_eq!(window.latest_nanos(), SEC);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let mut zero = SlidingWindow::<u64>::new(Duration::ZERO, 0);
        assert_eq!(zero.slice_nanos(), 1);
        *zero.current_mut(5) += 1;
        assert_eq!(sum(&zero, 5), 1);
        assert_eq!(sum(&zero, 6), 0);

        let mut huge = SlidingWindow::<u64>::new(Duration::MAX, usize::MAX);
        *huge.current_mut(u64::MAX) += 1;
        assert_eq!(sum(&huge, u64::MAX), 1);

        let mut tiny = SlidingWindow::<u64>::new(Duration::from_nanos(1), 1);
        *tiny.current_mut(u64::MAX) += 1;
        assert_eq!(sum(&tiny, u64::MAX), 1);
    }
}
