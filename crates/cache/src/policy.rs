//! The bridge to `http-cache-semantics`, which owns the RFC 9111 rules for storing and
//! freshness (shared-cache mode: `s-maxage`, `private`, `Authorization`, heuristics from
//! Last-Modified, `immutable`, `Expires`, `Age`), and the gatehouse rules added on top.
//!
//! Requests are shown to it through [`RequestView`]: the target is compared as path and query
//! (HTTP/2 clients send an absolute URI, HTTP/1.1 clients origin-form; the host is in the cache
//! key already), and HEAD is shown as GET, since a stored GET answers a HEAD.

use crate::directives;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike, ResponseLike};
use std::time::SystemTime;

/// A request as the policy sees it.
pub struct RequestView<'a> {
    method: Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub fn new(method: &Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        Self {
            method,
            uri,
            headers,
        }
    }
}

fn target(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

impl RequestLike for RequestView<'_> {
    fn uri(&self) -> Uri {
        self.uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        target(self.uri) == target(other)
    }
    fn method(&self) -> &Method {
        &self.method
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// A response head as the policy sees it.
pub struct ResponseView<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
}

impl ResponseLike for ResponseView<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The response head as the policy should read it, when it differs: `http-cache-semantics`
/// matches directive names with their case, parses `Expires` only in the IMF-fixdate form,
/// reads `Age` only when it is all digits and takes a response's `Pragma: no-cache` as
/// `no-cache`; RFC 9111 says directive names are case-insensitive (5.2), a cache must accept
/// the obsolete date forms (RFC 9110 5.6.7: RFC 850, asctime), `Age` is its leading digits
/// (5.1) and `Pragma` means nothing in a response (5.4). None: use the head as it is.
pub fn normalized(response: &HeaderMap) -> Option<HeaderMap> {
    let upper_directives = response
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.as_bytes().iter().any(u8::is_ascii_uppercase));
    let expires = response
        .get(header::EXPIRES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(httpdate::fmt_http_date)
        .filter(|fixed| {
            response
                .get(header::EXPIRES)
                .is_some_and(|v| v != fixed.as_str())
        });
    let age = response
        .get(header::AGE)
        .map(|v| v.as_bytes())
        .filter(|v| !v.iter().all(u8::is_ascii_digit))
        .map(|v| {
            let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
            v[..digits].to_vec()
        });
    let pragma = response.contains_key(header::PRAGMA);
    if !upper_directives && expires.is_none() && age.is_none() && !pragma {
        return None;
    }
    let mut headers = response.clone();
    headers.remove(header::PRAGMA);
    match age.as_deref().map(HeaderValue::from_bytes) {
        // No leading digits: not an Age at all.
        Some(Ok(digits)) if !digits.is_empty() => {
            headers.insert(header::AGE, digits);
        }
        Some(_) => {
            headers.remove(header::AGE);
        }
        None => {}
    }
    if upper_directives {
        let lowered: Vec<HeaderValue> = response
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(&v.as_bytes().to_ascii_lowercase()).ok())
            .collect();
        headers.remove(header::CACHE_CONTROL);
        for value in lowered {
            headers.append(header::CACHE_CONTROL, value);
        }
    }
    if let Some(fixed) = expires.and_then(|f| HeaderValue::from_str(&f).ok()) {
        headers.insert(header::EXPIRES, fixed);
    }
    Some(headers)
}

/// The policy of a response received at `now`, judged as a shared cache.
pub fn policy(
    request: &RequestView<'_>,
    response: &ResponseView<'_>,
    now: SystemTime,
) -> CachePolicy {
    CachePolicy::new_options(
        request,
        response,
        now,
        CacheOptions {
            shared: true,
            ..CacheOptions::default()
        },
    )
}

/// The stored response's policy updated by a 304 from the origin, or None when the 304 does
/// not select the stored response (its validators differ: the 304 answers validators the
/// client sent itself, and goes to the client as it is).
pub fn confirmed(
    stored: &CachePolicy,
    request: &RequestView<'_>,
    not_modified: &ResponseView<'_>,
    now: SystemTime,
) -> Option<CachePolicy> {
    match stored.after_response(request, not_modified, now) {
        http_cache_semantics::AfterResponse::NotModified(policy, _) => Some(policy),
        http_cache_semantics::AfterResponse::Modified(..) => None,
    }
}

/// Why a response is not stored (for logs and the `Cache-Status` detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Only GET responses are stored (HEAD answers carry no body to store).
    Method,
    /// RFC 9111 says no: no-store, private, Authorization without public/s-maxage, a status it
    /// does not understand, no freshness information for a status not cacheable by default.
    Policy,
    SetCookie,
    /// `Vary: *` never matches a later request.
    VaryStar,
    /// Never fresh and no validator to revalidate with: storing it would gain nothing.
    Useless,
}

/// Whether gatehouse stores this response: the policy's verdict plus the gatehouse rules.
pub fn storable(
    policy: &CachePolicy,
    method: &Method,
    response: &HeaderMap,
    now: SystemTime,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if !policy.is_storable() {
        return Err(NotStored::Policy);
    }
    if directives::sets_cookie(response) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(response).any(|n| n == "*") {
        return Err(NotStored::VaryStar);
    }
    let validator =
        response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED);
    if policy.time_to_live(now).is_zero() && !validator {
        return Err(NotStored::Useless);
    }
    Ok(())
}

