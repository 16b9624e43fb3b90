//! Retry budget: retries may add at most a fixed share to the load, as in Finagle and linkerd.
//!
//! Per-request retry limits do not stop a retry storm: when an upstream is overloaded, every
//! request fails and every request retries, multiplying the load exactly when it hurts most.
//! A budget caps retries across all requests: each original request deposits `ratio` of a
//! retry, each retry withdraws one, and both are forgotten after `ttl`. So within any `ttl`
//! window, retries ≤ `ratio` × requests + a reserve of `min_retries_per_second` × `ttl`; the
//! reserve lets low-traffic routes retry at all.
//!
//! Tokens are integers (one retry = 10 000) so `ratio` has basis-point precision and the
//! arithmetic is exact. The window has 10 slices: requests are counted per slice without a lock
//! (every request deposits), retries in a [`SlidingWindow`] under a mutex (few requests retry).

use std::time::Duration;

use gatehouse_balance::SlidingWindow;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::saturating_nanos;

/// Tokens one retry costs.
const RETRY_COST: i64 = 10_000;
/// Slices of the ttl window.
const SLICES: usize = 10;
/// Largest ratio honoured: beyond 100 retries per request a budget means nothing.
const MAX_RATIO: f64 = 100.0;

/// Retry budget settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original request (0.2 = 20% extra load at most). Negative or NaN
    /// reads as 0, values above 100 as 100.
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic.
    pub min_retries_per_second: u32,
    /// How long deposits and withdrawals count.
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    /// linkerd's defaults: 20%, 10 retries per second, 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// A retry budget (see the module docs), shared by the requests of a cluster.
///
/// Every request deposits and few retry, so deposits take no lock: each slice's request count
/// is an atomic word (`RequestCounts`). Withdrawals, rare, take a mutex around the window of
/// retries taken, so two retries never both spend the last token.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    requests: RequestCounts,
    /// Retries taken per slice.
    retries: Mutex<SlidingWindow<u64>>,
    /// Tokens one request deposits.
    deposit: i64,
    /// Tokens always available on top of the window's balance.
    reserve: i64,
}

