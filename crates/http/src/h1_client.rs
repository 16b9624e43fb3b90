//! HTTP/1.1 to upstreams, driven inline by the request that uses the connection.
//!
//! hyper's client runs each connection as its own task and talks to it through channels: every
//! proxied request then costs a channel send, a wake-up of the connection task, a oneshot back,
//! and a readiness hand-off before the connection can be pooled again. A proxy does not need
//! that indirection: the request future itself writes the head (and body), reads the response
//! head, and the response body reads straight from the socket as the client consumes it. When
//! the body ends cleanly the connection goes back to its pool; if it is dropped early the
//! connection closes. Everything is one task, with no wake-ups between parts of the proxy.
//!
//! Framing follows RFC 9112 strictly in both directions: a request body is sent with its
//! Content-Length when known, chunked otherwise; a response body is delimited by (in order)
//! the request method and status (HEAD, 1xx, 204, 304: none), Transfer-Encoding (chunked must be
//! last; then Content-Length is ignored and the connection not reused), Content-Length (one
//! value), or the end of the connection.

use crate::body::{BodyError, BoxError, ProxyBody};
use crate::chunked::ChunkedDecoder;
use crate::headers::ProxyFields;
use crate::name_cache::NameCache;
use crate::stream_io::{ConnRead, ConnWrite};
use crate::upgrade::{TunnelEnd, UpstreamTunnel};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Largest response head accepted from an upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;
/// Header fields the proxy adds to a response, reserved up front so adding them never grows the
/// map: Via, X-Request-Id, and a route's default security headers (HSTS, X-Content-Type-Options,
/// X-Frame-Options, Referrer-Policy).
const ADDED_BY_PROXY: usize = 6;
/// Reads ask for at least this much room: large bodies move in few syscalls.
const READ_RESERVE: usize = 16 * 1024;
/// A response head is read at most this much at a time from a cleartext connection (one page,
/// as nginx's `proxy_buffer_size`): what comes behind the head stays in the socket, where a
/// long body can be spliced to the client without being copied (see [`crate::splice`]).
const HEAD_READ: u64 = 4 * 1024;
/// How long to look for an answer after an upload failed because the upstream closed.
const EARLY_ANSWER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);
/// A pooled connection keeps at most this much read buffer; bigger ones are replaced.
const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// One keep-alive connection to an upstream. Its halves are owned separately so a request body
/// can keep streaming up while the response streams down (full duplex).
pub struct H1Connection {
    read: ConnRead,
    /// Lent to a body upload that outlives the response head; back when the upload ends.
    write: Option<ConnWrite>,
    /// Bytes received and not yet consumed.
    read_buf: BytesMut,
    /// The head of the request being sent, encoded into a buffer the connection keeps, so a
    /// request costs no allocation for it.
    head: Vec<u8>,
    /// When the request that last used it arrived. Stamping the arrival time the proxy already
    /// has costs no clock read; the idle time measured from it is overstated by that request's
    /// duration, so a connection is retired early rather than late (the safe side of an
    /// upstream's own keep-alive timeout).
    pub(crate) last_used: Instant,
    /// The deadline timer of this connection's exchanges, made at its first one and kept: a new
    /// timer per exchange would cost two locked timer-wheel updates (insert, then remove when
    /// the answer comes first, as it almost always does). An exchange whose deadline is later
    /// than the timer's leaves it alone and moves it on only if it fires first (see
    /// [`deadline_passed`]), so a busy connection re-arms it about once per timeout rather than
    /// once per request. Between exchanges it stays armed with the last waker: at worst one
    /// spurious wake-up of that task, once.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The upstream's field names, by position, from its previous response (see
    /// [`NameCache`]).
    names: NameCache,
}

/// The rest of a request body still being sent after the response head arrived. It gives the
/// write half back when done (and says whether the whole body went out).
type Upload = Pin<Box<dyn Future<Output = (ConnWrite, Result<(), ExchangeError>)> + Send + Sync>>;

/// Why an exchange failed, precisely enough for the pool to decide on a retry and for the proxy
/// to pick the status.
#[derive(Debug)]
pub enum ExchangeError {
    /// Writing to the upstream failed.
    Write(io::Error),
    /// The upstream closed the connection before sending any response byte.
    ClosedBeforeResponse,
    /// The connection broke after part of a response head arrived.
    Read(io::Error),
    /// The response head is not valid HTTP/1.1.
    Protocol(String),
    /// Reading the client's request body failed (or hit the size limit).
    ClientBody(BoxError),
    /// The exchange's deadline passed before the response head arrived.
    DeadlinePassed,
}

