//! The store: a moka cache of URL -> variants, bounded by bytes, shared by every cached route.
//!
//! moka's weigher charges each URL the bytes of its variants ([`crate::Stored::weigh`]); past
//! `max_size` it evicts by its TinyLFU policy (admission by estimated frequency, eviction of
//! the least recently used), which keeps popular objects when a scan of one-off URLs passes
//! through. Entries carry no time-to-live of their own: a stale entry stays useful for
//! revalidation and `stale-if-error` until the byte bound pushes it out.

use crate::coalesce::{Coalescer, Join};
use crate::entry::{Stored, Variants};
use crate::key::KeyParts;
use moka::notification::RemovalCause;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The gateway's HTTP cache.
pub struct HttpCache {
    store: moka::sync::Cache<u64, Arc<Variants>>,
    /// Keys the store by a per-process random hash (collisions are caught by the key check).
    hasher: RandomState,
    coalescer: Coalescer,
    evictions: Arc<AtomicU64>,
    max_size: u64,
}

/// What the store holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Weighted bytes (bodies, headers, overhead).
    pub bytes: u64,
    /// URLs stored (each with one or more variants).
    pub urls: u64,
    /// Entries pushed out by the byte bound since the store was made.
    pub evictions: u64,
    pub max_size: u64,
}

/// Which entries a purge removes; all fields empty: everything.
#[derive(Debug, Clone, Default)]
pub struct PurgeFilter {
    pub route: Option<String>,
    /// Compared without case.
    pub host: Option<String>,
    /// The request target (path and query); a trailing `*` matches every target it prefixes.
    pub target: Option<String>,
}

impl PurgeFilter {
    fn matches(&self, stored: &Stored) -> bool {
        self.route
            .as_deref()
            .is_none_or(|r| *stored.key.route == *r)
            && self
                .host
                .as_deref()
                .is_none_or(|h| stored.key.host.eq_ignore_ascii_case(h))
            && self
                .target
                .as_deref()
                .is_none_or(|t| match t.strip_suffix('*') {
                    Some(prefix) => stored.key.target.starts_with(prefix),
                    None => *stored.key.target == *t,
                })
    }

    fn is_everything(&self) -> bool {
        self.route.is_none() && self.host.is_none() && self.target.is_none()
    }
}

impl HttpCache {
    /// A store holding at most `max_size` weighted bytes.
    pub fn new(max_size: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let store = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_key: &u64, variants: &Arc<Variants>| variants.weight())
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Self {
            store,
            hasher: RandomState::new(),
            coalescer: Coalescer::default(),
            evictions,
            max_size,
        }
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    pub fn hash(&self, key: &KeyParts<'_>) -> u64 {
        key.hash(&self.hasher)
    }

    /// The variants stored for `key` (`hash` is [`HttpCache::hash`] of it).
    pub fn lookup(&self, hash: u64, key: &KeyParts<'_>) -> Option<Arc<Variants>> {
        let variants = self.store.get(&hash)?;
        variants
            .entries
            .first()
            .is_some_and(|e| key.matches(&e.key))
            .then_some(variants)
    }

    /// Stores a response, replacing the variant it supersedes.
    pub fn insert(&self, hash: u64, stored: impl Into<Arc<Stored>>) {
        let stored = stored.into();
        let variants = match self.store.get(&hash) {
            // Same URL: keep the other variants. (A colliding URL is simply replaced.)
            Some(old) if old.entries.first().is_some_and(|e| e.key == stored.key) => {
                old.with(stored)
            }
            _ => Variants {
                entries: vec![stored],
            },
        };
        self.store.insert(hash, Arc::new(variants));
    }

    /// Forgets `key` (after an unsafe method succeeded on it).
    pub fn invalidate(&self, hash: u64, key: &KeyParts<'_>) {
        if self.lookup(hash, key).is_some() {
            self.store.invalidate(&hash);
        }
    }

    /// Removes what the filter selects; returns how many URLs were removed.
    pub fn purge(&self, filter: &PurgeFilter) -> u64 {
        if filter.is_everything() {
            self.store.run_pending_tasks();
            let urls = self.store.entry_count();
            self.store.invalidate_all();
            self.store.run_pending_tasks();
            return urls;
        }
        let doomed: Vec<u64> = self
            .store
            .iter()
            .filter(|(_, v)| v.entries.first().is_some_and(|e| filter.matches(e)))
            .map(|(k, _)| *k)
            .collect();
        for hash in &doomed {
            self.store.invalidate(hash);
        }
        doomed.len() as u64
    }

    /// Coalesces misses for `hash` (see [`crate::coalesce`]).
    pub fn join(&self, hash: u64) -> Join {
        self.coalescer.join(hash)
    }