impl RetryBudget {
    /// An empty budget (only the reserve is available).
    pub fn new(config: RetryBudgetConfig) -> Self {
        let ratio = if config.ratio.is_nan() {
            0.0
        } else {
            config.ratio.clamp(0.0, MAX_RATIO)
        };
        // Exact for basis points: 0.2 * 10_000 = 2000.
        let deposit = (ratio * RETRY_COST as f64).round() as i64;
        // min_retries_per_second * ttl in seconds * cost, in integer nanoseconds.
        let reserve = u128::from(config.min_retries_per_second)
            * u128::from(saturating_nanos(config.ttl))
            * RETRY_COST as u128
            / 1_000_000_000;
        Self {
            config,
            requests: RequestCounts::new(config.ttl),
            retries: Mutex::new(SlidingWindow::new(config.ttl, SLICES)),
            deposit,
            reserve: i64::try_from(reserve).unwrap_or(i64::MAX),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Credits one original request (not a retry) at `now`.
    pub fn deposit(&self, now_nanos: u64) {
        self.requests.add(now_nanos);
    }

    /// Takes one retry from the budget at `now`; false (and nothing taken) when it is spent.
    pub fn try_withdraw(&self, now_nanos: u64) -> bool {
        let mut retries = self.retries.lock();
        if self.balance(&retries, now_nanos) < RETRY_COST {
            return false;
        }
        *retries.current_mut(now_nanos) += 1;
        true
    }

    /// Whole retries available at `now`, for metrics.
    pub fn available(&self, now_nanos: u64) -> u64 {
        let retries = self.retries.lock();
        u64::try_from(self.balance(&retries, now_nanos) / RETRY_COST).unwrap_or(0)
    }

    fn balance(&self, retries: &SlidingWindow<u64>, now_nanos: u64) -> i64 {
        let requests = i64::try_from(self.requests.sum(now_nanos)).unwrap_or(i64::MAX);
        let retried: u64 = retries.live(now_nanos.max(retries.latest_nanos())).sum();
        let retried = i64::try_from(retried).unwrap_or(i64::MAX);
        self.reserve
            .saturating_add(requests.saturating_mul(self.deposit))
            .saturating_sub(retried.saturating_mul(RETRY_COST))
    }
}

/// Requests per slice of the window, counted without a lock.
///
/// Each slot is one atomic word: the low [`COUNT_BITS`] count the requests of a slice and the
/// high bits tag which slice (its number, modulo 2^24). Recording is a compare-and-swap that
/// either adds one to the slot's slice or, when the slot still holds an older slice, starts it
/// over at one: no update is ever lost. A slot untouched for exactly a multiple of 2^24 slices
/// (194 days of 1 s slices) would read as current; at worst that lends a few retries once.
#[derive(Debug)]
struct RequestCounts {
    slice_nanos: u64,
    slots: Box<[AtomicU64]>,
    /// The newest slice seen: an earlier `now` (threads racing) counts in it, as
    /// [`SlidingWindow`] does, and never resets a slot a newer slice uses.
    latest_slice: AtomicU64,
}

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// Whether slice tag `a` is later than `b`, modulo the tag's width (within half of it).
fn is_newer(a: u64, b: u64) -> bool {
    let ahead = a.wrapping_sub(b) & TAG_MASK;
    ahead != 0 && ahead <= TAG_MASK / 2
}

impl RequestCounts {
    fn new(window: Duration) -> Self {
        Self {
            slice_nanos: (saturating_nanos(window) / SLICES as u64).max(1),
            slots: (0..SLICES).map(|_| AtomicU64::new(0)).collect(),
            latest_slice: AtomicU64::new(0),
        }
    }

    /// The slice `now` falls in, never older than the newest seen.
    fn slice(&self, now_nanos: u64) -> u64 {
        let slice = now_nanos / self.slice_nanos;
        let latest = self.latest_slice.load(Ordering::Relaxed);
        if slice > latest {
            // Once per slice, not per request.
            self.latest_slice
                .fetch_max(slice, Ordering::Relaxed)
                .max(slice)
        } else {
            latest
        }
    }

    fn add(&self, now_nanos: u64) {
        self.add_to(self.slice(now_nanos));
    }

    fn add_to(&self, slice: u64) {
        let tag = slice & TAG_MASK;
        let slot = &self.slots[(slice % SLICES as u64) as usize];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let held = word >> COUNT_BITS;
            // The slot's own slice, or a newer one (this thread stalled while time moved on a
            // whole window): count in it. Only an older slice is started over.
            let next = if held == tag || is_newer(held, tag) {
                let count = (word & COUNT_MASK).saturating_add(1).min(COUNT_MASK);
                (held << COUNT_BITS) | count
            } else {
                (tag << COUNT_BITS) | 1
            };
            match slot.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => word = seen,
            }
        }
    }

    /// Requests in the slices still inside the window at `now`.
    fn sum(&self, now_nanos: u64) -> u64 {
        let newest = self.slice(now_nanos);
        (0..SLICES as u64)
            .map(|age| newest.checked_sub(age))
            .map_while(|slice| slice)
            .map(|slice| {
                let word = self.slots[(slice % SLICES as u64) as usize].load(Ordering::Relaxed);
                if word >> COUNT_BITS == slice & TAG_MASK {
                    word & COUNT_MASK
                } else {
                    0
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn budget(ratio: f64, min_retries_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_retries_per_second,
            ttl: Duration::from_secs(10),
        })
    }

    /// Simulates `seconds` of `rate` requests per second, every one failing and wanting up to
    /// `max_retries` retries. Returns (requests, retries granted).
    fn storm(budget: &RetryBudget, seconds: u64, rate: u64, max_retries: u32) -> (u64, u64) {
        let mut requests = 0;
        let mut retries = 0;
        let step = SEC / rate;
        for i in 0..seconds * rate {
            let now = i * step;
            budget.deposit(now);
            requests += 1;
            for _ in 0..max_retries {
                if !budget.try_withdraw(now) {
                    break;
                }
                retries += 1;
            }
        }
        (requests, retries)
    }

    #[test]
    fn all_failing_traffic_retries_at_most_the_ratio() {
        let b = budget(0.2, 0);
        let (requests, retries) = storm(&b, 60, 1000, 3);
        assert_eq!(requests, 60_000);
        assert!(retries <= requests / 5, "{retries} > 20% of {requests}");
        // ...and the budget is actually used, not just refused.
        assert!(retries >= requests * 19 / 100, "{retries}");
    }

    #[test]
    fn the_floor_adds_at_most_its_rate_over_the_run_plus_one_ttl() {
        let b = budget(0.2, 10);
        let (requests, retries) = storm(&b, 60, 100, 3);
        // 20% of the requests, plus 10/s over the 60 s run and one extra 10 s window.
        let bound = requests / 5 + 10 * (60 + 10);
        assert!(retries <= bound, "{retries} > {bound}");
        assert!(
            retries > requests / 5,
            "the floor should add retries: {retries}"
        );
    }

    #[test]
    fn a_quiet_route_still_gets_the_floor() {
        let b = budget(0.2, 10);
        // No requests at all: 10 retries/s for a 10 s ttl = 100 in reserve.
        assert_eq!(b.available(0), 100);
        let granted = (0..1000).filter(|_| b.try_withdraw(0)).count();
        assert_eq!(granted, 100);
        assert_eq!(b.available(0), 0);
        // Ten seconds on, those withdrawals have expired.
        assert_eq!(b.available(11 * SEC), 100);
    }

    #[test]
    fn five_requests_fund_one_retry() {
        let b = budget(0.2, 0);
        for _ in 0..4 {
            b.deposit(0);
        }
        assert!(!b.try_withdraw(0));
        b.deposit(0);
        assert!(b.try_withdraw(0));
        assert!(!b.try_withdraw(0));
    }

    #[test]
    fn deposits_expire_after_the_ttl() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(0);
        }
        assert_eq!(b.available(9 * SEC), 5);
        assert_eq!(b.available(10 * SEC), 0);
        assert!(!b.try_withdraw(10 * SEC));
    }

