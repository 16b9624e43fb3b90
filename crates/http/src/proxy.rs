//! Forwarding one routed request to its cluster, in named phases:
//!
//! 1. **limit**: refuse a declared body above the listener's limit (413) before any upstream work;
//!    work out the request's deadline (the route's timeout, shortened by the client's own budget
//!    header) and answer 504 at once when it is already gone;
//! 2. **rewrite** (once for all tries): hop-by-hop headers out, X-Forwarded-*, Via and
//!    X-Request-Id in, Host kept or rewritten, URI in the form the upstream protocol wants; a
//!    small body is buffered so a failed try can be sent again;
//! 3. **try**, as many times as the retry policy and budget allow:
//!    - **pick**: the balancer chooses among endpoints in rotation (healthy, not ejected) that
//!      this request has not tried yet (503 when none is in rotation);
//!    - **exchange**: the endpoint's pool sends it; the response head must arrive within the
//!      per-try timeout (504), connect and transport failures become 502 naming the endpoint;
//!      the outcome feeds outlier detection;
//!    - **retry?**: a failure (or a retryable status) is sent again, after a jittered backoff, to
//!      another endpoint when [`gatehouse_resilience::RetryPolicy::decide`] and the cluster's
//!      budget agree;
//! 4. **respond**: hop-by-hop headers out of the response, Via in; the body streams back while the
//!    endpoint's in-flight count stays raised until the body ends.
//!
//! This module holds the phases' order and the tries loop; each phase's details have their own
//! submodule: `rewrite` (the upstream's request head), `keyed` (Idempotency-Key claims),
//! `replay` (the body across tries), `pick` (endpoint choice, breakers, affinity keys) and
//! `respond` (the response and its in-flight accounting).

mod keyed;
mod pick;
mod replay;
mod respond;
mod rewrite;

pub use rewrite::{request_host, request_host_str};

use pick::{Tried, affinity_hash, pick_admitted};
use replay::ReplayBody;
use respond::{HeadTiming, InFlight, respond};
use rewrite::rewrite_request;

use crate::body::ProxyBody;
use crate::h1_client::UpstreamHead;
use crate::headers;
use crate::idempotency::{self, IDEMPOTENCY_KEY};
use crate::resilience::{
    BreakerScope, RecordTarget, TryOutcome, breaker_outcome, report_transition, settle,
};
use crate::snapshot::{ClusterRuntime, EndpointRuntime, RouteRuntime};
use crate::upgrade::UpgradeRequested;
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_observe::{Label, Metrics, RetryLabels};
use gatehouse_resilience::breaker::Permit;
use gatehouse_resilience::idempotency::IdempotencyStore;
use gatehouse_resilience::retry::{Decision, FailedTry, Stop};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the data path knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub listener: Label,
    /// "http" or "https", for X-Forwarded-Proto.
    pub scheme: &'static str,
    /// The client's address as a header value, formatted once for all its requests.
    pub client_ip: HeaderValue,
    /// The subject of the client certificate verified in the TLS handshake (mutual TLS).
    pub client_cert: Option<HeaderValue>,
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
            client_cert: None,
        }
    }
}

/// An upstream's response on its way to the client, the endpoint that served it, and how long
/// its head took from the request's arrival.
pub struct Forwarded {
    pub response: Response<ProxyBody>,
    pub endpoint: Label,
    pub head_latency: Duration,
}

/// Per-request inputs the forwarder needs besides the request.
pub struct ForwardContext<'a> {
    pub conn: &'a ConnInfo,
    /// The client the request is attributed to (the peer, or whom a trusted proxy named): it
    /// keys `client_ip` hashing and idempotency keys. X-Forwarded-For still appends the peer.
    pub client: std::net::IpAddr,
    pub request_id: &'a HeaderValue,
    pub max_body_bytes: u64,
    pub clock: &'a MonotonicClock,
    /// When the request arrived (one clock read serves every phase).
    pub started: Instant,
    /// `started` on `clock`, worked out once.
    pub started_nanos: u64,
    /// The header carrying the client's time budget, when deadline propagation is on.
    pub deadline_header: Option<&'a HeaderName>,
    pub metrics: &'a Metrics,
    /// Where POST/PATCH responses keyed by `Idempotency-Key` are kept.
    pub idempotency: &'a Arc<dyn IdempotencyStore>,
    /// Hedge deadlines (see `hedge_timer`).
    pub hedges: &'a crate::hedge_timer::HedgeTimers,
    /// The snapshot and gateway state the request runs in, for work that outlives it (a
    /// cache revalidation in the background).
    pub snapshot: &'a Arc<crate::snapshot::Snapshot>,
    pub shared: &'a Arc<crate::server::Shared>,
}

