//! Consistent hash ring, ketama-style.
//!
//! Every endpoint owns many points on a 64-bit ring, derived from its
//! identity key; a request goes to the owner of the first point at or after
//! its hash (wrapping). Removing an endpoint deletes only its points, so only
//! the keys it owned move, each to the next point's owner. Many points per
//! endpoint ("virtual nodes") make the arcs, and hence the load, even.

use crate::Endpoint;
use crate::eligibility::Verdicts;
use crate::hash::mix2;

/// Upper bound on ring points (as Envoy's default maximum ring size):
/// about 128 MiB at 16 bytes a point, and build time stays bounded whatever
/// the configured vnodes.
const MAX_POINTS: u64 = 8 * 1024 * 1024;

pub(crate) struct Ring {
    /// (point hash, endpoint index), sorted by hash.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub(crate) fn new(endpoints: &[Endpoint], vnodes: u32) -> Self {
        let n = endpoints.len() as u64;
        if n == 0 {
            return Self { points: Vec::new() };
        }
        let total_weight: u64 = endpoints
            .iter()
            .map(|e| u64::from(e.effective_weight()))
            .sum();
        let vnodes = effective_vnodes(vnodes, n);
        let mut points: Vec<(u64, u64, usize)> = Vec::new();
        for (index, endpoint) in endpoints.iter().enumerate() {
            let count = point_count(vnodes, endpoint.effective_weight(), n, total_weight);
            points.extend(
                (0..count).map(|replica| (mix2(endpoint.key, replica), endpoint.key, index)),
            );
        }
        // Ties on the point hash (vanishingly rare) are broken by endpoint key,
        // not index, so the ring does not depend on the endpoints' order.
        points.sort_unstable();
        Self {
            points: points
                .into_iter()
                .map(|(hash, _, index)| (hash, index))
                .collect(),
        }
    }

    pub(crate) fn pick(
        &self,
        hash: u64,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let start = if start == len { 0 } else { start };
        let (_, first) = *self.points.get(start)?;
        if eligible(first) {
            return Some(first);
        }
        // Walk clockwise to the next eligible owner. Each endpoint owns at
        // least one point, so one lap visits them all; the verdict cache asks
        // about each endpoint once and stops early when all are out.
        let mut verdicts = Verdicts::new(n, eligible);
        verdicts.mark_ineligible(first);
        for step in 1..len {
            if verdicts.exhausted() {
                return None;
            }
            let (_, index) = *self.points.get((start + step) % len)?;
            if verdicts.check(index) {
                return Some(index);
            }
        }
        None
    }
}

/// Configured vnodes, at least 1 and low enough that the ring stays within
/// `MAX_POINTS` (weights only redistribute the `vnodes * n` points).
fn effective_vnodes(vnodes: u32, n: u64) -> u64 {
    u64::from(vnodes).clamp(1, (MAX_POINTS / n.max(1)).max(1))
}

