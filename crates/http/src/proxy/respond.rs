//! The upstream's response on its way to the client: hop-by-hop fields out, Via in, the
//! endpoint's in-flight count held until the body ends, and the route's read timeout on the
//! body.

use super::{ForwardContext, Forwarded};
use crate::body::{BoxError, ProxyBody};
use crate::headers;
use crate::snapshot::{EndpointRuntime, RouteRuntime};
use crate::upgrade::TunnelIdle;
use bytes::Bytes;
use gatehouse_balance::EndpointStats;
use gatehouse_config::UpstreamProtocol;
use gatehouse_core::MonotonicClock;
use http::header;
use http::{Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// When a response head arrived: its latency since the request did, and that moment on the
/// shared clock. One clock read serves every consumer (hedging, balancer stats, metrics).
#[derive(Clone, Copy)]
pub(super) struct HeadTiming {
    pub(super) latency: Duration,
    /// Since the try that answered was sent (a first try: since the request arrived).
    upstream: Duration,
    pub(super) at_nanos: u64,
}

impl HeadTiming {
    pub(super) fn now(ctx: &ForwardContext<'_>, try_started: Instant) -> Self {
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
pub(super) fn respond(
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

/// Keeps an endpoint's in-flight count raised until the response body is done (or dropped):
/// least_request and p2c must see long responses and streams as load.
pub(super) struct InFlight {
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

impl InFlight {
    /// Counts a try in flight at the endpoint whose `stats` these are, until dropped. `timed`:
    /// the balancer weighs latency (p2c), so the try's time feeds the endpoint's estimate.
    pub(super) fn begin(stats: &Arc<EndpointStats>, timed: bool, ctx: &ForwardContext<'_>) -> Self {
        stats.begin();
        Self {
            stats: Arc::clone(stats),
            timed,
            clock: *ctx.clock,
            started_nanos: ctx.started_nanos,
            head: None,
        }
    }
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
        let polled = this.inner.poll_frame(cx);
        this.idle.watch(cx, polled).map(|watched| {
            watched.unwrap_or_else(|| Some(Err(crate::idle::upstream_silent(this.idle))))
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