/// How a request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl H1Connection {
    /// A fresh connection (its halves, cleartext or TLS) for a request that arrived at `now`.
    pub fn new((read, write): (ConnRead, ConnWrite), now: Instant) -> Self {
        Self {
            read,
            write: Some(write),
            read_buf: BytesMut::new(),
            head: Vec::new(),
            last_used: now,
            deadline: None,
            names: NameCache::new(),
        }
    }

    /// The cleartext socket the response arrives on (none for TLS).
    pub(crate) fn tcp_read(&self) -> Option<&tokio::net::TcpStream> {
        self.read.tcp().map(AsRef::as_ref)
    }

    /// Encodes the head of the request to send next (see [`encode_head`]).
    pub fn encode_head(&mut self, head: UpstreamHead<'_>, framing: RequestFraming) {
        self.head.clear();
        encode_head(head, framing, &mut self.head);
    }

    /// Whether the upstream closed (or wrote to) this idle connection. Costs no system call
    /// unless the reactor has already seen the socket become readable.
    pub fn is_stale(&mut self) -> bool {
        // A read with a waker that is never woken: a pending read means nothing arrived (and,
        // on a socket the reactor has not seen become readable, costs no system call); data or
        // end of stream on an idle connection means the upstream closed it or broke protocol.
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = tokio::io::ReadBuf::new(&mut probe);
        !matches!(
            Pin::new(&mut self.read).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Writes the request head and streams the body after it. An upstream may answer before it
    /// has read the whole body (an early 413 or 401 and no more reading, or an echo that streams
    /// back as it reads): then the rest of the upload is returned, to continue alongside the
    /// response body.
    pub async fn write_request(
        &mut self,
        body: Option<ProxyBody>,
        framing: RequestFraming,
    ) -> Result<Option<Upload>, ExchangeError> {
        let Some(mut writer) = self.write.take() else {
            return Err(ExchangeError::Write(io::ErrorKind::BrokenPipe.into()));
        };
        let Some(body) = body.filter(|_| framing != RequestFraming::None) else {
            let written = writer.write_all(&self.head).await;
            self.write = Some(writer);
            return written.map(|()| None).map_err(ExchangeError::Write);
        };
        // The upload owns the head from here; the connection makes a new buffer next time.
        let head = std::mem::take(&mut self.head);
        let mut upload: Upload = Box::pin(upload(writer, head, body, framing));
        let H1Connection { read, read_buf, .. } = self;
        // Data or end of stream from the upstream while the body still goes up.
        let early_answer = read.read_buf(read_buf);
        tokio::select! {
            biased;
            (writer, sent) = &mut upload => {
                self.write = Some(writer);
                sent.map(|()| None)
            }
            answered = early_answer => answered.map(|_| Some(upload)).map_err(ExchangeError::Read),
        }
    }

    /// Reads the response head (skipping interim 1xx responses). A `101 Switching Protocols`
    /// is the final answer when the request asked for an upgrade, and a protocol error if not.
    async fn read_head(
        &mut self,
        method: &Method,
        upgrade: bool,
    ) -> Result<(http::response::Parts, ResponseFraming, bool), ExchangeError> {
        let mut received_any = !self.read_buf.is_empty();
        loop {
            if !self.read_buf.is_empty() {
                if let Some((parts, framing, keep_alive)) =
                    parse_head(&mut self.read_buf, method, &mut self.names)?
                {
                    if parts.status.is_informational() {
                        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                            if upgrade {
                                return Ok((parts, framing, false));
                            }
                            return Err(ExchangeError::Protocol(
                                "101 Switching Protocols to a request that asked for no upgrade"
                                    .into(),
                            ));
                        }
                        continue; // 100 Continue, 103 Early Hints: the real answer follows
                    }
                    return Ok((parts, framing, keep_alive));
                }
                if self.read_buf.len() > MAX_RESPONSE_HEAD {
                    return Err(ExchangeError::Protocol("response head too large".into()));
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_RESERVE {
                self.read_buf.reserve(READ_RESERVE);
            }
            let read = if self.read.tcp().is_some() {
                (&mut self.read)
                    .take(HEAD_READ)
                    .read_buf(&mut self.read_buf)
                    .await
            } else {
                self.read.read_buf(&mut self.read_buf).await
            };
            let n = read.map_err(|e| {
                if received_any {
                    ExchangeError::Read(e)
                } else if matches!(e.kind(), io::ErrorKind::ConnectionReset) {
                    ExchangeError::ClosedBeforeResponse
                } else {
                    ExchangeError::Read(e)
                }
            })?;
            if n == 0 {
                return Err(if received_any {
                    ExchangeError::Read(io::ErrorKind::UnexpectedEof.into())
                } else {
                    ExchangeError::ClosedBeforeResponse
                });
            }
            received_any = true;
        }
    }
}

/// Writes `head` and then the body in the given framing, in writes of up to `WRITE_CHUNK`;
/// gives the write half back with the outcome.
async fn upload(
    mut writer: ConnWrite,
    mut head: Vec<u8>,
    body: ProxyBody,
    framing: RequestFraming,
) -> (ConnWrite, Result<(), ExchangeError>) {
    let result = write_body(&mut writer, &mut head, body, framing).await;
    (writer, result)
}

async fn write_body(
    writer: &mut ConnWrite,
    out: &mut Vec<u8>,
    body: ProxyBody,
    framing: RequestFraming,
) -> Result<(), ExchangeError> {
    crate::wire::write_message(writer, out, body, framing == RequestFraming::Chunked, None)
        .await
        .map_err(|error| match error {
            crate::wire::WriteError::Body(e) => ExchangeError::ClientBody(e),
            crate::wire::WriteError::Io(e) => ExchangeError::Write(e),
        })
}

/// A request on its way upstream: the client's request as rewritten, and the fields this hop
/// adds, which travel beside its map (see [`ProxyFields`]).
#[derive(Clone, Copy)]
pub struct UpstreamHead<'a> {
    pub parts: &'a http::request::Parts,
    pub fields: &'a ProxyFields,
}

/// Serializes a request head for an HTTP/1.1 upstream: request line, every header except
/// framing ones, this hop's fields, then the framing header this client will honour.
pub fn encode_head(head: UpstreamHead<'_>, framing: RequestFraming, out: &mut Vec<u8>) {
    let parts = head.parts;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let framing_field =
        |name: &HeaderName| name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
    let fields = parts
        .headers
        .iter()
        .filter(|(name, _)| !framing_field(name));
    for (name, value) in fields.chain(head.fields.iter()) {
        crate::wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How to send a body: nothing for an empty body (and no Content-Length unless the method
/// usually carries one), its length when known, chunked otherwise.
pub fn request_framing(method: &Method, body: &ProxyBody) -> RequestFraming {
    if body.is_end_stream() {
        // POST/PUT/PATCH with an empty body still announce it, as clients do.
        return if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            RequestFraming::Length(0)
        } else {
            RequestFraming::None
        };
    }
    match body.size_hint().exact() {
        Some(n) => RequestFraming::Length(n),
        None => RequestFraming::Chunked,
    }
}

/// A parsed response head: parts, body framing, and whether the connection may be reused.
pub type ResponseHead = (http::response::Parts, ResponseFraming, bool);

/// Where one header field lies in the head: name and value as byte ranges.
#[derive(Clone, Copy, Default)]
struct FieldSpan {
    name: (usize, usize),
    value: (usize, usize),
}

/// Parses a complete response head at the start of `buf` and takes it out of `buf`; None (and
/// `buf` untouched) while incomplete. Header values are slices of the head's bytes, not copies.
pub fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    names: &mut NameCache,
) -> Result<Option<ResponseHead>, ExchangeError> {
    thread_local! {
        /// Where the fields lie, kept between responses: no allocation, and nothing to zero.
        static SPANS: std::cell::Cell<Vec<FieldSpan>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut spans = SPANS.take();
    spans.clear();
    let parsed = parse_head_with(buf, method, &mut spans, names);
    if spans.capacity() <= MAX_RESPONSE_HEADERS {
        SPANS.set(spans);
    }
    parsed
}

fn parse_head_with(
    buf: &mut BytesMut,
    method: &Method,
    spans: &mut Vec<FieldSpan>,
    names: &mut NameCache,
) -> Result<Option<ResponseHead>, ExchangeError> {
    let (len, code, version) = {
        // Uninitialized: httparse writes the fields it finds (zeroing 128 per response would
        // cost more than parsing a usual head).
        let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => {
                return Err(ExchangeError::Protocol(format!(
                    "invalid response head: {err}"
                )));
            }
        };
        // httparse borrows `buf`; remember where each field is so the head can be split off.
        let base = buf.as_ptr() as usize;
        let range = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start, start + s.len())
        };
        spans.extend(response.headers.iter().map(|h| FieldSpan {
            name: range(h.name.as_bytes()),
            value: range(h.value),
        }));
        (len, response.code, response.version)
    };
    let count = spans.len();
    let head = buf.split_to(len).freeze();
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| ExchangeError::Protocol("invalid status code".into()))?;
    let version = if version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = crate::header_maps::take(count + ADDED_BY_PROXY);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = version == Version::HTTP_10;
    // Hop-by-hop fields (RFC 9110 7.6.1) never enter the map: this hop's framing and
    // connection handling are read from them here, and the next hop gets its own. `Upgrade`
    // stays on a 101, which switches the client's connection too.
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut connection_named: Vec<HeaderName> = Vec::new();
    for (index, span) in spans.iter().enumerate() {
        let name_bytes = &head[span.name.0..span.name.1];
        let raw = &head[span.value.0..span.value.1];
        let name = names.name(index, name_bytes).map_err(|_| {
            ExchangeError::Protocol(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name_bytes)
            ))
        })?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(raw)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ExchangeError::Protocol("invalid Content-Length".into()))?;
            if content_length.is_some_and(|previous| previous != n) {
                return Err(ExchangeError::Protocol(
                    "conflicting Content-Length values".into(),
                ));
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding decides whether the body is chunked.
            chunked = raw
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue; // framing of this hop only
        } else if name == header::CONNECTION {
            for token in raw.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !token.is_empty()
                    && !token.eq_ignore_ascii_case(b"upgrade")
                    && let Ok(named) = HeaderName::from_bytes(token)
                {
                    connection_named.push(named);
                }
            }
            continue;
        } else if crate::headers::is_hop_by_hop(&name) && !(switching && name == header::UPGRADE) {
            continue;
        }
        // Made only for the fields that are kept: each is a reference on the head's bytes.
        // SAFETY: httparse accepted the value, with the default config (above).
        let value = unsafe {
            crate::h1_guard::value_parsed_by_httparse(head.slice(span.value.0..span.value.1))
        };
        map.append(name, value);
    }
    // Headers the upstream's Connection names are hop-by-hop too (rare: a list only then).
    for named in connection_named {
        map.remove(named);
    }
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ResponseFraming::Empty
    } else if transfer_encoding {
        if content_length.is_some() {
            // RFC 9112 6.3: Transfer-Encoding wins, and the connection must not be reused.
            map.remove(header::CONTENT_LENGTH);
            close = true;
        }
        if chunked {
            ResponseFraming::Chunked(ChunkedDecoder::new())
        } else {
            close = true;
            ResponseFraming::UntilClose
        }
    } else if let Some(n) = content_length {
        ResponseFraming::Length(n)
    } else {
        close = true;
        ResponseFraming::UntilClose
    };
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some((parts, framing, !close)))
}

