//! HTTP/1.1 for clients, driven inline by one task per connection.
//!
//! The mirror image of [`crate::h1_client`]: the connection task reads a head, checks it with the
//! framing guard's rules ([`HeadScanner`], [`parse_request_head`]: one strict parse, nothing
//! ambiguous gets through), hands the request to the handler with a body that reads straight
//! from the socket, and writes the response as its body produces frames: the head together with
//! the first frame when that is ready at once, later frames as they come (server-sent events
//! must not wait for a buffer to fill). The request body owns the read half while the handler
//! runs and gives it back when it ends or is dropped; a body that did not end cleanly means the
//! connection cannot carry another request, so it closes after the response.
//!
//! Requests are answered one at a time in order (pipelined requests wait in the buffer).
//! Refusals (400/431/501, 408 for a head that is too slow) are written here with
//! `connection: close`, and the connection ends.

use crate::body::{BodyError, BoxError, ProxyBody};
use crate::chunked::ChunkedDecoder;
use crate::h1_guard::{Framing, HeadScanner, Rejection, parse_request_head};
use crate::idle::IdleWatch;
use crate::limits::ClientStalled;
use crate::name_cache::NameCache;
use crate::splice::SpliceOffer;
use crate::stream_io::{ConnRead, ConnWrite};
use crate::upgrade::{Tunnel, TunnelEnd};
use crate::wire::{SpliceTarget, StallGuard};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const READ_RESERVE: usize = 16 * 1024;

/// Per-connection settings, from the listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct H1Settings {
    pub max_head: usize,
    /// Time allowed for a complete head, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// The longest the client may send none of a request body, or take none of a response.
    pub stall_timeout: Duration,
}

