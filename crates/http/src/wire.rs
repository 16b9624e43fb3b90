//! Writing an HTTP/1.1 message body to a socket, shared by the server (responses) and the
//! upstream client (requests).
//!
//! Bytes go out as soon as the body has nothing more ready: the head rides in one write with the
//! first frame when that frame is already there, but nothing is held back waiting for more (an
//! event stream or an interactive upload must flow). Large frames are not copied: they go out
//! together with what is buffered in one writev. A body handed over for splicing (see
//! [`crate::splice`]) moves from its upstream socket straight into the writer's. A client's
//! writer is wrapped in a [`StallGuard`], so a client that stops reading cannot hold its
//! response's upstream connection.

use crate::body::{BoxError, ProxyBody};
use crate::idle::IdleWatch;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Buffered bytes are written once they reach this size.
const WRITE_CHUNK: usize = 64 * 1024;
/// Frames at least this large are written directly instead of copied into the buffer.
const DIRECT_WRITE: usize = 8 * 1024;

/// Why writing a message stopped.
#[derive(Debug)]
pub enum WriteError {
    /// The body being forwarded failed (client upload cut, upstream response broken).
    Body(BoxError),
    /// The socket failed.
    Io(io::Error),
}

/// A writer that can take a body by splice: its cleartext socket, if it has one, and how long
/// its reader may take nothing (a spliced body bypasses the writer, so the writer's own stall
/// guard cannot watch it).
pub trait SpliceTarget {
    fn splice_socket(&self) -> Option<(&tokio::net::TcpStream, Duration)> {
        None
    }
}

/// Upstream writers never take spliced bodies.
impl SpliceTarget for crate::stream_io::ConnWrite {}

impl SpliceTarget for Vec<u8> {}

impl SpliceTarget for StallGuard<'_, crate::stream_io::ConnWrite> {
    fn splice_socket(&self) -> Option<(&tokio::net::TcpStream, Duration)> {
        Some((self.inner.tcp()?, self.watch.timeout()))
    }
}

/// A client's writer whose reader must keep taking bytes: once a write has to wait (the
/// socket's send buffer is full), the client has the listener's stall timeout (between one and
/// two of them, see [`IdleWatch`]) to take more, or the write fails with `TimedOut`, the
/// connection closes, and the upstream connection feeding it is let go. Nothing is paid while
/// writes go straight through: no timer exists until one waits.
pub struct StallGuard<'a, W> {
    inner: &'a mut W,
    watch: IdleWatch,
}

impl<'a, W> StallGuard<'a, W> {
    pub fn new(inner: &'a mut W, timeout: Duration) -> Self {
        Self {
            inner,
            watch: IdleWatch::new(timeout),
        }
    }

    /// Passes on a write's outcome, noting progress, or failing a wait that went on too long.
    fn watched(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.watch.watch(cx, written).map(|watched| {
            watched.unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client took none of the response for {:?}",
                        self.watch.timeout()
                    ),
                ))
            })
        })
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut *this.inner).poll_write(cx, buf);
        this.watched(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        this.watched(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut *this.inner).poll_flush(cx).map_ok(|()| 0);
        this.watched(cx, flushed).map_ok(drop)
    }

    /// Watched too: over TLS a shutdown writes a close_notify, which waits like any write.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut *this.inner).poll_shutdown(cx).map_ok(|()| 0);
        this.watched(cx, shut).map_ok(drop)
    }
}

