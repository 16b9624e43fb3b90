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

use crate::body::{BoxError, ProxyBody};
use crate::h1_client::UpstreamHead;
use crate::headers::{self, Hop, ProxyFields, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use crate::idempotency::{self, Claim, IDEMPOTENCY_KEY, KeyedRequest};
use crate::limits::LimitedBody;
use crate::resilience::{
    BreakerScope, RecordTarget, TryOutcome, breaker_outcome, report_transition, settle,
};
use crate::snapshot::{ClusterRuntime, EndpointRuntime, RouteRuntime};
use crate::upgrade::{ExtendedConnect, TunnelIdle, UpgradeRequested};
use bytes::Bytes;
use gatehouse_balance::{EndpointStats, PickRequest, hash_key};
use gatehouse_config::{HashOn, UpstreamProtocol};
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_observe::{Label, Metrics, RetryLabels};
use gatehouse_resilience::breaker::Permit;
use gatehouse_resilience::idempotency::{IdempotencyStore, Ticket};
use gatehouse_resilience::retry::{Decision, FailedTry, RequestBody, Stop};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
/// ([`crate::cache_layer`]); the rest goes to [`forward_origin`].
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
    let declared = declared_length(&*request);
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
    let ticket = match (&idempotency_key, &body) {
        (Some(key), ReplayBody::Buffered(_) | ReplayBody::Empty) if keyed => {
            let bytes = match &body {
                ReplayBody::Buffered(bytes) => bytes.clone(),
                _ => Bytes::new(),
            };
            // The peer's text was formatted once per connection; a client named by a trusted
            // proxy is formatted here, on this rare path only.
            let named;
            let client = if ctx.client == ctx.conn.client.ip() {
                ctx.conn.client_ip.to_str().unwrap_or("-")
            } else {
                named = ctx.client.to_string();
                named.as_str()
            };
            let keyed_request = KeyedRequest {
                route: &route.name,
                client,
                key,
                method: &parts.method,
                target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                body: &bytes,
            };
            match idempotency::claim(
                ctx.idempotency.as_ref(),
                &keyed_request,
                ctx.clock.now_nanos(),
            )? {
                Claim::Replay(response) => {
                    return Ok(Forwarded {
                        response,
                        endpoint: gatehouse_observe::label("-"),
                        head_latency: ctx.started.elapsed(),
                    });
                }
                Claim::Run(ticket) => Some(ticket),
            }
        }
        _ => {
            if keyed {
                tracing::debug!("Idempotency-Key ignored: the body is too large to fingerprint");
            }
            None
        }
    };
    // From here every way out either stores the answer (when its body ends) or releases the key.
    let mut ticket = TicketGuard {
        ticket,
        store: ctx.idempotency,
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
    endpoint.stats.begin();
    let in_flight = InFlight {
        stats: Arc::clone(&endpoint.stats),
        timed: cluster.balancer.policy().weighs_latency(),
        clock: *ctx.clock,
        started_nanos: ctx.started_nanos,
        head: None,
    };
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

/// Holds a claimed idempotency key until the response takes it over; dropped with it (an
/// error, a refused retry), it releases the key so the client's retry can run.
struct TicketGuard<'a> {
    ticket: Option<Ticket>,
    store: &'a Arc<dyn IdempotencyStore>,
}

impl TicketGuard<'_> {
    /// Hands the key to the response: it is stored when the response body ends.
    fn attach(&mut self, forwarded: Forwarded, clock: MonotonicClock) -> Forwarded {
        match self.ticket.take() {
            None => forwarded,
            Some(ticket) => Forwarded {
                response: idempotency::record(
                    forwarded.response,
                    ticket,
                    Arc::clone(self.store),
                    clock,
                ),
                endpoint: forwarded.endpoint,
                head_latency: forwarded.head_latency,
            },
        }
    }
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.store.abandon(ticket);
        }
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