/// Serves one HTTP/1 connection (its two halves, cleartext or TLS) until it closes. `prefix`
/// holds bytes already read from it, and `first_deadline` is when its first head must be
/// complete (reading the prefix counts).
pub async fn serve<H, F>(
    (read, mut write): (ConnRead, ConnWrite),
    prefix: BytesMut,
    first_deadline: tokio::time::Instant,
    settings: H1Settings,
    draining: crate::drain::Drain,
    on_reject: impl Fn(Rejection),
    handler: H,
) -> Option<Tunnel>
where
    H: Fn(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    // Lent to the request body while a request with a body is handled.
    let mut read = Some(read);
    let mut buf = prefix;
    // Response heads are encoded here, one buffer for the connection's life.
    let mut out = Vec::with_capacity(512);
    // The head's deadline: one timer for the connection's life, re-armed only when it fires,
    // so a request costs no timer-wheel update and no clock read. When it fires, a request
    // served since it was armed means the head now awaited started later, and it gets another
    // period; otherwise the head is late. A head thus gets between one and two timeouts, as
    // with a per-read timeout like nginx's `client_header_timeout`.
    let mut timer = IdleWatch::armed_until(first_deadline, settings.header_timeout);
    // Waited on while the connection is idle; made once for the connection's life, so a
    // request costs no registration with the drain signal.
    let mut drain_started = std::pin::pin!(draining.started());
    // The client's field names, by position, from its previous request (see `NameCache`).
    let mut names = NameCache::new();
    loop {
        let reader = read.as_mut()?;
        let head = read_head(
            reader,
            &mut buf,
            &mut names,
            settings,
            &mut timer,
            drain_started.as_mut(),
        )
        .await;
        let (mut parts, framing) = match head {
            HeadOutcome::Request(parts, framing) => (parts, framing),
            HeadOutcome::Closed => return None,
            HeadOutcome::Refused(rejection) => {
                on_reject(rejection);
                let _ = StallGuard::new(&mut write, settings.stall_timeout)
                    .write_all(&refusal_response(rejection))
                    .await;
                if let Some(reader) = read.as_mut() {
                    linger(reader, &mut write).await;
                }
                return None;
            }
        };
        let is_head = parts.method == Method::HEAD;
        let version = parts.version;
        let mut keep_alive = wants_keep_alive(version, &parts.headers);
        let has_body = !matches!(framing, Framing::None | Framing::Length(0));
        // Only a request without a body may switch protocols: the bytes after its head are
        // already the new protocol's.
        let upgrade = if version == Version::HTTP_11 && !has_body {
            crate::upgrade::requested(&parts.headers)
        } else {
            None
        };
        if let Some(protocol) = upgrade.clone() {
            parts
                .extensions
                .insert(crate::upgrade::UpgradeRequested { protocol });
        }
        if has_body && version == Version::HTTP_11 && expects_continue(&parts.headers) {
            // Send it at once rather than when the body is first read: simpler, and allowed.
            if StallGuard::new(&mut write, settings.stall_timeout)
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return None;
            }
        }
        let (body, returned) = if has_body {
            let (give_back, returned) = oneshot::channel();
            let body = RequestBody {
                read: read.take(),
                buf: std::mem::take(&mut buf),
                framing: match framing {
                    Framing::Chunked => BodyFraming::Chunked(ChunkedDecoder::new()),
                    Framing::Length(n) => BodyFraming::Length(n),
                    Framing::None => BodyFraming::Length(0),
                },
                done: false,
                give_back: Some(give_back),
                stall: IdleWatch::new(settings.stall_timeout),
            };
            (body.boxed(), Some(returned))
        } else {
            (crate::body::empty(), None)
        };
        let response = handler(Request::from_parts(parts, body)).await;
        if upgrade.is_some() && response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let reader = read.take()?;
            let client = (reader, write);
            return switch_protocols(response, &mut out, client, buf, settings.stall_timeout).await;
        }
        if draining.is_started() || closes(response.headers()) {
            keep_alive = false;
        }
        // A body the handler already gave back unfinished (a 404 that never read it) means
        // this response is the connection's last: say so in its head.
        let mut returned = returned;
        let mut back = None;
        if let Some(receiver) = returned.as_mut() {
            match receiver.try_recv() {
                Ok(early) => {
                    keep_alive &= early.complete;
                    back = Some(early);
                    returned = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => keep_alive = false,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        if !write_response(
            &mut StallGuard::new(&mut write, settings.stall_timeout),
            &mut out,
            response,
            is_head,
            version,
            &mut keep_alive,
        )
        .await
        {
            return None;
        }
        if let Some(returned) = returned {
            // The body comes back when the handler is done with it; a client that keeps its
            // upload open longer than a head may take is not waited for.
            match tokio::time::timeout(settings.header_timeout, returned).await {
                Ok(Ok(late)) => back = Some(late),
                _ => return None,
            }
        }
        if let Some(back) = back {
            keep_alive &= back.complete;
            read = Some(back.read);
            buf = back.buf;
        }
        if !keep_alive {
            if let Some(reader) = read.as_mut() {
                linger(reader, &mut write).await;
            }
            return None;
        }
        timer.moved();
    }
}

/// Writes the 101 and returns the tunnel that carries bytes both ways between the client and
/// the upstream connection the response hands over (see [`crate::upgrade`]); the caller runs it
/// in a task of its own, so the connection's request machinery is freed while it is open. The
/// response's body goes with the tunnel: it holds the endpoint's in-flight count and the
/// open-tunnel gauge.
async fn switch_protocols(
    response: Response<ProxyBody>,
    out: &mut Vec<u8>,
    (read, mut write): (ConnRead, ConnWrite),
    buffered: BytesMut,
    stall_timeout: Duration,
) -> Option<Tunnel> {
    let (parts, body) = response.into_parts();
    let upstream = parts
        .extensions
        .get::<crate::upgrade::UpstreamTunnel>()
        .and_then(crate::upgrade::UpstreamTunnel::take);
    let Some(upstream) = upstream else {
        // A 101 that carries no connection cannot be honoured; nothing was switched yet.
        let _ = StallGuard::new(&mut write, stall_timeout)
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return None;
    };
    let idle = parts
        .extensions
        .get::<crate::upgrade::TunnelIdle>()
        .map_or(gatehouse_config::Route::DEFAULT_READ_TIMEOUT, |idle| idle.0);
    encode_head(&parts, Delimit::NoBody, true, false, out);
    drop(parts);
    let mut guarded = StallGuard::new(&mut write, stall_timeout);
    let written = guarded.write_all(out).await.is_ok() && guarded.flush().await.is_ok();
    if !written {
        return None;
    }
    let client = TunnelEnd {
        read,
        write,
        buffered,
    };
    let mut tunnel = Tunnel::new(client, upstream, idle);
    tunnel.keep(body);
    Some(tunnel)
}

/// Ends a connection without losing the last response: closing a socket that still has unread
/// client bytes sends a reset, which can destroy the response in flight. So: shut down our side,
/// then read and discard what the client still sends, for a bounded time and amount (as nginx's
/// lingering close does). The bound covers the shutdown too: over TLS it writes a close_notify,
/// which a client that reads nothing would otherwise hold forever.
async fn linger(read: &mut ConnRead, write: &mut ConnWrite) {
    const LINGER_TIME: Duration = Duration::from_secs(2);
    const LINGER_BYTES: usize = 1 << 20;
    let mut discard = vec![0u8; 16 * 1024];
    let mut total = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        if write.shutdown().await.is_err() {
            return;
        }
        while total < LINGER_BYTES {
            match read.read(&mut discard).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

// Returned once per request and matched at once; boxing the parts would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum HeadOutcome {
    Request(http::request::Parts, Framing),
    Closed,
    Refused(Rejection),
}

/// Reads until `buf` starts with a complete, valid head; refuses bad or late ones.
async fn read_head(
    read: &mut ConnRead,
    buf: &mut BytesMut,
    names: &mut NameCache,
    settings: H1Settings,
    timer: &mut IdleWatch,
    mut drain_started: Pin<&mut crate::drain::Started<'_>>,
) -> HeadOutcome {
    let mut scanner = HeadScanner::new(settings.max_head);
    loop {
        if !buf.is_empty() {
            match scanner.find_end(buf) {
                Err(rejection) => return HeadOutcome::Refused(rejection),
                Ok(Some(len)) => {
                    return match parse_request_head(buf.split_to(len).freeze(), names) {
                        Ok((parts, framing)) => HeadOutcome::Request(parts, framing),
                        Err(rejection) => HeadOutcome::Refused(rejection),
                    };
                }
                Ok(None) => {}
            }
        }
        if buf.capacity() - buf.len() < READ_RESERVE {
            buf.reserve(READ_RESERVE);
        }
        let idle = buf.is_empty();
        tokio::select! {
            biased;
            read = read.read_buf(buf) => match read {
                Ok(0) | Err(_) => return HeadOutcome::Closed,
                Ok(_) => {}
            },
            () = drain_started.as_mut(), if idle => return HeadOutcome::Closed,
            () = timer.expired() => {
                return if idle {
                    HeadOutcome::Closed // an idle keep-alive connection times out silently
                } else {
                    HeadOutcome::Refused(Rejection {
                        status: 408,
                        reason: "request head not received in time",
                    })
                };
            }
        }
    }
}

/// HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 only when asked.
fn wants_keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let tokens = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    match version {
        Version::HTTP_11 => !tokens("close"),
        _ => tokens("keep-alive"),
    }
}

fn closes(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    })
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delimit {
    NoBody,
    Length(u64),
    Chunked,
    Close,
}

