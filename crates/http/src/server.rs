//! Listeners: accepting connections and serving HTTP/1.1 and h2c on them.
//!
//! Each listener runs one accept loop. A connection limit (a semaphore) makes excess clients wait
//! in the kernel backlog instead of exhausting memory. Right after accept, the listener's access
//! list and its cap on connections per client address may close the connection
//! ([`crate::protect::connections`]). A connection that starts with the HTTP/2
//! preface is served by [`crate::h2`]; HTTP/1 connections by [`crate::h1_server`] (strict
//! framing, one parse per head). Both run the connection as one task and take the same handler:
//! every request goes to [`handle_request`], which loads the current snapshot once and routes.

use crate::body::{ProxyBody, error_response};
use crate::h1_server::{self, H1Settings};
use crate::h2::{self, H2Settings};
use crate::headers::{self, X_REQUEST_ID};
use crate::protect::connections::{self, ConnectionsPerIp};
use crate::proxy::{self, ConnInfo, ForwardContext, Forwarded};
use crate::snapshot::{ListenerRuntime, Snapshot};
use crate::upgrade::Tunnel;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_observe::{
    ErrorLabels, Label, ListenerLabels, Metrics, RejectLabels, RequestLabelRefs, label,
};
use http::{Request, Response};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// State shared by every listener and connection of one gateway.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub clock: MonotonicClock,
    /// Cancelled when the process starts draining: connections finish their requests and close.
    pub draining: crate::drain::Drain,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Responses of POST/PATCH requests keyed by `Idempotency-Key`.
    pub idempotency: Arc<dyn gatehouse_resilience::idempotency::IdempotencyStore>,
    /// Deadlines of hedged requests, fired by [`crate::gateway::Gateway::run_hedge_timers`].
    pub hedges: Arc<crate::hedge_timer::HedgeTimers>,
}

/// A listener's cap on open connections; resizable, so a reload can change it in place.
pub struct ConnectionLimit {
    semaphore: Arc<Semaphore>,
    limit: parking_lot::Mutex<usize>,
    /// Open connections per client address (the cap itself comes from the snapshot).
    per_ip: Arc<ConnectionsPerIp>,
}

impl ConnectionLimit {
    pub fn new(limit: u64) -> Arc<Self> {
        let limit = clamp_permits(limit);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: parking_lot::Mutex::new(limit),
            per_ip: Arc::default(),
        })
    }

    /// Changes the cap. Lowering it below the connections now open closes none of them: new
    /// connections wait until enough have ended.
    pub fn resize(&self, limit: u64) {
        let limit = clamp_permits(limit);
        let mut current = self.limit.lock();
        if limit > *current {
            self.semaphore.add_permits(limit - *current);
        } else if limit < *current {
            let surplus = *current - limit;
            let forgotten = self.semaphore.forget_permits(surplus);
            if forgotten < surplus {
                // The rest are held by open connections: take them as they are released.
                let semaphore = Arc::clone(&self.semaphore);
                let missing = u32::try_from(surplus - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(missing).await {
                        permits.forget();
                    }
                });
            }
        }
        *current = limit;
    }
}

fn clamp_permits(limit: u64) -> usize {
    usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// Runs the accept loop of one listener until `stop` is cancelled.
pub async fn accept_loop(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connection_limit: Arc<ConnectionLimit>,
) {
    let limit = Arc::clone(&connection_limit.semaphore);
    let listener_label = label(&name);
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = %name, error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let ip_slot = match admit(&shared, &listener_label, client, &connection_limit.per_ip) {
            Ok(slot) => slot,
            // Dropping the stream closes the connection before anything is read.
            Err(()) => continue,
        };
        let local = stream.local_addr().unwrap_or(client);
        let conn = Arc::new(ConnInfo::new(
            client,
            local,
            Arc::clone(&listener_label),
            "http",
        ));
        let shared_for_conn = Arc::clone(&shared);
        let tracker = shared.connections.clone();
        shared.connections.spawn(async move {
            let tunnel = serve_connection(stream, conn, shared_for_conn).await;
            // An upgraded connection (WebSocket) continues in a small task of its own, still
            // counted against the connection limits and waited for on drain; this task's
            // request machinery (several KiB) is freed.
            if let Some(mut tunnel) = tunnel {
                tunnel.keep(permit);
                tunnel.keep(ip_slot);
                tracker.spawn(tunnel.run());
            }
        });
    }
}

