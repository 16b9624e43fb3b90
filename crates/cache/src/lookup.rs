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

/// Whether the request carries cache directives of its own (Cache-Control, Pragma): only then
/// is the full policy consulted; a plain request is judged by the stored freshness alone.
pub fn has_directives(request: &HeaderMap) -> bool {
    request.contains_key(header::CACHE_CONTROL) || request.contains_key(header::PRAGMA)
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
