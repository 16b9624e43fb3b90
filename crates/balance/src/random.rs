//! Weighted random: each eligible endpoint is chosen with probability
//! weight / (total eligible weight). Also what the hash policies fall back to
//! for requests that carry no affinity key.

use crate::Endpoint;

/// Weighted draws over all endpoints before falling back to an exact pass
/// over the eligible ones.
const DRAW_ATTEMPTS: usize = 3;

pub(crate) struct WeightedRandom {
    /// `cumulative[i]` = sum of the effective weights of endpoints `0..=i`,
    /// so a draw maps to an endpoint by binary search in O(log n).
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    pub(crate) fn new(endpoints: &[Endpoint]) -> Self {
        let cumulative = endpoints
            .iter()
            .scan(0u64, |sum, endpoint| {
                // u32 weights: the sum cannot overflow u64 for any real list.
                *sum = sum.saturating_add(u64::from(endpoint.effective_weight()));
                Some(*sum)
            })
            .collect();
        Self { cumulative }
    }

    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let total = self.cumulative.last().copied()?;
        // Rejection sampling: a weighted draw over all endpoints, accepted only
        // if eligible, is exactly a weighted draw over the eligible ones. In
        // the usual case (all healthy) it costs one draw, one binary search and
        // one eligibility check.
        for _ in 0..DRAW_ATTEMPTS {
            let ticket = fastrand::u64(0..total);
            let index = self.cumulative.partition_point(|&upto| upto <= ticket);
            if index < endpoints.len() && eligible(index) {
                return Some(index);
            }
        }
        // Many endpoints are down: one pass of weighted reservoir sampling,
        // also exact, so the mixture of the two paths stays exact.
        let mut seen_weight = 0u64;
        let mut chosen = None;
        for (index, endpoint) in endpoints.iter().enumerate() {
            if !eligible(index) {
                continue;
            }
            let weight = u64::from(endpoint.effective_weight());
            seen_weight = seen_weight.saturating_add(weight);
            // Replace the current choice with probability weight / seen_weight.
            if fastrand::u64(0..seen_weight) < weight {
                chosen = Some(index);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Balancer, Policy};

    #[test]
    fn weights_3_to_1() {
        fastrand::seed(21);
        let balancer = Balancer::new(Policy::Random, endpoints(&[3, 1]));
        let counts = tally(&balancer, 200_000, &|_| true);
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio / 3.0 - 1.0).abs() <= 0.02, "{counts:?}");
    }

    #[test]
    fn weights_hold_among_eligible() {
        fastrand::seed(22);
        // Endpoint 1 (the heaviest) is down: 0 and 2 split 1:2 between them.
        let balancer = Balancer::new(Policy::Random, endpoints(&[1, 10, 2]));
        let counts = tally(&balancer, 60_000, &|i| i != 1);
        assert_eq!(counts[1], 0);
        let ratio = counts[2] as f64 / counts[0] as f64;
        assert!((ratio / 2.0 - 1.0).abs() <= 0.05, "{counts:?}");
    }

    #[test]
    fn scan_path_is_weighted_too() {
        fastrand::seed(23);
        // 98 of 100 endpoints down forces the reservoir pass almost always.
        let mut weights = vec![1; 100];
        weights[10] = 3;
        let balancer = Balancer::new(Policy::Random, endpoints(&weights));
        let counts = tally(&balancer, 40_000, &|i| i == 10 || i == 90);
        assert_eq!(counts[10] + counts[90], 40_000);
        let ratio = counts[10] as f64 / counts[90] as f64;
        assert!((ratio / 3.0 - 1.0).abs() <= 0.05, "{counts:?}");
    }

    #[test]
    fn none_when_none_eligible() {
        let balancer = Balancer::new(Policy::Random, endpoints(&[1, 1]));
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }
}
