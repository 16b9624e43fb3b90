//! Adaptive per-try timeout: derived from the route's recent latency instead of a guess.
//!
//! A fixed per-try timeout is either too long (a stuck try wastes the request's deadline
//! before the retry starts) or too short (it cuts off slow-but-fine answers and retries
//! them, adding load). Tracking the recent p99 gives
//!
//! ```text
//! timeout = clamp(quantile × factor + floor, min, max)
//! ```
//!
//! so a try is abandoned only when it is clearly slower than nearly everything recently seen.
//! Until `min_samples` latencies are in the window, the timeout is `max`: with no data, be
//! lenient.
//!
//! Latencies come from a [`LatencyWindow`] (log-scale histogram over a sliding window, shared
//! with the balancer's outlier detection), whose quantiles err up to 12.5% high — the safe
//! side for a timeout.
//!
//! Record every finished try, **timed-out ones included** (with the time waited): if only
//! successes were recorded, the estimate would learn from the fast tries alone, the timeout
//! would shrink and cut off ever more tries, a feedback loop.

use std::time::Duration;

use gatehouse_balance::LatencyWindow;
use parking_lot::Mutex;

use crate::time::saturating_nanos;

/// Adaptive timeout settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveTimeoutConfig {
    /// Latency quantile tracked, e.g. 0.99.
    pub quantile: f64,
    /// Multiplier on the quantile (NaN or not positive reads as 1).
    pub factor: f64,
    /// Added after multiplying, so very fast routes still get some headroom.
    pub floor: Duration,
    /// Shortest timeout ever given.
    pub min: Duration,
    /// Longest timeout ever given, and the timeout before there is enough data. A `max` below
    /// `min` wins (the timeout is then always `max`).
    pub max: Duration,
    /// Samples needed in the window before the estimate is used (0 reads as 1).
    pub min_samples: u64,
    /// How far back samples count.
    pub window: Duration,
}

impl Default for AdaptiveTimeoutConfig {
    fn default() -> Self {
        Self {
            quantile: 0.99,
            factor: 2.0,
            floor: Duration::from_millis(5),
            min: Duration::from_millis(50),
            max: Duration::from_secs(15),
            min_samples: 100,
            window: Duration::from_secs(30),
        }
    }
}

/// Per-try timeout from recent latencies (see the module docs).
#[derive(Debug, Clone)]
pub struct AdaptiveTimeout {
    config: AdaptiveTimeoutConfig,
    latencies: LatencyWindow,
}

