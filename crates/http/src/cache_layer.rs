//! The shared HTTP cache on a route's forward path (the rules live in `gatehouse_cache`).
//!
//! For a route with `[routes.cache]`, [`forward`] runs after fault injection and before the
//! origin phases (breaker, pick, exchange):
//!
//! - **unsafe methods** go to the origin; a non-error answer invalidates the URL and the
//!   same-host `Location` / `Content-Location` (RFC 9111 4.4);
//! - **GET / HEAD** look up the URL's stored variants:
//!   - *fresh*: answered from the store (no pick, no upstream), 304 when the client's own
//!     `If-None-Match` / `If-Modified-Since` matches;
//!   - *stale within stale-while-revalidate*: answered at once; one background request
//!     revalidates;
//!   - *stale*: revalidated with the stored validators; a 304 refreshes the entry and the
//!     stored body is served; an origin failure within `stale-if-error` serves the stale copy;
//!   - *miss*: concurrent misses for the URL collapse into one upstream request; a storable
//!     answer streams to its client while it is recorded, and the waiters are served from the
//!     store once it is complete.
//!
//! Every answer carries `Cache-Status` (RFC 9211) and counts in `gatehouse_cache_requests`.

use crate::body::{self, ProxyBody};
use crate::proxy::{self, ForwardContext, Forwarded};
use crate::snapshot::RouteRuntime;
use gatehouse_cache::coalesce::{Join, Leader};
use gatehouse_cache::policy::{self, RequestView, ResponseView};
use gatehouse_cache::record::{Pending, record};
use gatehouse_cache::{
    HttpCache, KeyParts, Lookup, Outcome, Stored, StoredKey, directives, lookup, status,
};
use gatehouse_core::ProxyError;
use gatehouse_observe::{CacheLabels, Counter, Label, Metrics, RouteLabels};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A route's handle on the shared cache, built once per snapshot.
pub struct RouteCache {
    pub store: Arc<HttpCache>,
    pub max_object_size: usize,
    /// `gatehouse_cache_requests` by [`Outcome`], resolved once (not per request).
    counters: [Counter; 5],
    /// The endpoint label of answers from the store.
    store_label: Label,
}

impl RouteCache {
    pub fn new(
        store: Arc<HttpCache>,
        settings: gatehouse_config::RouteCache,
        labels: &RouteLabels,
        metrics: &Metrics,
    ) -> Self {
        let counters = Outcome::ALL.map(|outcome| {
            metrics
                .cache_requests
                .get_or_create(&CacheLabels {
                    route: Arc::clone(&labels.route),
                    result: outcome.as_str(),
                })
                .clone()
        });
        Self {
            store,
            max_object_size: usize::try_from(settings.max_object_size).unwrap_or(usize::MAX),
            counters,
            store_label: gatehouse_observe::label("cache"),
        }
    }

    fn count(&self, outcome: Outcome) {
        self.counters[outcome.index()].inc();
    }
}

