//! A route's rate limit on the data path: which key a request counts against, and the
//! RateLimit headers of draft-ietf-httpapi-ratelimit-headers-09.
//!
//! Headers (on 429s always; on admitted responses unless the route sets `headers = false`):
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=1     the quota as configured: 100 requests per 1 s
//! RateLimit: "default";r=42;t=1             requests left right now; seconds until the whole
//!                                           burst is back (on a 429: until the next request
//!                                           is admitted, the same moment as Retry-After)
//! ```
//!
//! The draft's fields were chosen over the older `RateLimit-Limit/-Remaining/-Reset` trio: the
//! trio was dropped from the draft in version 07, and the policy field carries the window,
//! which the trio could not. Times are whole seconds rounded up (the draft has no fractions), so
//! a client waiting `t` is never early.
//!
//! Limiters outlive snapshots in a [`RateLimiterStore`], keyed by route name and limit: a reload
//! that leaves a route's limit as it was keeps its counts (a client cannot reset its quota by
//! waiting for a config push), and a changed limit starts afresh.

use gatehouse_config::{RateLimit, RateLimitKey};
use gatehouse_observe::{Counter, Metrics, RouteNameLabels, label};
use gatehouse_resilience::rate_limit::{InMemoryRateLimiter, StoreLimits};
use gatehouse_resilience::{Quota, RateDecision, RateLimiter};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A route's rate limit, built once per snapshot.
pub struct RouteRateLimit {
    limiter: Arc<dyn RateLimiter>,
    key: Key,
    /// Whether admitted responses carry the headers too.
    headers: bool,
    /// The `RateLimit-Policy` value, the same on every response.
    policy: HeaderValue,
    /// `gatehouse_rate_limited_total{route}`, resolved once.
    refused: Counter,
}

enum Key {
    ClientIp,
    Header(HeaderName),
    Route,
}

impl RouteRateLimit {
    pub fn build(
        route: &str,
        config: &RateLimit,
        store: &RateLimiterStore,
        metrics: &Metrics,
    ) -> Self {
        let key = match &config.key {
            RateLimitKey::ClientIp => Key::ClientIp,
            RateLimitKey::Route => Key::Route,
            RateLimitKey::Header(name) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Key::Header(name),
                // Validation checked the name; should it fail, count per client instead.
                Err(_) => Key::ClientIp,
            },
        };
        let policy = format!(
            "\"default\";q={};w={}",
            config.count,
            config.period.as_secs().max(1)
        );
        Self {
            limiter: store.get_or_create(route, config),
            key,
            headers: config.headers,
            policy: HeaderValue::from_str(&policy)
                .unwrap_or(HeaderValue::from_static("\"default\"")),
            refused: metrics
                .rate_limited
                .get_or_create(&RouteNameLabels {
                    route: label(route),
                })
                .clone(),
        }
    }

    /// Counts the request against its key. A refusal is counted in the metric.
    pub fn check(&self, headers: &HeaderMap, client: IpAddr, now_nanos: u64) -> RateDecision {
        // Room for an IPv6 address behind a marker byte.
        let mut buf = [0u8; 17];
        let key: &[u8] = match &self.key {
            Key::Route => b"",
            Key::ClientIp => ip_key(client, &mut buf[1..]),
            Key::Header(name) => match headers.get(name) {
                Some(value) => value.as_bytes(),
                // Without the header a request counts per client address, behind a NUL (which
                // no header value contains) so no value can share its bucket.
                None => {
                    let len = ip_key(client, &mut buf[1..]).len();
                    &buf[..=len]
                }
            },
        };
        let decision = self.limiter.check(key, now_nanos);
        if !decision.allowed {
            self.refused.inc();
        }
        decision
    }

    /// Adds `RateLimit-Policy` and `RateLimit` to a response (always on a refusal).
    pub fn annotate(&self, headers: &mut HeaderMap, decision: &RateDecision) {
        if decision.allowed && !self.headers {
            return;
        }
        let t = if decision.allowed {
            decision.reset
        } else {
            decision.retry_after
        };
        let mut value = String::with_capacity(32);
        value.push_str("\"default\";r=");
        value.push_str(itoa::Buffer::new().format(decision.remaining));
        value.push_str(";t=");
        // Rounded up like Retry-After, but 0 is a fine answer when the burst is already back.
        let seconds = t.as_secs() + u64::from(t.subsec_nanos() > 0);
        value.push_str(itoa::Buffer::new().format(seconds));
        headers.insert(RATELIMIT_POLICY.clone(), self.policy.clone());
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(RATELIMIT.clone(), value);
        }
    }
}

/// The address's bytes (IPv4-mapped IPv6 as IPv4), written into `buf`.
fn ip_key(ip: IpAddr, buf: &mut [u8]) -> &[u8] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        IpAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.octets());
            &buf[..16]
        }
    }
}

/// What makes a limiter the same across a reload: the route and the limit (not whether
/// headers are sent).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimiterId {
    route: String,
    quota: Quota,
    key: RateLimitKey,
    max_keys: u64,
}

impl LimiterId {
    fn new(route: &str, config: &RateLimit) -> Self {
        Self {
            route: route.to_owned(),
            quota: quota(config),
            key: config.key.clone(),
            max_keys: config.max_keys,
        }
    }
}

fn quota(config: &RateLimit) -> Quota {
    Quota {
        count: config.count,
        period: config.period,
        burst: config.burst,
    }
}

/// Rate limiters by route and limit, kept across snapshots.
#[derive(Default)]
pub struct RateLimiterStore {
    limiters: Mutex<HashMap<LimiterId, Arc<InMemoryRateLimiter>>>,
}

