//! Rate limiting: GCRA (the generic cell rate algorithm) per key, behind a [`RateLimiter`] trait.
//!
//! A quota of `count` requests per `period` with a `burst` lets a key send `burst` requests at
//! once and then one every `period / count` (the emission interval `T`). GCRA keeps one number
//! per key, its *theoretical arrival time* (TAT): when the key's bucket would be full again.
//! A request at `now` is admitted when `max(TAT, now) + T <= now + burst × T`, and then moves
//! TAT to `max(TAT, now) + T`. From the same number follow everything the RateLimit headers
//! need ([`RateDecision`]): requests still admissible right now, the wait before the next
//! admission (Retry-After), and when the bucket is full again. No timer, no refill task.
//!
//! [`Gcra`] is the pure rule; [`InMemoryRateLimiter`] keeps TATs per key for one process.
//! Time comes in as `now_nanos`, as everywhere in this crate, so tests need no sleeps.
//!
//! **Bounded memory.** The in-memory store keeps a 64-bit keyed hash of each key (SipHash with
//! random per-limiter keys, so clients cannot aim two keys at one slot), never the key itself:
//! a header value of 60 KiB costs the same 16 bytes as an IP address. It holds at most
//! `max_keys` keys. A key whose TAT has passed has a full bucket, exactly as if it had never
//! been seen, so dropping it changes no decision: such keys are swept every
//! [`SWEEP_INTERVAL`] and whenever a shard is full. If a shard is still full after that (a
//! flood of distinct keys within the window), the eighth of its keys nearest to a full bucket
//! are dropped, which gives them a full bucket a little early; the sweep then happens once per
//! eighth of capacity, so its cost stays constant per request.
//!
//! **Why not `governor`** (named in DESIGN.md): its keyed limiter stores whole keys without a
//! cap (memory is reclaimed only when the caller runs `retain_recent`), reports the remaining
//! quota only through an extra middleware type, and takes time from its own clock types rather
//! than the nanoseconds this crate runs on. The rule itself is a few lines of integer
//! arithmetic, written out below.
//!
//! **The trait** is synchronous and object-safe, like [`crate::IdempotencyStore`]: a shared
//! (Redis) limiter for fleet mode can implement it with a local GCRA that reconciles with Redis
//! in the background, so no request waits on a network round trip.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::Duration;

use parking_lot::Mutex;

use crate::time::saturating_nanos;

/// Idle (full-bucket) keys are swept from a shard at least this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Shards of the in-memory store (a power of two): requests for different keys rarely wait on
/// the same lock.
const SHARDS: usize = 16;

/// A rate limit: `count` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per period (0 reads as 1).
    pub count: u64,
    /// The period (zero reads as 1 ns).
    pub period: Duration,
    /// Requests a key may send at once after being idle (0 reads as 1).
    pub burst: u64,
}

/// What the limiter decided about one request, and the key's state after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// The request may go ahead.
    pub allowed: bool,
    /// Requests the key could still send right now.
    pub remaining: u64,
    /// When refused: how long until a request would be admitted. Zero when allowed.
    pub retry_after: Duration,
    /// How long until the key's whole burst is available again.
    pub reset: Duration,
}

/// A rate limiter keyed by opaque bytes (a client address, a header value, a route).
pub trait RateLimiter: Send + Sync {
    /// Decides one request for `key` at `now_nanos`, counting it when it is admitted.
    fn check(&self, key: &[u8], now_nanos: u64) -> RateDecision;

    /// The quota this limiter enforces.
    fn quota(&self) -> Quota;
}

/// The GCRA rule for one quota (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T, in nanoseconds (at least 1).
    interval: u64,
    /// burst × T: how far TAT may run ahead of now.
    tolerance: u64,
}

impl Gcra {
    /// The rule for `quota`.
    pub fn new(quota: Quota) -> Self {
        let count = quota.count.max(1);
        let interval = (saturating_nanos(quota.period) / count).max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(quota.burst.max(1)),
        }
    }

    /// The emission interval: one request per this, sustained.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// Decides a request at `now` for a key whose TAT is `tat` (pass 0, or any time not after
    /// `now`, for a key not seen or idle). Returns the decision and the key's new TAT.
    pub fn decide(&self, tat: u64, now: u64) -> (RateDecision, u64) {
        let start = tat.max(now);
        let next = start.saturating_add(self.interval);
        let limit = now.saturating_add(self.tolerance);
        if next <= limit {
            let decision = RateDecision {
                allowed: true,
                remaining: (limit - next) / self.interval,
                retry_after: Duration::ZERO,
                reset: Duration::from_nanos(next - now),
            };
            (decision, next)
        } else {
            let decision = RateDecision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_nanos(next - limit),
                reset: Duration::from_nanos(start - now),
            };
            (decision, tat)
        }
    }
}