/// Where a finished connection goes.
pub trait ConnectionHome: Send + Sync + 'static {
    fn put_idle(&self, connection: H1Connection);
}

/// Sends `head` (and `body`) on `connection` and returns the response, whose body streams from
/// the connection and hands it to `home` when it ends cleanly; [`ExchangeError::DeadlinePassed`]
/// when no response head arrived by `deadline`. For a request that asked for an `upgrade`, a
/// 101 answer takes the connection out of the pool: it rides in the response as an
/// [`UpstreamTunnel`].
#[allow(clippy::too_many_arguments)]
pub async fn exchange<H: ConnectionHome>(
    mut connection: H1Connection,
    body: Option<ProxyBody>,
    framing: RequestFraming,
    method: &Method,
    upgrade: bool,
    home: std::sync::Arc<H>,
    deadline: tokio::time::Instant,
) -> Result<http::Response<ProxyBody>, (ExchangeError, H1Connection)> {
    let mut timer = match connection.deadline.take() {
        Some(timer) if timer.deadline() <= deadline => timer,
        Some(mut timer) => {
            timer.as_mut().reset(deadline);
            timer
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    let sent = tokio::select! {
        biased;
        sent = send_and_read_head(&mut connection, body, framing, method, upgrade) => sent,
        () = deadline_passed(timer.as_mut(), deadline) => Err(ExchangeError::DeadlinePassed),
    };
    connection.deadline = Some(timer);
    let (parts, framing, keep_alive, upload) = match sent {
        Ok(head) => head,
        Err(e) => return Err((e, connection)),
    };
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        // An upgrade request has no body, so nothing holds the write half; be sure anyway.
        let Some(write) = connection.write.take() else {
            let broken = ExchangeError::Write(io::ErrorKind::BrokenPipe.into());
            return Err((broken, connection));
        };
        return Ok(switched(parts, connection, write));
    }
    Ok(response(
        parts, connection, upload, framing, keep_alive, home,
    ))
}

/// Waits until `deadline` on `timer`, which may be armed for an earlier moment: when it fires
/// then, it is moved on to `deadline`. Reading the deadline and comparing two instants is all an
/// exchange pays; moving the timer would convert the instant to timer ticks each time.
async fn deadline_passed(mut timer: Pin<&mut tokio::time::Sleep>, deadline: tokio::time::Instant) {
    loop {
        timer.as_mut().await;
        if timer.deadline() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// Writes the request (its body may still be going up when the answer comes) and reads the
/// response head: the parts, the body's framing, whether the connection may be reused, and the
/// rest of the upload.
async fn send_and_read_head(
    connection: &mut H1Connection,
    body: Option<ProxyBody>,
    framing: RequestFraming,
    method: &Method,
    upgrade: bool,
) -> Result<(http::response::Parts, ResponseFraming, bool, Option<Upload>), ExchangeError> {
    let uploading = body.is_some() && framing != RequestFraming::None;
    let mut upload = match connection.write_request(body, framing).await {
        Ok(upload) => upload,
        Err(ExchangeError::Write(error)) if uploading => {
            // The upstream may have answered (413, 401) and closed before taking the whole
            // body: that answer, if it reached us, is worth more than the write error.
            let answer =
                tokio::time::timeout(EARLY_ANSWER_GRACE, connection.read_head(method, false)).await;
            return match answer {
                Ok(Ok((parts, framing, _))) => Ok((parts, framing, false, None)),
                _ => Err(ExchangeError::Write(error)),
            };
        }
        Err(e) => return Err(e),
    };
    let (parts, framing, keep_alive) =
        read_head_while_uploading(connection, method, upgrade, &mut upload).await?;
    Ok((parts, framing, keep_alive, upload))
}

fn response<H: ConnectionHome>(
    mut parts: http::response::Parts,
    connection: H1Connection,
    upload: Option<Upload>,
    framing: ResponseFraming,
    keep_alive: bool,
    home: std::sync::Arc<H>,
) -> http::Response<ProxyBody> {
    // A long body on a cleartext connection may move to the client without copies.
    let splice = match framing {
        ResponseFraming::Length(n)
            if n >= crate::splice::WORTH_SPLICING
                && connection.tcp_read().is_some()
                && gatehouse_net::splice::supported() =>
        {
            let (offer, body_side) = crate::splice::SpliceOffer::new(n);
            parts.extensions.insert(offer);
            Some(body_side)
        }
        _ => None,
    };
    let body = ResponseBody {
        connection: Some(connection),
        upload,
        framing,
        keep_alive,
        home,
        splice,
        lent: false,
    };
    http::Response::from_parts(parts, body.boxed())
}

/// The response to an upgrade: no body, and the connection (with any bytes of the new protocol
/// that came right behind the head) handed over.
fn switched(
    parts: http::response::Parts,
    connection: H1Connection,
    write: ConnWrite,
) -> http::Response<ProxyBody> {
    let mut response = http::Response::from_parts(parts, crate::body::empty());
    response
        .extensions_mut()
        .insert(UpstreamTunnel::new(TunnelEnd {
            read: connection.read,
            write,
            buffered: connection.read_buf,
        }));
    response
}

/// Reads the final response head while an early-answered upload keeps going: an interim
/// `100 Continue` or `103 Early Hints` arrives before the upstream has the whole body, and the
/// final answer only comes once it has.
async fn read_head_while_uploading(
    connection: &mut H1Connection,
    method: &Method,
    upgrade: bool,
    upload: &mut Option<Upload>,
) -> Result<(http::response::Parts, ResponseFraming, bool), ExchangeError> {
    let Some(running) = upload.as_mut() else {
        return connection.read_head(method, upgrade).await;
    };
    let mut finished = None;
    let head = {
        let read = connection.read_head(method, false);
        tokio::pin!(read);
        tokio::select! {
            biased;
            head = &mut read => head,
            done = running => {
                let (writer, sent) = done;
                finished = Some((writer, sent.is_ok()));
                match sent {
                    // The upstream never gets the whole request (the client stalled or went
                    // away), so its final answer is not waited for: the client's error is the
                    // outcome.
                    Err(error @ ExchangeError::ClientBody(_)) => Err(error),
                    _ => read.await,
                }
            }
        }
    };
    if let Some((writer, sent)) = finished {
        *upload = None;
        if sent {
            connection.write = Some(writer);
        }
    }
    head
}

/// A response body read straight from the upstream connection.
struct ResponseBody<H: ConnectionHome> {
    connection: Option<H1Connection>,
    /// The request body still going up (full duplex), if the answer came before it was sent.
    upload: Option<Upload>,
    framing: ResponseFraming,
    keep_alive: bool,
    home: std::sync::Arc<H>,
    /// The hand-off to the client's connection, when the body may be spliced.
    splice: Option<crate::splice::BodySide>,
    /// The connection is lent to the client's writer (see [`crate::splice`]).
    lent: bool,
}

impl<H: ConnectionHome> ResponseBody<H> {
    /// The body ended: a reusable connection goes home, any other closes. A connection whose
    /// request body did not go out completely is never reused.
    fn finish(&mut self) {
        self.upload = None;
        if let Some(mut connection) = self.connection.take()
            && self.keep_alive
            && connection.read_buf.is_empty()
            && connection.write.is_some()
        {
            if connection.read_buf.capacity() > MAX_IDLE_BUFFER {
                connection.read_buf = BytesMut::new();
            }
            self.home.put_idle(connection);
        }
        self.framing = ResponseFraming::Empty;
    }

    fn fail(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.connection = None; // closes it
        self.framing = ResponseFraming::Empty;
        Poll::Ready(Some(Err(Box::new(BodyError::upstream(reason)))))
    }
}

impl<H: ConnectionHome> Body for ResponseBody<H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Keep the upload moving while the response is read (its progress wakes us too).
        if let Some(upload) = this.upload.as_mut()
            && let Poll::Ready((writer, sent)) = upload.as_mut().poll(cx)
        {
            this.upload = None;
            if let (Ok(()), Some(connection)) = (sent, this.connection.as_mut()) {
                connection.write = Some(writer);
            }
        }
        if this.lent {
            // Back from the client's writer, which moved the rest of the body.
            use crate::splice::Returned;
            this.lent = false;
            match this
                .splice
                .as_ref()
                .and_then(|splice| splice.take_returned())
            {
                Some(Returned::Sent(connection)) => {
                    this.connection = Some(connection);
                    this.framing = ResponseFraming::Length(0);
                }
                Some(Returned::Untouched(connection)) => {
                    // Splicing was not possible: the rest is read and copied as usual.
                    this.connection = Some(connection);
                    this.splice = None;
                }
                Some(Returned::Broken(reason)) => return this.fail(reason),
                None => return this.fail("polled while its connection was lent".into()),
            }
        }
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            // First hand out what is buffered, as the framing allows.
            match &mut this.framing {
                ResponseFraming::Empty | ResponseFraming::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                ResponseFraming::Length(remaining) if !connection.read_buf.is_empty() => {
                    let n = (*remaining).min(connection.read_buf.len() as u64) as usize;
                    *remaining -= n as u64;
                    let data = connection.read_buf.split_to(n).freeze();
                    if *remaining == 0 {
                        // Return the connection now: a client that saw the whole length may
                        // never poll again.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                ResponseFraming::Chunked(decoder) if !connection.read_buf.is_empty() => {
                    let step = match decoder.decode(&connection.read_buf) {
                        Ok(step) => step,
                        Err(reason) => {
                            return this.fail(format!("invalid chunked coding: {reason}"));
                        }
                    };
                    if !step.data.is_empty() {
                        connection.read_buf.advance(step.data.start);
                        let data = connection.read_buf.split_to(step.data.len()).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    connection.read_buf.advance(step.consumed);
                    if step.done {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    if !connection.read_buf.is_empty() {
                        continue;
                    }
                }
                ResponseFraming::UntilClose if !connection.read_buf.is_empty() => {
                    let data = connection.read_buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                _ => {}
            }
            // Then read more, or let the client's writer move the rest.
            if let (ResponseFraming::Length(remaining), Some(splice)) =
                (this.framing, this.splice.as_ref())
                && remaining >= crate::splice::WORTH_SPLICING
                && this.upload.is_none()
                && splice.lend(&mut this.connection, remaining)
            {
                this.lent = true;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
            }
            let Some(connection) = this.connection.as_mut() else {
                // Not reached (the connection is only taken when lent); never end a body
                // with a length short and clean.
                return this.fail("the connection went missing".into());
            };
            if connection.read_buf.capacity() - connection.read_buf.len() < READ_RESERVE {
                connection.read_buf.reserve(READ_RESERVE * 4);
            }
            match tokio_util::io::poll_read_buf(
                Pin::new(&mut connection.read),
                cx,
                &mut connection.read_buf,
            ) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.framing, ResponseFraming::UntilClose) {
                        this.keep_alive = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail("connection closed before the body ended".into());
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.connection.is_none() && !self.lent)
            || matches!(
                self.framing,
                ResponseFraming::Empty | ResponseFraming::Length(0)
            )
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            ResponseFraming::Empty => SizeHint::with_exact(0),
            ResponseFraming::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl<H: ConnectionHome> Drop for ResponseBody<H> {
    fn drop(&mut self) {
        // A body that was complete from the start (HEAD, 204, Content-Length: 0) may never be
        // polled; its connection is still good.
        if matches!(
            self.framing,
            ResponseFraming::Empty | ResponseFraming::Length(0)
        ) {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a head from `buf` with a fresh name cache and with one that has seen the earlier
    /// heads of the test: both must give the same answer and take the same bytes.
    fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, ExchangeError> {
        thread_local! {
            static WARM: std::cell::RefCell<NameCache> = const { std::cell::RefCell::new(NameCache::new()) };
        }
        let mut copy = buf.clone();
        let fresh = parse_head(buf, method, &mut NameCache::new());
        let warm = WARM.with(|cache| parse_head(&mut copy, method, &mut cache.borrow_mut()));
        assert_eq!(format!("{fresh:?}"), format!("{warm:?}"));
        assert_eq!(buf, &copy);
        fresh
    }
    use http::HeaderValue;

    fn head(text: &str, method: Method) -> (http::response::Parts, ResponseFraming, bool) {
        let mut buf = BytesMut::from(format!("{text}rest").as_bytes());
        let (parts, framing, keep_alive) = parse(&mut buf, &method).unwrap().expect("complete");
        assert_eq!(&buf[..], b"rest", "the head, and only the head, is taken");
        (parts, framing, keep_alive)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (p, f, k) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::GET);
        assert_eq!(p.status, 200);
        assert!(matches!(f, ResponseFraming::Length(5)) && k);
        let (_, f, k) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(f, ResponseFraming::Chunked(_)) && k);
        let (p, f, k) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        );
        assert!(
            matches!(f, ResponseFraming::Chunked(_)) && !k,
            "TE wins, connection closes"
        );
        assert!(!p.headers.contains_key(header::CONTENT_LENGTH));
        let (_, f, k) = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert!(matches!(f, ResponseFraming::UntilClose) && !k);
        let (_, f, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert!(matches!(f, ResponseFraming::Empty));
        let (_, f, _) = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(f, ResponseFraming::Empty));
        let (_, _, k) = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert!(!k);
        let (_, _, k) = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::GET);
        assert!(!k);
    }

    #[test]
    fn hop_by_hop_fields_never_reach_the_map() {
        let (parts, _, keep_alive) = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTE: trailers\r\nX-End: 2\r\nTrailer: X-Sum\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        );
        assert!(keep_alive);
        let mut names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "trailer", "x-end"]);
        // A 101 keeps its Upgrade: the client's connection switches too.
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        );
        let (parts, _, _) = parse(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(parts.headers[header::UPGRADE], "websocket");
        assert!(!parts.headers.contains_key(header::CONNECTION));
    }

    #[test]
    fn bad_response_heads_are_protocol_errors() {
        for text in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse(&mut BytesMut::from(text.as_bytes()), &Method::GET),
                    Err(ExchangeError::Protocol(_))
                ),
                "{text:?}"
            );
        }
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse(&mut partial, &Method::GET).unwrap().is_none());
        assert_eq!(partial.len(), 27, "an incomplete head stays in the buffer");
    }

    struct Nowhere;
    impl ConnectionHome for Nowhere {
        fn put_idle(&self, _: H1Connection) {}
    }

    /// An endless request body: 64 KiB frames for as long as anyone reads.
    struct Endless;
    impl Body for Endless {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_earlier_waits_for_the_later_deadline() {
        use std::time::Duration;
        let start = tokio::time::Instant::now();
        let mut timer = Box::pin(tokio::time::sleep_until(start + Duration::from_secs(1)));
        let deadline = start + Duration::from_secs(5);
        // Fires at 1 s, is moved on, and ends at the exchange's deadline, not before.
        deadline_passed(timer.as_mut(), deadline).await;
        assert_eq!(tokio::time::Instant::now(), deadline);
        assert_eq!(timer.deadline(), deadline);
        // A timer that fired long ago (an idle connection's) ends no earlier either.
        let later = deadline + Duration::from_secs(3);
        deadline_passed(timer.as_mut(), later).await;
        assert_eq!(tokio::time::Instant::now(), later);
    }

    #[tokio::test]
    async fn an_early_answer_stops_the_upload_and_is_returned() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nnope")
                .await
                .unwrap();
            // Keeps the connection open without reading: a writer that waits for it would hang.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        });
        let mut connection = H1Connection::new(
            crate::stream_io::split_tcp(tokio::net::TcpStream::connect(addr).await.unwrap()),
            Instant::now(),
        );
        let head = b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
        connection.head.extend_from_slice(head);
        let exchange = exchange(
            connection,
            Some(Endless.boxed()),
            RequestFraming::Chunked,
            &Method::POST,
            false,
            std::sync::Arc::new(Nowhere),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .expect("the early answer must not wait for the upload")
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "nope");
        upstream.abort();
    }

    /// One frame, then nothing more for as long as anyone waits (a slow, interactive client).
    struct OneThenSilence(bool);
    impl Body for OneThenSilence {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"ping")))))
            }
        }
    }

    #[tokio::test]
    async fn a_slow_upload_is_not_held_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            // Answer only once the first body bytes have arrived.
            while !String::from_utf8_lossy(&seen).contains("ping") {
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before the first frame arrived");
                seen.extend_from_slice(&chunk[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        });
        let mut connection = H1Connection::new(
            crate::stream_io::split_tcp(tokio::net::TcpStream::connect(addr).await.unwrap()),
            Instant::now(),
        );
        connection
            .head
            .extend_from_slice(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
        let exchange = exchange(
            connection,
            Some(OneThenSilence(false).boxed()),
            RequestFraming::Chunked,
            &Method::POST,
            false,
            std::sync::Arc::new(Nowhere),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .expect("the first frame must be sent without waiting for more")
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        upstream.abort();
    }

    #[tokio::test]
    async fn an_interim_100_does_not_pause_the_upload() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        const SIZE: usize = 4 << 20;
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let head_end = buf[..n].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            socket
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            // The final answer only once the whole body is in.
            let mut received = n - head_end;
            while received < SIZE {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "upload stopped at {received}");
                received += n;
            }
            socket
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{received}",
                        received.to_string().len()
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
        });
        let mut connection = H1Connection::new(
            crate::stream_io::split_tcp(tokio::net::TcpStream::connect(addr).await.unwrap()),
            Instant::now(),
        );
        let body = http_body_util::Full::new(Bytes::from(vec![7u8; SIZE]))
            .map_err(|never| match never {})
            .boxed();
        let head = format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {SIZE}\r\n\r\n");
        connection.head.extend_from_slice(head.as_bytes());
        let exchange = exchange(
            connection,
            Some(body),
            RequestFraming::Length(SIZE as u64),
            &Method::POST,
            false,
            std::sync::Arc::new(Nowhere),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .expect("the upload stalled after 100 Continue")
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, SIZE.to_string());
        upstream.await.unwrap();
    }

    #[test]
    fn heads_carry_our_framing_and_fields_only() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::POST;
        parts.uri = "/upload?x=1".parse().unwrap();
        parts.headers.insert(header::HOST, "svc".parse().unwrap());
        parts
            .headers
            .insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        let fields = ProxyFields::take(
            &mut http::HeaderMap::new(),
            &crate::headers::Present::default(),
            crate::headers::Hop {
                client: &HeaderValue::from_static("10.0.0.1"),
                proto: "http",
                original_host: Some(HeaderValue::from_static("svc")),
                received: Version::HTTP_11,
                request_id: &HeaderValue::from_static("r1"),
            },
            gatehouse_config::ForwardHeaders::ALL,
        );
        let mut out = Vec::new();
        let head = UpstreamHead {
            parts: &parts,
            fields: &fields,
        };
        encode_head(head, RequestFraming::Chunked, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /upload?x=1 HTTP/1.1\r\nhost: svc\r\nx-forwarded-for: 10.0.0.1\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: svc\r\nvia: 1.1 gatehouse\r\n\
             x-request-id: r1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
