//! A response body that streams on while a bounded copy of it accumulates beside it, for
//! whoever keeps responses to answer with later: the HTTP cache ([`crate::record`]) and the
//! idempotency store (gatehouse-http).
//!
//! The client gets every frame as it arrives. When the body ends within `max` bytes, the copy
//! (and the trailer fields, if any) goes to the [`TeeSink`]. A body that grows past `max`, fails, or is dropped unfinished (the
//! client left) gives up at once: the copy is freed and the sink hears `abandon`, so memory per
//! recording never exceeds `max`.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Where a complete copy goes.
pub trait TeeSink {
    /// The body ended; `copy` is all of its data, `trailers` its trailer fields if it had any.
    fn complete(self, copy: Bytes, trailers: Option<HeaderMap>);
    /// The body will not be complete: too large, failed, or dropped before its end.
    fn abandon(self);
}

pin_project_lite::pin_project! {
    /// `inner`, copied for a [`TeeSink`] (see the module docs).
    pub struct TeeBody<B, S: TeeSink> {
        #[pin]
        inner: B,
        recording: Option<(S, BytesMut)>,
        max: usize,
    }

    impl<B, S: TeeSink> PinnedDrop for TeeBody<B, S> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((sink, _)) = this.project().recording.take() {
                sink.abandon();
            }
        }
    }
}

/// Streams `body` and gives `sink` a copy of it when it ends within `max` bytes.
pub fn tee<B, S>(body: B, sink: S, max: usize) -> TeeBody<B, S>
where
    B: Body<Data = Bytes>,
    S: TeeSink,
{
    if body.is_end_stream() {
        // It will never be polled: the empty body is complete now.
        sink.complete(Bytes::new(), None);
        return TeeBody {
            inner: body,
            recording: None,
            max,
        };
    }
    let expected = body
        .size_hint()
        .exact()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    TeeBody {
        inner: body,
        recording: Some((sink, BytesMut::with_capacity(expected.min(max)))),
        max,
    }
}

impl<B, S> Body for TeeBody<B, S>
where
    B: Body<Data = Bytes>,
    S: TeeSink,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some((sink, mut copy)) = this.recording.take() {
                    if let Some(trailers) = frame.trailers_ref() {
                        // Trailers end a body.
                        sink.complete(copy.freeze(), Some(trailers.clone()));
                    } else {
                        let data = frame.data_ref().map_or(&[][..], |d| &d[..]);
                        if copy.len() + data.len() > *this.max {
                            sink.abandon();
                        } else {
                            copy.extend_from_slice(data);
                            if this.inner.is_end_stream() {
                                // A body that knows it is over may never be polled for its end.
                                sink.complete(copy.freeze(), None);
                            } else {
                                *this.recording = Some((sink, copy));
                            }
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some((sink, copy)) = this.recording.take() {
                    sink.complete(copy.freeze(), None);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some((sink, _)) = this.recording.take() {
                    sink.abandon();
                }
            }
            Poll::Pending => {}
        }
        polled
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
    use http_body_util::{BodyExt, Empty, Full};
    use std::sync::{Arc, Mutex};

    /// Records what the tee told it (the trailers separately).
    #[derive(Clone, Default)]
    struct Outcome(
        Arc<Mutex<Option<Result<Bytes, ()>>>>,
        Arc<Mutex<Option<HeaderMap>>>,
    );

    impl Outcome {
        fn get(&self) -> Option<Result<Bytes, ()>> {
            self.0.lock().unwrap().clone()
        }
    }

    impl TeeSink for Outcome {
        fn complete(self, copy: Bytes, trailers: Option<HeaderMap>) {
            *self.1.lock().unwrap() = trailers;
            assert!(
                self.0.lock().unwrap().replace(Ok(copy)).is_none(),
                "told twice"
            );
        }
        fn abandon(self) {
            assert!(
                self.0.lock().unwrap().replace(Err(())).is_none(),
                "told twice"
            );
        }
    }

    type Item = Result<Frame<Bytes>, &'static str>;

    /// A body of these frames that learns it is over only when polled past the last.
    struct Frames(std::collections::VecDeque<Item>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Item>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn frames(items: Vec<Item>) -> Frames {
        Frames(items.into())
    }

    fn data(text: &'static str) -> Item {
        Ok(Frame::data(Bytes::from_static(text.as_bytes())))
    }

    #[tokio::test]
    async fn the_client_gets_every_frame_and_the_sink_the_whole_copy() {
        let outcome = Outcome::default();
        let body = tee(frames(vec![data("ab"), data("cd")]), outcome.clone(), 10);
        let received = body.collect().await.unwrap().to_bytes();
        assert_eq!(received, "abcd");
        assert_eq!(outcome.get(), Some(Ok(Bytes::from("abcd"))));
    }

    #[tokio::test]
    async fn a_body_that_knows_its_end_completes_without_a_last_poll() {
        let outcome = Outcome::default();
        let mut body = tee(Full::new(Bytes::from("whole")), outcome.clone(), 10);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "whole");
        assert_eq!(outcome.get(), Some(Ok(Bytes::from("whole"))));
    }

    #[test]
    fn an_empty_body_completes_at_once() {
        let outcome = Outcome::default();
        let _body = tee(Empty::<Bytes>::new(), outcome.clone(), 10);
        assert_eq!(outcome.get(), Some(Ok(Bytes::new())));
    }

    #[tokio::test]
    async fn trailers_end_the_copy_and_are_kept() {
        let outcome = Outcome::default();
        let mut fields = HeaderMap::new();
        fields.insert("grpc-status", http::HeaderValue::from_static("0"));
        let trailers = Ok(Frame::trailers(fields.clone()));
        let body = tee(frames(vec![data("ab"), trailers]), outcome.clone(), 10);
        let received = body.collect().await.unwrap();
        assert_eq!(received.trailers(), Some(&fields), "the client gets them");
        assert_eq!(outcome.get(), Some(Ok(Bytes::from("ab"))));
        assert_eq!(
            outcome.1.lock().unwrap().as_ref(),
            Some(&fields),
            "so does the sink"
        );
    }

    #[tokio::test]
    async fn too_large_failed_or_unfinished_bodies_are_abandoned_but_stream_on() {
        let outcome = Outcome::default();
        let body = tee(frames(vec![data("abc"), data("def")]), outcome.clone(), 5);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
        assert_eq!(outcome.get(), Some(Err(())));

        let outcome = Outcome::default();
        let body = tee(frames(vec![data("ab"), Err("reset")]), outcome.clone(), 10);
        assert!(body.collect().await.is_err());
        assert_eq!(outcome.get(), Some(Err(())));

        let outcome = Outcome::default();
        let mut body = tee(frames(vec![data("ab"), data("cd")]), outcome.clone(), 10);
        body.frame().await.unwrap().unwrap();
        assert_eq!(outcome.get(), None, "still recording");
        drop(body);
        assert_eq!(outcome.get(), Some(Err(())));
    }
}