/// Forwards `request` along a cached route.
pub async fn forward(
    route: &RouteRuntime,
    cache: &RouteCache,
    mut request: Request<ProxyBody>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    let method = request.method().clone();
    // An upgrade (WebSocket) is a connection, not a representation: never looked up, stored
    // or coalesced with another client's.
    let upgrade = request
        .extensions()
        .get::<crate::upgrade::UpgradeRequested>()
        .is_some();
    if (method != Method::GET && method != Method::HEAD) || upgrade {
        return bypass(route, cache, request, ctx).await;
    }
    // HTTP/2 names the host in the URI; a Host field makes the stored request comparable
    // with HTTP/1.1 ones (the policy compares it).
    if !request.headers().contains_key(header::HOST)
        && let Some(host) = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    let host = host_of(request.headers());
    let key = KeyParts {
        route: &route.name,
        host,
        target: target_of(request.uri()),
    };
    let hash = cache.store.hash(&key);
    let found =
        cache
            .store
            .lookup(hash, &key)
            .map_or(Lookup::Miss { vary_miss: false }, |variants| {
                lookup::find(
                    &variants,
                    &method,
                    request.uri(),
                    request.headers(),
                    ctx.started,
                )
            });
    match found {
        Lookup::Fresh(stored) => Ok(hit(
            cache,
            &stored,
            &request,
            ctx,
            &status::HIT,
            Outcome::Hit,
        )),
        Lookup::StaleWhileRevalidate(stored) => {
            if let Join::Leader(leader) = cache.store.join(hash) {
                background_revalidation(route, &request, Arc::clone(&stored), hash, leader, ctx);
            }
            Ok(hit(
                cache,
                &stored,
                &request,
                ctx,
                &status::HIT_STALE_WHILE_REVALIDATE,
                Outcome::Stale,
            ))
        }
        Lookup::Revalidate(stored) => {
            if lookup::only_if_cached(request.headers()) {
                return Ok(not_cached(cache, ctx));
            }
            let stored_key = key.to_stored();
            let leader = match coalesce(route, cache, &request, hash, &key, ctx).await {
                Ok(leader) => leader,
                Err(answer) => return Ok(answer),
            };
            revalidate(route, cache, request, stored, hash, stored_key, leader, ctx).await
        }
        Lookup::Miss { vary_miss } => {
            if lookup::only_if_cached(request.headers()) {
                return Ok(not_cached(cache, ctx));
            }
            let stored_key = key.to_stored();
            let leader = if method == Method::GET && !directives::has(request.headers(), "no-store")
            {
                match coalesce(route, cache, &request, hash, &key, ctx).await {
                    Ok(leader) => leader,
                    Err(answer) => return Ok(answer),
                }
            } else {
                None
            };
            let fwd = if vary_miss { "vary-miss" } else { "miss" };
            let client = ClientRequest::of(&request);
            let forwarded = proxy::forward_origin(route, Box::new(request), ctx).await?;
            cache.count(Outcome::Miss);
            Ok(store_answer(
                cache, forwarded, &client, hash, stored_key, leader, fwd,
            ))
        }
    }
}

/// Non-GET/HEAD requests: to the origin; a successful unsafe method invalidates.
async fn bypass(
    route: &RouteRuntime,
    cache: &RouteCache,
    request: Request<ProxyBody>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    cache.count(Outcome::Bypass);
    let invalidates = directives::is_unsafe(request.method());
    // Owned copies: the request moves to the origin (unsafe methods are not the hot path).
    let host = invalidates.then(|| host_of(request.headers()).to_owned());
    let target = target_of(request.uri()).to_owned();
    let mut forwarded = proxy::forward_origin(route, Box::new(request), ctx).await?;
    if let Some(host) = host {
        let status = forwarded.response.status();
        // RFC 9111 4.4: after a non-error response.
        if status.is_success() || status.is_redirection() {
            let invalidate = |target: &str| {
                let key = KeyParts {
                    route: &route.name,
                    host: &host,
                    target,
                };
                cache.store.invalidate(cache.store.hash(&key), &key);
            };
            invalidate(&target);
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(other) = forwarded
                    .response
                    .headers()
                    .get(name)
                    .and_then(|v| same_host_target(v, &host))
                {
                    invalidate(&other);
                }
            }
        }
    }
    forwarded.response.headers_mut().insert(
        status::CACHE_STATUS.clone(),
        status::forwarded("method", None, false, None),
    );
    Ok(forwarded)
}

/// The target of a `Location`-like value when it names the same host (only those may be
/// invalidated: another host's entries are not this origin's to drop).
fn same_host_target(value: &HeaderValue, host: &str) -> Option<String> {
    let uri: Uri = value.to_str().ok()?.parse().ok()?;
    if let Some(authority) = uri.authority()
        && !authority.as_str().eq_ignore_ascii_case(host)
    {
        return None;
    }
    let target = uri.path_and_query()?.as_str();
    target.starts_with('/').then(|| target.to_owned())
}

