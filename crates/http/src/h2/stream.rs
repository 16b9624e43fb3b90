//! One stream's request side: checking a decoded header block against RFC 9113 §8 and turning
//! it into an `http::Request`, and the request body the connection feeds with DATA frames.
//!
//! The body is a [`RequestBody`] (boxed into a `ProxyBody`), shared with the connection through
//! a small mutex-protected [`RecvState`]: the handler may hand the body to another task (the
//! upstream HTTP/2 client runs its own), so it must be `Send + Sync`. Taking data from the body
//! is what gives flow-control credit back to the client (`Signals::released`), so a client
//! can never get more than its windows ahead of the consumer.

use super::hpack::{Field, Name};
use crate::body::{BodyError, BoxError};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Version};
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Builds a request from a header block's fields, remembering the first rule broken.
#[derive(Debug, Default)]
pub struct RequestHead {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    /// RFC 8441 extended CONNECT.
    protocol: Option<Bytes>,
    headers: HeaderMap,
    saw_regular: bool,
    content_length: Option<u64>,
    error: Option<&'static str>,
}

/// A request head that passed the checks.
#[derive(Debug)]
pub struct CheckedHead {
    pub parts: http::request::Parts,
    /// The declared Content-Length, which the DATA frames must match.
    pub content_length: Option<u64>,
}

/// Room for a typical request's fields plus the ones the proxy adds (X-Forwarded-*, Via,
/// X-Request-Id, TE), so the map is allocated once and never grows on the way upstream.
const TYPICAL_FIELDS: usize = 16;

impl RequestHead {
    pub fn new() -> Self {
        Self {
            headers: HeaderMap::with_capacity(TYPICAL_FIELDS),
            ..Self::default()
        }
    }

    /// Adds one decoded field.
    pub fn push(&mut self, field: Field) {
        if self.error.is_none()
            && let Err(reason) = self.try_push(field)
        {
            self.error = Some(reason);
        }
    }

