//! Forwarding one routed request to its cluster, in named phases:
//!
//! 1. **limit**: refuse a declared body above the listener's limit (413) before any upstream work;
//! 2. **pick**: the cluster's balancer chooses an endpoint (503 when none is eligible);
//! 3. **rewrite**: hop-by-hop headers out, X-Forwarded-*, Via and X-Request-Id in, Host kept or
//!    rewritten, URI in the form the upstream protocol wants;
//! 4. **exchange**: the endpoint's pool sends it; the response head must arrive within the route's
//!    timeout (504), connect and transport failures become 502 naming the endpoint;
//! 5. **respond**: hop-by-hop headers out of the response, Via in; the body streams back while the
//!    endpoint's in-flight count stays raised until the body ends.

use crate::body::{BoxError, ProxyBody};
use crate::headers::{self, X_REQUEST_ID};
use crate::limits::LimitedBody;
use crate::snapshot::{EndpointRuntime, RouteRuntime};
use bytes::Bytes;
use gatehouse_balance::{EndpointStats, PickRequest, hash_key};
use gatehouse_config::{HashOn, UpstreamProtocol};
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_observe::Label;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What the data path knows about the client connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub listener: Label,
    /// "http" or "https", for X-Forwarded-Proto.
    pub scheme: &'static str,
    /// The client's address as a header value, formatted once for all its requests.
    pub client_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(
        client: SocketAddr,
        local: SocketAddr,
        listener: Label,
        scheme: &'static str,
    ) -> Self {
        Self {
            client,
            local,
            listener,
            scheme,
            client_ip: headers::ip_value(client.ip()),
        }
    }
}

/// An upstream's response on its way to the client, and the endpoint that served it.
pub struct Forwarded {
    pub response: Response<ProxyBody>,
    pub endpoint: Label,
}

/// Per-request inputs the forwarder needs besides the request.
pub struct ForwardContext<'a> {
    pub conn: &'a ConnInfo,
    pub request_id: &'a HeaderValue,
    pub max_body_bytes: u64,
    pub clock: &'a MonotonicClock,
    /// When the request arrived (one clock read serves every phase).
    pub started: Instant,
}

/// Forwards `request` along `route`; always produces a response (errors become error responses).
pub async fn forward(
    route: &RouteRuntime,
    request: Request<ProxyBody>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    // 1. limit
    if let Some(declared) = declared_length(&request)
        && declared > ctx.max_body_bytes
    {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge {
            limit: ctx.max_body_bytes,
        }));
    }

    // 2. pick
    let cluster = &route.cluster;
    let hash = cluster
        .hash_on
        .as_ref()
        .and_then(|on| affinity_hash(on, &request, ctx.conn));
    let picked = {
        // Health-aware eligibility arrives with active health checks; until then all may serve.
        let all_eligible = |_: usize| true;
        cluster.balancer.pick(&PickRequest {
            hash,
            // Only latency-aware policies read the time; the others skip the clock read.
            now_nanos: if cluster.balancer.policy() == &gatehouse_balance::Policy::PowerOfTwoChoices
            {
                ctx.clock.now_nanos()
            } else {
                0
            },
            eligible: &all_eligible,
        })
    };
    let endpoint = picked
        .and_then(|i| cluster.endpoints.get(i))
        .ok_or_else(|| {
            ProxyError::new(ErrorKind::NoHealthyEndpoint {
                cluster: cluster.name.to_string(),
            })
        })?;

    // 3. rewrite
    let upstream_request = rewrite_request(route, endpoint, cluster.protocol, request, ctx)?;

    // 4. exchange
    let started = ctx.started;
    endpoint.stats.begin();
    let in_flight = InFlight {
        stats: Arc::clone(&endpoint.stats),
        clock: *ctx.clock,
        head_latency: None,
    };
    let response =
        match tokio::time::timeout(route.timeout, endpoint.pool.send(upstream_request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ProxyError::new(ErrorKind::UpstreamTimeout {
                    endpoint: endpoint.id.addr,
                    after: route.timeout,
                }));
            }
        };

    // 5. respond
    Ok(Forwarded {
        response: respond(response, in_flight, started.elapsed()),
        endpoint: Arc::clone(&endpoint.label),
    })
}