impl ForwardContext<'_> {
    /// The clock's reading `since_started` after the request arrived, without a clock read.
    pub fn nanos_after(&self, since_started: Duration) -> u64 {
        let since = u64::try_from(since_started.as_nanos()).unwrap_or(u64::MAX);
        self.started_nanos.saturating_add(since)
    }
}

/// Forwards `request` along `route`; always produces a response (errors become error responses).
/// A route with `[routes.cache]` answers from the shared cache when it can
/// ([`crate::cache_layer`]); the rest goes to `forward_origin`.
///
/// The request is boxed: each async layer it passes through would otherwise move its 240 bytes
/// into the next future's state (measured at eight copies per request).
pub async fn forward(
    route: &RouteRuntime,
    request: Box<Request<ProxyBody>>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    if route.require_client_cert && ctx.conn.client_cert.is_none() {
        return Err(ProxyError::new(ErrorKind::ClientCertificateRequired));
    }
    inject_faults(route, ctx).await?;
    if let Some(cache) = &route.cache {
        // Boxed: the cache's future is large, and requests of routes without a cache should
        // not carry its space in theirs.
        return Box::pin(crate::cache_layer::forward(route, cache, *request, ctx)).await;
    }
    forward_origin(route, request, ctx).await
}

/// The origin phases: the breaker, then the tries (what a cache miss goes through).
/// A cluster with a circuit breaker is asked first: while it is open, the answer is an
/// immediate 503 with Retry-After, and no upstream sees the request.
pub(crate) async fn forward_origin(
    route: &RouteRuntime,
    request: Box<Request<ProxyBody>>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    let cluster = &route.cluster;
    let Some(breaker) = &cluster.resilience.breaker else {
        return forward_tries(route, request, ctx).await;
    };
    let scope = BreakerScope {
        cluster: &cluster.name,
        endpoint: None,
        metrics: ctx.metrics,
    };
    // The request's arrival time serves the breaker (its windows count seconds): no clock read.
    let permit = match breaker.try_acquire(ctx.started_nanos) {
        Ok(admission) => {
            if let Some(transition) = admission.transition {
                report_transition(transition, scope);
            }
            admission.permit
        }
        Err(rejected) => {
            return Err(ProxyError::new(ErrorKind::CircuitOpen {
                cluster: cluster.name.to_string(),
                retry_after: rejected.retry_after,
            }));
        }
    };
    let result = forward_tries(route, request, ctx).await;
    let outcome = breaker_outcome(result.as_ref().map(|f| f.response.status().as_u16()));
    // A response's head time stands in for the clock (the breaker's windows count seconds).
    let now = match &result {
        Ok(forwarded) => ctx.nanos_after(forwarded.head_latency),
        Err(_) => ctx.clock.now_nanos(),
    };
    settle(breaker, permit, outcome, now, scope);
    result
}

/// Applies the route's and the cluster's injected faults, if any (one atomic load each when
/// none is set).
async fn inject_faults(route: &RouteRuntime, ctx: &ForwardContext<'_>) -> Result<(), ProxyError> {
    for slot in [&route.fault, &route.cluster.fault] {
        let Some(fault) = slot.get() else {
            continue;
        };
        let injected = fault.decide();
        if injected.blackhole {
            // A partition: no answer until the request's time is up.
            let budget = route.timeout;
            tokio::time::sleep_until(tokio::time::Instant::from_std(ctx.started + budget)).await;
            return Err(ProxyError::new(ErrorKind::DeadlineExceeded { budget }));
        }
        if let Some(delay) = injected.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = injected.abort {
            return Err(ProxyError::new(ErrorKind::FaultInjected { status }));
        }
    }
    Ok(())
}

