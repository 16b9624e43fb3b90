//! Endpoint sets and load-balancing policies for gatehouse.
//!
//! The crate is pure: it performs no I/O and never reads the clock; callers
//! pass time in as `now_nanos` (monotonic nanoseconds from any origin) and
//! tell each pick which endpoints are eligible (healthy, not ejected).
//!
//! Parts:
//! - [`Balancer`] (this file): built once per config snapshot from a
//!   [`Policy`] and the [`Endpoint`]s; [`Balancer::pick`] dispatches
//!   statically to one of the policies below.
//! - [`EndpointStats`] (`stats`): lock-free in-flight counter plus a
//!   peak-EWMA latency estimate, shared with the proxy through an `Arc` so it
//!   survives reloads.
//! - [`hash_key`] (`hash`): stable FNV-1a + fmix64 hash for affinity keys and
//!   endpoint identities.
//! - `round_robin`: plain rotation over eligible endpoints.
//! - `weighted`: nginx's smooth weighted round robin.
//! - `least_request`: fewest requests in flight per unit of weight.
//! - `p2c`: power of two random choices ranked by peak-EWMA latency × load.
//! - `ring_hash`: ketama-style consistent hash ring.
//! - `maglev`: Google Maglev lookup table.
//! - `random`: weighted random, also the hash policies' choice for requests
//!   without an affinity key.
//! - `eligibility`: memoised eligibility checks for the hash policies' slow
//!   paths.
//!
//! Endpoint state machines that decide eligibility and weight (DESIGN.md puts
//! health and outlier state here, beside the balancer that consumes it; the
//! I/O that feeds them lives in the proxy and the health checker):
//! - [`OutlierDetector`] (`outlier`): passive outlier detection per cluster:
//!   consecutive 5xx / gateway failures and latency outliers eject endpoints
//!   for a growing time, within a cap on the share of the cluster ejected.
//! - [`HealthState`] (`health`): active health-check state per endpoint:
//!   rise/fall hysteresis, slow-start weight ramp, jittered check schedule.
//!
//! Building blocks, public because gatehouse-resilience uses them too:
//! - [`SlidingWindow`] (`window`): a ring of time slices, the O(1) way to
//!   count "the last N seconds" without timers.
//! - [`LatencyWindow`] (`latency`): log-scale latency histogram over a
//!   sliding window, answering p99 queries.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod eligibility;
mod hash;
pub mod health;
mod latency;
mod least_request;
mod maglev;
pub mod outlier;
mod p2c;
mod random;
mod ring_hash;
mod round_robin;
mod stats;
mod time;
mod weighted;
mod window;

use std::sync::Arc;

pub use hash::hash_key;
pub use health::{Health, HealthConfig, HealthState};
pub use latency::LatencyWindow;
pub use outlier::{LatencyOutlierConfig, OutlierConfig, OutlierDetector};
pub use stats::EndpointStats;
pub use window::SlidingWindow;

use least_request::LeastRequest;
use maglev::Maglev;
use random::WeightedRandom;
use ring_hash::Ring;
use round_robin::RoundRobin;
use weighted::SmoothWeighted;

/// One upstream endpoint as the balancer sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Stable identity hash, computed by the caller from the endpoint's
    /// address (e.g. `hash_key(b"10.0.0.1:80")`). Ring points and Maglev
    /// permutations derive from it rather than from the endpoint's position
    /// in the list, so removing one endpoint only moves its own keys.
    pub key: u64,
    /// Relative weight; 0 is treated as 1.
    pub weight: u32,
    /// Live counters shared with the proxy.
    pub stats: Arc<EndpointStats>,
}

impl Endpoint {
    /// Weight with the "0 means 1" rule applied; every policy goes through
    /// this so a zero weight can never divide by zero or starve an endpoint.
    pub(crate) fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// Load-balancing policy of an endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Each eligible endpoint in turn.
    RoundRobin,
    /// Smooth weighted round robin exactly as nginx: each round every eligible
    /// endpoint's current weight grows by its weight, the largest is picked
    /// and the round's total is subtracted from it.
    WeightedRoundRobin,
    /// Fewest requests in flight relative to weight, i.e. the minimum of
    /// `(in_flight + 1) / weight`; ties are broken by a rotating start so they
    /// spread evenly.
    LeastRequest,
    /// Two distinct random eligible endpoints; the one with the lower
    /// `peak_ewma * (in_flight + 1) / weight` wins (by in-flight per weight
    /// alone while either lacks a latency sample).
    PowerOfTwoChoices,
    /// Consistent hash ring (ketama-like). Endpoint `i` gets
    /// `round(vnodes * weight_i * n / total_weight)` points, at least 1.
    /// The total is capped at about 8 million points to bound memory.
    RingHash {
        /// Points per endpoint at average weight; 100–200 gives an even spread.
        vnodes: u32,
    },
    /// Google Maglev lookup table, weighted. A non-prime size is rounded up
    /// to the next prime; the size is also raised to at least the number of
    /// endpoints and capped at 2^24 entries.
    Maglev {
        /// Table entries; should be prime and much larger than the number of
        /// endpoints (65537 is typical).
        table_size: u32,
    },
    /// Weighted random.
    Random,
}

