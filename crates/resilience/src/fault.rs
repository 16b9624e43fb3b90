//! Fault injection: deliberately delay or fail a share of a route's requests, to test that
//! clients and the rest of the stack cope (timeouts fire, retries stay within budget,
//! breakers open).
//!
//! Shares are [`BasisPoints`] (1/100 of a percent), so "0.05% of requests" is expressible.
//! Delay and abort are drawn independently: a request may be delayed, aborted, both (delayed,
//! then aborted, as in Envoy) or neither. A delay is `delay + uniform(0..=delay_jitter)`.
//!
//! [`FaultConfig::decide`] takes one random `u64` and derives an independent draw for each
//! choice from it, so one `fastrand::u64(..)` per request is enough and tests can replay any
//! decision from its input.

use std::time::Duration;

use crate::random::{derive, up_to};
use crate::time::saturating_nanos;

/// Status used when the configured abort status is not a valid final HTTP status.
const FALLBACK_ABORT_STATUS: u16 = 503;

/// A share of requests in basis points: 0 (none) to 10 000 (all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BasisPoints(u16);

impl BasisPoints {
    /// No request.
    pub const NONE: Self = Self(0);
    /// Every request.
    pub const ALL: Self = Self(10_000);

    /// `bp` basis points, capped at 10 000.
    pub fn new(bp: u32) -> Self {
        Self(u16::try_from(bp.min(10_000)).unwrap_or(10_000))
    }

    /// From a percentage (`12.5` → 1250 bp), rounded to the nearest basis point and clamped
    /// to 0..=100; NaN reads as 0.
    pub fn from_percent(percent: f64) -> Self {
        if percent.is_nan() {
            return Self::NONE;
        }
        // `as` saturates, and the clamp keeps the value within 0..=10_000 anyway.
        Self::new((percent.clamp(0.0, 100.0) * 100.0).round() as u32)
    }

    /// The share in basis points.
    pub fn get(self) -> u16 {
        self.0
    }

    /// Whether a request with the uniform draw `random` falls in the share: exactly
    /// `bp / 10_000` of all draws do.
    pub fn hit(self, random: u64) -> bool {
        up_to(random, 9_999) < u64::from(self.0)
    }
}

/// Fault injection settings of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Fixed part of an injected delay.
    pub delay: Duration,
    /// Random extra delay, uniform in `0..=delay_jitter`.
    pub delay_jitter: Duration,
    /// Share of requests delayed.
    pub delay_percent: BasisPoints,
    /// Status answered to aborted requests (200..=599; anything else becomes 503).
    pub abort_status: u16,
    /// Share of requests aborted.
    pub abort_percent: BasisPoints,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultAction {
    /// Wait this long before going on.
    pub delay: Option<Duration>,
    /// Answer with this status instead of forwarding.
    pub abort: Option<u16>,
}

impl FaultConfig {
    /// Decides the faults for one request from a uniformly random `random`.
    pub fn decide(&self, random: u64) -> FaultAction {
        let delay = self.delay_percent.hit(derive(random, 0)).then(|| {
            let jitter = up_to(derive(random, 1), saturating_nanos(self.delay_jitter));
            Duration::from_nanos(saturating_nanos(self.delay).saturating_add(jitter))
        });
        let abort = self
            .abort_percent
            .hit(derive(random, 2))
            .then(|| self.status());
        FaultAction { delay, abort }
    }

    /// True when this config can never inject anything, so the layer can be skipped.
    pub fn is_noop(&self) -> bool {
        self.delay_percent == BasisPoints::NONE && self.abort_percent == BasisPoints::NONE
    }