async fn forward_tries(
    route: &RouteRuntime,
    request: Box<Request<ProxyBody>>,
    ctx: &ForwardContext<'_>,
) -> Result<Forwarded, ProxyError> {
    // 1. limit
    let declared = headers::content_length(request.headers());
    if let Some(declared) = declared
        && declared > ctx.max_body_bytes
    {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge {
            limit: ctx.max_body_bytes,
        }));
    }
    let (budget, propagate) = time_budget(route.timeout, &request, ctx.deadline_header);
    let deadline = tokio::time::Instant::from_std(ctx.started + budget);
    if budget.is_zero() {
        return Err(ProxyError::new(ErrorKind::DeadlineExceeded { budget }));
    }

    // 2. rewrite
    let cluster = &route.cluster;
    let policy = &cluster.resilience.retry;
    let hash = cluster
        .hash_on
        .as_ref()
        .and_then(|on| affinity_hash(on, &*request, ctx.client));
    let idempotency_key = request.headers().get(&IDEMPOTENCY_KEY).cloned();
    let has_idempotency_key = idempotency_key.is_some();
    let keyed = idempotency::applies(request.method(), idempotency_key.as_ref());
    let (parts, body) = request.into_parts();
    let mut parts = crate::header_maps::GiveBackOnDrop(parts);
    let (body, fields) = rewrite_request(route, cluster.protocol, &mut parts, body, ctx)?;
    let upgrading = parts.extensions.get::<UpgradeRequested>().is_some();
    let mut body = ReplayBody::new(
        body,
        declared,
        policy.max_attempts > 1 || keyed,
        policy.max_replay_body,
    )
    .await?;
    // From here every way out either stores the answer (when its body ends) or releases the key.
    let mut ticket = match keyed::claim(route, &parts, &body, idempotency_key.as_ref(), keyed, ctx)?
    {
        keyed::Claimed::Replay(forwarded) => return Ok(forwarded),
        keyed::Claimed::Run(ticket) => ticket,
    };
    if policy.max_attempts > 1 {
        // The request's arrival is time enough for a budget counted in seconds.
        cluster.resilience.budget.deposit(ctx.started_nanos);
    }

    // 3. try
    // Whether the first try leaves microseconds after the request arrived: not when its body
    // was buffered for replay or an injected fault delayed it.
    let arrived_prompt = !matches!(body, ReplayBody::Buffered(_))
        && route.fault.get().is_none()
        && cluster.fault.get().is_none();
    let mut tried = Tried::default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (index, endpoint_permit) = pick_admitted(cluster, hash, ctx, &tried)?;
        tried.insert(index);
        let endpoint = &cluster.endpoints[index];
        // When this try is sent. A first try is as good as sent when the request arrived
        // (microseconds ago, no clock read) unless something slow came between; a retry, and a
        // budget passed upstream (which must show this hop's time), read the clock.
        let try_started = if attempts == 1 && !propagate && arrived_prompt {
            ctx.started
        } else {
            Instant::now()
        };
        // The time left matters only to a retry, a per-try timeout or a budget to pass on.
        let needs_now = attempts > 1
            || propagate
            || cluster.resilience.try_timeout.is_some()
            || cluster.resilience.adaptive_timeout.is_some();
        let now = needs_now.then(|| tokio::time::Instant::from_std(try_started));
        if let Some(now) = now
            && now >= deadline
        {
            return Err(ProxyError::new(ErrorKind::DeadlineExceeded { budget }));
        }
        if let (Some(name), true, Some(now)) = (ctx.deadline_header, propagate, now) {
            // The upstream gets what is left of the budget, so a chain of hops shrinks it.
            parts.headers.insert(
                name.clone(),
                gatehouse_resilience::deadline::format_millis(deadline - now),
            );
        }
        if parts.version != Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
            // An HTTP/1.0 client may send no Host; HTTP/1.1 upstreams require one.
            if let Ok(host) = HeaderValue::from_str(&endpoint.id.addr.to_string()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        // This try ends at the per-try timeout or the request's deadline, whichever is first.
        // (The adaptive timeout's estimate is refreshed every 100 ms: "now" needs no precision.)
        let limit = cluster.resilience.try_timeout(|| {
            now.map_or_else(
                || ctx.clock.now_nanos(),
                |n| ctx.clock.nanos_at(n.into_std()),
            )
        });
        let (try_deadline, try_limited) = match (limit, now) {
            (Some(limit), Some(now)) if now + limit < deadline => (now + limit, Some(limit)),
            _ => (deadline, None),
        };
        let Some(try_body) = body.for_try() else {
            return Err(ProxyError::new(ErrorKind::ClientBody {
                reason: "the request body was already sent".into(),
            }));
        };
        // Never an upgrade: a hedge would open a second WebSocket.
        let hedgeable = attempts == 1
            && matches!(body, ReplayBody::Empty)
            && !upgrading
            && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let head = UpstreamHead {
            parts: &parts,
            fields: &fields,
        };
        let first = exchange(
            cluster,
            index,
            endpoint_permit,
            head,
            try_body,
            try_deadline,
            ctx,
        );
        let exchanged = match (&route.hedge, hedgeable) {
            // Boxed: a try that may race a second one makes a large future, which the
            // requests of routes without hedging should not carry.
            (Some(hedge), true) => {
                let hedged = hedged(
                    first,
                    hedge,
                    cluster,
                    hash,
                    ctx,
                    &mut tried,
                    head,
                    try_deadline,
                );
                Box::pin(hedged).await
            }
            _ => first.await,
        };
        let Exchanged {
            index,
            in_flight,
            result,
            sent_at,
        } = exchanged;
        let try_started = sent_at.unwrap_or(try_started);
        let endpoint = &cluster.endpoints[index];
        let failure = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                if !policy.retry_on_status.contains(&status) || attempts >= policy.max_attempts {
                    let head = HeadTiming::now(ctx, try_started);
                    if let Some(hedge) = &route.hedge {
                        hedge.observe(head.at_nanos, head.latency);
                    }
                    let forwarded = respond(response, endpoint, in_flight, head, route, ctx);
                    return Ok(ticket.attach(forwarded, *ctx.clock));
                }
                Failure::Status(response, in_flight, status)
            }
            Err(TryError::Failed(error)) => Failure::Error(error),
            // Named after the endpoint (it is the one that did not answer); the retry policy
            // sees from the deadline whether time is left for another try.
            Err(TryError::TimedOut) => {
                Failure::Error(ProxyError::new(ErrorKind::UpstreamTimeout {
                    endpoint: endpoint.id.addr,
                    // Report the configured limit that ran out, not a rounded remainder.
                    after: try_limited.unwrap_or(budget),
                }))
            }
        };

        // retry?
        let (retry, reason) = match &failure {
            Failure::Status(_, _, status) => {
                (policy.classify_status(*status), status_reason(*status))
            }
            Failure::Error(error) => (error.retry(), crate::body::error_kind(error)),
        };
        let decision = policy.decide(
            &FailedTry {
                method: &parts.method,
                has_idempotency_key,
                response_started: false,
                retry,
                attempts,
                body: body.state(),
                remaining: Some(deadline.saturating_duration_since(tokio::time::Instant::now())),
            },
            fastrand::u64(..),
        );
        let labels = |reason| RetryLabels {
            cluster: Arc::clone(&cluster.name),
            reason,
        };
        let refused = match decision {
            Decision::Retry { backoff } => {
                if cluster
                    .resilience
                    .budget
                    .try_withdraw(ctx.clock.now_nanos())
                {
                    ctx.metrics.retries.get_or_create(&labels(reason)).inc();
                    tracing::debug!(cluster = %cluster.name, endpoint = %endpoint.id.addr, reason, attempts, "retrying");
                    drop(failure);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                Some("budget")
            }
            Decision::Stop(stop) => stop_reason(stop),
        };
        if let Some(refused) = refused {
            ctx.metrics
                .retries_refused
                .get_or_create(&labels(refused))
                .inc();
        }
        return match failure {
            Failure::Status(response, in_flight, _) => {
                let forwarded = respond(
                    response,
                    endpoint,
                    in_flight,
                    HeadTiming::now(ctx, try_started),
                    route,
                    ctx,
                );
                Ok(ticket.attach(forwarded, *ctx.clock))
            }
            Failure::Error(error) => Err(error),
        };
    }
}

