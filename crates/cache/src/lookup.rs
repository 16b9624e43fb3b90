//! Choosing a stored variant for a request and what to do with it, without I/O.

use crate::entry::{Stored, Variants};
use crate::policy::RequestView;
use http::header::{self, HeaderMap};
use http::{Method, Uri};
use http_cache_semantics::BeforeRequest;
use std::sync::Arc;
use std::time::Instant;

/// What the cache can do for a request.
pub enum Lookup {
    /// Serve it: fresh, or stale within what the request's `max-stale` accepts.
    Fresh(Arc<Stored>),
    /// Stale within `stale-while-revalidate`: serve it now and revalidate in the background.
    StaleWhileRevalidate(Arc<Stored>),
    /// Ask the origin first (If-None-Match / If-Modified-Since from the stored validators);
    /// `stale-if-error` may still serve it when the origin fails.
    Revalidate(Arc<Stored>),
    /// Nothing stored matches; `vary_miss` when something is stored for the URL, but for other
    /// values of the headers it varies on.
    Miss { vary_miss: bool },
}

/// Whether the request carries cache directives of its own: only then is the full policy
/// consulted; a plain request is judged by the stored freshness alone. (`Pragma` is not one:
/// RFC 9111 5.4 deprecates it.)
pub fn has_directives(request: &HeaderMap) -> bool {
    request.contains_key(header::CACHE_CONTROL)
}

/// The decision for a GET or HEAD request arriving at `at`. The newest matching variant wins.
pub fn find(
    variants: &Variants,
    method: &Method,
    uri: &Uri,
    request: &HeaderMap,
    at: Instant,
) -> Lookup {
    let plain = !has_directives(request);
    for stored in variants.entries.iter().rev() {
        if !stored.vary_matches(request) {
            continue;
        }
        if plain {
            return if stored.is_fresh(at) {
                Lookup::Fresh(Arc::clone(stored))
            } else if stored.staleness(at) < stored.stale.while_revalidate {
                Lookup::StaleWhileRevalidate(Arc::clone(stored))
            } else {
                Lookup::Revalidate(Arc::clone(stored))
            };
        }
        let view = RequestView::new(method, uri, request);
        return match stored.policy.before_request(&view, stored.wall_time(at)) {
            BeforeRequest::Fresh(_) => Lookup::Fresh(Arc::clone(stored)),
            // The request's own directives (no-cache, max-age=0, min-fresh) ask for validation.
            BeforeRequest::Stale { .. } => Lookup::Revalidate(Arc::clone(stored)),
        };
    }
    Lookup::Miss {
        vary_miss: !variants.entries.is_empty(),
    }
}

/// Whether the request refuses to go to the origin (`only-if-cached`: 504 unless served from
/// the cache, RFC 9111 5.2.1.7).
pub fn only_if_cached(request: &HeaderMap) -> bool {
    crate::directives::has(request, "only-if-cached")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyParts;
    use crate::store::tests::stored;
    use std::time::Duration;

    const KEY: KeyParts<'static> = KeyParts {
        route: "r",
        host: "h",
        target: "/x",
    };

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn decide(variants: &Variants, request: &HeaderMap, after: Duration) -> &'static str {
        let at = variants.entries[0].received_at + after;
        let uri: Uri = "/x".parse().unwrap();
        match find(variants, &Method::GET, &uri, request, at) {
            Lookup::Fresh(_) => "fresh",
            Lookup::StaleWhileRevalidate(_) => "swr",
            Lookup::Revalidate(_) => "revalidate",
            Lookup::Miss { vary_miss: true } => "vary-miss",
            Lookup::Miss { vary_miss: false } => "miss",
        }
    }

    #[test]
    fn freshness_then_stale_while_revalidate_then_revalidation() {
        let mut entry = stored(&KEY, b"x", &[]);
        entry.stale.while_revalidate = Duration::from_secs(30);
        let variants = Variants {
            entries: vec![Arc::new(entry)],
        };
        let plain = HeaderMap::new();
        assert_eq!(decide(&variants, &plain, Duration::from_secs(59)), "fresh");
        assert_eq!(decide(&variants, &plain, Duration::from_secs(61)), "swr");
        assert_eq!(
            decide(&variants, &plain, Duration::from_secs(95)),
            "revalidate"
        );
        // The client's own directives go through the policy.
        let no_cache = headers(&[("cache-control", "no-cache")]);
        assert_eq!(decide(&variants, &no_cache, Duration::ZERO), "revalidate");
        let max_age = headers(&[("cache-control", "max-age=10")]);
        assert_eq!(decide(&variants, &max_age, Duration::from_secs(5)), "fresh");
        assert_eq!(
            decide(&variants, &max_age, Duration::from_secs(20)),
            "revalidate"
        );
        let max_stale = headers(&[("cache-control", "max-stale=120")]);
        assert_eq!(
            decide(&variants, &max_stale, Duration::from_secs(100)),
            "fresh"
        );
        assert!(only_if_cached(&headers(&[(
            "cache-control",
            "only-if-cached"
        )])));
    }

    #[test]
    fn vary_selects_the_variant() {
        let variants = Variants {
            entries: vec![Arc::new(stored(
                &KEY,
                b"gz",
                &[("accept-encoding", "gzip")],
            ))],
        };
        let gzip = headers(&[("accept-encoding", "gzip")]);
        let br = headers(&[("accept-encoding", "br")]);
        assert_eq!(decide(&variants, &gzip, Duration::ZERO), "fresh");
        assert_eq!(decide(&variants, &br, Duration::ZERO), "vary-miss");
        assert_eq!(
            decide(&variants, &HeaderMap::new(), Duration::ZERO),
            "vary-miss"
        );
        let uri: Uri = "/x".parse().unwrap();
        let nothing = find(
            &Variants::default(),
            &Method::GET,
            &uri,
            &gzip,
            Instant::now(),
        );
        assert!(matches!(nothing, Lookup::Miss { vary_miss: false }));
    }
}