impl AdaptiveTimeout {
    /// No samples yet: the timeout is `max` until `min_samples` arrive.
    pub fn new(config: AdaptiveTimeoutConfig) -> Self {
        Self {
            config,
            latencies: LatencyWindow::new(config.window),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AdaptiveTimeoutConfig {
        &self.config
    }

    /// Records how long one try took (nanoseconds), timed-out tries included.
    pub fn record(&mut self, now_nanos: u64, latency_nanos: u64) {
        self.latencies.record(now_nanos, latency_nanos);
    }

    /// The per-try timeout to use at `now`.
    pub fn timeout(&self, now_nanos: u64) -> Duration {
        let config = &self.config;
        let max = saturating_nanos(config.max);
        let min = saturating_nanos(config.min).min(max);
        if self.latencies.count(now_nanos) < config.min_samples.max(1) {
            return Duration::from_nanos(max);
        }
        let Some(quantile) = self.latencies.quantile(now_nanos, config.quantile) else {
            return Duration::from_nanos(max);
        };
        let factor = if config.factor > 0.0 {
            config.factor
        } else {
            1.0
        };
        // f64 -> u64 `as` saturates (and infinity becomes u64::MAX), which is what we want.
        let scaled = (quantile as f64 * factor) as u64;
        let timeout = scaled
            .saturating_add(saturating_nanos(config.floor))
            .clamp(min, max);
        Duration::from_nanos(timeout)
    }
}

/// An [`AdaptiveTimeout`] behind a mutex, to share (in an `Arc`) between the requests of a
/// route.
#[derive(Debug)]
pub struct SharedAdaptiveTimeout {
    inner: Mutex<AdaptiveTimeout>,
}

impl SharedAdaptiveTimeout {
    /// No samples yet.
    pub fn new(config: AdaptiveTimeoutConfig) -> Self {
        Self {
            inner: Mutex::new(AdaptiveTimeout::new(config)),
        }
    }

    /// See [`AdaptiveTimeout::record`].
    pub fn record(&self, now_nanos: u64, latency_nanos: u64) {
        self.inner.lock().record(now_nanos, latency_nanos);
    }

    /// See [`AdaptiveTimeout::timeout`].
    pub fn timeout(&self, now_nanos: u64) -> Duration {
        self.inner.lock().timeout(now_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn config() -> AdaptiveTimeoutConfig {
        AdaptiveTimeoutConfig {
            quantile: 0.99,
            factor: 2.0,
            floor: Duration::from_millis(5),
            min: Duration::from_millis(20),
            max: Duration::from_secs(2),
            min_samples: 10,
            window: Duration::from_secs(10),
        }
    }

    fn record_n(timeout: &mut AdaptiveTimeout, now: u64, latency: u64, n: usize) {
        for _ in 0..n {
            timeout.record(now, latency);
        }
    }

    #[test]
    fn uses_max_until_enough_samples() {
        let mut timeout = AdaptiveTimeout::new(config());
        assert_eq!(timeout.timeout(0), Duration::from_secs(2));
        record_n(&mut timeout, SEC, 40 * MS, 9);
        assert_eq!(timeout.timeout(SEC), Duration::from_secs(2));
        timeout.record(SEC, 40 * MS);
        // 40 ms × 2 + 5 ms.
        assert_eq!(timeout.timeout(SEC), Duration::from_millis(85));
    }

    #[test]
    fn follows_the_tail_not_the_median() {
        let mut timeout = AdaptiveTimeout::new(config());
        record_n(&mut timeout, SEC, 10 * MS, 980);
        record_n(&mut timeout, SEC, 200 * MS, 20);
        // p99 is in the 200 ms tail: 2 × 200 + 5.
        assert_eq!(timeout.timeout(SEC), Duration::from_millis(405));
    }

    #[test]
    fn is_clamped_to_min_and_max() {
        let mut fast = AdaptiveTimeout::new(config());
        record_n(&mut fast, SEC, MS, 100);
        // 1 ms × 2 + 5 ms = 7 ms, raised to the 20 ms minimum.
        assert_eq!(fast.timeout(SEC), Duration::from_millis(20));
        let mut slow = AdaptiveTimeout::new(config());
        record_n(&mut slow, SEC, 5 * SEC, 100);
        assert_eq!(slow.timeout(SEC), Duration::from_secs(2));
    }

    #[test]
    fn forgets_old_latencies() {
        let mut timeout = AdaptiveTimeout::new(config());
        record_n(&mut timeout, 0, 500 * MS, 100);
        assert_eq!(timeout.timeout(0), Duration::from_millis(1005));
        record_n(&mut timeout, 20 * SEC, 40 * MS, 100);
        assert_eq!(timeout.timeout(20 * SEC), Duration::from_millis(85));
        // And with no recent data at all it falls back to max.
        assert_eq!(timeout.timeout(60 * SEC), Duration::from_secs(2));
    }

    #[test]
    fn odd_settings_are_tamed() {
        let mut inverted = AdaptiveTimeout::new(AdaptiveTimeoutConfig {
            min: Duration::from_secs(5),
            max: Duration::from_secs(1),
            ..config()
        });
        record_n(&mut inverted, SEC, MS, 100);
        assert_eq!(inverted.timeout(SEC), Duration::from_secs(1));

        for factor in [f64::NAN, 0.0, -3.0] {
            let mut t = AdaptiveTimeout::new(AdaptiveTimeoutConfig { factor, ..config() });
            record_n(&mut t, SEC, 100 * MS, 100);
            assert_eq!(t.timeout(SEC), Duration::from_millis(105), "{factor}");
        }

        let mut infinite = AdaptiveTimeout::new(AdaptiveTimeoutConfig {
            factor: f64::INFINITY,
            max: Duration::MAX,
            floor: Duration::MAX,
            ..config()
        });
        record_n(&mut infinite, SEC, 100 * MS, 100);
        assert_eq!(infinite.timeout(SEC), Duration::from_nanos(u64::MAX));

        let mut zero = AdaptiveTimeout::new(AdaptiveTimeoutConfig {
            min_samples: 0,
            min: Duration::ZERO,
            floor: Duration::ZERO,
            ..config()
        });
        assert_eq!(zero.timeout(0), Duration::from_secs(2));
        zero.record(0, 0);
        assert_eq!(zero.timeout(0), Duration::ZERO);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let mut timeout = AdaptiveTimeout::new(config());
        record_n(&mut timeout, 30 * SEC, 40 * MS, 10);
        record_n(&mut timeout, SEC, 40 * MS, 10);
        assert_eq!(timeout.timeout(0), Duration::from_millis(85));
    }

    #[test]
    fn shared_timeout_works_across_threads() {
        let shared = SharedAdaptiveTimeout::new(config());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        shared.record(SEC, 40 * MS);
                    }
                });
            }
        });
        assert_eq!(shared.timeout(SEC), Duration::from_millis(85));
    }
}