/// Tries per latency sample (see [`exchange`]).
const LATENCY_SAMPLE: u32 = 4;

/// One try's result: which endpoint, its in-flight guard, and the answer or why there is none.
struct Exchanged {
    index: usize,
    in_flight: InFlight,
    result: Result<Response<ProxyBody>, TryError>,
    /// When a try sent later than the loop's own (a hedge) was sent.
    sent_at: Option<Instant>,
}

enum TryError {
    Failed(ProxyError),
    TimedOut,
}

/// Sends one try to `cluster.endpoints[index]` and feeds its outcome to the endpoint's breaker
/// and to outlier detection.
async fn exchange(
    cluster: &ClusterRuntime,
    index: usize,
    permit: Option<Permit>,
    head: UpstreamHead<'_>,
    body: ProxyBody,
    try_deadline: tokio::time::Instant,
    ctx: &ForwardContext<'_>,
) -> Exchanged {
    let endpoint = &cluster.endpoints[index];
    let in_flight = InFlight::begin(
        &endpoint.stats,
        cluster.balancer.policy().weighs_latency(),
        ctx,
    );
    let resilience = &cluster.resilience;
    let timed = resilience.adaptive_timeout.is_some() || resilience.tracks_latency();
    // Latency estimates need a sample, not every try: one in LATENCY_SAMPLE is timed and
    // recorded (each is a locked histogram insert), so the others cost no clock read.
    let sampled = timed && fastrand::u32(..LATENCY_SAMPLE) == 0;
    let started = sampled.then(std::time::Instant::now);
    let sent = endpoint
        .pool
        .send(head, body, ctx.started, try_deadline)
        .await;
    let took = match started {
        Some(started) => Some(started.elapsed()),
        // Timed-out tries are always recorded: the adaptive timeout must see them (leaving them
        // out would make it shrink). Their wait is at least this; for a retry, it is more.
        None if timed && sent.is_err() => Some(
            try_deadline
                .into_std()
                .saturating_duration_since(ctx.started),
        ),
        None => None,
    };
    if let Some(took) = took {
        let now = ctx.nanos_after(took);
        resilience.observe_try(now, took);
        if resilience.tracks_latency() {
            resilience.observe_latency(index, now, took);
        }
    }
    if let (Some(breaker), Some(permit)) = (&endpoint.breaker, permit) {
        let outcome = match &sent {
            Ok(Ok(response)) => breaker_outcome(Ok(response.status().as_u16())),
            Ok(Err(error)) => breaker_outcome(Err(error)),
            Err(_) => gatehouse_resilience::breaker::Outcome::Failure,
        };
        let scope = BreakerScope {
            cluster: &cluster.name,
            endpoint: Some(&endpoint.label),
            metrics: ctx.metrics,
        };
        // The breaker's windows count seconds: a success is placed at the request's arrival
        // (no clock read); a failure, rarer, at the time it happened.
        let now = match (&sent, took) {
            (Ok(Ok(_)), Some(took)) => ctx.nanos_after(took),
            (Ok(Ok(_)), None) => ctx.started_nanos,
            _ => ctx.clock.now_nanos(),
        };
        settle(breaker, permit, outcome, now, scope);
    }
    let result = match sent {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            record(cluster, index, endpoint, ctx, TryOutcome::Status(status));
            Ok(response)
        }
        Ok(Err(error)) => {
            if error.side() == gatehouse_core::Side::Upstream {
                record(cluster, index, endpoint, ctx, TryOutcome::GatewayFailure);
            }
            Err(TryError::Failed(error))
        }
        Err(_) => {
            record(cluster, index, endpoint, ctx, TryOutcome::GatewayFailure);
            Err(TryError::TimedOut)
        }
    };
    Exchanged {
        index,
        in_flight,
        result,
        sent_at: None,
    }
}

