//! Google's Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each endpoint derives a permutation of the table slots from its identity
//! key (an offset and a skip); endpoints take turns claiming their next free
//! preferred slot until the table is full. Lookup is one modulo and one array
//! read, the spread is nearly perfect, and removing an endpoint moves little
//! more than that endpoint's own keys. The table size must be prime so every
//! skip generates a full permutation.

use crate::Endpoint;
use crate::eligibility::Verdicts;
use crate::hash::{fmix64, mix2};

/// Largest table we build (before rounding up to a prime): 64 MiB of `u32`.
/// Bigger tables do not improve balance measurably and would only cost memory.
const MAX_TABLE_SIZE: u64 = 1 << 24;

/// Rehashes tried when the slot's endpoint is ineligible, before scanning.
/// Rehashing spreads a down endpoint's keys over the others by weight,
/// whereas the scan alone would dump them on whichever endpoint follows.
const REHASH_ATTEMPTS: u64 = 4;

/// Salts for deriving an endpoint's permutation from its key.
const OFFSET_SALT: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SALT: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

pub(crate) struct Maglev {
    /// Endpoint index per slot. `u32` halves the memory of `usize` indices;
    /// endpoints past `u32::MAX` (not a real configuration) are left out.
    table: Vec<u32>,
}

/// Build-time state of one endpoint's walk through its permutation.
struct Walker {
    index: u32,
    offset: u64,
    skip: u64,
    /// Position in the permutation to try next.
    next: u64,
    weight: u64,
    /// Turns are taken only while `iteration * weight >= target`; each turn
    /// adds the maximum weight, so an endpoint with half the maximum weight
    /// claims a slot every other iteration (Envoy's weighted Maglev).
    target: u64,
}

impl Maglev {
    pub(crate) fn new(endpoints: &[Endpoint], table_size: u32) -> Self {
        if endpoints.is_empty() {
            return Self { table: Vec::new() };
        }
        let n = endpoints.len() as u64;
        // At least one slot per endpoint; prime so every skip in 1..size is
        // coprime with it and each permutation visits every slot.
        let size = next_prime(u64::from(table_size).max(n).clamp(2, MAX_TABLE_SIZE));
        let mut walkers: Vec<(u64, Walker)> = endpoints
            .iter()
            .zip(0..u32::MAX)
            .map(|(endpoint, index)| {
                let walker = Walker {
                    index,
                    offset: mix2(endpoint.key, OFFSET_SALT) % size,
                    skip: mix2(endpoint.key, SKIP_SALT) % (size - 1) + 1,
                    next: 0,
                    weight: u64::from(endpoint.effective_weight()),
                    target: 0,
                };
                (endpoint.key, walker)
            })
            .collect();
        // Turn order by key rather than list position, so the table does not
        // depend on the order the endpoints were configured in.
        walkers.sort_unstable_by_key(|(key, walker)| (*key, walker.index));
        let max_weight = walkers.iter().map(|(_, w)| w.weight).max().unwrap_or(1);

        // size <= next_prime(2^24), so the cast is lossless on every target.
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        let mut iteration = 0u64;
        // Terminates: the heaviest walker claims a slot every iteration.
        while filled < size {
            iteration += 1;
            for (_, walker) in walkers.iter_mut() {
                if filled == size {
                    break;
                }
                if iteration.saturating_mul(walker.weight) < walker.target {
                    continue;
                }
                walker.target = walker.target.saturating_add(max_weight);
                // Claim the first free slot along the permutation. Positions
                // already passed are taken and stay taken, so a free slot is
                // found within `size` steps whenever one exists.
                for _ in 0..size {
                    let position = walker.next % size;
                    walker.next += 1;
                    let slot = (walker.offset + walker.skip * position) % size;
                    if let Some(entry) = usize::try_from(slot).ok().and_then(|s| table.get_mut(s))
                        && *entry == u32::MAX
                    {
                        *entry = walker.index;
                        filled += 1;
                        break;
                    }
                }
            }
        }
        Self { table }
    }

