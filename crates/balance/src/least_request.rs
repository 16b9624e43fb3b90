//! Least request: the eligible endpoint with the fewest requests in flight
//! relative to its weight, i.e. the minimum of `(in_flight + 1) / weight`.
//!
//! The `+ 1` counts the request being placed, so a weight-2 endpoint with one
//! request in flight (cost 1) ties with an idle weight-1 endpoint (cost 1):
//! the heavier endpoint is expected to carry proportionally more concurrent
//! requests. A full scan is fine for the endpoint counts an upstream has; for
//! very large sets P2C is the cheaper choice.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Endpoint;

pub(crate) struct LeastRequest {
    /// Where the next scan starts. Rotating it means that among equally
    /// loaded endpoints a different one is first each time, so ties (the
    /// common case on an idle upstream) spread evenly instead of all going to
    /// the lowest index.
    start: AtomicUsize,
}

impl LeastRequest {
    pub(crate) fn new() -> Self {
        Self {
            start: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, Load)> = None;
        for index in (start..n).chain(0..start) {
            let Some(endpoint) = endpoints.get(index) else {
                continue;
            };
            if !eligible(index) {
                continue;
            }
            let load = Load::of(endpoint);
            // Strictly less: the first of equally loaded endpoints in rotation
            // order wins.
            if best.is_none_or(|(_, best_load)| load.cmp(&best_load) == CmpOrdering::Less) {
                best = Some((index, load));
            }
        }
        best.map(|(index, _)| index)
    }
}

/// `(in_flight + 1) / weight`, kept as a fraction so comparisons are exact.
#[derive(Clone, Copy)]
struct Load {
    demand: u64,
    weight: u64,
}

impl Load {
    fn of(endpoint: &Endpoint) -> Self {
        Self {
            demand: endpoint.stats.in_flight().saturating_add(1),
            weight: u64::from(endpoint.effective_weight()),
        }
    }

    /// Cross-multiplied in u128: a/b < c/d  <=>  a*d < c*b, with no overflow
    /// for u64 numerators and u32 weights.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        let left = u128::from(self.demand) * u128::from(other.weight);
        let right = u128::from(other.demand) * u128::from(self.weight);
        left.cmp(&right)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Balancer, Policy};

    /// Picks `count` times, starting a request on each pick (never ending it),
    /// and returns the picks.
    fn pick_and_begin(balancer: &Balancer, count: usize) -> Vec<usize> {
        (0..count)
            .filter_map(|_| {
                let index = pick_any(balancer)?;
                balancer.endpoint(index)?.stats.begin();
                Some(index)
            })
            .collect()
    }

    fn begin_n(balancer: &Balancer, index: usize, times: usize) {
        if let Some(endpoint) = balancer.endpoint(index) {
            for _ in 0..times {
                endpoint.stats.begin();
            }
        }
    }

    fn in_flight(balancer: &Balancer) -> Vec<u64> {
        (0..balancer.len())
            .filter_map(|i| balancer.endpoint(i).map(|e| e.stats.in_flight()))
            .collect()
    }

    #[test]
    fn avoids_busy_endpoint_until_others_catch_up() {
        let balancer = Balancer::new(Policy::LeastRequest, endpoints(&[1, 1, 1, 1]));
        begin_n(&balancer, 0, 10);
        // The other three need 10 each to catch up; until then 0 is never picked.
        let picks = pick_and_begin(&balancer, 30);
        assert_eq!(picks.len(), 30);
        assert!(picks.iter().all(|&i| i != 0), "{picks:?}");
        assert_eq!(in_flight(&balancer), vec![10, 10, 10, 10]);
        // From here on everyone is equal and load stays level.
        let picks = pick_and_begin(&balancer, 40);
        assert_eq!(picks.len(), 40);
        assert_eq!(in_flight(&balancer), vec![20, 20, 20, 20]);
    }

    #[test]
    fn weighted_3_to_1() {
        let balancer = Balancer::new(Policy::LeastRequest, endpoints(&[3, 1]));
        let picks = pick_and_begin(&balancer, 400);
        assert_eq!(picks.len(), 400);
        let load = in_flight(&balancer);
        assert!(load[0].abs_diff(300) <= 1, "{load:?}");
        assert!(load[1].abs_diff(100) <= 1, "{load:?}");
    }

    #[test]
    fn weighted_busy_endpoint_avoided_until_others_catch_up() {
        let balancer = Balancer::new(Policy::LeastRequest, endpoints(&[2, 1, 1]));
        // Endpoint 0 costs (9 + 1) / 2 = 5; the others cost 5 only once they
        // have 4 in flight each.
        begin_n(&balancer, 0, 9);
        let picks = pick_and_begin(&balancer, 8);
        assert!(picks.iter().all(|&i| i != 0), "{picks:?}");
        assert_eq!(in_flight(&balancer), vec![9, 4, 4]);
        // Now all cost 5; from here endpoint 0 takes two requests for every
        // one the others take.
        let _ = pick_and_begin(&balancer, 400);
        let load = in_flight(&balancer);
        assert!(load[0].abs_diff(209) <= 2, "{load:?}");
        assert!(
            load[1].abs_diff(104) <= 2 && load[2].abs_diff(104) <= 2,
            "{load:?}"
        );
    }

    #[test]
    fn ties_spread_evenly() {
        let balancer = Balancer::new(Policy::LeastRequest, endpoints(&[1, 1, 1]));
        let counts = tally(&balancer, 300, &|_| true);
        assert_eq!(counts, vec![100, 100, 100]);
    }

    #[test]
    fn skips_ineligible() {
        let balancer = Balancer::new(Policy::LeastRequest, endpoints(&[1, 1, 1]));
        begin_n(&balancer, 2, 5);
        // 0 and 1 are idle but ineligible; the busy 2 is the only choice.
        for _ in 0..10 {
            assert_eq!(pick_with(&balancer, None, &|i| i == 2), Some(2));
        }
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }
}