/// A hedgeable try: `first`, raced by a second try to another endpoint when it has not answered
/// by the hedge's delay. The first answer wins, and the other try is dropped (its upstream
/// connection is closed, which cancels it). Without another endpoint to ask, it just waits for
/// `first`.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    first: impl Future<Output = Exchanged>,
    hedge: &crate::resilience::HedgeRuntime,
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    ctx: &ForwardContext<'_>,
    tried: &mut Tried,
    head: UpstreamHead<'_>,
    try_deadline: tokio::time::Instant,
) -> Exchanged {
    let delay = hedge.delay(ctx.started_nanos);
    let mut first = std::pin::pin!(first);
    // Counted from the request's arrival (a first try starts microseconds after it), so arming
    // it needs no clock read; not a tokio timer (see `hedge_timer`).
    tokio::select! {
        biased;
        done = first.as_mut() => return done,
        () = ctx.hedges.at(ctx.started + delay) => {}
    }
    let Ok((index, permit)) = pick_admitted(cluster, hash, ctx, tried) else {
        return first.await;
    };
    if tried.contains(index) {
        return first.await; // no other endpoint to ask
    }
    tried.insert(index);
    ctx.metrics
        .hedges
        .get_or_create(&RetryLabels {
            cluster: Arc::clone(&cluster.name),
            reason: "p_quantile",
        })
        .inc();
    let second = exchange(
        cluster,
        index,
        permit,
        head,
        crate::body::empty(),
        try_deadline,
        ctx,
    );
    tokio::select! {
        biased;
        done = first.as_mut() => done,
        done = second => Exchanged {
            sent_at: Some(ctx.started + delay),
            ..done
        },
    }
}