    fn try_push(&mut self, field: Field) -> Result<(), &'static str> {
        let Field { name, value } = field;
        let slot = match name {
            Name::Method => &mut self.method,
            Name::Scheme => &mut self.scheme,
            Name::Authority => &mut self.authority,
            Name::Path => &mut self.path,
            Name::Status => return Err("response pseudo-header in a request"),
            Name::Protocol => &mut self.protocol,
            Name::UnknownPseudo(_) => return Err("unknown pseudo-header"),
            Name::Invalid(_) => return Err("invalid header name (uppercase or not a token)"),
            Name::Header(name) => return self.regular(name, value),
        };
        if self.saw_regular {
            return Err("pseudo-header after a regular header");
        }
        if slot.is_some() {
            return Err("repeated pseudo-header");
        }
        *slot = Some(value);
        Ok(())
    }

    fn regular(&mut self, name: HeaderName, value: Bytes) -> Result<(), &'static str> {
        self.saw_regular = true;
        check_value(&value)?;
        if name == header::CONNECTION
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
        {
            return Err("connection-specific header");
        }
        if name == header::TE && !value.eq_ignore_ascii_case(b"trailers") {
            return Err("TE other than trailers");
        }
        if name == header::CONTENT_LENGTH {
            let length = parse_length(&value).ok_or("invalid content-length")?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err("conflicting content-length");
            }
            if self.content_length.is_some() {
                return Ok(()); // an identical repeat adds nothing
            }
            self.content_length = Some(length);
        }
        if name == header::COOKIE
            && let Some(existing) = self.headers.get_mut(header::COOKIE)
        {
            // RFC 9113 §8.2.3: cookie crumbs are joined with "; " for HTTP/1.1 and the app.
            let mut joined = Vec::with_capacity(existing.len() + 2 + value.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b"; ");
            joined.extend_from_slice(&value);
            *existing = HeaderValue::from_maybe_shared(Bytes::from(joined))
                .map_err(|_| "invalid header value")?;
            return Ok(());
        }
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| "invalid header value")?;
        self.headers.append(name, value);
        Ok(())
    }

    /// Checks the pseudo-headers and builds the request parts. `end_stream`: the HEADERS frame
    /// ended the stream (no body).
    pub fn finish(self, end_stream: bool) -> Result<CheckedHead, &'static str> {
        if let Some(reason) = self.error {
            return Err(reason);
        }
        let method = self.method.ok_or("missing :method")?;
        let method = Method::from_bytes(&method).map_err(|_| "invalid :method")?;
        let mut uri = http::uri::Parts::default();
        let authority = match self.authority {
            Some(a) => Some(Authority::from_maybe_shared(a).map_err(|_| "invalid :authority")?),
            None => None,
        };
        // RFC 8441 extended CONNECT (we announce SETTINGS_ENABLE_CONNECT_PROTOCOL): a request to
        // open a tunnel speaking :protocol (WebSocket) at :path. It is served as the HTTP/1.1
        // upgrade it stands for: a GET that asks for that protocol.
        let protocol = match self.protocol {
            Some(_) if method != Method::CONNECT => return Err(":protocol without CONNECT"),
            Some(p) => Some(HeaderValue::from_maybe_shared(p).map_err(|_| "invalid :protocol")?),
            None => None,
        };
        let method = if protocol.is_some() {
            Method::GET
        } else {
            method
        };
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(":scheme or :path in CONNECT");
            }
            uri.authority = Some(authority.ok_or("CONNECT without :authority")?);
        } else {
            let scheme = self.scheme.ok_or("missing :scheme")?;
            let path = self.path.ok_or("missing :path")?;
            if path.is_empty() {
                return Err("empty :path");
            }
            if path[0] != b'/' && !(method == Method::OPTIONS && &path[..] == b"*") {
                return Err(":path is not absolute");
            }
            let scheme = match &scheme[..] {
                b"http" => Scheme::HTTP,
                b"https" => Scheme::HTTPS,
                other => Scheme::try_from(other).map_err(|_| "invalid :scheme")?,
            };
            uri.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "invalid :path")?);
            if let Some(authority) = authority {
                // Like hyper: the authority goes in the URI; without one the URI is the path.
                uri.scheme = Some(scheme);
                uri.authority = Some(authority);
            }
        }
        if end_stream && self.content_length.is_some_and(|n| n != 0) {
            return Err("content-length without a body");
        }
        let uri = Uri::from_parts(uri).map_err(|_| "invalid request target")?;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = Version::HTTP_2;
        parts.headers = self.headers;
        if let Some(protocol) = protocol {
            parts.extensions.insert(crate::upgrade::ExtendedConnect);
            parts
                .extensions
                .insert(crate::upgrade::UpgradeRequested { protocol });
        }
        Ok(CheckedHead {
            parts,
            content_length: self.content_length,
        })
    }
}

/// Builds trailers from a trailing header block (no pseudo-headers allowed).
#[derive(Debug, Default)]
pub struct TrailersHead {
    headers: HeaderMap,
    error: Option<&'static str>,
}

impl TrailersHead {
    pub fn push(&mut self, field: Field) {
        if self.error.is_some() {
            return;
        }
        let Name::Header(name) = field.name else {
            self.error = Some("pseudo-header or invalid name in trailers");
            return;
        };
        match check_value(&field.value).and_then(|()| {
            HeaderValue::from_maybe_shared(field.value).map_err(|_| "invalid header value")
        }) {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(reason) => self.error = Some(reason),
        }
    }

    pub fn finish(self) -> Result<HeaderMap, &'static str> {
        match self.error {
            Some(reason) => Err(reason),
            None => Ok(self.headers),
        }
    }
}

/// RFC 9113 §8.2.1: no NUL, CR or LF anywhere, no leading or trailing whitespace.
/// (`HeaderValue` then refuses other control characters.)
fn check_value(value: &[u8]) -> Result<(), &'static str> {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    if edge(value.first()) || edge(value.last()) {
        return Err("header value with leading or trailing whitespace");
    }
    if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err("NUL, CR or LF in a header value");
    }
    Ok(())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// How streams reach the connection task from wherever they are polled: which streams were
