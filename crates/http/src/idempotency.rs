//! `Idempotency-Key` on the data path: a POST or PATCH that carries a key runs once; a repeat
//! (same route, same client, same key, same method, target and body) gets the first response
//! again, marked with `idempotent-replayed: true`.
//!
//! The rules and the bounded store live in [`gatehouse_resilience::idempotency`]; this module
//! claims a key before forwarding, answers 409 (still running) or 422 (the key was used for a
//! different request), and records the upstream's response as its body streams to the client,
//! storing it when the body ends. A response that fails, is cut short, or is larger than
//! [`MAX_STORED_BODY`] releases the key instead, so the client's retry runs the request again.

use crate::body::ProxyBody;
use bytes::Bytes;
use gatehouse_cache::tee::{TeeSink, tee};
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_resilience::idempotency::{
    Begin, IdempotencyKey, IdempotencyStore, StoredResponse, Ticket, fingerprint,
};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response};
use http_body_util::BodyExt;
use std::sync::Arc;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Marks a response answered from the store.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Largest response body kept for replay; a larger response releases its key.
pub const MAX_STORED_BODY: usize = 1024 * 1024;

/// Whether this request takes part: POST or PATCH with a key. Other methods are idempotent by
/// definition and are simply forwarded.
pub fn applies(method: &Method, key: Option<&HeaderValue>) -> bool {
    key.is_some() && (*method == Method::POST || *method == Method::PATCH)
}

/// What to do with a keyed request.
pub enum Claim {
    /// First time: forward it, and record its response with this ticket.
    Run(Ticket),
    /// It already ran: this is its response.
    Replay(Response<ProxyBody>),
}

/// The request facts a claim is made from.
pub struct KeyedRequest<'a> {
    pub route: &'a str,
    /// Who asked: keys of different clients never meet.
    pub client: &'a str,
    pub key: &'a HeaderValue,
    pub method: &'a Method,
    pub target: &'a str,
    pub body: &'a [u8],
}

/// Claims the request's key: run it, replay the stored answer, or refuse with 409/422 (or 400
/// for an unusable key).
pub fn claim(
    store: &dyn IdempotencyStore,
    request: &KeyedRequest<'_>,
    now_nanos: u64,
) -> Result<Claim, ProxyError> {
    let key = IdempotencyKey::new(request.route, request.client, request.key.as_bytes()).map_err(
        |error| {
            ProxyError::new(ErrorKind::BadRequest {
                reason: error.to_string(),
            })
        },
    )?;
    let print = fingerprint(request.method, request.target, request.body);
    match store.begin(&key, print, now_nanos) {
        Begin::Started(ticket) => Ok(Claim::Run(ticket)),
        Begin::Replay(stored) => Ok(Claim::Replay(replay(&stored))),
        Begin::InFlight => Err(ProxyError::new(ErrorKind::IdempotencyInFlight)),
        Begin::Mismatch => Err(ProxyError::new(ErrorKind::IdempotencyMismatch)),
    }
}

fn replay(stored: &StoredResponse) -> Response<ProxyBody> {
    let body = if stored.trailers.is_empty() {
        crate::body::full(stored.body.clone())
    } else {
        let trailers: http::HeaderMap = stored.trailers.iter().cloned().collect();
        http_body_util::Full::new(stored.body.clone())
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .map_err(|never| match never {})
            .boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        http::StatusCode::from_u16(stored.status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    response
}

/// Lets `response` stream to the client while keeping a copy; stores it when the body ends.
pub fn record(
    response: Response<ProxyBody>,
    ticket: Ticket,
    store: Arc<dyn IdempotencyStore>,
    clock: MonotonicClock,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    // The recording must see every byte: none may be spliced past it.
    crate::splice::strip(&mut parts.extensions);
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let recording = Recording {
        ticket,
        store,
        clock,
        status: parts.status.as_u16(),
        headers,
    };
    Response::from_parts(parts, tee(body, recording, MAX_STORED_BODY).boxed())
}

/// Where a recorded response goes: the store when complete; a response cut short, failed or
/// too large releases its key, so the client's retry runs the request again.
struct Recording {
    ticket: Ticket,
    store: Arc<dyn IdempotencyStore>,
    clock: MonotonicClock,
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl TeeSink for Recording {
    fn complete(self, body: Bytes, trailers: Option<http::HeaderMap>) {
        let response = StoredResponse {
            status: self.status,
            headers: self.headers,
            body,
            trailers: trailers.map_or_else(Vec::new, |fields| {
                fields
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect()
            }),
        };
        if let Err(error) = self
            .store
            .complete(self.ticket, response, self.clock.now_nanos())
        {
            tracing::warn!(%error, "idempotent response not stored");
        }
    }

    fn abandon(self) {
        self.store.abandon(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_resilience::idempotency::{InMemoryStore, StoreLimits};

    fn keyed<'a>(key: &'a HeaderValue) -> KeyedRequest<'a> {
        KeyedRequest {
            route: "r",
            client: "127.0.0.1",
            key,
            method: &Method::POST,
            target: "/rpc",
            body: b"call",
        }
    }

    #[tokio::test]
    async fn a_replay_carries_the_first_answers_body_and_trailers() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(InMemoryStore::new(StoreLimits::default()));
        let clock = MonotonicClock::new();
        let key = HeaderValue::from_static("call-1");
        let Claim::Run(ticket) = claim(store.as_ref(), &keyed(&key), clock.now_nanos()).unwrap()
        else {
            panic!("the first claim runs");
        };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = http_body_util::Full::new(Bytes::from_static(b"answer"))
            .with_trailers(std::future::ready(Some(Ok(trailers.clone()))))
            .map_err(|never| match never {})
            .boxed();
        let first = record(Response::new(body), ticket, Arc::clone(&store), clock);
        let first = first.into_body().collect().await.unwrap();
        assert_eq!(first.trailers(), Some(&trailers));

        let Claim::Replay(again) = claim(store.as_ref(), &keyed(&key), clock.now_nanos()).unwrap()
        else {
            panic!("the repeat is a replay");
        };
        assert_eq!(again.headers()[&IDEMPOTENT_REPLAYED], "true");
        let again = again.into_body().collect().await.unwrap();
        assert_eq!(again.trailers(), Some(&trailers));
        assert_eq!(again.to_bytes(), "answer");
    }
}