    pub(crate) fn pick(
        &self,
        hash: u64,
        n: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let size = self.table.len() as u64;
        if size == 0 {
            return None;
        }
        let slot = hash % size;
        let first = self.entry(slot)?;
        if eligible(first) {
            return Some(first);
        }
        // The table is not rebuilt when health changes (that would move
        // everyone's keys); instead only lookups that land on a down endpoint
        // look elsewhere, so other endpoints' keys never move.
        let mut verdicts = Verdicts::new(n, eligible);
        verdicts.mark_ineligible(first);
        for attempt in 1..=REHASH_ATTEMPTS {
            let rehashed = fmix64(hash.wrapping_add(attempt));
            let index = self.entry(rehashed % size)?;
            if verdicts.check(index) {
                return Some(index);
            }
        }
        // Still nothing: scan the table onward from the original slot, which
        // reaches every endpoint that owns a slot, i.e. all of them.
        for step in 1..size {
            if verdicts.exhausted() {
                return None;
            }
            let index = self.entry((slot + step) % size)?;
            if verdicts.check(index) {
                return Some(index);
            }
        }
        None
    }

    fn entry(&self, slot: u64) -> Option<usize> {
        let index = *self.table.get(usize::try_from(slot).ok()?)?;
        usize::try_from(index).ok()
    }
}

