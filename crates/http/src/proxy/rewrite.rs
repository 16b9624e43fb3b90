//! The request head as the upstream gets it: hop-by-hop fields out, this hop's fields in (see
//! [`ProxyFields`]), Host kept or rewritten, the target in the form the upstream protocol
//! wants, and the body under the listener's limit.

use super::ForwardContext;
use crate::body::ProxyBody;
use crate::headers::{self, Hop, ProxyFields, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use crate::limits::LimitedBody;
use crate::snapshot::RouteRuntime;
use crate::upgrade::{ExtendedConnect, UpgradeRequested};
use gatehouse_config::UpstreamProtocol;
use gatehouse_core::{ErrorKind, ProxyError};
use http::header::{self, HeaderValue};
use http::{Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;

/// Rewrites the client's request head for the upstream, in place, and returns the body to send
/// (limited) and the fields this hop adds, which travel beside the head's map (see
/// [`ProxyFields`]).
pub(super) fn rewrite_request(
    route: &RouteRuntime,
    protocol: UpstreamProtocol,
    parts: &mut http::request::Parts,
    body: ProxyBody,
    ctx: &ForwardContext<'_>,
) -> Result<(ProxyBody, ProxyFields), ProxyError> {
    let original_host = request_host(&parts.uri, &parts.headers);
    let present = headers::scan(&parts.headers);
    // The Host field already says it unless the host came from the target (absolute-form, an
    // HTTP/2 client) or the route rewrites it; an HTTP/2 upstream takes it as :authority. A
    // `Connection` field may name Host, and the strip below would take it: put it back then.
    let host_kept = route.host_rewrite.is_none()
        && parts.uri.authority().is_none()
        && protocol == UpstreamProtocol::Http1
        && !present.hop_by_hop;
    let host = if host_kept {
        None
    } else {
        route.host_rewrite.clone().or_else(|| original_host.clone())
    };

    if headers::strip_found_hop_by_hop(&mut parts.headers, &present) {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let fields = ProxyFields::take(
        &mut parts.headers,
        &present,
        Hop {
            client: &ctx.conn.client_ip,
            proto: ctx.conn.scheme,
            original_host,
            received: parts.version,
            request_id: ctx.request_id,
        },
        route.forward_headers,
    );
    if let Some(name) = &route.client_cert_header {
        // Only gatehouse may set it: a client's own value would be a forged identity.
        parts.headers.remove(name);
        if let Some(subject) = &ctx.conn.client_cert {
            parts.headers.insert(name.clone(), subject.clone());
        }
    }
    // gatehouse answered `Expect: 100-continue` itself and streams the body as it comes; the
    // upstream must not wait to send a 100 of its own.
    if present.expect {
        parts.headers.remove(header::EXPECT);
    }
    // An upgrade (WebSocket) asks the next hop again: the headers that carry it are hop-by-hop.
    // HTTP/2 upstreams get a plain request (this proxy does not map upgrades onto HTTP/2).
    if let Some(upgrade) = parts.extensions.get::<UpgradeRequested>() {
        if protocol == UpstreamProtocol::Http1 {
            let protocol = upgrade.protocol.clone();
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
            if parts.extensions.get::<ExtendedConnect>().is_some() {
                // An HTTP/2 client sends no handshake key (RFC 8441 §5): this hop makes one.
                parts
                    .headers
                    .insert(SEC_WEBSOCKET_KEY.clone(), headers::websocket_key());
                parts
                    .headers
                    .entry(SEC_WEBSOCKET_VERSION.clone())
                    .or_insert(HeaderValue::from_static("13"));
            }
        } else {
            parts.extensions.remove::<UpgradeRequested>();
        }
    }

    // Without any host (an HTTP/1.0 client), each try names its endpoint.
    match protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            // HTTP/1.1 upstreams get origin-form; an absolute-form or HTTP/2 target is cut
            // down to its path and query (a shared slice, not a copy).
            if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
                parts.uri = parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
            }
            if let Some(host) = host {
                parts.headers.insert(header::HOST, host);
            }
        }
        UpstreamProtocol::H2 => {
            // HTTP/2 carries the host as :authority; a Host header beside it is redundant.
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            let authority = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_owned();
            let path_and_query = parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned();
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .map_err(bad_request)?;
        }
    }
    // A body that is already over needs no limit (and no second box).
    let body = if body.is_end_stream() {
        body
    } else {
        LimitedBody::new(body, ctx.max_body_bytes).boxed()
    };
    Ok((body, fields))
}

fn bad_request(err: impl std::fmt::Display) -> ProxyError {
    ProxyError::new(ErrorKind::BadRequest {
        reason: err.to_string(),
    })
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute-form) or Host.
pub fn request_host(uri: &Uri, headers: &http::HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

/// [`request_host`] borrowed, as text (for routing: no value to make).
pub fn request_host_str<'r>(uri: &'r Uri, headers: &'r http::HeaderMap) -> Option<&'r str> {
    match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => headers.get(header::HOST)?.to_str().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_comes_from_authority_then_host_header() {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, "b.com".parse().unwrap());
        let origin_form: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin_form, &h).unwrap(), "b.com");
        let absolute: Uri = "http://a.com:81/x".parse().unwrap();
        assert_eq!(request_host(&absolute, &h).unwrap(), "a.com:81");
        assert_eq!(request_host_str(&origin_form, &h), Some("b.com"));
        assert_eq!(request_host_str(&absolute, &h), Some("a.com:81"));
    }
}