/// A try that did not produce the final answer.
enum Failure {
    /// The upstream answered with a retryable status; kept in case no retry happens.
    Status(Response<ProxyBody>, InFlight, u16),
    Error(ProxyError),
}

/// The request's time budget: the route's timeout, or less when the client says so. The bool
/// says whether the client sent a budget (only then is one passed upstream).
fn time_budget(
    route_timeout: Duration,
    request: &Request<ProxyBody>,
    header: Option<&HeaderName>,
) -> (Duration, bool) {
    let Some(value) = header.and_then(|name| request.headers().get(name)) else {
        return (route_timeout, false);
    };
    match gatehouse_resilience::parse_timeout(value.as_bytes()) {
        Ok(client) => (client.min(route_timeout), true),
        Err(error) => {
            tracing::debug!(%error, "ignoring an unreadable deadline header");
            (route_timeout, false)
        }
    }
}

fn record(
    cluster: &ClusterRuntime,
    index: usize,
    endpoint: &EndpointRuntime,
    ctx: &ForwardContext<'_>,
    outcome: TryOutcome,
) {
    cluster.resilience.record(
        RecordTarget {
            index,
            health: &endpoint.health,
            labels: &endpoint.labels,
            clock: ctx.clock,
            metrics: ctx.metrics,
        },
        outcome,
    );
}

fn status_reason(status: u16) -> &'static str {
    match status {
        429 => "status_429",
        500 => "status_500",
        502 => "status_502",
        503 => "status_503",
        504 => "status_504",
        _ => "status_5xx",
    }
}

/// Why a retryable failure was not retried, for the metric; None when it was not retryable.
fn stop_reason(stop: Stop) -> Option<&'static str> {
    match stop {
        Stop::ResponseStarted | Stop::NotRetryable => None,
        Stop::AttemptsExhausted => Some("attempts"),
        Stop::NotIdempotent => Some("not_idempotent"),
        Stop::BodyNotReplayable => Some("body_not_replayable"),
        Stop::DeadlineTooClose => Some("deadline"),
    }
}