    #[test]
    fn zero_ratio_allows_only_the_floor() {
        let b = budget(0.0, 0);
        for i in 0..10_000 {
            b.deposit(i * MS);
        }
        assert!(!b.try_withdraw(10 * SEC));
        for odd in [f64::NAN, -3.0] {
            let b = budget(odd, 0);
            b.deposit(0);
            assert_eq!(b.available(0), 0);
        }
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let b = RetryBudget::new(RetryBudgetConfig {
            ratio: f64::INFINITY,
            min_retries_per_second: u32::MAX,
            ttl: Duration::MAX,
        });
        for _ in 0..10 {
            b.deposit(u64::MAX);
        }
        assert!(b.try_withdraw(u64::MAX));
        assert!(b.available(u64::MAX) > 1_000_000);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let b = budget(1.0, 0);
        b.deposit(20 * SEC);
        assert!(b.try_withdraw(SEC));
        assert!(!b.try_withdraw(0));
        assert_eq!(b.available(0), 0);
    }

    #[test]
    fn deposits_racing_across_a_slice_boundary_are_all_counted() {
        let b = budget(1.0, 0);
        std::thread::scope(|scope| {
            for thread in 0..4u64 {
                let b = &b;
                scope.spawn(move || {
                    // Half in one slice, half in the next, the threads interleaving.
                    for i in 0..10_000u64 {
                        let now = if (i + thread) % 2 == 0 {
                            900 * MS
                        } else {
                            1_100 * MS
                        };
                        b.deposit(now);
                    }
                });
            }
        });
        assert_eq!(b.available(1_500 * MS), 40_000);
        // A late report from an older slice counts in the newest one, resetting nothing.
        b.deposit(0);
        assert_eq!(b.available(1_500 * MS), 40_001);
    }

    #[test]
    fn a_stalled_deposit_never_wipes_a_newer_slice() {
        let counts = RequestCounts::new(Duration::from_secs(10));
        // Slice 12 and slice 2 share a slot; a thread that computed slice 2 and stalled
        // while slice 12 began adds to slice 12 rather than starting slice 2 over.
        counts.add(12 * SEC);
        counts.add_to(2);
        assert_eq!(counts.sum(12 * SEC), 2);
        assert!(is_newer(12, 2) && !is_newer(2, 12) && !is_newer(5, 5));
        assert!(is_newer(1, TAG_MASK), "tags wrap");
    }

    #[test]
    fn shared_budget_counts_across_threads() {
        let shared = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.25,
            min_retries_per_second: 0,
            ttl: Duration::from_secs(10),
        });
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        shared.deposit(SEC);
                    }
                });
            }
        });
        assert_eq!(shared.available(SEC), 100);
        let granted = (0..200).filter(|_| shared.try_withdraw(SEC)).count();
        assert_eq!(granted, 100);
    }
}
