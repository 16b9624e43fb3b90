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
//! arithmetic is exact. The window is a [`SlidingWindow`] of 10 slices of net tokens.

use std::time::Duration;

use gatehouse_balance::SlidingWindow;
use parking_lot::Mutex;

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

/// A retry budget (see the module docs).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Net tokens (deposits minus withdrawals) per slice.
    window: SlidingWindow<i64>,
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
            window: SlidingWindow::new(config.ttl, SLICES),
            deposit,
            reserve: i64::try_from(reserve).unwrap_or(i64::MAX),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// Credits one original request (not a retry) at `now`.
    pub fn deposit(&mut self, now_nanos: u64) {
        let deposit = self.deposit;
        let slice = self.window.current_mut(now_nanos);
        *slice = slice.saturating_add(deposit);
    }

    /// Takes one retry from the budget at `now`; false (and nothing taken) when it is spent.
    pub fn try_withdraw(&mut self, now_nanos: u64) -> bool {
        if self.balance(now_nanos) < RETRY_COST {
            return false;
        }
        let slice = self.window.current_mut(now_nanos);
        *slice = slice.saturating_sub(RETRY_COST);
        true
    }

    /// Whole retries available at `now`, for metrics.
    pub fn available(&self, now_nanos: u64) -> u64 {
        u64::try_from(self.balance(now_nanos) / RETRY_COST).unwrap_or(0)
    }

    fn balance(&self, now_nanos: u64) -> i64 {
        self.window
            .live(now_nanos)
            .fold(self.reserve, |sum, net| sum.saturating_add(*net))
    }
}

/// A [`RetryBudget`] behind a mutex, to share (in an `Arc`) between the requests of a route.
#[derive(Debug)]
pub struct SharedRetryBudget {
    inner: Mutex<RetryBudget>,
}

impl SharedRetryBudget {
    /// An empty budget.
    pub fn new(config: RetryBudgetConfig) -> Self {
        Self {
            inner: Mutex::new(RetryBudget::new(config)),
        }
    }

    /// See [`RetryBudget::deposit`].
    pub fn deposit(&self, now_nanos: u64) {
        self.inner.lock().deposit(now_nanos);
    }

    /// See [`RetryBudget::try_withdraw`].
    pub fn try_withdraw(&self, now_nanos: u64) -> bool {
        self.inner.lock().try_withdraw(now_nanos)
    }

    /// See [`RetryBudget::available`].
    pub fn available(&self, now_nanos: u64) -> u64 {
        self.inner.lock().available(now_nanos)
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
    fn storm(budget: &mut RetryBudget, seconds: u64, rate: u64, max_retries: u32) -> (u64, u64) {
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
        let mut b = budget(0.2, 0);
        let (requests, retries) = storm(&mut b, 60, 1000, 3);
        assert_eq!(requests, 60_000);
        assert!(retries <= requests / 5, "{retries} > 20% of {requests}");
        // ...and the budget is actually used, not just refused.
        assert!(retries >= requests * 19 / 100, "{retries}");
    }

    #[test]
    fn the_floor_adds_at_most_its_rate_over_the_run_plus_one_ttl() {
        let mut b = budget(0.2, 10);
        let (requests, retries) = storm(&mut b, 60, 100, 3);
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
        let mut b = budget(0.2, 10);
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
        let mut b = budget(0.2, 0);
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
        let mut b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit(0);
        }
        assert_eq!(b.available(9 * SEC), 5);
        assert_eq!(b.available(10 * SEC), 0);
        assert!(!b.try_withdraw(10 * SEC));
    }

    #[test]
    fn zero_ratio_allows_only_the_floor() {
        let mut b = budget(0.0, 0);
        for i in 0..10_000 {
            b.deposit(i * MS);
        }
        assert!(!b.try_withdraw(10 * SEC));
        for odd in [f64::NAN, -3.0] {
            let mut b = budget(odd, 0);
            b.deposit(0);
            assert_eq!(b.available(0), 0);
        }
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let mut b = RetryBudget::new(RetryBudgetConfig {
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
        let mut b = budget(1.0, 0);
        b.deposit(20 * SEC);
        assert!(b.try_withdraw(SEC));
        assert!(!b.try_withdraw(0));
        assert_eq!(b.available(0), 0);
    }

    #[test]
    fn shared_budget_counts_across_threads() {
        let shared = SharedRetryBudget::new(RetryBudgetConfig {
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
