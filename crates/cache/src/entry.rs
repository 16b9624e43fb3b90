//! What is stored: one response (head, body, policy, when it arrived) per variant, and the
//! variants of one URL.

use crate::directives::StaleAllowance;
use crate::key::StoredKey;
use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_cache_semantics::CachePolicy;
use std::time::{Duration, Instant, SystemTime};

/// A stored response.
pub struct Stored {
    pub key: StoredKey,
    pub status: StatusCode,
    /// As sent to the first client (hop-by-hop fields removed, Via added), with the body's
    /// Content-Length; `Age` and `Cache-Status` are added per hit.
    pub headers: HeaderMap,
    /// Shared by every hit: a hit clones the handle, not the bytes.
    pub body: Bytes,
    pub policy: CachePolicy,
    /// The request's values of the headers named by `Vary`.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// When the response arrived, on the wall clock (what the policy counts in)...
    pub received: SystemTime,
    /// ...and on the monotonic clock: a request's arrival `Instant` gives its wall time without
    /// a clock read ([`Stored::wall_time`]).
    pub received_at: Instant,
    /// How long it is fresh from `received_at` (the policy's time to live then).
    pub fresh_for: Duration,
    pub stale: StaleAllowance,
    /// Bytes charged against the store's bound.
    pub weight: u32,
}

/// Fields that describe the stored body, which a 304 does not change.
const KEPT_ON_REFRESH: [HeaderName; 4] = [
    http::header::CONTENT_LENGTH,
    http::header::CONTENT_ENCODING,
    http::header::TRANSFER_ENCODING,
    http::header::CONTENT_RANGE,
];

/// Rough cost of the parts of an entry that are not header or body bytes (policy maps, the
/// entry itself, the store's bookkeeping).
const OVERHEAD: usize = 512;

impl Stored {
    /// The wall-clock time of `at`, counted from when this response arrived.
    pub fn wall_time(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.received_at) {
            Some(since) => self.received + since,
            None => self.received - self.received_at.duration_since(at),
        }
    }

    /// Time since it stopped being fresh (zero while fresh).
    pub fn staleness(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.received_at)
            .saturating_sub(self.fresh_for)
    }

    pub fn is_fresh(&self, at: Instant) -> bool {
        at.saturating_duration_since(self.received_at) < self.fresh_for
    }

    /// This response after the origin confirmed it with a 304 (RFC 9111 4.3.4): the 304's
    /// header fields replace the stored ones, except those describing the stored body; the
    /// body is kept (shared, not copied).
    pub fn refreshed(
        &self,
        policy: CachePolicy,
        not_modified: &HeaderMap,
        received: SystemTime,
        received_at: Instant,
    ) -> Stored {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if KEPT_ON_REFRESH.contains(name) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let fresh_for = policy.time_to_live(received);
        Stored {
            key: self.key.clone(),
            status: self.status,
            weight: self.weight,
            stale: StaleAllowance::of(&headers),
            headers,
            body: self.body.clone(),
            policy,
            vary: self.vary.clone(),
            received,
            received_at,
            fresh_for,
        }
    }

    /// Whether a request with these headers selects this variant.
    pub fn vary_matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| request.get(name) == value.as_ref())
    }

    /// Whether the two were stored for requests that select the same variant.
    pub fn same_variant(&self, other: &Stored) -> bool {
        self.vary == other.vary
    }

    /// The bytes this entry holds: body, headers twice (the stored head and the policy's
    /// copy), the request headers the policy keeps, and a fixed overhead.
    pub fn weigh(headers: &HeaderMap, body: &Bytes, request_headers: usize) -> u32 {
        let head: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let total = body.len() + 2 * head + request_headers + OVERHEAD;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Header bytes of a request (for [`Stored::weigh`]).
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum()
}

/// The stored variants of one URL (one unless the origin sends `Vary`).
#[derive(Default)]
pub struct Variants {
    pub entries: Vec<std::sync::Arc<Stored>>,
}

/// Variants kept per URL; a new one beyond this replaces the oldest (an origin that varies on
/// a header with many values would otherwise fill one entry without bound).
pub const MAX_VARIANTS: usize = 8;

impl Variants {
    pub fn weight(&self) -> u32 {
        self.entries
            .iter()
            .fold(0u32, |sum, e| sum.saturating_add(e.weight))
    }

    /// A copy with `stored` in place of the variant it replaces (same Vary values), or added.
    pub fn with(&self, stored: std::sync::Arc<Stored>) -> Self {
        let mut entries: Vec<_> = self
            .entries
            .iter()
            .filter(|e| !e.same_variant(&stored))
            .cloned()
            .collect();
        if entries.len() >= MAX_VARIANTS {
            entries.remove(0);
        }
        entries.push(stored);
        Self { entries }
    }
}