/// Limits of an [`InMemoryRateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreLimits {
    /// Most keys held at once (spread over the shards; at least one per shard).
    pub max_keys: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self { max_keys: 100_000 }
    }
}

/// Per-key GCRA state for one process, bounded in memory (see the module docs).
pub struct InMemoryRateLimiter {
    quota: Quota,
    gcra: Gcra,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

struct Shard {
    /// Key hash -> TAT.
    tats: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
    capacity: usize,
    /// When idle keys are swept next.
    next_sweep: u64,
}

impl InMemoryRateLimiter {
    /// An empty store enforcing `quota`.
    pub fn new(quota: Quota, limits: StoreLimits) -> Self {
        let capacity = limits.max_keys.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::default(),
                    capacity,
                    next_sweep: 0,
                })
            })
            .collect();
        Self {
            quota,
            gcra: Gcra::new(quota),
            hasher: RandomState::new(),
            shards,
        }
    }

    /// Keys held now (busy keys, plus idle ones not yet swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().tats.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most keys this store holds.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().capacity).sum()
    }

    /// Drops every key whose bucket is full at `now` (each shard also does this by itself every
    /// [`SWEEP_INTERVAL`] when it is used, and when it is full).
    pub fn sweep(&self, now_nanos: u64) {
        for shard in self.shards.iter() {
            shard.lock().sweep_idle(now_nanos);
        }
    }
}

impl RateLimiter for InMemoryRateLimiter {
    fn check(&self, key: &[u8], now_nanos: u64) -> RateDecision {
        let hash = self.hasher.hash_one(key);
        // Shard by middle bits: the map itself uses the low bits and the top seven.
        let shard = &self.shards[(hash >> 32) as usize & (SHARDS - 1)];
        let mut shard = shard.lock();
        if now_nanos >= shard.next_sweep {
            shard.sweep_idle(now_nanos);
        }
        let tat = shard.tats.get(&hash).copied().unwrap_or(0);
        let (decision, new_tat) = self.gcra.decide(tat, now_nanos);
        if decision.allowed {
            if !shard.tats.contains_key(&hash) && shard.tats.len() >= shard.capacity {
                shard.make_room(now_nanos);
            }
            shard.tats.insert(hash, new_tat);
        }
        decision
    }

    fn quota(&self) -> Quota {
        self.quota
    }
}

impl Shard {
    /// Drops keys whose bucket is full again: they decide exactly as unseen keys do.
    fn sweep_idle(&mut self, now: u64) {
        self.tats.retain(|_, tat| *tat > now);
        self.next_sweep = now.saturating_add(saturating_nanos(SWEEP_INTERVAL));
    }

    /// Frees at least one slot. When idle keys free less than an eighth of the shard, the keys
    /// nearest a full bucket (smallest TAT: they lose the least) go too, down to seven eighths,
    /// so this O(n) pass runs at most once per eighth of capacity.
    fn make_room(&mut self, now: u64) {
        self.sweep_idle(now);
        let target = self.capacity - self.capacity / 8;
        if self.tats.len() < target {
            return;
        }
        let drop = self.tats.len() - target + 1;
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let (_, threshold, _) = tats.select_nth_unstable(drop - 1);
        let threshold = *threshold;
        let mut dropped = 0;
        self.tats.retain(|_, tat| {
            let keep = *tat > threshold || dropped == drop;
            if !keep {
                dropped += 1;
            }
            keep
        });
    }
}