/// Writes a response; returns false when the connection must end (error or close-delimited).
async fn write_response(
    write: &mut StallGuard<'_, ConnWrite>,
    out: &mut Vec<u8>,
    response: Response<ProxyBody>,
    is_head: bool,
    request_version: Version,
    keep_alive: &mut bool,
) -> bool {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let delimit = if is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Delimit::NoBody
    } else if let Some(n) = body.size_hint().exact() {
        Delimit::Length(n)
    } else if request_version == Version::HTTP_11 {
        Delimit::Chunked
    } else {
        *keep_alive = false;
        Delimit::Close
    };
    // HTTP/1.0 clients close unless told the connection stays open.
    let announce_keep_alive = *keep_alive && request_version == Version::HTTP_10;
    encode_head(&parts, delimit, *keep_alive, announce_keep_alive, out);
    crate::header_maps::give(parts.headers);
    // A long upstream body may come by splice when both sockets are cleartext and the length
    // is fixed (see `crate::splice`).
    let mut extensions = parts.extensions;
    let splice = match delimit {
        Delimit::Length(n) if write.splice_socket().is_some() => extensions
            .remove::<SpliceOffer>()
            .filter(|offer| offer.want(n)),
        _ => None,
    };
    if delimit == Delimit::NoBody {
        let written = write.write_all(out).await.is_ok();
        out.clear();
        return written;
    }
    // A body that breaks (upstream reset) ends the connection short of its framing, so the
    // client cannot mistake the response for complete.
    crate::wire::write_message(
        write,
        out,
        body,
        delimit == Delimit::Chunked,
        splice.as_ref(),
    )
    .await
    .is_ok()
        && delimit != Delimit::Close
}

/// Status line, headers (framing headers replaced by ours), Date when missing.
fn encode_head(
    parts: &http::response::Parts,
    delimit: Delimit,
    keep_alive: bool,
    announce_keep_alive: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        let framing_header = name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && delimit != Delimit::NoBody);
        if framing_header {
            continue;
        }
        crate::wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        push_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    match delimit {
        Delimit::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Delimit::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Delimit::NoBody | Delimit::Close => {}
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if announce_keep_alive {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the current time as an HTTP date.
fn push_http_date(out: &mut Vec<u8>) {
    with_http_date(|date| out.extend_from_slice(date));
}

/// Calls `f` with the current time as an HTTP date, formatted at most once a second per thread
/// (shared with the HTTP/2 server).
pub(crate) fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second || cache.1.is_empty() {
            *cache = (second, httpdate::fmt_http_date(now));
        }
        f(cache.1.as_bytes())
    })
}

