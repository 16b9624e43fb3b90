//! The cache rules `http-cache-semantics` leaves to its user, as pure functions of headers:
//! RFC 5861's `stale-while-revalidate` and `stale-if-error`, the Set-Cookie rule, and whether a
//! client's own conditional request (`If-None-Match`, `If-Modified-Since`) is satisfied by a
//! stored response (RFC 9110 13.1, 13.2.2).

use http::header::{self, HeaderMap};
use std::time::{Duration, SystemTime};

/// A `Cache-Control` directive's value in seconds (`name=N` or `name="N"`), from every
/// Cache-Control field.
pub fn seconds(headers: &HeaderMap, name: &str) -> Option<Duration> {
    directives(headers).find_map(|(k, v)| {
        if !k.eq_ignore_ascii_case(name) {
            return None;
        }
        v?.trim_matches('"').parse().ok().map(Duration::from_secs)
    })
}

/// Whether a `Cache-Control` directive is present (with or without a value).
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (d, None),
            })
        })
}

/// How long past freshness a stored response may still be used, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleAllowance {
    /// Served at once while one background request revalidates it.
    pub while_revalidate: Duration,
    /// Served when the origin answers 5xx or cannot be reached.
    pub if_error: Duration,
}

/// How long past freshness a stale copy answers for an origin that fails, when the response
/// allows stale use but names no `stale-if-error` (RFC 9111 4.2.4 lets a cache serve stale
/// when the origin cannot be reached; Varnish's default grace is the same 10 s).
pub const ERROR_GRACE: Duration = Duration::from_secs(10);

impl StaleAllowance {
    /// From the stored response's headers. `must-revalidate`, `proxy-revalidate`, `no-cache`
    /// and (for a shared cache) `s-maxage` forbid any stale use (RFC 9111 5.2.2.2, 5.2.2.4,
    /// 5.2.2.8, 5.2.2.10).
    pub fn of(response: &HeaderMap) -> Self {
        if has(response, "must-revalidate")
            || has(response, "proxy-revalidate")
            || has(response, "no-cache")
            || has(response, "s-maxage")
        {
            return Self::default();
        }
        Self {
            while_revalidate: seconds(response, "stale-while-revalidate").unwrap_or_default(),
            if_error: seconds(response, "stale-if-error").unwrap_or(ERROR_GRACE),
        }
    }
}

/// The Set-Cookie rule: a response that sets a cookie is never stored. A shared cache would
/// hand one client's session to the next; RFC 9111 7.3 allows storing it, but (as Varnish's
/// built-in rules do) gatehouse passes such responses through. See docs/cache.md.
pub fn sets_cookie(response: &HeaderMap) -> bool {
    response.contains_key(header::SET_COOKIE)
}

/// Whether the client's conditional request is answered with 304 by a stored response with
/// these headers. `If-None-Match` takes precedence; `If-Modified-Since` counts only without it.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || weak_eq(tag, etag)
            });
    }
    let (Some(since), Some(modified)) = (
        date(request, header::IF_MODIFIED_SINCE),
        date(stored, header::LAST_MODIFIED),
    ) else {
        return false;
    };
    modified <= since
}

/// Weak comparison of entity tags (RFC 9110 8.8.3.2): equal once `W/` is dropped.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim().trim_start_matches("W/")
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(headers.get(name)?.to_str().ok()?).ok()
}

/// The methods after whose success a cache must invalidate the target URI (RFC 9111 4.4):
/// every method not known to be safe.
pub fn is_unsafe(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn directive_values_come_from_every_field() {
        let h = headers(&[
            ("cache-control", "public, max-age=10"),
            (
                "cache-control",
                "stale-while-revalidate=\"30\", Stale-If-Error=60",
            ),
        ]);
        assert_eq!(seconds(&h, "max-age"), Some(Duration::from_secs(10)));
        assert_eq!(
            seconds(&h, "stale-while-revalidate"),
            Some(Duration::from_secs(30))
        );
        assert!(has(&h, "stale-if-error"));
        assert!(!has(&h, "private"));
        assert_eq!(
            StaleAllowance::of(&h),
            StaleAllowance {
                while_revalidate: Duration::from_secs(30),
                if_error: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn revalidation_directives_forbid_stale_use() {
        for cc in [
            "max-age=1, stale-while-revalidate=30, must-revalidate",
            "max-age=1, stale-if-error=30, proxy-revalidate",
            "no-cache, stale-if-error=30",
            "s-maxage=1, stale-if-error=30",
        ] {
            let h = headers(&[("cache-control", cc)]);
            assert_eq!(StaleAllowance::of(&h), StaleAllowance::default(), "{cc}");
        }
        let plain = headers(&[("cache-control", "max-age=1")]);
        assert_eq!(StaleAllowance::of(&plain).if_error, ERROR_GRACE);
    }

    #[test]
    fn conditional_requests_compare_weakly_and_by_date() {
        let stored = headers(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v0\", \"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        // If-None-Match wins over a date that would match.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 01 Jan 2031 00:00:00 GMT"),
            ]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "garbage")]),
            &stored
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
    }

    #[test]
    fn unsafe_methods() {
        assert!(is_unsafe(&http::Method::POST));
        assert!(is_unsafe(&http::Method::DELETE));
        assert!(is_unsafe(&http::Method::from_bytes(b"PURGE").unwrap()));
        assert!(!is_unsafe(&http::Method::GET));
        assert!(!is_unsafe(&http::Method::OPTIONS));
    }
}