    fn status(&self) -> u16 {
        if (200..=599).contains(&self.abort_status) {
            self.abort_status
        } else {
            FALLBACK_ABORT_STATUS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_points_construction() {
        assert_eq!(BasisPoints::new(250).get(), 250);
        assert_eq!(BasisPoints::new(u32::MAX), BasisPoints::ALL);
        assert_eq!(BasisPoints::from_percent(12.5).get(), 1250);
        assert_eq!(BasisPoints::from_percent(0.05).get(), 5);
        assert_eq!(BasisPoints::from_percent(0.004).get(), 0);
        assert_eq!(BasisPoints::from_percent(250.0), BasisPoints::ALL);
        assert_eq!(BasisPoints::from_percent(-1.0), BasisPoints::NONE);
        assert_eq!(BasisPoints::from_percent(f64::NAN), BasisPoints::NONE);
        assert_eq!(BasisPoints::from_percent(f64::INFINITY), BasisPoints::ALL);
    }

    #[test]
    fn hit_edges_are_exact() {
        assert!(!BasisPoints::NONE.hit(0));
        assert!(!BasisPoints::NONE.hit(u64::MAX));
        assert!(BasisPoints::ALL.hit(0));
        assert!(BasisPoints::ALL.hit(u64::MAX));
        let one = BasisPoints::new(1);
        // Exactly the lowest 1/10_000 of the draws hit.
        let edge = u64::MAX / 10_000;
        assert!(one.hit(0));
        assert!(one.hit(edge));
        assert!(!one.hit(edge + 1));
        let half = BasisPoints::new(5_000);
        assert!(half.hit((1 << 63) - 1));
        assert!(!half.hit(1 << 63));
    }

    fn config() -> FaultConfig {
        FaultConfig {
            delay: Duration::from_millis(100),
            delay_jitter: Duration::from_millis(50),
            delay_percent: BasisPoints::from_percent(25.0),
            abort_status: 503,
            abort_percent: BasisPoints::from_percent(0.5),
        }
    }

    #[test]
    fn shares_match_the_configured_basis_points() {
        let mut rng = fastrand::Rng::with_seed(5);
        let (mut delayed, mut aborted, mut both) = (0, 0, 0);
        let runs = 200_000;
        for _ in 0..runs {
            let action = config().decide(rng.u64(..));
            if let Some(delay) = action.delay {
                assert!(delay >= Duration::from_millis(100));
                assert!(delay <= Duration::from_millis(150));
                delayed += 1;
            }
            if let Some(status) = action.abort {
                assert_eq!(status, 503);
                aborted += 1;
            }
            if action.delay.is_some() && action.abort.is_some() {
                both += 1;
            }
        }
        // 25% ± 0.5%, 0.5% ± 0.1%; independence: both ≈ 25% × 0.5% = 250.
        assert!((49_000..51_000).contains(&delayed), "{delayed}");
        assert!((800..1_200).contains(&aborted), "{aborted}");
        assert!((150..350).contains(&both), "{both}");
    }

    #[test]
    fn none_and_all_are_exact() {
        let never = FaultConfig {
            delay_percent: BasisPoints::NONE,
            abort_percent: BasisPoints::NONE,
            ..config()
        };
        assert!(never.is_noop());
        let always = FaultConfig {
            delay_percent: BasisPoints::ALL,
            abort_percent: BasisPoints::ALL,
            delay_jitter: Duration::ZERO,
            ..config()
        };
        assert!(!always.is_noop());
        let mut rng = fastrand::Rng::with_seed(6);
        for _ in 0..10_000 {
            let random = rng.u64(..);
            assert_eq!(never.decide(random), FaultAction::default());
            assert_eq!(
                always.decide(random),
                FaultAction {
                    delay: Some(Duration::from_millis(100)),
                    abort: Some(503)
                }
            );
        }
        assert!(FaultConfig::default().is_noop());
    }

    #[test]
    fn decisions_are_reproducible_from_the_random_input() {
        let mut rng = fastrand::Rng::with_seed(8);
        for _ in 0..1000 {
            let random = rng.u64(..);
            assert_eq!(config().decide(random), config().decide(random));
        }
    }

    #[test]
    fn jitter_spreads_the_delay() {
        let always = FaultConfig {
            delay_percent: BasisPoints::ALL,
            ..config()
        };
        let mut rng = fastrand::Rng::with_seed(9);
        let delays: Vec<Duration> = (0..1000)
            .filter_map(|_| always.decide(rng.u64(..)).delay)
            .collect();
        assert_eq!(delays.len(), 1000);
        let above_mid = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(125))
            .count();
        assert!((400..600).contains(&above_mid), "{above_mid}");
    }

    #[test]
    fn invalid_abort_statuses_become_503() {
        for status in [0, 99, 100, 199, 600, u16::MAX] {
            let config = FaultConfig {
                abort_status: status,
                abort_percent: BasisPoints::ALL,
                ..config()
            };
            assert_eq!(config.decide(0).abort, Some(503), "{status}");
        }
        let teapot = FaultConfig {
            abort_status: 418,
            abort_percent: BasisPoints::ALL,
            ..config()
        };
        assert_eq!(teapot.decide(0).abort, Some(418));
    }

    #[test]
    fn huge_delays_saturate() {
        let config = FaultConfig {
            delay: Duration::MAX,
            delay_jitter: Duration::MAX,
            delay_percent: BasisPoints::ALL,
            ..config()
        };
        assert_eq!(config.decide(7).delay, Some(Duration::from_nanos(u64::MAX)));
    }
}
