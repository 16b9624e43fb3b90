//! Round robin: each eligible endpoint in turn, ignoring weights.
//!
//! One shared atomic cursor; the common case (cursor lands on an eligible
//! endpoint) costs a single `fetch_add`, so many threads can pick at once
//! without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct RoundRobin {
    /// Ticket counter; the next pick starts at `next % n`. It wraps after
    /// 2^64 picks, which merely skews the rotation once.
    next: AtomicUsize,
}

impl RoundRobin {
    pub(crate) fn new() -> Self {
        // Start at a random offset so proxy instances (and balancers rebuilt
        // on every config reload) do not all hit the first endpoint first.
        Self {
            next: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub(crate) fn pick(&self, n: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let start = ticket % n;
        for offset in 0..n {
            // start < n and offset < n, so this cannot overflow.
            let index = (start + offset) % n;
            if !eligible(index) {
                continue;
            }
            if offset > 0 {
                // We skipped ineligible endpoints. Move the cursor past the one
                // we chose; otherwise the next pick would land on the skipped
                // ones again and also pick `index`, giving the endpoint after a
                // down one double traffic. Best effort: if another thread moved
                // the cursor meanwhile, its position is as good as ours.
                let _ = self.next.compare_exchange(
                    ticket.wrapping_add(1),
                    ticket.wrapping_add(1 + offset),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            return Some(index);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::{Balancer, Policy};

    fn balancer(n: usize) -> Balancer {
        Balancer::new(Policy::RoundRobin, endpoints(&vec![1; n]))
    }

    #[test]
    fn cycles_through_all() {
        let balancer = balancer(4);
        let first: Vec<_> = (0..4).map(|_| pick_any(&balancer)).collect();
        let mut sorted: Vec<_> = first.iter().flatten().copied().collect();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        // Consecutive picks go to consecutive endpoints, and the cycle repeats.
        for window in first.windows(2) {
            if let [Some(a), Some(b)] = window {
                assert_eq!((a + 1) % 4, *b);
            }
        }
        let second: Vec<_> = (0..4).map(|_| pick_any(&balancer)).collect();
        assert_eq!(first, second);
    }

    #[test]
    fn ignores_weights() {
        let balancer = Balancer::new(Policy::RoundRobin, endpoints(&[5, 1]));
        let counts = tally(&balancer, 100, &|_| true);
        assert_eq!(counts, vec![50, 50]);
    }

    #[test]
    fn skips_ineligible_and_stays_even() {
        let balancer = balancer(5);
        let eligible = |i: usize| i != 1 && i != 2;
        let counts = tally(&balancer, 300, &eligible);
        assert_eq!(counts, vec![100, 0, 0, 100, 100]);
    }

    #[test]
    fn none_when_none_eligible() {
        let balancer = balancer(3);
        assert_eq!(pick_with(&balancer, None, &|_| false), None);
    }

    #[test]
    fn empty_returns_none() {
        assert_eq!(pick_any(&balancer(0)), None);
    }

    #[test]
    fn single_endpoint() {
        let balancer = balancer(1);
        for _ in 0..3 {
            assert_eq!(pick_any(&balancer), Some(0));
        }
    }

    #[test]
    fn concurrent_picks_spread_evenly() {
        let balancer = balancer(4);
        let counts: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| tally(&balancer, 1000, &|_| true)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut total = vec![0; 4];
        for per_thread in counts {
            for (t, c) in total.iter_mut().zip(per_thread) {
                *t += c;
            }
        }
        // Every ticket maps to exactly one endpoint, so the totals are exact.
        assert_eq!(total, vec![1000; 4]);
    }
}