/// What a pick needs to know about one request.
pub struct PickRequest<'a> {
    /// Hash of the request's affinity key (see `hash_key`); None when the key
    /// is absent (hash policies then pick at random among eligible).
    pub hash: Option<u64>,
    /// Current monotonic time in nanoseconds (same origin as passed to
    /// [`EndpointStats::end`]).
    pub now_nanos: u64,
    /// Whether endpoint i may be picked (healthy, not ejected). Policies must
    /// never return an ineligible index. It must not call back into the same
    /// balancer: weighted round robin calls it while holding its lock.
    pub eligible: &'a dyn Fn(usize) -> bool,
}

impl Policy {
    /// Whether picks weigh endpoint latency: only then do requests need to feed
    /// [`EndpointStats::end`] a latency sample (the others take
    /// [`EndpointStats::end_untimed`]) and picks need the time.
    pub fn weighs_latency(&self) -> bool {
        matches!(self, Policy::PowerOfTwoChoices)
    }
}

/// A policy bound to one endpoint set; built once per config snapshot.
pub struct Balancer {
    policy: Policy,
    endpoints: Vec<Endpoint>,
    strategy: Strategy,
}

/// Per-policy state. An enum rather than a trait object so picks dispatch
/// statically and each policy's precomputed tables live inline.
enum Strategy {
    RoundRobin(RoundRobin),
    Weighted(SmoothWeighted),
    LeastRequest(LeastRequest),
    PowerOfTwo,
    RingHash {
        ring: Ring,
        /// For requests without an affinity key.
        fallback: WeightedRandom,
    },
    Maglev {
        table: Maglev,
        /// For requests without an affinity key.
        fallback: WeightedRandom,
    },
    Random(WeightedRandom),
}

impl Balancer {
    /// Builds the policy's state (ring, Maglev table, weight tables) once.
    pub fn new(policy: Policy, endpoints: Vec<Endpoint>) -> Balancer {
        let strategy = match &policy {
            Policy::RoundRobin => Strategy::RoundRobin(RoundRobin::new()),
            Policy::WeightedRoundRobin => Strategy::Weighted(SmoothWeighted::new(endpoints.len())),
            Policy::LeastRequest => Strategy::LeastRequest(LeastRequest::new()),
            Policy::PowerOfTwoChoices => Strategy::PowerOfTwo,
            Policy::RingHash { vnodes } => Strategy::RingHash {
                ring: Ring::new(&endpoints, *vnodes),
                fallback: WeightedRandom::new(&endpoints),
            },
            Policy::Maglev { table_size } => Strategy::Maglev {
                table: Maglev::new(&endpoints, *table_size),
                fallback: WeightedRandom::new(&endpoints),
            },
            Policy::Random => Strategy::Random(WeightedRandom::new(&endpoints)),
        };
        Balancer {
            policy,
            endpoints,
            strategy,
        }
    }

