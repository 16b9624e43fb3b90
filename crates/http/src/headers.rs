//! Proxy header semantics (RFC 9110 section 7.6): what a proxy removes, adds and keeps.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`, `TE`,
/// `Transfer-Encoding`, `Upgrade` and all `Proxy-*` headers. `Trailer` stays: it is end-to-end
/// (RFC 9110 6.6.2) and hyper's HTTP/1 encoder only sends the trailers it lists. Returns whether the
/// client asked for trailers (`TE: trailers`), which the caller re-adds upstream: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let wants_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
            .unwrap_or(false)
    });
    // One pass over the names (cheap comparisons, no hashing) finds what to remove; most
    // requests carry none of these, so usually nothing is removed at all.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    // Names listed in Connection are hop-by-hop too.
    for value in headers.get_all(header::CONNECTION) {
        let Ok(list) = value.to_str() else { continue };
        for token in list.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes())
                && !doomed.contains(&name)
            {
                doomed.push(name);
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    wants_trailers
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name.as_str().starts_with("proxy-")
}

/// Adds X-Forwarded-For (appending the client to any existing chain), X-Forwarded-Proto and
/// X-Forwarded-Host (the Host the client asked for, before any rewrite).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    original_host: Option<HeaderValue>,
) {
    let client = client.to_string();
    let forwarded_for = match joined(headers, &X_FORWARDED_FOR) {
        Some(existing) => format!("{existing}, {client}"),
        None => client,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// Appends this hop to `Via` (RFC 9110 7.6.3), e.g. "1.1 gatehouse".
pub fn add_via(headers: &mut HeaderMap, received: Version) {
    let hop = match received {
        Version::HTTP_09 => "0.9 gatehouse",
        Version::HTTP_10 => "1.0 gatehouse",
        Version::HTTP_2 => "2 gatehouse",
        Version::HTTP_3 => "3 gatehouse",
        _ => "1.1 gatehouse",
    };
    match joined(headers, &header::VIA) {
        Some(existing) => {
            if let Ok(value) = HeaderValue::from_str(&format!("{existing}, {hop}")) {
                headers.insert(header::VIA, value);
            }
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(hop));
        }
    }
}

/// All field lines of a list-valued header joined with ", " (a client may send several lines);
/// None when absent or empty.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The request's id: the client's `X-Request-Id` when it sent a sane one, else a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 200
    {
        return v.clone();
    }
    new_request_id()
}

/// 128 random bits as 32 hex digits (written by hand: this runs for most requests).
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("proxy-foo", "1"),
            ("x-keep", "yes"),
        ]);
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        let mut h = map(&[("te", "gzip")]);
        assert!(!strip_hop_by_hop(&mut h));
    }

    #[test]
    fn forwarded_headers_append_to_the_chain() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.7")]);
        add_forwarded(
            &mut h,
            "10.0.0.1".parse().unwrap(),
            "http",
            Some("a.com".parse().unwrap()),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.com");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "::1".parse().unwrap(), "https", None);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn every_forwarded_for_line_is_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        add_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "http", None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 198.51.100.2, 10.0.0.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn trailer_is_end_to_end() {
        let mut h = map(&[("trailer", "x-checksum")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["trailer"], "x-checksum");
    }

    #[test]
    fn via_appends_a_hop() {
        let mut h = map(&[("via", "1.0 fred")]);
        add_via(&mut h, Version::HTTP_11);
        assert_eq!(h["via"], "1.0 fred, 1.1 gatehouse");
        let mut h = HeaderMap::new();
        add_via(&mut h, Version::HTTP_2);
        assert_eq!(h["via"], "2 gatehouse");
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let h = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&h), "abc");
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
