//! Power of two choices (P2C) with peak-EWMA cost, as in Finagle and linkerd.
//!
//! Two distinct eligible endpoints are drawn uniformly at random and the
//! cheaper one wins, where cost = `peak_ewma * (in_flight + 1) / weight`.
//! Comparing just two random candidates gets most of the benefit of a full
//! least-cost scan while avoiding its herd behaviour: every proxy thread
//! scanning the same stats would pile onto the same "best" endpoint.

use crate::Endpoint;

/// Uniform draws of a candidate pair before falling back to an exact scan;
/// with most endpoints eligible the first draw almost always succeeds.
const DRAW_ATTEMPTS: usize = 4;

pub(crate) fn pick(
    endpoints: &[Endpoint],
    now_nanos: u64,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let (first, second) = match candidates(endpoints.len(), eligible)? {
        Candidates::One(only) => return Some(only),
        Candidates::Two(first, second) => (first, second),
    };
    let (Some(a), Some(b)) = (endpoints.get(first), endpoints.get(second)) else {
        return None;
    };
    // The pair is in random order, so keeping `first` on a tie is itself a
    // fair coin flip.
    if cost_less(b, a, now_nanos) {
        Some(second)
    } else {
        Some(first)
    }
}

enum Candidates {
    One(usize),
    Two(usize, usize),
}

/// Two distinct eligible indices, uniformly chosen among all eligible pairs.
fn candidates(n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<Candidates> {
    match n {
        0 => return None,
        1 => return eligible(0).then_some(Candidates::One(0)),
        _ => {}
    }
    // Rejection sampling: a uniformly drawn distinct pair that happens to be
    // all-eligible is uniform over the eligible pairs.
    for _ in 0..DRAW_ATTEMPTS {
        let first = fastrand::usize(0..n);
        // Draw from the n - 1 other indices by skipping over `first`.
        let mut second = fastrand::usize(0..n - 1);
        if second >= first {
            second += 1;
        }
        if eligible(first) && eligible(second) {
            return Some(Candidates::Two(first, second));
        }
    }
    // Many endpoints are down: one pass of reservoir sampling (k = 2), which
    // is also uniform, so mixing it with the draws above keeps the overall
    // choice uniform.
    let mut seen = 0usize;
    let mut chosen: [Option<usize>; 2] = [None, None];
    for index in 0..n {
        if !eligible(index) {
            continue;
        }
        seen += 1;
        if seen <= 2 {
            chosen[seen - 1] = Some(index);
        } else {
            let slot = fastrand::usize(0..seen);
            if let Some(entry) = chosen.get_mut(slot) {
                *entry = Some(index);
            }
        }
    }
    match chosen {
        [Some(a), Some(b)] => {
            // The reservoir keeps index order; shuffle so ties stay fair.
            Some(if fastrand::bool() {
                Candidates::Two(a, b)
            } else {
                Candidates::Two(b, a)
            })
        }
        [Some(only), None] => Some(Candidates::One(only)),
        _ => None,
    }
}

/// Whether `a` is strictly cheaper than `b`.
fn cost_less(a: &Endpoint, b: &Endpoint, now_nanos: u64) -> bool {
    let a_load = load(a);
    let b_load = load(b);
    match (
        a.stats.latency_estimate(now_nanos),
        b.stats.latency_estimate(now_nanos),
    ) {
        (Some(a_latency), Some(b_latency)) => a_latency * a_load < b_latency * b_load,
        // Without a latency sample for both there is no common unit to compare
        // in (nanoseconds × load vs plain load), so rank by load alone. An
        // unsampled endpoint thus competes fairly and soon gets the traffic
        // that gives it a sample.
        _ => a_load < b_load,
    }
}

/// `(in_flight + 1) / weight`.
fn load(endpoint: &Endpoint) -> f64 {
    (endpoint.stats.in_flight() as f64 + 1.0) / f64::from(endpoint.effective_weight())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::testing::*;
    use crate::{Balancer, Policy};

    const SEC: u64 = 1_000_000_000;

    fn record(balancer: &Balancer, index: usize, latency: Duration) {
        if let Some(endpoint) = balancer.endpoint(index) {
            endpoint.stats.begin();
            endpoint.stats.end(latency, SEC);
        }
    }

    #[test]
    fn steers_away_from_slow_endpoint() {
        fastrand::seed(7);
        let n = 5;
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&vec![1; n]));
        record(&balancer, 0, Duration::from_millis(100));
        for i in 1..n {
            record(&balancer, i, Duration::from_millis(1));
        }
        let counts = tally(&balancer, 10_000, &|_| true);
        // Endpoint 0 loses every comparison it takes part in.
        assert!(counts[0] < 10_000 / n / 10, "{counts:?}");
        // The others share the traffic roughly evenly.
        for &count in &counts[1..] {
            assert!(count.abs_diff(2500) < 250, "{counts:?}");
        }
    }

    #[test]
    fn prefers_less_loaded_without_samples() {
        fastrand::seed(8);
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[1, 1]));
        if let Some(e) = balancer.endpoint(0) {
            e.stats.begin();
        }
        // With two endpoints both are always the candidates, so load decides.
        let counts = tally(&balancer, 100, &|_| true);
        assert_eq!(counts, vec![0, 100]);
    }

    #[test]
    fn load_multiplies_latency() {
        fastrand::seed(9);
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[1, 1]));
        record(&balancer, 0, Duration::from_millis(10));
        record(&balancer, 1, Duration::from_millis(30));
        // 10 ms × (4 + 1) = 50 > 30 ms × 1: the faster but busier endpoint loses.
        for _ in 0..4 {
            if let Some(e) = balancer.endpoint(0) {
                e.stats.begin();
            }
        }
        assert_eq!(pick_any(&balancer), Some(1));
    }

    #[test]
    fn weight_divides_cost() {
        fastrand::seed(10);
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[4, 1]));
        record(&balancer, 0, Duration::from_millis(20));
        record(&balancer, 1, Duration::from_millis(10));
        // 20 ms / 4 < 10 ms / 1.
        assert_eq!(pick_any(&balancer), Some(0));
    }

    #[test]
    fn ties_split_evenly() {
        fastrand::seed(11);
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[1, 1, 1]));
        let counts = tally(&balancer, 30_000, &|_| true);
        for &count in &counts {
            assert!(count.abs_diff(10_000) < 600, "{counts:?}");
        }
    }

    #[test]
    fn mostly_ineligible_uses_the_scan() {
        fastrand::seed(12);
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[1; 50]));
        let eligible = |i: usize| i == 7 || i == 31;
        let counts = tally(&balancer, 2000, &eligible);
        assert_eq!(counts[7] + counts[31], 2000);
        assert!(counts[7] > 800 && counts[31] > 800, "{counts:?}");
        // A single eligible endpoint is returned as is.
        assert_eq!(pick_with(&balancer, None, &|i| i == 3), Some(3));
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }

    #[test]
    fn single_endpoint() {
        let balancer = Balancer::new(Policy::PowerOfTwoChoices, endpoints(&[1]));
        assert_eq!(pick_any(&balancer), Some(0));
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }
}
