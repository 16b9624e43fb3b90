//! The output side of an HTTP/2 connection: the buffer every stream's frames are gathered in
//! for one write per turn, response heads and trailers as HPACK-encoded HEADERS frames, and
//! response bodies cut into DATA frames within the client's windows, its maximum frame size
//! and the buffer's high-water mark ([`OUT_HIGH`]).

use super::flow::SendWindow;
use super::frame;
use super::hpack::Encoder;
use crate::body::ProxyBody;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderName};
use http_body::Body;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Production stops while this much output waits for the socket.
pub const OUT_HIGH: usize = 64 * 1024;

/// The output side, apart from the streams so both can be borrowed at once.
pub(super) struct Writer {
    pub(super) out: Vec<u8>,
    /// How much of `out` is already written.
    pub(super) written: usize,
    pub(super) encoder: Encoder,
    /// What the client lets us send on the connection.
    pub(super) send_window: SendWindow,
    pub(super) peer_max_frame: u32,
    /// Streams waiting for connection window.
    pub(super) conn_blocked: Vec<u32>,
    /// Streams that stopped because the output buffer was full.
    pub(super) requeue: Vec<u32>,
}

impl Writer {
    pub(super) fn pending(&self) -> usize {
        self.out.len() - self.written
    }
}

pub(super) struct BodyOut {
    pub(super) body: ProxyBody,
    /// Bytes taken from the body that the windows did not yet let out.
    pub(super) pending: Bytes,
    /// The body has nothing after `pending`: its last DATA frame carries END_STREAM.
    pub(super) end_after: bool,
}

pub(super) enum Sent {
    /// Waiting for the body, for stream window, or for the output buffer to drain.
    Pending,
    /// Waiting for connection window.
    WaitConnection,
    Done,
    Failed,
}

/// Moves the response body into DATA frames (and trailers) as far as the windows, the peer's
/// frame size and the output buffer allow.
pub(super) fn send_body(
    w: &mut Writer,
    id: u32,
    stream_window: &mut SendWindow,
    out: &mut BodyOut,
    cx: &mut Context<'_>,
) -> Sent {
    loop {
        while !out.pending.is_empty() {
            if w.pending() >= OUT_HIGH {
                w.requeue.push(id);
                return Sent::Pending;
            }
            let connection = w.send_window.available();
            let n = out
                .pending
                .len()
                .min(w.peer_max_frame as usize)
                .min(stream_window.available())
                .min(connection);
            if n == 0 {
                return if connection == 0 {
                    Sent::WaitConnection
                } else {
                    Sent::Pending // a stream WINDOW_UPDATE schedules us again
                };
            }
            let last = n == out.pending.len() && out.end_after;
            frame::encode_data(&mut w.out, id, &out.pending[..n], last);
            out.pending.advance(n);
            stream_window.consume(n);
            w.send_window.consume(n);
            if last {
                return Sent::Done;
            }
        }
        if out.end_after {
            frame::encode_data(&mut w.out, id, &[], true);
            return Sent::Done;
        }
        if w.pending() >= OUT_HIGH {
            w.requeue.push(id);
            return Sent::Pending;
        }
        match Pin::new(&mut out.body).poll_frame(cx) {
            Poll::Pending => return Sent::Pending,
            Poll::Ready(None) => {
                frame::encode_data(&mut w.out, id, &[], true);
                return Sent::Done;
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(stream = id, %error, "h2: response body error");
                return Sent::Failed;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    out.end_after = out.body.is_end_stream();
                    out.pending = data;
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        write_trailers(w, id, &trailers);
                        return Sent::Done;
                    }
                }
            },
        }
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that mean something only to one HTTP/1.1 connection (RFC 9113 §8.2.2).
pub(super) fn connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Writes a response HEADERS frame. The content-length is the body's exact size when known
/// (HEAD, 204 and 304 keep what the handler set).
pub(super) fn write_head(
    w: &mut Writer,
    id: u32,
    parts: &http::response::Parts,
    end_stream: bool,
    exact: Option<u64>,
    no_body: bool,
) {
    let length = if no_body { None } else { exact };
    let encoder = &mut w.encoder;
    frame::encode_headers(&mut w.out, id, end_stream, w.peer_max_frame, |out| {
        encoder.begin_block(out);
        encoder.status(parts.status.as_u16(), out);
        for (name, value) in &parts.headers {
            if connection_specific(name) || (length.is_some() && name == header::CONTENT_LENGTH) {
                continue;
            }
            encoder.field(name.as_str().as_bytes(), value.as_bytes(), out);
        }
        if let Some(length) = length {
            encoder.field(
                b"content-length",
                itoa::Buffer::new().format(length).as_bytes(),
                out,
            );
        }
        if !parts.headers.contains_key(header::DATE) {
            crate::h1_server::with_http_date(|date| encoder.field(b"date", date, out));
        }
    });
}

/// Writes trailers as the stream's last HEADERS frame.
pub(super) fn write_trailers(w: &mut Writer, id: u32, trailers: &HeaderMap) {
    let encoder = &mut w.encoder;
    frame::encode_headers(&mut w.out, id, true, w.peer_max_frame, |out| {
        encoder.begin_block(out);
        for (name, value) in trailers {
            if !connection_specific(name) {
                encoder.field(name.as_str().as_bytes(), value.as_bytes(), out);
            }
        }
    });
}