/// The listener's access list and per-address cap, from the snapshot current at accept; a
/// refusal is counted in `rejected` and logged at debug.
fn admit(
    shared: &Shared,
    listener: &Label,
    client: std::net::SocketAddr,
    per_ip: &Arc<ConnectionsPerIp>,
) -> Result<Option<connections::IpSlot>, ()> {
    let snapshot = shared.snapshot.load();
    let Some(settings) = snapshot.listener(listener) else {
        return Ok(None);
    };
    connections::admit(&settings.protection, client.ip(), per_ip).map_err(|refused| {
        tracing::debug!(listener = %listener, %client, reason = refused.reason(), "connection refused");
        shared
            .metrics
            .rejected
            .get_or_create(&RejectLabels {
                listener: Arc::clone(listener),
                reason: refused.reason(),
            })
            .inc();
    })
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Option<Tunnel> {
    let _ = gatehouse_net::tune_stream(&stream);
    let labels = ListenerLabels {
        listener: Arc::clone(&conn.listener),
    };
    shared
        .metrics
        .connections_total
        .get_or_create(&labels)
        .inc();
    let open = gatehouse_observe::GaugeGuard::new(
        shared
            .metrics
            .connections_open
            .get_or_create(&labels)
            .clone(),
    );

    // Settings come from the snapshot current at accept time.
    let settings = shared
        .snapshot
        .load()
        .listener(&conn.listener)
        .cloned()
        .unwrap_or_else(|| ListenerRuntime {
            label: Arc::clone(&conn.listener),
            protocols: gatehouse_config::Protocols {
                http1: true,
                h2c: true,
                h2: false,
            },
            limits: gatehouse_config::Limits::default(),
            protection: Arc::default(),
            tls: None,
            https_redirect_port: None,
            router: Arc::default(),
        });
    let limits = settings.limits;
    let h1 = H1Settings {
        max_head: usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX),
        header_timeout: limits.header_read_timeout,
        stall_timeout: limits.stall_timeout,
    };
    // One deadline for the first head, whether or not a TLS handshake or protocol detection
    // read part of it.
    let first_deadline = tokio::time::Instant::now() + h1.header_timeout;
    let tunnel = match &settings.tls {
        Some(tls) => serve_tls(stream, conn, &shared, &settings, tls, h1, first_deadline).await,
        None => serve_cleartext(stream, conn, &shared, &settings, h1, first_deadline).await,
    };
    // An upgraded connection stays open (and counted) as long as its tunnel.
    tunnel.map(|mut tunnel| {
        tunnel.keep(open);
        tunnel
    })
}

async fn serve_cleartext(
    mut stream: TcpStream,
    conn: Arc<ConnInfo>,
    shared: &Arc<Shared>,
    settings: &ListenerRuntime,
    h1: H1Settings,
    first_deadline: tokio::time::Instant,
) -> Option<Tunnel> {
    let draining = shared.draining.clone();
    let protocols = settings.protocols;
    if let Some(port) = settings.https_redirect_port {
        let on_reject = rejection_counter(&conn, shared);
        let redirect = |request: Request<ProxyBody>| {
            std::future::ready(crate::redirect::to_https(&request, port))
        };
        let halves = crate::stream_io::split_tcp(stream);
        h1_server::serve(
            halves,
            BytesMut::new(),
            first_deadline,
            h1,
            draining,
            on_reject,
            redirect,
        )
        .await;
        return None;
    }
    let handler = |request| handle_request(Box::new(request), &conn, shared);
    if !protocols.http1 {
        h2::serve(
            stream,
            BytesMut::new(),
            h2_settings(&settings.limits),
            draining.token().clone(),
            handler,
        )
        .await;
        return None;
    }
    let mut prefix = BytesMut::new();
    if protocols.h2c {
        match detect_h2_preface(&mut stream, &mut prefix, first_deadline).await {
            Detected::Http2 => {
                h2::serve(
                    stream,
                    prefix,
                    h2_settings(&settings.limits),
                    draining.token().clone(),
                    handler,
                )
                .await;
                return None;
            }
            Detected::Http1 => {}
            Detected::Closed => return None,
        }
    }
    let halves = crate::stream_io::split_tcp(stream);
    let on_reject = rejection_counter(&conn, shared);
    h1_server::serve(
        halves,
        prefix,
        first_deadline,
        h1,
        draining,
        on_reject,
        handler,
    )
    .await
}