/// Makes this request the one that asks the origin for `hash`, or waits for the one already
/// asking and answers from the store. Ok(None): ask the origin without leading (the leader's
/// answer was not stored, or it did not finish within the route's timeout).
async fn coalesce(
    route: &RouteRuntime,
    cache: &RouteCache,
    request: &Request<ProxyBody>,
    hash: u64,
    key: &KeyParts<'_>,
    ctx: &ForwardContext<'_>,
) -> Result<Option<Leader>, Forwarded> {
    let follower = match cache.store.join(hash) {
        Join::Leader(leader) => return Ok(Some(leader)),
        Join::Follower(follower) => follower,
    };
    let deadline = tokio::time::Instant::from_std(ctx.started + route.timeout);
    if tokio::time::timeout_at(deadline, follower.wait())
        .await
        .is_ok()
        && let Some(variants) = cache.store.lookup(hash, key)
        && let Lookup::Fresh(stored) = lookup::find(
            &variants,
            request.method(),
            request.uri(),
            request.headers(),
            Instant::now(),
        )
    {
        return Err(hit(
            cache,
            &stored,
            request,
            ctx,
            &status::HIT_COALESCED,
            Outcome::Hit,
        ));
    }
    Ok(None)
}

/// Asks the origin whether `stored` is still good, with its validators.
#[allow(clippy::too_many_arguments)]
async fn revalidate(
    route: &RouteRuntime,
    cache: &RouteCache,
    mut request: Request<ProxyBody>,
    stored: Arc<Stored>,
    hash: u64,
    key: StoredKey,
    leader: Option<Leader>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    let client = ClientRequest::of(&request);
    add_validators(request.headers_mut(), &stored.headers);
    let answer = proxy::forward_origin(route, Box::new(request), ctx).await;
    let origin_failed = match &answer {
        Ok(forwarded) => forwarded.response.status().is_server_error(),
        Err(_) => true,
    };
    let now = Instant::now();
    if origin_failed && stored.staleness(now) <= stored.stale.if_error {
        // RFC 5861: the stale copy beats an error while stale-if-error allows it.
        let fwd_status = answer.as_ref().ok().map(|f| f.response.status().as_u16());
        let value = status::forwarded("stale", fwd_status, false, Some("stale-if-error"));
        return Ok(hit(
            cache,
            &stored,
            &client.as_request(),
            ctx,
            &value,
            Outcome::Stale,
        ));
    }
    let forwarded = answer?;
    if forwarded.response.status() != StatusCode::NOT_MODIFIED {
        cache.count(Outcome::Miss);
        return Ok(store_answer(
            cache, forwarded, &client, hash, key, leader, "stale",
        ));
    }
    let view = RequestView::new(&client.method, &client.uri, &client.headers);
    let received = SystemTime::now();
    let answered = forwarded.response.headers();
    let normalized = policy::normalized(answered);
    let answered = normalized.as_ref().unwrap_or(answered);
    let confirm = |headers: &HeaderMap| {
        policy::confirmed(
            &stored.policy,
            &view,
            &ResponseView {
                status: StatusCode::NOT_MODIFIED,
                headers,
            },
            received,
        )
    };
    let mut confirmed = confirm(answered);
    if confirmed.is_none() && !client.conditional() {
        // Only the stored validators went out, so the 304 can only be about the stored
        // response, even when it repeats no validator or names a changed one.
        let mut as_stored = answered.clone();
        for name in [header::ETAG, header::LAST_MODIFIED] {
            match stored.headers.get(&name) {
                Some(value) => as_stored.insert(name, value.clone()),
                None => as_stored.remove(name),
            };
        }
        confirmed = confirm(&as_stored);
    }
    let Some(policy) = confirmed else {
        // The 304 answers the client's own validators: it goes to the client as it is.
        cache.count(Outcome::Miss);
        return Ok(with_status(
            forwarded,
            status::forwarded("stale", Some(304), false, None),
        ));
    };
    let refreshed = Arc::new(stored.refreshed(policy, forwarded.response.headers(), received, now));
    cache.store.insert(hash, Arc::clone(&refreshed));
    drop(leader);
    let value = status::forwarded("stale", Some(304), false, None);
    Ok(hit(
        cache,
        &refreshed,
        &client.as_request(),
        ctx,
        &value,
        Outcome::Revalidated,
    ))
}