impl RateLimiterStore {
    fn get_or_create(&self, route: &str, config: &RateLimit) -> Arc<InMemoryRateLimiter> {
        let id = LimiterId::new(route, config);
        let mut limiters = self.limiters.lock();
        Arc::clone(limiters.entry(id).or_insert_with(|| {
            Arc::new(InMemoryRateLimiter::new(
                quota(config),
                StoreLimits {
                    max_keys: usize::try_from(config.max_keys).unwrap_or(usize::MAX),
                },
            ))
        }))
    }

    /// Forgets the limiters of routes no longer configured (or whose limit changed).
    pub fn retain<'a>(&self, live: impl IntoIterator<Item = (&'a str, &'a RateLimit)>) {
        let live: HashSet<LimiterId> = live
            .into_iter()
            .map(|(route, config)| LimiterId::new(route, config))
            .collect();
        self.limiters.lock().retain(|id, _| live.contains(id));
    }

    /// Limiters held.
    pub fn len(&self) -> usize {
        self.limiters.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn limit(count: u64, burst: u64, key: RateLimitKey) -> RateLimit {
        RateLimit {
            count,
            period: Duration::from_secs(1),
            burst,
            key,
            headers: true,
            max_keys: 1000,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keys_are_the_client_a_header_or_the_route() {
        let store = RateLimiterStore::default();
        let metrics = Metrics::new();
        let by_ip =
            RouteRateLimit::build("a", &limit(1, 1, RateLimitKey::ClientIp), &store, &metrics);
        let none = HeaderMap::new();
        assert!(by_ip.check(&none, ip("192.0.2.1"), SEC).allowed);
        assert!(!by_ip.check(&none, ip("::ffff:192.0.2.1"), SEC).allowed);
        assert!(by_ip.check(&none, ip("192.0.2.2"), SEC).allowed);

        let by_header = RouteRateLimit::build(
            "b",
            &limit(1, 1, RateLimitKey::Header("x-api-key".into())),
            &store,
            &metrics,
        );
        let mut alice = HeaderMap::new();
        alice.insert("x-api-key", HeaderValue::from_static("alice"));
        assert!(by_header.check(&alice, ip("192.0.2.1"), SEC).allowed);
        assert!(!by_header.check(&alice, ip("192.0.2.2"), SEC).allowed);
        // No header: counted per address, apart from every header value.
        assert!(by_header.check(&none, ip("192.0.2.1"), SEC).allowed);
        assert!(!by_header.check(&none, ip("192.0.2.1"), SEC).allowed);
        assert!(by_header.check(&none, ip("192.0.2.3"), SEC).allowed);

        let whole = RouteRateLimit::build("c", &limit(1, 1, RateLimitKey::Route), &store, &metrics);
        assert!(whole.check(&none, ip("192.0.2.1"), SEC).allowed);
        assert!(!whole.check(&alice, ip("192.0.2.9"), SEC).allowed);

        let text = metrics.encode();
        assert!(
            text.contains("gatehouse_rate_limited_total{route=\"b\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn headers_follow_the_draft() {
        let store = RateLimiterStore::default();
        let metrics = Metrics::new();
        let l = RouteRateLimit::build("a", &limit(100, 2, RateLimitKey::Route), &store, &metrics);
        let none = HeaderMap::new();
        let mut headers = HeaderMap::new();
        let first = l.check(&none, ip("192.0.2.1"), SEC);
        l.annotate(&mut headers, &first);
        assert_eq!(headers[&RATELIMIT_POLICY], "\"default\";q=100;w=1");
        // One of two left; the burst is back in 10 ms, rounded up to a second.
        assert_eq!(headers[&RATELIMIT], "\"default\";r=1;t=1");
        l.check(&none, ip("192.0.2.1"), SEC);
        let refused = l.check(&none, ip("192.0.2.1"), SEC);
        assert!(!refused.allowed);
        l.annotate(&mut headers, &refused);
        assert_eq!(headers[&RATELIMIT], "\"default\";r=0;t=1");
        // Headers on admitted responses can be turned off; refusals keep them.
        let quiet = RouteRateLimit::build(
            "q",
            &RateLimit {
                headers: false,
                ..limit(1, 1, RateLimitKey::Route)
            },
            &store,
            &metrics,
        );
        let mut headers = HeaderMap::new();
        let admitted = quiet.check(&none, ip("192.0.2.1"), SEC);
        quiet.annotate(&mut headers, &admitted);
        assert!(headers.is_empty());
        let refused = quiet.check(&none, ip("192.0.2.1"), SEC);
        quiet.annotate(&mut headers, &refused);
        assert_eq!(headers[&RATELIMIT], "\"default\";r=0;t=1");
    }

    #[test]
    fn limiters_survive_a_reload_unless_the_limit_changed() {
        let store = RateLimiterStore::default();
        let metrics = Metrics::new();
        let config = limit(1, 1, RateLimitKey::Route);
        let none = HeaderMap::new();
        let before = RouteRateLimit::build("a", &config, &store, &metrics);
        assert!(before.check(&none, ip("192.0.2.1"), SEC).allowed);
        // Same route, same limit (headers toggled): the count carries over.
        let same = RouteRateLimit::build(
            "a",
            &RateLimit {
                headers: false,
                ..config.clone()
            },
            &store,
            &metrics,
        );
        assert!(!same.check(&none, ip("192.0.2.1"), SEC).allowed);
        store.retain([("a", &config)]);
        assert_eq!(store.len(), 1);
        // A new limit starts afresh, and the old one is forgotten.
        let changed = limit(2, 1, RateLimitKey::Route);
        let after = RouteRateLimit::build("a", &changed, &store, &metrics);
        assert!(after.check(&none, ip("192.0.2.1"), SEC).allowed);
        store.retain([("a", &changed)]);
        assert_eq!(store.len(), 1);
        store.retain([]);
        assert!(store.is_empty());
    }
}