/// Writes `out` (an encoded head, or nothing) and then `body`, chunked or as-is. `out` is the
/// caller's reusable buffer: it comes back empty (its capacity kept) when all went out. With
/// a wanted `splice` offer, the body may lend its connection midway (an empty frame says so),
/// and the rest moves socket to socket.
pub async fn write_message<W: AsyncWrite + SpliceTarget + Unpin>(
    writer: &mut W,
    out: &mut Vec<u8>,
    mut body: ProxyBody,
    chunked: bool,
    splice: Option<&crate::splice::SpliceOffer>,
) -> Result<(), WriteError> {
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                if !out.is_empty() {
                    writer.write_all(out).await.map_err(WriteError::Io)?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let Some(frame) = next else { break };
        let Ok(data) = frame.map_err(WriteError::Body)?.into_data() else {
            continue; // trailers are not sent over HTTP/1.1
        };
        if data.is_empty() {
            if let Some(lent) = splice.and_then(crate::splice::SpliceOffer::take_lent) {
                // What went before goes first; then the rest of the body, without copies.
                writer.write_all(out).await.map_err(WriteError::Io)?;
                out.clear();
                let Some((socket, stall_timeout)) = writer.splice_socket() else {
                    // Not wanted by a writer without a socket; dropping it fails the body.
                    drop(lent);
                    continue;
                };
                lent.forward(socket, stall_timeout)
                    .await
                    .map_err(WriteError::Io)?;
            }
            continue;
        }
        if chunked {
            push_chunk_size(out, data.len());
        }
        if data.len() >= DIRECT_WRITE {
            write_both(writer, out, &data)
                .await
                .map_err(WriteError::Io)?;
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_CHUNK {
            writer.write_all(out).await.map_err(WriteError::Io)?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    writer.write_all(out).await.map_err(WriteError::Io)?;
    out.clear();
    Ok(())
}

/// Appends one header field line, `name: value` and CRLF, with one capacity check for the
/// line: heads are written field by field for every request and response, and four
/// `extend_from_slice` calls check and grow the buffer four times.
#[inline]
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let len = name.len() + value.len() + 4;
    out.reserve(len);
    let start = out.len();
    let (name_part, rest) = out.spare_capacity_mut()[..len].split_at_mut(name.len());
    let (colon, rest) = rest.split_at_mut(2);
    let (value_part, crlf) = rest.split_at_mut(value.len());
    name_part.write_copy_of_slice(name);
    colon.write_copy_of_slice(b": ");
    value_part.write_copy_of_slice(value);
    crlf.write_copy_of_slice(b"\r\n");
    // SAFETY: the `len` bytes after `start` are within the capacity reserved above and were all
    // written just now.
    unsafe { out.set_len(start + len) };
}

/// A chunk-size line: the length in hex, then CRLF.
fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `first` then `second`, gathering both into as few system calls as the socket allows.
async fn write_both<W: AsyncWrite + Unpin>(
    writer: &mut W,
    first: &[u8],
    second: &[u8],
) -> io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() {
        let n = writer
            .write_vectored(&[IoSlice::new(first), IoSlice::new(second)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= first.len() {
            second = &second[n - first.len()..];
            first = &[];
        } else {
            first = &first[n..];
        }
    }
    writer.write_all(second).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    fn body(bytes: &'static [u8]) -> ProxyBody {
        Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn writes_heads_and_bodies_in_either_framing() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            &mut b"HEAD\r\n\r\n".to_vec(),
            body(b"hello"),
            true,
            None,
        )
        .await
        .unwrap();
        assert_eq!(out, b"HEAD\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let mut out = Vec::new();
        write_message(&mut out, &mut Vec::new(), body(b"hello"), false, None)
            .await
            .unwrap();
        assert_eq!(out, b"hello");
        let big = vec![b'x'; 20_000].leak();
        let mut out = Vec::new();
        write_message(&mut out, &mut b"H".to_vec(), body(big), true, None)
            .await
            .unwrap();
        assert_eq!(out.len(), 1 + 6 + 20_000 + 2 + 5);
    }

    /// A client that takes nothing: every write, flush and shutdown waits forever.
    struct TakesNothing;

    impl AsyncWrite for TakesNothing {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    /// Awaits `op` on a [`StallGuard`] over a client that takes nothing, and checks it failed
    /// with `TimedOut` after one to two stall timeouts. The outer timeout only turns a hang into
    /// a failure.
    async fn gives_up_after_the_stall<F: Future<Output = io::Result<()>>>(stall: Duration, op: F) {
        let start = tokio::time::Instant::now();
        let err = tokio::time::timeout(3 * stall, op)
            .await
            .expect("gave up by itself")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(waited >= stall && waited <= 2 * stall, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_fails_writes_and_shutdowns_after_the_stall_timeout() {
        let stall = Duration::from_secs(5);
        let mut client = TakesNothing;
        let mut guard = StallGuard::new(&mut client, stall);
        gives_up_after_the_stall(stall, guard.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await;
        // Over TLS a shutdown writes a close_notify: it must not wait forever either.
        let mut guard = StallGuard::new(&mut client, stall);
        gives_up_after_the_stall(stall, guard.shutdown()).await;
    }

    #[test]
    fn field_lines_are_name_colon_value_crlf() {
        let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
        push_field(&mut out, b"server", b"gatehouse");
        push_field(&mut out, b"x-empty", b"");
        let long = vec![b'v'; 5000];
        push_field(&mut out, b"x-long", &long);
        let mut expected =
            b"HTTP/1.1 200 OK\r\nserver: gatehouse\r\nx-empty: \r\nx-long: ".to_vec();
        expected.extend_from_slice(&long);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(out, expected);
        let mut fresh = Vec::new();
        push_field(&mut fresh, b"a", b"b");
        assert_eq!(fresh, b"a: b\r\n");
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for n in [0usize, 1, 9, 10, 15, 16, 255, 4096, 20_000, usize::MAX] {
            let mut out = Vec::new();
            push_chunk_size(&mut out, n);
            assert_eq!(out, format!("{n:x}\r\n").into_bytes(), "{n}");
        }
    }
}