/// The response sent for a refused request.
pub fn refusal_response(rejection: Rejection) -> Vec<u8> {
    let phrase = match rejection.status {
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Bad Request",
    };
    let body = format!("{} {phrase}: {}\n", rejection.status, rejection.reason);
    format!(
        "HTTP/1.1 {} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        rejection.status,
        body.len()
    )
    .into_bytes()
}

/// What a request body gives back to its connection.
struct Returned {
    read: ConnRead,
    buf: BytesMut,
    /// The body was read to its end: the connection can carry another request.
    complete: bool,
}

#[derive(Debug, Clone, Copy)]
enum BodyFraming {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A request body read straight from the client connection.
struct RequestBody {
    read: Option<ConnRead>,
    buf: BytesMut,
    framing: BodyFraming,
    done: bool,
    give_back: Option<oneshot::Sender<Returned>>,
    /// A client that sends none of the body for the stall timeout fails it (408).
    stall: IdleWatch,
}

impl RequestBody {
    fn fail(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fail_with(Box::new(BodyError::client(reason)))
    }

    fn fail_with(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = false;
        self.read = None; // the connection cannot continue
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if !this.buf.is_empty() {
                match &mut this.framing {
                    BodyFraming::Length(remaining) => {
                        let n = (*remaining).min(this.buf.len() as u64) as usize;
                        *remaining -= n as u64;
                        this.done = *remaining == 0;
                        return Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))));
                    }
                    BodyFraming::Chunked(decoder) => {
                        let step = match decoder.decode(&this.buf) {
                            Ok(step) => step,
                            Err(reason) => return this.fail(reason.to_owned()),
                        };
                        if !step.data.is_empty() {
                            this.buf.advance(step.data.start);
                            let data = this.buf.split_to(step.data.len()).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        this.buf.advance(step.consumed);
                        if step.done {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        if !this.buf.is_empty() {
                            continue;
                        }
                    }
                }
            } else if let BodyFraming::Length(0) = this.framing {
                this.done = true;
                return Poll::Ready(None);
            }
            let Some(read) = this.read.as_mut() else {
                return this.fail("connection unusable".into());
            };
            if this.buf.capacity() - this.buf.len() < READ_RESERVE {
                this.buf.reserve(READ_RESERVE * 4);
            }
            match tokio_util::io::poll_read_buf(Pin::new(read), cx, &mut this.buf) {
                Poll::Pending if this.stall.poll_expired(cx) => {
                    let after = this.stall.timeout();
                    return this.fail_with(Box::new(ClientStalled { after }));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return this
                        .fail("the client closed the connection before the body ended".into());
                }
                Poll::Ready(Ok(_)) => this.stall.moved(),
                Poll::Ready(Err(e)) => return this.fail(e.to_string()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || matches!(self.framing, BodyFraming::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            BodyFraming::Length(n) => SizeHint::with_exact(n),
            BodyFraming::Chunked(_) => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(give_back), Some(read)) = (self.give_back.take(), self.read.take()) {
            let _ = give_back.send(Returned {
                read,
                buf: std::mem::take(&mut self.buf),
                complete: self.done || matches!(self.framing, BodyFraming::Length(0)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_rules() {
        let mut h = HeaderMap::new();
        assert!(wants_keep_alive(Version::HTTP_11, &h));
        assert!(!wants_keep_alive(Version::HTTP_10, &h));
        h.insert(header::CONNECTION, "Keep-Alive".parse().unwrap());
        assert!(wants_keep_alive(Version::HTTP_10, &h));
        h.insert(header::CONNECTION, "close".parse().unwrap());
        assert!(!wants_keep_alive(Version::HTTP_11, &h));
    }

    #[test]
    fn response_heads_use_our_framing() {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, "99".parse().unwrap());
        response
            .headers_mut()
            .insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        response.headers_mut().insert(
            header::DATE,
            "Sat, 28 Nov 2026 00:00:00 GMT".parse().unwrap(),
        );
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        encode_head(&parts, Delimit::Length(5), false, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ndate: Sat, 28 Nov 2026 00:00:00 GMT\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }
}