/// Picks an endpoint whose circuit breaker (if any) admits the request; an endpoint whose
/// breaker refuses is skipped. With every candidate refused the answer is 503 Retry-After.
fn pick_admitted(
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    ctx: &ForwardContext<'_>,
    tried: &Tried,
) -> Result<(usize, Option<Permit>), ProxyError> {
    let mut refused = Tried::default();
    let mut retry_after: Option<Duration> = None;
    // An endpoint ramping up after recovery that sat this request out, in case no other can
    // take it.
    let mut ramping: Option<usize> = None;
    // Each round refuses one more endpoint, so this ends; the bound covers indices past 64.
    for _ in 0..=cluster.endpoints.len() {
        let index = match pick(cluster, hash, ctx.clock, tried, &refused) {
            Ok(index) => {
                let ramp = cluster.endpoints[index]
                    .health
                    .ramp_permille(|| ctx.clock.now_nanos());
                if ramp < 1000 && fastrand::u32(..1000) >= ramp {
                    // Slow start: it takes only `ramp`‰ of what the balancer gives it.
                    ramping.get_or_insert(index);
                    refused.insert(index);
                    continue;
                }
                index
            }
            Err(_) if ramping.is_some() => ramping.take().unwrap_or_default(),
            Err(error) => {
                return Err(match retry_after {
                    Some(retry_after) => ProxyError::new(ErrorKind::CircuitOpen {
                        cluster: cluster.name.to_string(),
                        retry_after,
                    }),
                    None => error,
                });
            }
        };
        let endpoint = &cluster.endpoints[index];
        let Some(breaker) = &endpoint.breaker else {
            return Ok((index, None));
        };
        match breaker.try_acquire(ctx.started_nanos) {
            Ok(admission) => {
                if let Some(transition) = admission.transition {
                    report_transition(
                        transition,
                        BreakerScope {
                            cluster: &cluster.name,
                            endpoint: Some(&endpoint.label),
                            metrics: ctx.metrics,
                        },
                    );
                }
                return Ok((index, Some(admission.permit)));
            }
            Err(rejected) => {
                refused.insert(index);
                retry_after =
                    Some(retry_after.map_or(rejected.retry_after, |r| r.min(rejected.retry_after)));
            }
        }
    }
    Err(ProxyError::new(ErrorKind::CircuitOpen {
        cluster: cluster.name.to_string(),
        retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
    }))
}

/// Picks an endpoint in rotation and not `refused`, preferring ones this request has not tried.
fn pick(
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    clock: &MonotonicClock,
    tried: &Tried,
    refused: &Tried,
) -> Result<usize, ProxyError> {
    // Read the clock once, and only if some endpoint's ejection needs it.
    let now = Cell::new(None);
    let now = || {
        let t = now.get().unwrap_or_else(|| clock.now_nanos());
        now.set(Some(t));
        t
    };
    let in_rotation = |i: usize| {
        !refused.contains(i)
            && cluster
                .endpoints
                .get(i)
                .is_some_and(|e| e.health.in_rotation(now))
    };
    let untried = |i: usize| !tried.contains(i) && in_rotation(i);
    let latency_aware = cluster.balancer.policy().weighs_latency();
    let now_nanos = if latency_aware { now() } else { 0 };
    cluster
        .balancer
        .pick(&PickRequest {
            hash,
            now_nanos,
            eligible: &untried,
        })
        .or_else(|| {
            // Every endpoint in rotation was tried: the retry goes to one of them again.
            (!tried.is_empty())
                .then(|| {
                    cluster.balancer.pick(&PickRequest {
                        hash,
                        now_nanos,
                        eligible: &in_rotation,
                    })
                })
                .flatten()
        })
        .filter(|&i| i < cluster.endpoints.len())
        .ok_or_else(|| {
            ProxyError::new(ErrorKind::NoHealthyEndpoint {
                cluster: cluster.name.to_string(),
            })
        })
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

/// Endpoints a request has tried (the first 64 indices; beyond that a retry may repeat one).
#[derive(Default)]
struct Tried(u64);

impl Tried {
    fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
    fn contains(&self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// The request body, kept whole when small enough to send again.
enum ReplayBody {
    /// No body: every try sends none.
    Empty,
    /// The whole body, buffered: every try sends a copy.
    Buffered(Bytes),
    /// Streamed to the first try; None once sent.
    Streaming(Option<ProxyBody>),
}

impl ReplayBody {
    /// Buffers the body when asked (retries are possible, or an idempotency key needs its
    /// fingerprint) and its declared length fits the replay limit; streams it otherwise (such a
    /// request is not retried once its body was sent).
    async fn new(
        body: ProxyBody,
        declared: Option<u64>,
        buffer: bool,
        max_replay: u64,
    ) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(Self::Empty);
        }
        let small = declared.is_some_and(|n| n <= max_replay);
        if !buffer || !small {
            return Ok(Self::Streaming(Some(body)));
        }
        match body.collect().await {
            Ok(collected) => Ok(Self::Buffered(collected.to_bytes())),
            Err(error) => Err(client_body_error(&error)),
        }
    }

    fn for_try(&mut self) -> Option<ProxyBody> {
        match self {
            Self::Empty => Some(crate::body::empty()),
            Self::Buffered(bytes) => Some(crate::body::full(bytes.clone())),
            Self::Streaming(body) => body.take(),
        }
    }

    fn state(&self) -> RequestBody {
        match self {
            Self::Empty => RequestBody::Buffered { len: 0 },
            Self::Buffered(bytes) => RequestBody::Buffered {
                len: bytes.len() as u64,
            },
            Self::Streaming(_) => RequestBody::Consumed,
        }
    }
}

/// A client body that failed while being buffered: too large, stalled, or the client went
/// away.
fn client_body_error(error: &BoxError) -> ProxyError {
    ProxyError::new(crate::limits::broken_limit(&**error).unwrap_or_else(|| {
        ErrorKind::ClientBody {
            reason: error.to_string(),
        }
    }))
}

/// When a response head arrived: its latency since the request did, and that moment on the
/// shared clock. One clock read serves every consumer (hedging, balancer stats, metrics).
#[derive(Clone, Copy)]
struct HeadTiming {
    latency: Duration,
    /// Since the try that answered was sent (a first try: since the request arrived).
    upstream: Duration,
    at_nanos: u64,
}

impl HeadTiming {
    fn now(ctx: &ForwardContext<'_>, try_started: Instant) -> Self {
        let now = Instant::now();
        let latency = now.saturating_duration_since(ctx.started);
        Self {
            latency,
            // A first try counts from the request's arrival: the same span, not worked out twice.
            upstream: if try_started == ctx.started {
                latency
            } else {
                now.saturating_duration_since(try_started)
            },
            at_nanos: ctx.nanos_after(latency),
        }
    }
}

/// Turns the upstream's response into the client's.
fn respond(
    response: Response<ProxyBody>,
    endpoint: &EndpointRuntime,
    mut in_flight: InFlight,
    head: HeadTiming,
    route: &RouteRuntime,
    ctx: &ForwardContext<'_>,
) -> Forwarded {
    in_flight.head = Some(head);
    let (mut parts, body) = response.into_parts();
    // The HTTP/1.1 client leaves hop-by-hop fields out as it parses (keeping `Upgrade` on a
    // 101, and dropping a Content-Length that Transfer-Encoding overrides); hyper's HTTP/2
    // client does not promise it.
    if route.cluster.protocol == UpstreamProtocol::H2 {
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            // A Content-Length beside it (RFC 9112 6.3: TE wins) would make the client-side
            // encoder cut the body short.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
    }
    let mut tunnel = None;
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // The server adds `Connection: upgrade`; the tunnel counts as in flight at the
        // endpoint while it is open.
        parts.extensions.insert(TunnelIdle(route.read_timeout));
        ctx.metrics.upgrades.get_or_create(&route.labels).inc();
        tunnel = Some(gatehouse_observe::GaugeGuard::new(
            ctx.metrics.tunnels_open.clone(),
        ));
    }
    endpoint.duration.observe(head.upstream);
    if let Some(offer) = parts.extensions.get_mut::<crate::splice::SpliceOffer>() {
        // A spliced body is not polled while it moves: the transfer keeps the read timeout.
        offer.set_idle_timeout(route.read_timeout);
    }
    if route.forward_headers.via {
        headers::add_via(&mut parts.headers, parts.version);
    }
    parts.version = Version::HTTP_11;
    let body = TrackedBody {
        inner: body,
        _in_flight: in_flight,
        _tunnel: tunnel,
        idle: crate::idle::IdleWatch::new(route.read_timeout),
    };
    Forwarded {
        response: Response::from_parts(parts, body.boxed()),
        endpoint: Arc::clone(&endpoint.label),
        head_latency: head.latency,
    }
}