    /// Current totals (moka applies its bookkeeping first, so they are exact).
    pub fn stats(&self) -> StoreStats {
        self.store.run_pending_tasks();
        StoreStats {
            bytes: self.store.weighted_size(),
            urls: self.store.entry_count(),
            evictions: self.evictions.load(Ordering::Relaxed),
            max_size: self.max_size,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::directives::StaleAllowance;
    use crate::policy::{RequestView, ResponseView, policy};
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode, Uri};
    use std::time::{Duration, Instant, SystemTime};

    pub(crate) fn stored(key: &KeyParts<'_>, body: &'static [u8], vary: &[(&str, &str)]) -> Stored {
        let uri: Uri = key.target.parse().unwrap();
        let mut req = HeaderMap::new();
        for (k, v) in vary {
            req.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        if !vary.is_empty() {
            let names: Vec<&str> = vary.iter().map(|(k, _)| *k).collect();
            headers.insert("vary", names.join(", ").parse().unwrap());
        }
        let now = SystemTime::now();
        let p = policy(
            &RequestView::new(&Method::GET, &uri, &req),
            &ResponseView {
                status: StatusCode::OK,
                headers: &headers,
            },
            now,
        );
        let body = Bytes::from_static(body);
        Stored {
            key: key.to_stored(),
            status: StatusCode::OK,
            vary: crate::policy::vary_values(&headers, &req),
            weight: Stored::weigh(&headers, &body, 0),
            headers,
            body,
            fresh_for: p.time_to_live(now),
            policy: p,
            received: now,
            received_at: Instant::now(),
            stale: StaleAllowance::default(),
        }
    }

    const A: KeyParts<'static> = KeyParts {
        route: "r",
        host: "a.test",
        target: "/a",
    };

    #[test]
    fn insert_lookup_invalidate() {
        let cache = HttpCache::new(1 << 20);
        let h = cache.hash(&A);
        assert!(cache.lookup(h, &A).is_none());
        cache.insert(h, stored(&A, b"one", &[]));
        let found = cache.lookup(h, &A).unwrap();
        assert_eq!(found.entries[0].body, "one");
        assert_eq!(found.entries[0].fresh_for, Duration::from_secs(60));
        // A different key under the same hash (a collision) is not served.
        let other = KeyParts { target: "/b", ..A };
        assert!(cache.lookup(h, &other).is_none());
        cache.invalidate(h, &A);
        assert!(cache.lookup(h, &A).is_none());
    }

    #[test]
    fn variants_replace_their_own_kind_only() {
        let cache = HttpCache::new(1 << 20);
        let h = cache.hash(&A);
        cache.insert(h, stored(&A, b"gz", &[("accept-encoding", "gzip")]));
        cache.insert(h, stored(&A, b"br", &[("accept-encoding", "br")]));
        cache.insert(h, stored(&A, b"gz2", &[("accept-encoding", "gzip")]));
        let found = cache.lookup(h, &A).unwrap();
        let bodies: Vec<_> = found.entries.iter().map(|e| e.body.clone()).collect();
        assert_eq!(bodies, ["br", "gz2"]);
    }

    #[test]
    fn the_byte_bound_holds() {
        // 64 KiB of store, 4 KiB bodies: at most 16 fit.
        let cache = HttpCache::new(64 * 1024);
        static BODY: [u8; 4096] = [7; 4096];
        let targets: Vec<String> = (0..100).map(|i| format!("/{i}")).collect();
        for t in &targets {
            let key = KeyParts { target: t, ..A };
            let h = cache.hash(&key);
            cache.insert(h, stored(&key, &BODY, &[]));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.urls < 16, "{stats:?}");
        assert!(stats.urls > 0, "{stats:?}");
    }

    #[test]
    fn purge_by_filter() {
        let cache = HttpCache::new(1 << 20);
        for (host, target) in [
            ("a.test", "/x/1"),
            ("a.test", "/x/2"),
            ("b.test", "/x/1"),
            ("a.test", "/y"),
        ] {
            let key = KeyParts {
                route: "r",
                host,
                target,
            };
            cache.insert(cache.hash(&key), stored(&key, b"", &[]));
        }
        let removed = cache.purge(&PurgeFilter {
            host: Some("A.test".into()),
            target: Some("/x/*".into()),
            ..PurgeFilter::default()
        });
        assert_eq!(removed, 2);
        let kept = KeyParts {
            route: "r",
            host: "b.test",
            target: "/x/1",
        };
        assert!(cache.lookup(cache.hash(&kept), &kept).is_some());
        assert_eq!(cache.purge(&PurgeFilter::default()), 2);
        assert_eq!(cache.stats().urls, 0);
    }
}
