//! Applies a [`RequestGuard`] to a client connection's byte stream.
//!
//! hyper reads through this wrapper. Bytes reach hyper only once the guard has validated the head
//! they belong to; body bytes pass as soon as they arrive. When the guard refuses a request, hyper sees end-of-stream, finishes whatever response
//! it was writing, and shuts the connection down; the wrapper writes its own `400`/`431`/`501`
//! response with `Connection: close` just before that shutdown, so the client always learns why.

use crate::h1_guard::{Rejection, RequestGuard};
use hyper::rt::{Read, ReadBufCursor, Write};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// Receive buffer size of a new connection; enough for typical heads and body reads.
const INITIAL_BUFFER: usize = 8 * 1024;
/// Smallest free space worth a read call.
const MIN_READ: usize = 2 * 1024;

/// Called once when a request is refused (for metrics and logs).
pub type OnReject = Box<dyn FnOnce(Rejection) + Send>;

/// hyper IO wrapper enforcing strict HTTP/1 request framing.
pub struct GuardedIo<T> {
    inner: T,
    guard: RequestGuard,
    /// Receive buffer. `buf[start..end]` holds bytes not yet handed to hyper; it grows (zeroed,
    /// once) only when a head needs more room, so idle connections stay small.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many bytes from `start` are validated and may be handed over.
    released: usize,
    /// The refusal to write before shutting down, and how much of it is written.
    refusal: Option<(Vec<u8>, usize)>,
    on_reject: Option<OnReject>,
    /// How long a client may take to send a complete head (and how long a connection may sit
    /// idle between requests). hyper's own header timer cannot see heads the guard holds back.
    header_timeout: Duration,
    /// Allocated once per connection and re-armed with `reset`; `head_deadline_armed` says
    /// whether it currently counts.
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    head_deadline_armed: bool,
    /// A body refused mid-stream: reported once to hyper as a read error.
    mid_body_error: Option<&'static str>,
}

impl<T> GuardedIo<T> {
    pub fn new(
        inner: T,
        max_head_bytes: usize,
        header_timeout: Duration,
        on_reject: OnReject,
    ) -> Self {
        Self {
            inner,
            guard: RequestGuard::new(max_head_bytes),
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            released: 0,
            refusal: None,
            on_reject: Some(on_reject),
            header_timeout,
            head_deadline: None,
            head_deadline_armed: false,
            mid_body_error: None,
        }
    }

    /// Polls the head deadline while the guard waits for a head; true once it has passed.
    fn head_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.guard.awaiting_head() {
            self.head_deadline_armed = false;
            return false;
        }
        let timeout = self.header_timeout;
        let sleep = self
            .head_deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.head_deadline_armed {
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
            self.head_deadline_armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Closes a connection whose head did not arrive in time: 408 when part of a head came,
    /// silently when the connection was idle between requests.
    fn time_out(&mut self) {
        let partial_head = self.end > self.start + self.released;
        self.end = self.start + self.released;
        let response = if partial_head {
            let rejection = Rejection {
                status: 408,
                reason: "request head not received in time",
            };
            if let Some(callback) = self.on_reject.take() {
                callback(rejection);
            }
            refusal_response(rejection)
        } else {
            Vec::new()
        };
        self.refusal = Some((response, 0));
    }

    fn reject(&mut self, rejection: Rejection) {
        if self.refusal.is_none() {
            let response = if self.guard.failed_mid_body() {
                // The request in flight gets its own error response; its body read fails with
                // the reason (see poll_read), so that response can name it.
                self.mid_body_error = Some(rejection.reason);
                Vec::new()
            } else {
                refusal_response(rejection)
            };
            self.refusal = Some((response, 0));
            // Requests validated before the bad one are still delivered (and answered first);
            // everything after them is dropped.
            self.end = self.start + self.released;
            if let Some(callback) = self.on_reject.take() {
                callback(rejection);
            }
        }
    }
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

impl<T: Read + Unpin> Read for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.buf[this.start..this.start + n]);
                this.start += n;
                this.released -= n;
                if this.start == this.end {
                    this.start = 0;
                    this.end = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.refusal.is_some() {
                if let Some(reason) = this.mid_body_error.take() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)));
                }
                return Poll::Ready(Ok(())); // end of stream for hyper
            }
            this.make_room();
            let mut read_buf = hyper::rt::ReadBuf::new(&mut this.buf[this.end..]);
            match Pin::new(&mut this.inner).poll_read(cx, read_buf.unfilled()) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    if this.head_deadline_passed(cx) {
                        this.time_out();
                        continue;
                    }
                    return Poll::Pending;
                }
            }
            let n = read_buf.filled().len();
            if n == 0 {
                // Client closed. Whatever is pending is an incomplete head: drop it.
                return Poll::Ready(Ok(()));
            }
            this.end += n;
            let scan = this
                .guard
                .scan(&this.buf[this.start + this.released..this.end]);
            this.released += scan.released;
            if scan.released > 0 {
                // A head completed: the clock restarts when the next head is awaited.
                this.head_deadline_armed = false;
            }
            if let Some(rejection) = scan.rejection {
                this.reject(rejection);
            }
        }
    }
}

impl<T> GuardedIo<T> {
    /// Ensures at least `MIN_READ` free bytes after `end`: compacts first, grows if still short.
    fn make_room(&mut self) {
        if self.buf.len() - self.end >= MIN_READ {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < MIN_READ {
            // Only a long head gets here; the guard caps heads at max_header_bytes.
            let grown = (self.buf.len() * 2).max(self.end + MIN_READ);
            self.buf.resize(grown, 0);
        }
    }
}

impl<T: Write + Unpin> Write for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((response, written)) = &mut this.refusal {
            while *written < response.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &response[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
