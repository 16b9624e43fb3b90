//! Request body size limit, enforced while streaming, and the errors of the listener's body
//! limits ([`BodyTooLarge`], [`ClientStalled`]).
//!
//! A declared `Content-Length` above the limit is refused before anything is sent upstream; a
//! chunked body is counted as it streams and cut with [`BodyTooLarge`] the moment it passes the
//! limit, which fails the upstream request and becomes a 413 if no response has started.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body went past the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body exceeds the limit of {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client sent none of its request body for the listener's `stall_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientStalled {
    pub after: std::time::Duration,
}

impl std::fmt::Display for ClientStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client sent none of its body for {:?}", self.after)
    }
}

impl std::error::Error for ClientStalled {}

/// The error kind for a client body that broke one of the listener's limits (413, 408), if
/// `error` is one of theirs.
pub fn broken_limit(
    error: &(dyn std::error::Error + 'static),
) -> Option<gatehouse_core::ErrorKind> {
    if let Some(limit) = error.downcast_ref::<BodyTooLarge>() {
        return Some(gatehouse_core::ErrorKind::BodyTooLarge { limit: limit.limit });
    }
    error
        .downcast_ref::<ClientStalled>()
        .map(|stalled| gatehouse_core::ErrorKind::ClientStalled {
            after: stalled.after,
        })
}

pin_project_lite::pin_project! {
    /// A body that fails once more than `limit` bytes have passed.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
    }
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::body::BoxError>,
{
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: *this.limit,
                        }))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::collections::VecDeque;

    /// A body that yields the given chunks one frame at a time.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit() {
        let body = LimitedBody::new(Full::new(Bytes::from_static(b"12345")), 5);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "12345");
    }

    #[tokio::test]
    async fn cuts_a_stream_past_the_limit() {
        let chunks = Chunks(VecDeque::from([
            Bytes::from_static(b"1234"),
            Bytes::from_static(b"5678"),
        ]));
        let err = LimitedBody::new(chunks, 6).collect().await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<BodyTooLarge>(),
            Some(&BodyTooLarge { limit: 6 })
        );
    }
}