/// `round(vnodes * weight * n / total_weight)`, at least 1: the endpoint's
/// share of the `vnodes * n` points. Integer arithmetic in u128 so large
/// weights neither overflow nor lose precision.
fn point_count(vnodes: u64, weight: u32, n: u64, total_weight: u64) -> u64 {
    let total_weight = u128::from(total_weight.max(1));
    let numerator = u128::from(vnodes) * u128::from(weight) * u128::from(n);
    let rounded = (2 * numerator + total_weight) / (2 * total_weight);
    u64::try_from(rounded)
        .unwrap_or(MAX_POINTS)
        .clamp(1, MAX_POINTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::{Balancer, Policy, hash_key};

    const KEYS: usize = 20_000;

    fn ring(endpoints: Vec<Endpoint>) -> Balancer {
        Balancer::new(Policy::RingHash { vnodes: 160 }, endpoints)
    }

    fn key_hashes() -> Vec<u64> {
        (0..KEYS)
            .map(|k| hash_key(format!("session-{k}").as_bytes()))
            .collect()
    }

    /// Endpoint key each request hash maps to.
    fn owners(
        balancer: &Balancer,
        hashes: &[u64],
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<Option<u64>> {
        hashes
            .iter()
            .map(|&h| {
                pick_with(balancer, Some(h), eligible)
                    .and_then(|i| balancer.endpoint(i))
                    .map(|e| e.key)
            })
            .collect()
    }

    #[test]
    fn point_counts_follow_weight_share() {
        assert_eq!(point_count(160, 1, 5, 5), 160);
        assert_eq!(point_count(160, 3, 2, 4), 240);
        assert_eq!(point_count(160, 1, 2, 4), 80);
        // A tiny weight still gets a point.
        assert_eq!(point_count(10, 1, 2, 1_000_001), 1);
    }

    #[test]
    fn same_hash_same_endpoint() {
        let balancer = ring(endpoints(&[1; 5]));
        let rebuilt = ring(endpoints(&[1; 5]));
        for hash in key_hashes().into_iter().take(1000) {
            let first = pick_with(&balancer, Some(hash), &|_| true);
            assert!(first.is_some());
            assert_eq!(pick_with(&balancer, Some(hash), &|_| true), first);
            assert_eq!(pick_with(&rebuilt, Some(hash), &|_| true), first);
        }
    }

    #[test]
    fn independent_of_endpoint_order() {
        let forward = endpoints(&[1, 2, 3]);
        let mut reversed = forward.clone();
        reversed.reverse();
        let a = ring(forward);
        let b = ring(reversed);
        let hashes = key_hashes();
        assert_eq!(
            owners(&a, &hashes, &|_| true),
            owners(&b, &hashes, &|_| true)
        );
    }

    #[test]
    fn keys_spread_evenly() {
        let balancer = ring(endpoints(&[1; 5]));
        let mut counts = [0usize; 5];
        for hash in key_hashes() {
            if let Some(i) = pick_with(&balancer, Some(hash), &|_| true) {
                counts[i] += 1;
            }
        }
        let fair = KEYS as f64 / 5.0;
        for &count in &counts {
            assert!((count as f64 / fair - 1.0).abs() <= 0.30, "{counts:?}");
        }
    }

    #[test]
    fn weights_3_to_1() {
        let balancer = ring(endpoints(&[3, 1]));
        let mut counts = [0usize; 2];
        for hash in key_hashes() {
            if let Some(i) = pick_with(&balancer, Some(hash), &|_| true) {
                counts[i] += 1;
            }
        }
        let share = counts[0] as f64 / KEYS as f64;
        assert!((share / 0.75 - 1.0).abs() <= 0.10, "{counts:?}");
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = endpoints(&[1; 5]);
        let removed_key = all[2].key;
        let mut fewer = all.clone();
        fewer.remove(2);
        let hashes = key_hashes();
        let before = owners(&ring(all), &hashes, &|_| true);
        let after = owners(&ring(fewer), &hashes, &|_| true);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                moved += 1;
                assert_eq!(
                    *b,
                    Some(removed_key),
                    "a key not on the removed endpoint moved"
                );
            }
            assert_ne!(*a, Some(removed_key));
        }
        let share = moved as f64 / KEYS as f64;
        assert!(share <= 1.0 / 5.0 + 0.05, "{share}");
        assert!(moved > 0);
    }

    #[test]
    fn ineligible_endpoint_keys_go_elsewhere_others_stay() {
        let balancer = ring(endpoints(&[1; 5]));
        let hashes = key_hashes();
        let before = owners(&balancer, &hashes, &|_| true);
        let down = balancer.endpoint(3).map(|e| e.key);
        let after = owners(&balancer, &hashes, &|i| i != 3);
        for (b, a) in before.iter().zip(&after) {
            assert!(a.is_some());
            assert_ne!(*a, down);
            if *b != down {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn walks_past_several_ineligible() {
        let balancer = ring(endpoints(&[1; 5]));
        for hash in key_hashes().into_iter().take(2000) {
            assert_eq!(pick_with(&balancer, Some(hash), &|i| i == 4), Some(4));
            assert_eq!(pick_with(&balancer, Some(hash), &|_| false), None);
        }
    }

    #[test]
    fn no_hash_picks_randomly_among_eligible() {
        fastrand::seed(31);
        let balancer = ring(endpoints(&[1; 4]));
        let counts = tally(&balancer, 4000, &|i| i != 0);
        assert_eq!(counts[0], 0);
        assert!(counts[1..].iter().all(|&c| c > 1000), "{counts:?}");
    }

    #[test]
    fn vnodes_are_bounded() {
        assert_eq!(effective_vnodes(u32::MAX, 2), MAX_POINTS / 2);
        assert_eq!(effective_vnodes(160, 2), 160);
        let zero = Ring::new(&endpoints(&[1, 1]), 0);
        assert_eq!(zero.points.len(), 2);
    }
}