/// One revalidation in the background while the stale copy is served
/// (stale-while-revalidate). It holds the key's coalescing slot, so there is one at a time.
fn background_revalidation(
    route: &RouteRuntime,
    request: &Request<ProxyBody>,
    stored: Arc<Stored>,
    hash: u64,
    leader: Leader,
    ctx: &ForwardContext<'_>,
) {
    let Some(index) = ctx
        .snapshot
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
    else {
        return;
    };
    let snapshot = Arc::clone(ctx.snapshot);
    let shared = Arc::clone(ctx.shared);
    let conn = ctx.conn.clone();
    let client = ctx.client;
    let request_id = ctx.request_id.clone();
    let max_body_bytes = ctx.max_body_bytes;
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(request.uri().clone())
        .version(request.version());
    if let Some(headers) = builder.headers_mut() {
        *headers = request.headers().clone();
        // The client's own validators belong to its answer (already sent), not to ours.
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
    }
    let Ok(revalidation) = builder.body(body::empty()) else {
        return;
    };
    tokio::spawn(async move {
        let route = &snapshot.routes[index];
        let Some(cache) = &route.cache else { return };
        let started = Instant::now();
        let ctx = ForwardContext {
            conn: &conn,
            client,
            request_id: &request_id,
            max_body_bytes,
            clock: &shared.clock,
            started,
            started_nanos: shared.clock.nanos_at(started),
            deadline_header: snapshot.deadline_header.as_ref(),
            metrics: &shared.metrics,
            idempotency: &shared.idempotency,
            hedges: &shared.hedges,
            snapshot: &snapshot,
            shared: &shared,
        };
        let key = stored.key.clone();
        let answer = revalidate(
            route,
            cache,
            revalidation,
            stored,
            hash,
            key,
            Some(leader),
            &ctx,
        )
        .await;
        // Drain the body (recording it, when storable) without keeping it here.
        if let Ok(forwarded) = answer {
            let mut body = forwarded.response.into_body();
            while let Some(Ok(_)) = body.frame().await {}
        }
    });
}

/// The origin's answer to a miss or a failed revalidation: stored when the rules allow,
/// recorded while it streams to the client.
fn store_answer(
    cache: &RouteCache,
    forwarded: Forwarded,
    client: &ClientRequest,
    hash: u64,
    key: StoredKey,
    leader: Option<Leader>,
    fwd: &str,
) -> Forwarded {
    let Forwarded {
        response,
        endpoint,
        head_latency,
    } = forwarded;
    let (mut parts, body) = response.into_parts();
    let code = parts.status.as_u16();
    let received = SystemTime::now();
    let view = RequestView::new(&client.method, &client.uri, &client.headers);
    let normalized = policy::normalized(&parts.headers);
    let policy = policy::policy(
        &view,
        &ResponseView {
            status: parts.status,
            headers: normalized.as_ref().unwrap_or(&parts.headers),
        },
        received,
    );
    let too_large = crate::headers::content_length(&parts.headers)
        .is_some_and(|n| n > cache.max_object_size as u64);
    let storable =
        policy::storable(&policy, &client.method, &parts.headers, received).is_ok() && !too_large;
    let body = if storable {
        // The store must see every byte: none may be spliced past it.
        crate::splice::strip(&mut parts.extensions);
        let pending = Pending {
            key,
            hash,
            status: parts.status,
            headers: parts.headers.clone(),
            vary: policy::vary_values(&parts.headers, &client.headers),
            policy,
            received,
            received_at: Instant::now(),
            request_header_bytes: Pending::request_bytes(&client.headers),
        };
        record(
            body,
            Arc::clone(&cache.store),
            pending,
            cache.max_object_size,
            leader,
        )
        .boxed()
    } else {
        // `leader` drops here: waiters go to the origin themselves.
        body
    };
    parts.headers.insert(
        status::CACHE_STATUS.clone(),
        status::forwarded(fwd, Some(code), storable, None),
    );
    Forwarded {
        response: Response::from_parts(parts, body),
        endpoint,
        head_latency,
    }
}

