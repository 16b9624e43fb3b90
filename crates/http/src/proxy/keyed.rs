//! Idempotency-Key deduplication at the forwarder: a POST or PATCH carrying a key claims it
//! before any try, a repeat of a finished request is answered with the stored response, and the
//! claim is held until the response's body ends (then stored) or the request fails (then
//! released, so the client's retry can run).

use super::replay::ReplayBody;
use super::{ForwardContext, Forwarded};
use crate::idempotency::{self, Claim, KeyedRequest};
use crate::snapshot::RouteRuntime;
use bytes::Bytes;
use gatehouse_core::{MonotonicClock, ProxyError};
use gatehouse_resilience::idempotency::{IdempotencyStore, Ticket};
use http::header::HeaderValue;
use std::sync::Arc;

/// What a request's key allows.
pub(super) enum Claimed<'a> {
    /// The same request already ran: its stored response is the answer, and no try is sent.
    Replay(Forwarded),
    /// The request runs, holding its claim (none when it has no key that applies).
    Run(TicketGuard<'a>),
}

/// Claims `key` for the request when `keyed` (the method and key qualify) and its body was
/// buffered, so it can be fingerprinted. A key on a body too large to buffer is ignored.
pub(super) fn claim<'a>(
    route: &RouteRuntime,
    parts: &http::request::Parts,
    body: &ReplayBody,
    key: Option<&HeaderValue>,
    keyed: bool,
    ctx: &ForwardContext<'a>,
) -> Result<Claimed<'a>, ProxyError> {
    let unclaimed = Claimed::Run(TicketGuard {
        ticket: None,
        store: ctx.idempotency,
    });
    let (Some(key), true) = (key, keyed) else {
        return Ok(unclaimed);
    };
    let bytes = match body {
        ReplayBody::Buffered(bytes) => bytes.clone(),
        ReplayBody::Empty => Bytes::new(),
        ReplayBody::Streaming(_) => {
            tracing::debug!("Idempotency-Key ignored: the body is too large to fingerprint");
            return Ok(unclaimed);
        }
    };
    // The peer's text was formatted once per connection; a client named by a trusted proxy is
    // formatted here, on this rare path only.
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
    Ok(
        match idempotency::claim(
            ctx.idempotency.as_ref(),
            &keyed_request,
            ctx.clock.now_nanos(),
        )? {
            Claim::Replay(response) => Claimed::Replay(Forwarded {
                response,
                endpoint: gatehouse_observe::label("-"),
                head_latency: ctx.started.elapsed(),
            }),
            Claim::Run(ticket) => Claimed::Run(TicketGuard {
                ticket: Some(ticket),
                store: ctx.idempotency,
            }),
        },
    )
}

/// Holds a claimed idempotency key until the response takes it over; dropped with it (an
/// error, a refused retry), it releases the key so the client's retry can run.
pub(super) struct TicketGuard<'a> {
    ticket: Option<Ticket>,
    store: &'a Arc<dyn IdempotencyStore>,
}

impl TicketGuard<'_> {
    /// Hands the key to the response: it is stored when the response body ends.
    pub(super) fn attach(&mut self, forwarded: Forwarded, clock: MonotonicClock) -> Forwarded {
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
