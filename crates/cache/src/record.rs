//! Recording a response body while it streams to the client, and storing it when it ends.
//!
//! The body goes through a [`tee`] that keeps a copy up to the route's `max_object_size`.
//! When the body ends, the copy is stored (with a Content-Length of its real size) and then
//! the coalescing guard drops, so waiting requests find it. A body that grows too large, fails,
//! or is dropped unfinished (the client left) frees its copy at once and stores nothing.

use crate::coalesce::Leader;
use crate::directives::StaleAllowance;
use crate::entry::{Stored, header_bytes};
use crate::key::StoredKey;
use crate::store::HttpCache;
use crate::tee::{TeeBody, TeeSink, tee};
use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body;
use http_cache_semantics::CachePolicy;
use std::sync::Arc;
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

/// What a recorded body is stored with: the [`TeeSink`] of a cache recording.
pub struct Recording {
    cache: Arc<HttpCache>,
    pending: Pending,
    /// Dropped after the store (or when recording gives up): wakes coalesced waiters.
    _leader: Option<Leader>,
}

impl TeeSink for Recording {
    /// Trailers are not stored: a cached response is replayed without them (RFC 9111 lets a
    /// cache drop them).
    fn complete(self, copy: Bytes, _trailers: Option<HeaderMap>) {
        let hash = self.pending.hash;
        let stored = self.pending.into_stored(copy);
        self.cache.insert(hash, stored);
        // `_leader` drops here, after the insert: a woken waiter finds the entry.
    }

    /// Nothing to store; the leader drops, so waiters go to the origin themselves.
    fn abandon(self) {}
}

/// The response body on its way to the client, copied for the store.
pub type RecordingBody<B> = TeeBody<B, Recording>;

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
    let recording = Recording {
        cache,
        pending,
        _leader: leader,
    };
    tee(body, recording, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::Join;
    use crate::key::KeyParts;
    use crate::policy::{RequestView, ResponseView, policy};
    use http::{Method, Uri};
    use http_body::Frame;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body of several frames that does not know it is over until polled past the last.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    const KEY: KeyParts<'static> = KeyParts {
        route: "r",
        host: "h",
        target: "/r",
    };

    fn pending(cache: &HttpCache) -> Pending {
        let uri: Uri = "/r".parse().unwrap();
        let req = HeaderMap::new();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let now = SystemTime::now();
        Pending {
            key: KEY.to_stored(),
            hash: cache.hash(&KEY),
            status: StatusCode::OK,
            policy: policy(
                &RequestView::new(&Method::GET, &uri, &req),
                &ResponseView {
                    status: StatusCode::OK,
                    headers: &headers,
                },
                now,
            ),
            headers,
            vary: Vec::new(),
            received: now,
            received_at: Instant::now(),
            request_header_bytes: 0,
        }
    }

    fn frames(parts: &[&'static str]) -> Frames {
        Frames(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_body_is_stored_when_it_ends_and_waiters_wake_after() {
        let cache = Arc::new(HttpCache::new(1 << 20));
        let Join::Leader(leader) = cache.join(cache.hash(&KEY)) else {
            panic!()
        };
        let Join::Follower(follower) = cache.join(cache.hash(&KEY)) else {
            panic!()
        };
        let waiter = tokio::spawn(follower.wait());
        let body = record(
            frames(&["ab", "cd"]),
            Arc::clone(&cache),
            pending(&cache),
            10,
            Some(leader),
        );
        let streamed = body.collect().await.unwrap().to_bytes();
        assert_eq!(streamed, "abcd");
        waiter.await.unwrap();
        let stored = cache.lookup(cache.hash(&KEY), &KEY).unwrap();
        assert_eq!(stored.entries[0].body, "abcd");
        // Stored with its real length, not the upstream's chunked framing.
        assert_eq!(stored.entries[0].headers[header::CONTENT_LENGTH], "4");
        assert!(
            !stored.entries[0]
                .headers
                .contains_key(header::TRANSFER_ENCODING)
        );
    }

    #[tokio::test]
    async fn too_large_or_unfinished_bodies_are_not_stored() {
        let cache = Arc::new(HttpCache::new(1 << 20));
        let body = record(
            frames(&["abc", "def"]),
            Arc::clone(&cache),
            pending(&cache),
            5,
            None,
        );
        // The client still gets all of it.
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcdef");
        assert!(cache.lookup(cache.hash(&KEY), &KEY).is_none());

        let Join::Leader(leader) = cache.join(cache.hash(&KEY)) else {
            panic!()
        };
        let mut body = record(
            frames(&["ab", "cd"]),
            Arc::clone(&cache),
            pending(&cache),
            10,
            Some(leader),
        );
        body.frame().await.unwrap().unwrap();
        drop(body); // the client went away
        assert!(cache.lookup(cache.hash(&KEY), &KEY).is_none());
        // The slot was released with it.
        assert!(matches!(cache.join(cache.hash(&KEY)), Join::Leader(_)));
    }
}