/// woken, and which request bodies gave data back (flow-control credit to return).
#[derive(Default)]
pub struct Signals {
    queues: Mutex<Queues>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct Queues {
    ready: Vec<u32>,
    released: Vec<u32>,
}

impl Signals {
    /// The connection task's waker, registered at the start of every turn.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    fn ready(&self, id: u32) {
        self.queues.lock().ready.push(id);
        self.waker.wake();
    }

    fn released(&self, id: u32) {
        self.queues.lock().released.push(id);
        self.waker.wake();
    }

    /// Moves the pending signals into the caller's lists. Returns whether there were any.
    pub fn take(&self, ready: &mut Vec<u32>, released: &mut Vec<u32>) -> bool {
        let mut queues = self.queues.lock();
        let any = !queues.ready.is_empty() || !queues.released.is_empty();
        ready.append(&mut queues.ready);
        released.append(&mut queues.released);
        any
    }
}

/// A stream's waker: queues the stream id for the connection and wakes the connection task,
/// once until the stream is polled again.
pub struct StreamWaker {
    id: u32,
    queued: AtomicBool,
    signals: Arc<Signals>,
}

impl StreamWaker {
    pub fn new(id: u32, signals: Arc<Signals>) -> Arc<Self> {
        Arc::new(Self {
            id,
            queued: AtomicBool::new(false),
            signals,
        })
    }

    /// Called just before the stream is polled: later wakes queue it again.
    pub fn clear(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.signals.ready(self.id);
        }
    }
}

/// What the connection and a request body share.
#[derive(Default)]
pub struct RecvState {
    data: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// END_STREAM arrived: after `data` and `trailers`, the body ends.
    end: bool,
    /// The stream or connection failed: the body reports this instead of ending.
    error: Option<&'static str>,
    /// Where the body waits for more.
    waker: Option<Waker>,
    /// Bytes the body took (or dropped) that the connection has not yet credited back.
    consumed: u32,
    /// The stream id is already in the connection's released queue.
    release_queued: bool,
    /// The body was dropped: further DATA is discarded (and credited at once).
    dropped: bool,
    /// The client sent none of the body for this long while it could (see the connection's
    /// stall check): the body fails with [`crate::limits::ClientStalled`].
    stalled: Option<std::time::Duration>,
}

impl RecvState {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The body waits for DATA the client has not sent (it has taken all that came).
    pub fn awaits_data(&self) -> bool {
        self.waker.is_some() && self.data.is_empty() && !self.end && self.error.is_none()
    }

    /// Fails the body: the client stalled it for `after`. Later DATA is discarded.
    pub fn stall(&mut self, after: std::time::Duration) {
        self.stalled = Some(after);
        self.error.get_or_insert("the client stalled its body");
        self.wake();
    }

    /// Queues DATA for the body. Returns false when the body is gone (the caller discards the
    /// bytes and credits them back itself).
    pub fn push_data(&mut self, data: Bytes) -> bool {
        if self.dropped || self.error.is_some() {
            return false;
        }
        if !data.is_empty() {
            self.data.push_back(data);
            self.wake();
        }
        true
    }

    pub fn push_trailers(&mut self, trailers: HeaderMap) {
        self.trailers = Some(trailers);
        self.end = true;
        self.wake();
    }

    pub fn end(&mut self) {
        self.end = true;
        self.wake();
    }

    /// The connection lets go of the stream. Returns every byte it will not see consumed
    /// (queued, and consumed but not yet credited), for the connection window. A body that
    /// arrived complete may still be read to its end (an upstream may take an upload after the
    /// response is done); an incomplete one fails with `reason`.
    pub fn close(&mut self, reason: &'static str) -> u32 {
        let queued: usize = self.data.iter().map(|d| d.len()).sum();
        let total = u32::try_from(queued)
            .unwrap_or(u32::MAX)
            .saturating_add(std::mem::take(&mut self.consumed));
        if !self.end || self.error.is_some() {
            self.data.clear();
            self.trailers = None;
            self.error.get_or_insert(reason);
        }
        self.wake();
        total
    }