/// The map's keys are already uniformly random 64-bit hashes: hashing them again is waste.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this is for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    fn quota(count: u64, period: Duration, burst: u64) -> Quota {
        Quota {
            count,
            period,
            burst,
        }
    }

    fn limiter(count: u64, burst: u64) -> InMemoryRateLimiter {
        InMemoryRateLimiter::new(
            quota(count, Duration::from_secs(1), burst),
            StoreLimits::default(),
        )
    }

    #[test]
    fn a_burst_goes_through_at_once_then_the_rate_holds() {
        // 10/s with a burst of 5: T = 100 ms.
        let l = limiter(10, 5);
        let now = 50 * SEC;
        for remaining in (0..5).rev() {
            let d = l.check(b"k", now);
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
        }
        let refused = l.check(b"k", now);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(500));
        // Waiting exactly the retry-after admits one more, and only one.
        let later = now + 100 * MS;
        assert!(l.check(b"k", later).allowed);
        assert!(!l.check(b"k", later).allowed);
        // A different key has its own bucket.
        assert_eq!(l.check(b"other", now).remaining, 4);
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let l = limiter(100, 1);
        // One request every 10 ms for 10 s: exactly the rate, burst 1.
        for i in 0..1000 {
            let d = l.check(b"steady", SEC + i * 10 * MS);
            assert!(d.allowed, "refused at {i}");
        }
        // Twice the rate: every second request is refused.
        let l = limiter(100, 1);
        let refused = (0..1000)
            .filter(|i| !l.check(b"fast", SEC + i * 5 * MS).allowed)
            .count();
        assert_eq!(refused, 500);
    }

    #[test]
    fn admitted_requests_over_a_long_run_match_the_quota() {
        // 6000/min = 100/s, burst 20, hammered every millisecond for 10 s: the burst plus the
        // rate's worth get through.
        let l = InMemoryRateLimiter::new(
            quota(6000, Duration::from_secs(60), 20),
            StoreLimits::default(),
        );
        let admitted = (0..10_000)
            .filter(|i| l.check(b"k", SEC + i * MS).allowed)
            .count();
        assert!((1015..=1021).contains(&admitted), "{admitted}");
    }

    #[test]
    fn retry_after_and_reset_math() {
        let g = Gcra::new(quota(1, Duration::from_secs(3), 2));
        assert_eq!(g.interval(), Duration::from_secs(3));
        let now = 100 * SEC;
        let (d, tat) = g.decide(0, now);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset), (1, Duration::from_secs(3)));
        let (d, tat) = g.decide(tat, now + SEC);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset), (0, Duration::from_secs(5)));
        let (d, same) = g.decide(tat, now + 2 * SEC);
        assert!(!d.allowed);
        assert_eq!(same, tat, "a refused request does not count");
        // Next admission when TAT - tolerance + T = 106 - 6 + 3 = 103: one second from now.
        assert_eq!(d.retry_after, Duration::from_secs(1));
        assert_eq!(d.reset, Duration::from_secs(4));
        // A fraction of a second is kept exactly (headers round it up).
        let (d, _) = g.decide(tat, now + 2 * SEC + 250 * MS);
        assert_eq!(d.retry_after, Duration::from_millis(750));
    }

    #[test]
    fn time_going_backwards_or_odd_quotas_never_panic() {
        let g = Gcra::new(quota(0, Duration::ZERO, 0));
        assert_eq!(g.interval(), Duration::from_nanos(1));
        let (_, tat) = g.decide(u64::MAX - 1, u64::MAX);
        assert_eq!(tat, u64::MAX);
        let (d, _) = g.decide(u64::MAX, 0);
        assert!(!d.allowed);
        let g = Gcra::new(quota(1, Duration::MAX, u64::MAX));
        let (d, _) = g.decide(0, 5);
        assert!(d.allowed);
        let l = limiter(10, 1);
        assert!(l.check(b"k", 10 * SEC).allowed);
        // An earlier `now` (another thread's older reading) is refused, not a panic.
        assert!(!l.check(b"k", 9 * SEC).allowed);
    }

    #[test]
    fn idle_keys_are_swept_without_changing_decisions() {
        let l = limiter(10, 2);
        for i in 0..100u32 {
            assert!(l.check(&i.to_be_bytes(), SEC).allowed);
        }
        assert_eq!(l.len(), 100);
        // Each bucket is full again 100 ms later (one request, T = 100 ms); not before.
        l.sweep(SEC + 99 * MS);
        assert_eq!(l.len(), 100);
        l.sweep(SEC + 100 * MS);
        assert!(l.is_empty());
        // A swept key decides as it would have with its state kept: a whole burst.
        assert_eq!(l.check(&7u32.to_be_bytes(), SEC + 100 * MS).remaining, 1);
        // Shards sweep by themselves once SWEEP_INTERVAL has passed since their last sweep.
        let l = limiter(10, 2);
        assert!(l.check(b"a", SEC).allowed);
        let later = SEC + saturating_nanos(SWEEP_INTERVAL);
        assert!(l.check(b"a", later).allowed);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn the_number_of_keys_stays_bounded_under_a_flood() {
        let l = InMemoryRateLimiter::new(
            quota(1, Duration::from_secs(3600), 1),
            StoreLimits { max_keys: 1600 },
        );
        assert_eq!(l.capacity(), 1600);
        // Every key stays busy for an hour: nothing is idle, yet the store never grows past
        // its capacity and every new key is still served.
        for i in 0..50_000u32 {
            let d = l.check(&i.to_le_bytes(), SEC + u64::from(i));
            assert!(d.allowed, "key {i}");
        }
        assert!(l.len() <= 1600, "{}", l.len());
        assert!(l.len() >= 1600 / 2, "{}", l.len());
        // The latest keys are still limited: they were not the ones dropped.
        assert!(!l.check(&49_999u32.to_le_bytes(), SEC + 50_000).allowed);
    }

    #[test]
    fn the_limiter_is_object_safe() {
        let l: Box<dyn RateLimiter> = Box::new(limiter(5, 5));
        assert_eq!(l.quota().burst, 5);
        assert!(l.check(b"", 0).allowed);
    }
}
