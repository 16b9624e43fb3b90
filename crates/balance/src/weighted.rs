//! Smooth weighted round robin, exactly as nginx's upstream module does it.
//!
//! Each pick, every eligible endpoint's current weight grows by its weight;
//! the endpoint with the largest current weight wins and has the round's
//! total weight subtracted. Over any window of `total` picks each endpoint is
//! chosen exactly `weight` times, and the picks are interleaved (5:1:1 gives
//! a a b a c a a, not a a a a a b c), which keeps bursts off heavy endpoints.

use parking_lot::Mutex;

use crate::Endpoint;

pub(crate) struct SmoothWeighted {
    /// nginx's `current_weight` per endpoint. Every pick reads and writes all
    /// of them, so one short-lived lock is simpler and no slower than
    /// per-endpoint atomics. Values stay within ±(sum of weights), far inside
    /// i64 for u32 weights.
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub(crate) fn new(endpoints: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; endpoints]),
        }
    }

    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut current = self.current.lock();
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (index, (endpoint, weight_now)) in endpoints.iter().zip(current.iter_mut()).enumerate()
        {
            // Ineligible endpoints sit this round out entirely (as nginx does
            // for down peers): they neither gain weight nor count in the total,
            // so the remaining ones keep their exact ratios.
            if !eligible(index) {
                continue;
            }
            let weight = i64::from(endpoint.effective_weight());
            *weight_now += weight;
            total += weight;
            // Strictly greater: on a tie the earliest endpoint wins, which is
            // what makes the sequence match nginx's.
            if best.is_none_or(|(_, best_weight)| *weight_now > best_weight) {
                best = Some((index, *weight_now));
            }
        }
        let (chosen, _) = best?;
        if let Some(weight_now) = current.get_mut(chosen) {
            *weight_now -= total;
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Balancer, Policy};

    #[test]
    fn nginx_sequence_for_5_1_1() {
        let balancer = Balancer::new(Policy::WeightedRoundRobin, endpoints(&[5, 1, 1]));
        let picks: Vec<_> = (0..14).filter_map(|_| pick_any(&balancer)).collect();
        // a a b a c a a, twice.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_3_to_1() {
        let balancer = Balancer::new(Policy::WeightedRoundRobin, endpoints(&[3, 1]));
        let counts = tally(&balancer, 40_000, &|_| true);
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio / 3.0 - 1.0).abs() <= 0.02, "{counts:?}");
        // Smooth WRR is exact over whole cycles.
        assert_eq!(counts, vec![30_000, 10_000]);
    }

    #[test]
    fn ineligible_endpoints_sit_out() {
        let balancer = Balancer::new(Policy::WeightedRoundRobin, endpoints(&[2, 5, 1]));
        let counts = tally(&balancer, 3000, &|i| i != 1);
        assert_eq!(counts, vec![2000, 0, 1000]);
    }

    #[test]
    fn returning_endpoint_rejoins() {
        let balancer = Balancer::new(Policy::WeightedRoundRobin, endpoints(&[1, 1]));
        let _ = tally(&balancer, 10, &|i| i == 0);
        let counts = tally(&balancer, 100, &|_| true);
        assert_eq!(counts, vec![50, 50]);
    }

    #[test]
    fn none_when_none_eligible() {
        let balancer = Balancer::new(Policy::WeightedRoundRobin, endpoints(&[1, 2]));
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }
}