    /// Takes the bytes to credit back. Returns (bytes, whether the body was dropped).
    pub fn take_consumed(&mut self) -> (u32, bool) {
        self.release_queued = false;
        (std::mem::take(&mut self.consumed), self.dropped)
    }
}

/// A request body fed by the connection.
pub struct RequestBody {
    id: u32,
    state: Arc<Mutex<RecvState>>,
    signals: Arc<Signals>,
    /// Content-Length still to come, for the size hint.
    remaining: Option<u64>,
}

impl RequestBody {
    pub fn new(
        id: u32,
        state: Arc<Mutex<RecvState>>,
        signals: Arc<Signals>,
        content_length: Option<u64>,
    ) -> Self {
        Self {
            id,
            state,
            signals,
            remaining: content_length,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.state.lock();
        if let Some(data) = state.data.pop_front() {
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            state.consumed = state.consumed.saturating_add(len);
            let notify = !std::mem::replace(&mut state.release_queued, true);
            drop(state);
            if notify {
                self.signals.released(self.id);
            }
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining = remaining.saturating_sub(u64::from(len));
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(after) = state.stalled {
            return Poll::Ready(Some(Err(Box::new(crate::limits::ClientStalled { after }))));
        }
        if let Some(reason) = state.error {
            return Poll::Ready(Some(Err(Box::new(BodyError::client(reason.to_owned())))));
        }
        if let Some(trailers) = state.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if state.end {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = self.state.lock();
        state.end && state.data.is_empty() && state.trailers.is_none() && state.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        state.dropped = true;
        state.waker = None;
        let queued: usize = state.data.drain(..).map(|d| d.len()).sum();
        state.consumed = state
            .consumed
            .saturating_add(u32::try_from(queued).unwrap_or(u32::MAX));
        let notify = !std::mem::replace(&mut state.release_queued, true);
        drop(state);
        if notify {
            self.signals.released(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: Name::parse(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn head(fields: &[(&str, &str)], end_stream: bool) -> Result<CheckedHead, &'static str> {
        let mut head = RequestHead::new();
        for (n, v) in fields {
            head.push(field(n, v));
        }
        head.finish(end_stream)
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "example.com:8080"),
        (":path", "/a?b=c"),
    ];

    #[test]
    fn a_valid_request() {
        let mut fields = GET.to_vec();
        fields.extend([
            ("cookie", "a=1"),
            ("user-agent", "t"),
            ("cookie", "b=2"),
            ("te", "trailers"),
            ("content-length", "0"),
        ]);
        let checked = head(&fields, true).unwrap();
        let parts = checked.parts;
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.version, Version::HTTP_2);
        assert_eq!(parts.uri, "http://example.com:8080/a?b=c");
        assert_eq!(parts.headers["cookie"], "a=1; b=2");
        assert_eq!(checked.content_length, Some(0));
        // No authority: the URI is the path.
        let checked = head(
            &[(":method", "GET"), (":scheme", "https"), (":path", "/")],
            true,
        );
        assert_eq!(checked.unwrap().parts.uri, "/");
        // CONNECT: authority only.
        let checked = head(&[(":method", "CONNECT"), (":authority", "h:443")], false).unwrap();
        assert_eq!(checked.parts.uri.authority().unwrap(), "h:443");
        // OPTIONS *.
        assert!(
            head(
                &[(":method", "OPTIONS"), (":scheme", "http"), (":path", "*")],
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let with = |extra: &[(&str, &str)]| {
            let mut fields = GET.to_vec();
            fields.extend_from_slice(extra);
            head(&fields, false)
        };
        for extra in [
            &[("connection", "close")][..],
            &[("keep-alive", "1")],
            &[("proxy-connection", "x")],
            &[("transfer-encoding", "chunked")],
            &[("upgrade", "h2c")],
            &[("te", "gzip")],
            &[("Host", "x")],
            &[("x", " padded")],
            &[("x", "a\0b")],
            &[("content-length", "1"), ("content-length", "2")],
            &[("content-length", "-1")],
            &[("x", "1"), (":path", "/again")],
            &[(":status", "200")],
            &[(":protocol", "websocket")],
            &[(":foo", "bar")],
        ] {
            assert!(with(extra).is_err(), "{extra:?} should be refused");
        }
        assert_eq!(
            head(&[(":method", "GET"), (":scheme", "http")], false).unwrap_err(),
            "missing :path"
        );
        assert!(head(&[(":method", "GET"), (":path", "/")], false).is_err());
        assert!(head(&[(":scheme", "http"), (":path", "/")], false).is_err());
        assert!(
            head(
                &[(":method", "GET"), (":scheme", "http"), (":path", "")],
                false
            )
            .is_err()
        );
        assert!(
            head(
                &[(":method", "GET"), (":scheme", "http"), (":path", "x")],
                false
            )
            .is_err()
        );
        assert!(
            head(
                &[
                    (":method", "CONNECT"),
                    (":authority", "h:1"),
                    (":path", "/")
                ],
                false
            )
            .is_err()
        );
        let mut fields = GET.to_vec();
        fields.push((":method", "POST"));
        assert_eq!(head(&fields, false).unwrap_err(), "repeated pseudo-header");
        let mut fields = GET.to_vec();
        fields.push(("content-length", "5"));
        assert!(head(&fields, true).is_err(), "length without a body");
    }

    #[test]
    fn trailers_allow_no_pseudo_headers() {
        let mut t = TrailersHead::default();
        t.push(field("grpc-status", "0"));
        assert_eq!(t.finish().unwrap()["grpc-status"], "0");
        let mut t = TrailersHead::default();
        t.push(field(":path", "/"));
        assert!(t.finish().is_err());
    }

    #[tokio::test]
    async fn bodies_report_consumption_and_end() {
        let signals = Arc::new(Signals::default());
        let state = Arc::new(Mutex::new(RecvState::default()));
        let mut body = RequestBody::new(1, Arc::clone(&state), Arc::clone(&signals), Some(6));
        assert!(state.lock().push_data(Bytes::from_static(b"abc")));
        assert!(state.lock().push_data(Bytes::from_static(b"def")));
        let mut trailers = HeaderMap::new();
        trailers.insert("x", HeaderValue::from_static("y"));
        state.lock().push_trailers(trailers);
        assert_eq!(body.size_hint().exact(), Some(6));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        let (mut ready, mut released) = (Vec::new(), Vec::new());
        assert!(signals.take(&mut ready, &mut released));
        assert_eq!(
            released,
            [1],
            "one signal until the connection takes the credit"
        );
        let _ = body.frame().await.unwrap().unwrap();
        assert!(!signals.take(&mut ready, &mut released));
        assert_eq!(state.lock().take_consumed(), (6, false));
        let trailers = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["x"], "y");
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn dropped_and_failed_bodies() {
        let signals = Arc::new(Signals::default());
        let state = Arc::new(Mutex::new(RecvState::default()));
        let body = RequestBody::new(3, Arc::clone(&state), Arc::clone(&signals), None);
        state.lock().push_data(Bytes::from_static(b"12345"));
        drop(body);
        assert_eq!(state.lock().take_consumed(), (5, true));
        assert!(!state.lock().push_data(Bytes::from_static(b"more")));

        let state = Arc::new(Mutex::new(RecvState::default()));
        let mut body = RequestBody::new(5, Arc::clone(&state), Arc::clone(&signals), None);
        state.lock().push_data(Bytes::from_static(b"1234"));
        assert_eq!(state.lock().close("stream reset by the client"), 4);
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("reset"), "{err}");
    }
}
