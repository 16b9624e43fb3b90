//! Exponential backoff with full jitter.
//!
//! Retry `n` waits a uniformly random time in `0..=min(cap, base × 2^(n-1))` (AWS's "full
//! jitter"). Randomising the whole interval, not just a fraction of it, spreads the retries of
//! many clients that failed at the same moment, so they do not hit a recovering upstream in
//! synchronised waves.

use std::time::Duration;

use crate::random::up_to;
use crate::time::saturating_nanos;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait.
    pub base: Duration,
    /// Largest wait of any retry.
    pub cap: Duration,
}

impl Default for Backoff {
    /// Envoy's defaults: 25 ms base, 250 ms cap.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            cap: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// Largest wait before retry number `retry` (1 = the first retry; 0 reads as 1).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.max(1) - 1;
        let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        let nanos = saturating_nanos(self.base)
            .saturating_mul(factor)
            .min(saturating_nanos(self.cap));
        Duration::from_nanos(nanos)
    }

    /// Wait before retry number `retry`, drawn uniformly from `0..=ceiling(retry)` by the
    /// caller's uniformly random `random`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let ceiling = saturating_nanos(self.ceiling(retry));
        Duration::from_nanos(up_to(random, ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
        }
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let ceilings: Vec<u128> = (1..=6).map(|n| backoff().ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![10, 20, 40, 80, 100, 100]);
        assert_eq!(backoff().ceiling(0), backoff().ceiling(1));
        assert_eq!(backoff().ceiling(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn delay_spans_zero_to_the_ceiling() {
        let b = backoff();
        assert_eq!(b.delay(3, 0), Duration::ZERO);
        assert_eq!(b.delay(3, u64::MAX), Duration::from_millis(40));
        assert_eq!(b.delay(3, u64::MAX / 2), Duration::from_millis(20));
    }

    #[test]
    fn delays_are_uniform_over_the_range() {
        let b = backoff();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut buckets = [0u32; 4];
        for _ in 0..40_000 {
            let delay = b.delay(2, rng.u64(..));
            assert!(delay <= Duration::from_millis(20));
            let quarter = (delay.as_nanos() * 4 / 20_000_001) as usize;
            buckets[quarter] += 1;
        }
        for count in buckets {
            assert!((9_400..10_600).contains(&count), "{buckets:?}");
        }
    }

    #[test]
    fn degenerate_settings() {
        let zero = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(zero.delay(5, u64::MAX), Duration::ZERO);
        let capped = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::ZERO,
        };
        assert_eq!(capped.delay(1, u64::MAX), Duration::ZERO);
        let huge = Backoff {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(huge.delay(64, u64::MAX), Duration::from_nanos(u64::MAX));
    }
}