fn vary_names(response: &HeaderMap) -> impl Iterator<Item = &str> {
    response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// The request's values of the headers the response varies on: a later request matches this
/// variant when its values are the same (an absent header matches only an absent one).
pub fn vary_values(
    response: &HeaderMap,
    request: &HeaderMap,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    vary_names(response)
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .map(|name| {
            let value = request.get(&name).cloned();
            (name, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn judge(
        req: &[(&'static str, &'static str)],
        status: u16,
        res: &[(&'static str, &'static str)],
    ) -> Result<(), NotStored> {
        let now = SystemTime::now();
        let uri: Uri = "/x".parse().unwrap();
        let req = headers(req);
        let res = headers(res);
        let view = RequestView::new(&Method::GET, &uri, &req);
        let p = policy(
            &view,
            &ResponseView {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &res,
            },
            now,
        );
        storable(&p, &Method::GET, &res, now)
    }

    #[test]
    fn directive_case_and_old_date_forms_are_normalized() {
        let h = headers(&[
            ("cache-control", "MAX-AGE=60"),
            ("expires", "Sunday, 06-Nov-94 08:49:37 GMT"),
        ]);
        let n = normalized(&h).unwrap();
        assert_eq!(n["cache-control"], "max-age=60");
        assert_eq!(n["expires"], "Sun, 06 Nov 1994 08:49:37 GMT");
        let asctime = headers(&[("expires", "Sun Nov  6 08:49:37 1994")]);
        assert_eq!(
            normalized(&asctime).unwrap()["expires"],
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert!(
            normalized(&headers(&[
                ("cache-control", "max-age=1"),
                ("expires", "0")
            ]))
            .is_none()
        );
    }

    #[test]
    fn what_is_stored() {
        assert_eq!(judge(&[], 200, &[("cache-control", "max-age=60")]), Ok(()));
        assert_eq!(judge(&[], 200, &[("cache-control", "s-maxage=60")]), Ok(()));
        // Revalidated every time, but a 304 saves the body.
        assert_eq!(
            judge(
                &[],
                200,
                &[("cache-control", "no-cache"), ("etag", "\"a\"")]
            ),
            Ok(())
        );
        assert_eq!(
            judge(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::Policy)
        );
        assert_eq!(
            judge(&[], 200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Policy)
        );
        assert_eq!(
            judge(
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(NotStored::Policy)
        );
        assert_eq!(
            judge(
                &[("authorization", "Bearer x")],
                200,
                &[("cache-control", "public, max-age=60")]
            ),
            Ok(())
        );
        assert_eq!(
            judge(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(NotStored::Policy)
        );
        assert_eq!(
            judge(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            judge(&[], 200, &[("cache-control", "max-age=60"), ("vary", "*")]),
            Err(NotStored::VaryStar)
        );
        // 200 without freshness or validators: nothing to gain.
        assert_eq!(judge(&[], 200, &[]), Err(NotStored::Useless));
        // 302 is not cacheable by default.
        assert_eq!(
            judge(&[], 302, &[("etag", "\"a\"")]),
            Err(NotStored::Policy)
        );
    }

    #[test]
    fn heuristic_freshness_from_last_modified() {
        let now = SystemTime::now();
        let uri: Uri = "/x".parse().unwrap();
        let req = HeaderMap::new();
        let ten_days_ago = httpdate::fmt_http_date(now - Duration::from_secs(10 * 86_400));
        let date = httpdate::fmt_http_date(now);
        let mut res = HeaderMap::new();
        res.insert("last-modified", ten_days_ago.parse().unwrap());
        res.insert("date", date.parse().unwrap());
        let p = policy(
            &RequestView::new(&Method::GET, &uri, &req),
            &ResponseView {
                status: StatusCode::OK,
                headers: &res,
            },
            now,
        );
        // 10% of the time since the last change: about a day.
        let ttl = p.time_to_live(now).as_secs();
        assert!((86_000..=86_500).contains(&ttl), "{ttl}");
    }

    #[test]
    fn head_is_seen_as_get_and_targets_as_path_and_query() {
        let req = HeaderMap::new();
        let absolute: Uri = "http://a.example/x?y".parse().unwrap();
        let origin: Uri = "/x?y".parse().unwrap();
        let view = RequestView::new(&Method::HEAD, &absolute, &req);
        assert_eq!(view.method(), Method::GET);
        assert!(view.is_same_uri(&origin));
        assert_eq!(view.uri(), origin);
    }

    #[test]
    fn vary_values_record_the_request() {
        let res = headers(&[("vary", "Accept-Encoding, x-Tenant")]);
        let req = headers(&[("accept-encoding", "gzip")]);
        let values = vary_values(&res, &req);
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].1.as_ref().unwrap(), "gzip");
        assert_eq!(values[1].0, "x-tenant");
        assert!(values[1].1.is_none());
    }
}