/// An answer from the store: the stored head with Age, or 304 when the client's validators
/// match.
fn hit(
    cache: &RouteCache,
    stored: &Stored,
    request: &Request<ProxyBody>,
    ctx: &ForwardContext<'_>,
    cache_status: &HeaderValue,
    outcome: Outcome,
) -> Forwarded {
    cache.count(outcome);
    let mut headers = stored.headers.clone();
    let age = stored.policy.age(stored.wall_time(ctx.started)).as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(status::CACHE_STATUS.clone(), cache_status.clone());
    let conditional = request.headers().contains_key(header::IF_NONE_MATCH)
        || request.headers().contains_key(header::IF_MODIFIED_SINCE);
    let mut response =
        if conditional && directives::not_modified(request.headers(), &stored.headers) {
            headers.remove(header::CONTENT_LENGTH);
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(body::full(stored.body.clone()));
            *response.status_mut() = stored.status;
            response
        };
    *response.headers_mut() = headers;
    Forwarded {
        response,
        endpoint: Arc::clone(&cache.store_label),
        head_latency: ctx.started.elapsed(),
    }
}

/// 504 for `only-if-cached` when nothing usable is stored (RFC 9111 5.2.1.7).
fn not_cached(cache: &RouteCache, ctx: &ForwardContext<'_>) -> Forwarded {
    cache.count(Outcome::Miss);
    let mut response = body::text_response(
        StatusCode::GATEWAY_TIMEOUT,
        "504 Gateway Timeout: only-if-cached, and no fresh response is stored\n".into(),
    );
    response.headers_mut().insert(
        status::CACHE_STATUS.clone(),
        status::forwarded("miss", None, false, Some("only-if-cached")),
    );
    Forwarded {
        response,
        endpoint: Arc::clone(&cache.store_label),
        head_latency: ctx.started.elapsed(),
    }
}

fn with_status(mut forwarded: Forwarded, value: HeaderValue) -> Forwarded {
    forwarded
        .response
        .headers_mut()
        .insert(status::CACHE_STATUS.clone(), value);
    forwarded
}

/// The stored validators on a revalidation request: the ETag in If-None-Match (beside the
/// client's own), else Last-Modified as If-Modified-Since.
fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        request.append(header::IF_NONE_MATCH, etag.clone());
    } else if let Some(modified) = stored.get(header::LAST_MODIFIED)
        && !request.contains_key(header::IF_NONE_MATCH)
    {
        request.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// What the policy needs of the client's request after the request itself went upstream.
struct ClientRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl ClientRequest {
    fn of(request: &Request<ProxyBody>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    /// Whether the client sent validators of its own.
    fn conditional(&self) -> bool {
        self.headers.contains_key(header::IF_NONE_MATCH)
            || self.headers.contains_key(header::IF_MODIFIED_SINCE)
    }

    /// A body-less request with the client's head (for answering from the store).
    fn as_request(&self) -> Request<ProxyBody> {
        let mut request = Request::new(body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

fn host_of(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

fn target_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_host_locations_are_invalidated() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            same_host_target(&v("/a?b"), "h:80").as_deref(),
            Some("/a?b")
        );
        assert_eq!(
            same_host_target(&v("http://H:80/x"), "h:80").as_deref(),
            Some("/x")
        );
        assert_eq!(same_host_target(&v("http://other/x"), "h:80"), None);
        assert_eq!(same_host_target(&v("not a uri"), "h"), None);
    }

    #[test]
    fn validators_prefer_the_etag() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, v("\"1\""));
        stored.insert(header::LAST_MODIFIED, v("Tue, 01 Jan 2030 00:00:00 GMT"));
        let mut request = HeaderMap::new();
        add_validators(&mut request, &stored);
        assert_eq!(request[header::IF_NONE_MATCH], "\"1\"");
        assert!(!request.contains_key(header::IF_MODIFIED_SINCE));
        stored.remove(header::ETAG);
        let mut request = HeaderMap::new();
        add_validators(&mut request, &stored);
        assert_eq!(
            request[header::IF_MODIFIED_SINCE],
            "Tue, 01 Jan 2030 00:00:00 GMT"
        );
    }

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }
}