    /// The policy this balancer was built with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of endpoints (eligible or not).
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when there are no endpoints at all.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoint at `index`, as passed to [`Balancer::new`].
    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.endpoints.get(index)
    }

    /// Picks an eligible endpoint index, or None when no endpoint is eligible
    /// (or there are none).
    pub fn pick(&self, req: &PickRequest<'_>) -> Option<usize> {
        let endpoints = &self.endpoints;
        if endpoints.is_empty() {
            return None;
        }
        let eligible = req.eligible;
        match &self.strategy {
            Strategy::RoundRobin(rr) => rr.pick(endpoints.len(), eligible),
            Strategy::Weighted(wrr) => wrr.pick(endpoints, eligible),
            Strategy::LeastRequest(lr) => lr.pick(endpoints, eligible),
            Strategy::PowerOfTwo => p2c::pick(endpoints, req.now_nanos, eligible),
            Strategy::RingHash { ring, fallback } => match req.hash {
                Some(hash) => ring.pick(hash, endpoints.len(), eligible),
                None => fallback.pick(endpoints, eligible),
            },
            Strategy::Maglev { table, fallback } => match req.hash {
                Some(hash) => table.pick(hash, endpoints.len(), eligible),
                None => fallback.pick(endpoints, eligible),
            },
            Strategy::Random(random) => random.pick(endpoints, eligible),
        }
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("policy", &self.policy)
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// Helpers shared by the policy modules' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Endpoints with the given weights and keys derived from made-up
    /// addresses `10.0.0.{i}:80`.
    pub(crate) fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| endpoint(&format!("10.0.0.{i}:80"), weight))
            .collect()
    }

    pub(crate) fn endpoint(address: &str, weight: u32) -> Endpoint {
        Endpoint {
            key: hash_key(address.as_bytes()),
            weight,
            stats: Arc::new(EndpointStats::new()),
        }
    }

    /// Picks with the given affinity hash and eligibility at time 0.
    pub(crate) fn pick_with(
        balancer: &Balancer,
        hash: Option<u64>,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        balancer.pick(&PickRequest {
            hash,
            now_nanos: 0,
            eligible,
        })
    }

    /// Picks with every endpoint eligible.
    pub(crate) fn pick_any(balancer: &Balancer) -> Option<usize> {
        pick_with(balancer, None, &|_| true)
    }

    /// Counts how often each endpoint is picked over `picks` picks.
    pub(crate) fn tally(
        balancer: &Balancer,
        picks: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        let mut counts = vec![0; balancer.len()];
        for _ in 0..picks {
            if let Some(i) = pick_with(balancer, None, eligible) {
                counts[i] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    const ALL_POLICIES: [Policy; 7] = [
        Policy::RoundRobin,
        Policy::WeightedRoundRobin,
        Policy::LeastRequest,
        Policy::PowerOfTwoChoices,
        Policy::RingHash { vnodes: 160 },
        Policy::Maglev { table_size: 65537 },
        Policy::Random,
    ];

    #[test]
    fn balancer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Balancer>();
        assert_send_sync::<Endpoint>();
    }

    #[test]
    fn accessors() {
        let balancer = Balancer::new(Policy::Random, endpoints(&[1, 2]));
        assert_eq!(balancer.policy(), &Policy::Random);
        assert_eq!(balancer.len(), 2);
        assert!(!balancer.is_empty());
        assert_eq!(balancer.endpoint(1).map(|e| e.weight), Some(2));
        assert!(balancer.endpoint(2).is_none());
    }

    #[test]
    fn empty_balancer_picks_nothing() {
        for policy in ALL_POLICIES {
            let balancer = Balancer::new(policy.clone(), Vec::new());
            assert!(balancer.is_empty());
            assert_eq!(pick_any(&balancer), None, "{policy:?}");
            assert_eq!(
                pick_with(&balancer, Some(42), &|_| true),
                None,
                "{policy:?}"
            );
        }
    }

    #[test]
    fn nothing_eligible_picks_nothing() {
        for policy in ALL_POLICIES {
            let balancer = Balancer::new(policy.clone(), endpoints(&[1, 2, 3]));
            assert_eq!(pick_with(&balancer, None, &|_| false), None, "{policy:?}");
            assert_eq!(
                pick_with(&balancer, Some(7), &|_| false),
                None,
                "{policy:?}"
            );
        }
    }

    #[test]
    fn every_policy_respects_eligibility() {
        fastrand::seed(1);
        for policy in ALL_POLICIES {
            let balancer = Balancer::new(policy.clone(), endpoints(&[1, 3, 1, 2, 1]));
            let eligible = |i: usize| i == 1 || i == 4;
            for n in 0..500u64 {
                let hash = (n % 2 == 0).then(|| hash_key(&n.to_le_bytes()));
                let picked = pick_with(&balancer, hash, &eligible);
                assert!(
                    matches!(picked, Some(1 | 4)),
                    "{policy:?} picked {picked:?}"
                );
            }
        }
    }

    #[test]
    fn zero_weight_is_treated_as_one() {
        fastrand::seed(2);
        for policy in ALL_POLICIES {
            let balancer = Balancer::new(policy.clone(), endpoints(&[0, 0]));
            let counts = tally(&balancer, 1000, &|_| true);
            assert!(counts.iter().all(|&c| c > 0), "{policy:?}: {counts:?}");
        }
    }
}