/// Completes the TLS handshake (within the first head's deadline), then serves the protocol
/// ALPN chose: h2, or HTTP/1.1 (also for clients that offer no ALPN).
async fn serve_tls(
    stream: TcpStream,
    conn: Arc<ConnInfo>,
    shared: &Arc<Shared>,
    settings: &ListenerRuntime,
    tls: &crate::tls_edge::ListenerTlsRuntime,
    h1: H1Settings,
    first_deadline: tokio::time::Instant,
) -> Option<Tunnel> {
    let stream = match tokio::time::timeout_at(first_deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        failed => {
            let reason = match failed {
                Ok(Err(err)) => {
                    tracing::debug!(client = %conn.client, error = %err, "TLS handshake failed");
                    "tls_handshake_failed"
                }
                _ => "tls_handshake_timeout",
            };
            count_rejection(shared, &conn, reason);
            return None;
        }
    };
    let (_, session) = stream.get_ref();
    let h2 = match session.alpn_protocol() {
        Some(protocol) => protocol == b"h2",
        None => !settings.protocols.http1,
    };
    let client_cert = session
        .peer_certificates()
        .and_then(gatehouse_tls::identity::client_subject)
        .and_then(|subject| http::HeaderValue::from_str(&subject).ok());
    let conn = Arc::new(ConnInfo {
        scheme: "https",
        client_cert,
        ..Arc::unwrap_or_clone(conn)
    });
    let draining = shared.draining.clone();
    let handler = |request| handle_request(Box::new(request), &conn, shared);
    if h2 {
        h2::serve(
            stream,
            BytesMut::new(),
            h2_settings(&settings.limits),
            draining.token().clone(),
            handler,
        )
        .await;
        None
    } else {
        let halves = crate::stream_io::split_server_tls(stream);
        let on_reject = rejection_counter(&conn, shared);
        h1_server::serve(
            halves,
            BytesMut::new(),
            first_deadline,
            h1,
            draining,
            on_reject,
            handler,
        )
        .await
    }
}

/// Counts (and logs at debug level) a request the HTTP/1 guard refused.
fn rejection_counter<'a>(
    conn: &'a ConnInfo,
    shared: &'a Shared,
) -> impl Fn(crate::h1_guard::Rejection) + 'a {
    move |rejection| {
        tracing::debug!(client = %conn.client, status = rejection.status, reason = rejection.reason, "request refused");
        count_rejection(shared, conn, rejection.reason);
    }
}

fn count_rejection(shared: &Shared, conn: &ConnInfo, reason: &'static str) {
    shared
        .metrics
        .rejected
        .get_or_create(&RejectLabels {
            listener: Arc::clone(&conn.listener),
            reason,
        })
        .inc();
}

/// HTTP/2 settings from a listener's limits: the header list limit is `max_header_bytes`, and
/// an idle connection (or one that never finishes its preface) closes after
/// `header_read_timeout`, as an idle HTTP/1.1 keep-alive connection does.
fn h2_settings(limits: &gatehouse_config::Limits) -> H2Settings {
    H2Settings {
        max_header_list_size: u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
        idle_timeout: limits.header_read_timeout,
        stall_timeout: limits.stall_timeout,
        ..H2Settings::default()
    }
}

/// The HTTP/2 connection preface (RFC 9113 3.4): h2c with prior knowledge starts with it.
const H2_PREFACE: &[u8] = h2::PREFACE;

enum Detected {
    Http1,
    Http2,
    Closed,
}