/// Turns the upstream's response into the client's.
fn respond(
    response: Response<ProxyBody>,
    mut in_flight: InFlight,
    head_latency: Duration,
) -> Response<ProxyBody> {
    in_flight.head_latency = Some(head_latency);
    let (mut parts, body) = response.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // hyper decoded the body as chunked; a Content-Length beside it (RFC 9112 6.3: TE wins)
        // would make the client-side encoder cut the body short.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_via(&mut parts.headers, parts.version);
    parts.version = Version::HTTP_11;
    let body = TrackedBody {
        inner: body,
        _in_flight: in_flight,
    };
    Response::from_parts(parts, body.boxed())
}

fn rewrite_request(
    route: &RouteRuntime,
    endpoint: &EndpointRuntime,
    protocol: UpstreamProtocol,
    request: Request<ProxyBody>,
    ctx: &ForwardContext<'_>,
) -> Result<Request<ProxyBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let original_host = request_host(&parts.uri, &parts.headers);
    let received_version = parts.version;

    if headers::strip_hop_by_hop(&mut parts.headers) {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers::add_forwarded(
        &mut parts.headers,
        &ctx.conn.client_ip,
        ctx.conn.scheme,
        original_host.clone(),
    );
    headers::add_via(&mut parts.headers, received_version);
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    // gatehouse answered `Expect: 100-continue` itself and streams the body as it comes; the
    // upstream must not wait to send a 100 of its own.
    parts.headers.remove(header::EXPECT);

    // An HTTP/1.0 client may send no Host; HTTP/1.1 upstreams require one, so name the endpoint.
    let host = route
        .host_rewrite
        .clone()
        .or(original_host)
        .or_else(|| HeaderValue::from_str(&endpoint.id.addr.to_string()).ok());
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
    Ok(Request::from_parts(parts, body))
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

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Hash of the request's affinity key; None when the key is absent (the balancer then picks
/// at random among eligible endpoints).
fn affinity_hash<B>(on: &HashOn, request: &Request<B>, conn: &ConnInfo) -> Option<u64> {
    match on {
        HashOn::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashOn::Cookie(name) => cookie(request.headers(), name).map(|v| hash_key(v.as_bytes())),
        HashOn::ClientIp => Some(match conn.client.ip() {
            std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
        HashOn::Path => Some(hash_key(request.uri().path().as_bytes())),
    }
}

fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Keeps an endpoint's in-flight count raised until the response body is done (or dropped):
/// least_request and p2c must see long responses and streams as load.
struct InFlight {
    stats: Arc<EndpointStats>,
    clock: MonotonicClock,
    head_latency: Option<Duration>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A request that failed before a response head still ends; its latency sample is the
        // time it took to fail, which correctly makes a failing endpoint look slow.
        let latency = self.head_latency.unwrap_or_default();
        self.stats.end(latency, self.clock.now_nanos());
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body on its way to the client, keeping the endpoint's in-flight
    /// count raised until it ends or is dropped.
    struct TrackedBody {
        #[pin]
        inner: ProxyBody,
        _in_flight: InFlight,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = http::HeaderMap::new();
        h.insert(header::COOKIE, "a=1; session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "sess"), None);
    }

    #[test]
    fn host_comes_from_authority_then_host_header() {
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, "b.com".parse().unwrap());
        let origin_form: Uri = "/x".parse().unwrap();
        assert_eq!(request_host(&origin_form, &h).unwrap(), "b.com");
        let absolute: Uri = "http://a.com:81/x".parse().unwrap();
        assert_eq!(request_host(&absolute, &h).unwrap(), "a.com:81");
    }
}