/// Smallest prime >= `n` (and >= 2). Trial division is plenty: sizes are at
/// most ~2^24, so at most ~2^12 divisions per candidate, once per build.
fn next_prime(n: u64) -> u64 {
    let mut candidate = n.max(2);
    while !is_prime(candidate) {
        candidate += 1;
    }
    candidate
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut divisor = 3;
    while divisor * divisor <= n {
        if n.is_multiple_of(divisor) {
            return false;
        }
        divisor += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use crate::{Balancer, Policy, hash_key};

    const KEYS: usize = 20_000;
    const TABLE: u32 = 65_537;

    fn maglev(endpoints: Vec<Endpoint>) -> Balancer {
        Balancer::new(Policy::Maglev { table_size: TABLE }, endpoints)
    }

    fn key_hashes() -> Vec<u64> {
        (0..KEYS)
            .map(|k| hash_key(format!("session-{k}").as_bytes()))
            .collect()
    }

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

    fn key_counts(balancer: &Balancer) -> Vec<usize> {
        let mut counts = vec![0; balancer.len()];
        for hash in key_hashes() {
            if let Some(i) = pick_with(balancer, Some(hash), &|_| true) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn primes() {
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(2), 2);
        assert_eq!(next_prime(4), 5);
        assert_eq!(next_prime(65_536), 65_537);
        assert_eq!(next_prime(65_537), 65_537);
        assert_eq!(next_prime(100), 101);
        assert!(!is_prime(1) && !is_prime(9) && !is_prime(65_535));
        assert!(is_prime(3) && is_prime(251));
    }

    #[test]
    fn table_size_is_rounded_up_to_a_prime() {
        let table = Maglev::new(&endpoints(&[1, 1, 1]), 1000);
        assert_eq!(table.table.len(), 1009);
        assert!(table.table.iter().all(|&i| i < 3));
        // Never smaller than the endpoint count.
        let tiny = Maglev::new(&endpoints(&[1; 10]), 1);
        assert_eq!(tiny.table.len(), 11);
        let mut owners: Vec<u32> = tiny.table.clone();
        owners.sort_unstable();
        owners.dedup();
        assert_eq!(owners.len(), 10);
    }

    #[test]
    fn table_shares_follow_weights() {
        let table = Maglev::new(&endpoints(&[1, 2, 4]), 7001);
        let mut counts = [0usize; 3];
        for &i in &table.table {
            counts[i as usize] += 1;
        }
        let unit = 7001.0 / 7.0;
        for (count, weight) in counts.iter().zip([1.0, 2.0, 4.0]) {
            assert!(
                (*count as f64 / (unit * weight) - 1.0).abs() < 0.01,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn same_hash_same_endpoint() {
        let balancer = maglev(endpoints(&[1; 5]));
        let rebuilt = maglev(endpoints(&[1; 5]));
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
        let hashes = key_hashes();
        assert_eq!(
            owners(&maglev(forward), &hashes, &|_| true),
            owners(&maglev(reversed), &hashes, &|_| true)
        );
    }

    #[test]
    fn keys_spread_evenly() {
        let counts = key_counts(&maglev(endpoints(&[1; 5])));
        let fair = KEYS as f64 / 5.0;
        for &count in &counts {
            assert!((count as f64 / fair - 1.0).abs() <= 0.30, "{counts:?}");
        }
    }

    #[test]
    fn weights_3_to_1() {
        let counts = key_counts(&maglev(endpoints(&[3, 1])));
        let share = counts[0] as f64 / KEYS as f64;
        assert!((share / 0.75 - 1.0).abs() <= 0.10, "{counts:?}");
    }

    #[test]
    fn removing_an_endpoint_remaps_about_its_share() {
        let all = endpoints(&[1; 5]);
        let removed_key = all[2].key;
        let mut fewer = all.clone();
        fewer.remove(2);
        let hashes = key_hashes();
        let before = owners(&maglev(all), &hashes, &|_| true);
        let after = owners(&maglev(fewer), &hashes, &|_| true);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let removed_own = before.iter().filter(|&&b| b == Some(removed_key)).count();
        // All of the removed endpoint's keys must move; Maglev may move a few
        // others too, but not many.
        assert!(moved >= removed_own);
        let share = moved as f64 / KEYS as f64;
        assert!(share <= 1.0 / 5.0 + 0.05, "{share}");
        assert!(after.iter().all(|&a| a.is_some() && a != Some(removed_key)));
    }

    #[test]
    fn ineligible_endpoint_keys_go_elsewhere_others_stay() {
        let balancer = maglev(endpoints(&[1; 5]));
        let hashes = key_hashes();
        let before = owners(&balancer, &hashes, &|_| true);
        let down = balancer.endpoint(1).map(|e| e.key);
        let after = owners(&balancer, &hashes, &|i| i != 1);
        let mut rerouted = vec![0usize; 5];
        for (b, a) in before.iter().zip(&after) {
            assert!(a.is_some());
            assert_ne!(*a, down);
            if *b == down {
                let index = (0..5).find(|&i| balancer.endpoint(i).map(|e| e.key) == *a);
                if let Some(i) = index {
                    rerouted[i] += 1;
                }
            } else {
                assert_eq!(a, b);
            }
        }
        // Rehashing spreads the orphaned keys over all the others.
        assert_eq!(rerouted[1], 0);
        assert!(
            rerouted.iter().enumerate().all(|(i, &c)| i == 1 || c > 500),
            "{rerouted:?}"
        );
    }

    #[test]
    fn scans_when_nearly_everything_is_down() {
        let balancer = maglev(endpoints(&[1; 8]));
        for hash in key_hashes().into_iter().take(2000) {
            assert_eq!(pick_with(&balancer, Some(hash), &|i| i == 6), Some(6));
            assert_eq!(pick_with(&balancer, Some(hash), &|_| false), None);
        }
    }

    #[test]
    fn no_hash_picks_randomly_among_eligible() {
        fastrand::seed(41);
        let balancer = maglev(endpoints(&[1; 4]));
        let counts = tally(&balancer, 4000, &|i| i != 2);
        assert_eq!(counts[2], 0);
        assert!(
            counts.iter().enumerate().all(|(i, &c)| i == 2 || c > 1000),
            "{counts:?}"
        );
    }
}