/// Reads just enough to tell an HTTP/2 preface from an HTTP/1 request (usually one read).
async fn detect_h2_preface(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
) -> Detected {
    use tokio::io::AsyncReadExt;
    buf.reserve(16 * 1024);
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Detected::Http1;
        }
        if n == H2_PREFACE.len() {
            return Detected::Http2;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                // Closed or silent: a partial request is handled (and refused) by the h1 side.
                return if buf.is_empty() {
                    Detected::Closed
                } else {
                    Detected::Http1
                };
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Routes and forwards one request, and records it. The request comes boxed: it is forwarded
/// boxed, and a request future holding a pointer is not 240 bytes larger to move.
pub async fn handle_request(
    mut request: Box<Request<ProxyBody>>,
    conn: &ConnInfo,
    shared: &Arc<Shared>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // An HTTP/2 extended CONNECT (WebSocket over HTTP/2) goes upstream as an HTTP/1.1 upgrade
    // without a body: the client's DATA frames are the tunnel's, sent once it is open.
    let tunnel_body = request
        .extensions()
        .get::<crate::upgrade::ExtendedConnect>()
        .is_some()
        .then(|| std::mem::replace(request.body_mut(), crate::body::empty()));
    let version = request.version();
    let snapshot = shared.snapshot.load_full();
    let request_id = headers::request_id(request.headers());
    let (listener, router) = snapshot.listener_and_router(&conn.listener);
    let max_body_bytes = listener.map_or(gatehouse_config::Limits::default().max_body_bytes, |l| {
        l.limits.max_body_bytes
    });
    // The address this request is attributed to: the peer, or the client a trusted proxy names.
    let client = listener
        .and_then(|l| {
            l.protection
                .real_client(conn.client.ip(), request.headers())
        })
        .unwrap_or_else(|| conn.client.ip());

    let found = {
        let host = proxy::request_host_str(request.uri(), request.headers()).unwrap_or("");
        router.find(
            host,
            request.uri().path(),
            request.method(),
            request.headers(),
        )
    };
    let route = found.and_then(|i| snapshot.routes.get(i));
    // The arrival on the gateway's clock, for every phase that keeps time in nanoseconds.
    let started_nanos = shared.clock.nanos_at(started);
    let mut quota = None;
    let mut compress_for = None;
    let result = match route {
        None => Err(ProxyError::new(ErrorKind::NoRoute)),
        Some(route) => {
            // The request's arrival serves the rate limit: no clock read.
            let admission = route
                .protection
                .admit(request.headers(), client, || started_nanos);
            quota = admission.quota;
            match admission.refused {
                Some(refused) => Err(refused),
                None => {
                    // What compression needs from the request, taken before it is forwarded.
                    if route.compression.is_some() {
                        compress_for = Some((
                            request
                                .headers()
                                .get(http::header::ACCEPT_ENCODING)
                                .cloned(),
                            request.method() == http::Method::HEAD,
                        ));
                    }
                    let ctx = ForwardContext {
                        conn,
                        client,
                        request_id: &request_id,
                        max_body_bytes,
                        clock: &shared.clock,
                        started,
                        started_nanos,
                        deadline_header: snapshot.deadline_header.as_ref(),
                        metrics: &shared.metrics,
                        idempotency: &shared.idempotency,
                        hedges: &shared.hedges,
                        snapshot: &snapshot,
                        shared,
                    };
                    proxy::forward(route, request, &ctx).await
                }
            }
        }
    };
    let (mut response, endpoint, head_latency) = match result {
        Ok(Forwarded {
            response,
            endpoint,
            head_latency,
        }) => {
            let response = match (tunnel_body, route) {
                (Some(client_body), Some(route))
                    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS =>
                {
                    crate::upgrade::h2_tunnel_response(response, client_body, route.read_timeout)
                }
                _ => response,
            };
            let response = match (route.and_then(|r| r.compression.as_ref()), compress_for) {
                (Some(settings), Some((accept, is_head))) => {
                    crate::compress::apply(response, accept.as_ref(), settings, is_head)
                }
                _ => response,
            };
            (response, Some(endpoint), Some(head_latency))
        }
        Err(error) => {
            tracing::debug!(%error, %client, peer = %conn.client, "proxy error");
            if let Some(route) = route {
                shared
                    .metrics
                    .proxy_errors
                    .get_or_create(&ErrorLabels {
                        route: Arc::clone(&route.name),
                        cluster: Arc::clone(&route.cluster.name),
                        kind: crate::body::error_kind(&error),
                    })
                    .inc();
            }
            let mut response = error_response(&error);
            if version < http::Version::HTTP_2 && leaves_unread_body(&error) {
                // The rest of the client's body is still on the wire: the connection cannot
                // carry another request, so say we close it.
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            (response, None, None)
        }
    };
    // The request's id goes back to the client unless its route adds none (answers without a
    // route always carry it).
    if route.is_none_or(|route| route.forward_headers.x_request_id) {
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
    }
    if let Some(route) = route {
        route.protection.finish(
            response.headers_mut(),
            conn.scheme == "https",
            quota.as_ref(),
        );
    }
    // A forwarded response's head latency was measured already: no second clock read.
    let latency = head_latency.unwrap_or_else(|| started.elapsed());
    record(shared, conn, route, endpoint, response.status(), latency);
    response
}

fn leaves_unread_body(error: &ProxyError) -> bool {
    matches!(
        error.kind,
        ErrorKind::BodyTooLarge { .. }
            | ErrorKind::ClientBody { .. }
            | ErrorKind::ClientStalled { .. }
    )
}

fn record(
    shared: &Shared,
    conn: &ConnInfo,
    route: Option<&crate::snapshot::RouteRuntime>,
    endpoint: Option<Label>,
    status: http::StatusCode,
    latency: std::time::Duration,
) {
    shared.metrics.count_request(RequestLabelRefs {
        listener: &conn.listener,
        route: route.map(|r| &r.name),
        cluster: route.map(|r| &r.cluster.name),
        endpoint: endpoint.as_ref(),
        status: status.as_u16(),
    });
    if let Some(route) = route {
        route.duration.observe(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connection_limits_resize_in_place() {
        let limit = ConnectionLimit::new(3);
        let held = Arc::clone(&limit.semaphore)
            .acquire_many_owned(2)
            .await
            .unwrap();
        limit.resize(1);
        // One free permit is forgotten at once; one more is taken when a connection ends.
        assert_eq!(limit.semaphore.available_permits(), 0);
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(limit.semaphore.available_permits(), 1);
        limit.resize(4);
        assert_eq!(limit.semaphore.available_permits(), 4);
    }
}
