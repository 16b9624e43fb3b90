//! Recording a response body while it streams to the client, and storing it when it ends.
//!
//! The client gets every frame as it arrives; a copy accumulates beside it up to the route's
//! `max_object_size`. When the body ends, the copy is stored (with a Content-Length of its
//! real size) and then the coalescing guard drops, so waiting requests find it. A body that
//! grows too large, fails, or is dropped unfinished (the client left) frees its copy at once
//! and stores nothing: memory per recording never exceeds the object limit.

use crate::coalesce::Leader;
use crate::directives::StaleAllowance;
use crate::entry::{Stored, header_bytes};
use crate::key::StoredKey;
use crate::store::HttpCache;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_cache_semantics::CachePolicy;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// Everything of a response to store except its body.
pub struct Pending {
    pub key: StoredKey,
    pub hash: u64,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub policy: CachePolicy,
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    pub received: SystemTime,
    pub received_at: Instant,
    pub request_header_bytes: usize,
}

impl Pending {
    /// The entry, with `body` and its length.
    pub fn into_stored(self, body: Bytes) -> Stored {
        let mut headers = self.headers;
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let fresh_for: Duration = self.policy.time_to_live(self.received);
        let stale = StaleAllowance::of(&headers);
        Stored {
            weight: Stored::weigh(&headers, &body, self.request_header_bytes),
            key: self.key,
            status: self.status,
            headers,
            body,
            policy: self.policy,
            vary: self.vary,
            received: self.received,
            received_at: self.received_at,
            fresh_for,
            stale,
        }
    }

    /// Request header bytes, for the entry's weight.
    pub fn request_bytes(request: &HeaderMap) -> usize {
        header_bytes(request)
    }
}

/// A body being copied for the store.
struct Recording {
    cache: Arc<HttpCache>,
    pending: Pending,
    copy: BytesMut,
    max: usize,
    /// Dropped after the store (or when recording gives up): wakes coalesced waiters.
    _leader: Option<Leader>,
}

impl Recording {
    fn store(self) {
        let hash = self.pending.hash;
        let stored = self.pending.into_stored(self.copy.freeze());
        self.cache.insert(hash, stored);
        // `_leader` drops here, after the insert: a woken waiter finds the entry.
    }
}

pin_project_lite::pin_project! {
    /// The response body on its way to the client, copied for the store.
    pub struct RecordingBody<B> {
        #[pin]
        inner: B,
        recording: Option<Recording>,
    }
}

/// Wraps `body` so that it is stored under `pending` when it ends within `max` bytes.
pub fn record<B>(
    body: B,
    cache: Arc<HttpCache>,
    pending: Pending,
    max: usize,
    leader: Option<Leader>,
) -> RecordingBody<B>
where
    B: Body<Data = Bytes>,
{
    let expected = body.size_hint().exact().map_or(0, |n| n as usize);
    let recording = Recording {
        cache,
        pending,
        copy: BytesMut::with_capacity(expected.min(max)),
        max,
        _leader: leader,
    };
    if body.is_end_stream() {
        // Nothing will be polled: store the empty body now.
        recording.store();
        return RecordingBody {
            inner: body,
            recording: None,
        };
    }
    RecordingBody {
        inner: body,
        recording: Some(recording),
    }
}

impl<B> Body for RecordingBody<B>
where
    B: Body<Data = Bytes>,
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
                if let Some(data) = frame.data_ref()
                    && let Some(mut recording) = this.recording.take()
                    && recording.copy.len() + data.len() <= recording.max
                {
                    recording.copy.extend_from_slice(data);
                    if this.inner.is_end_stream() {
                        // A body that knows it is over may never be polled for its end.
                        recording.store();
                    } else {
                        *this.recording = Some(recording);
                    }
                }
                // Too large: the copy was dropped with the recording; the body streams on.
            }
            Poll::Ready(None) => {
                if let Some(recording) = this.recording.take() {
                    recording.store();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.recording.take();
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