/// Rewrites the client's request head for the upstream, in place, and returns the body to send
/// (limited) and the fields this hop adds, which travel beside the head's map (see
/// [`ProxyFields`]).
fn rewrite_request(
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
fn affinity_hash<B>(on: &HashOn, request: &Request<B>, client: std::net::IpAddr) -> Option<u64> {
    match on {
        HashOn::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashOn::Cookie(name) => cookie(request.headers(), name).map(|v| hash_key(v.as_bytes())),
        HashOn::ClientIp => Some(match client {
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
    /// The balancer weighs latency (p2c): the try's time feeds the endpoint's estimate. Other
    /// policies only need the count.
    timed: bool,
    clock: MonotonicClock,
    /// When the request arrived, on `clock`.
    started_nanos: u64,
    /// Set when a response head arrived; its time stands in for the end's, saving a clock read.
    head: Option<HeadTiming>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.timed {
            self.stats.end_untimed();
            return;
        }
        match self.head {
            Some(head) => self.stats.end(head.latency, head.at_nanos),
            // A try that failed before a response head still ends; its sample is the time it
            // took to fail, so an endpoint that fails slowly looks slow to p2c.
            None => {
                let now = self.clock.now_nanos();
                let took = Duration::from_nanos(now.saturating_sub(self.started_nanos));
                self.stats.end(took, now);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's response body on its way to the client, keeping the endpoint's in-flight
    /// count raised until it ends or is dropped, and ending it when the upstream is silent
    /// longer than the route's read timeout.
    struct TrackedBody {
        #[pin]
        inner: ProxyBody,
        _in_flight: InFlight,
        // Kept alive by the server for as long as an upgraded connection's tunnel is open.
        _tunnel: Option<gatehouse_observe::GaugeGuard>,
        idle: crate::idle::IdleWatch,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.moved();
                Poll::Ready(frame)
            }
            Poll::Pending if this.idle.poll_expired(cx) => {
                Poll::Ready(Some(Err(crate::idle::upstream_silent(this.idle))))
            }
            Poll::Pending => Poll::Pending,
        }
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
        assert_eq!(request_host_str(&origin_form, &h), Some("b.com"));
        assert_eq!(request_host_str(&absolute, &h), Some("a.com:81"));
    }
}
