//! The request body across tries: buffered whole when small enough to send again (retries, or
//! an Idempotency-Key's fingerprint), streamed to the first try otherwise.

use crate::body::{BoxError, ProxyBody};
use bytes::Bytes;
use gatehouse_core::{ErrorKind, ProxyError};
use gatehouse_resilience::retry::RequestBody;
use http_body::Body;
use http_body_util::BodyExt;

/// The request body, kept whole when small enough to send again.
pub(super) enum ReplayBody {
    /// No body: every try sends none.
    Empty,
    /// The whole body, buffered: every try sends a copy.
    Buffered(Bytes),
    /// Streamed to the first try; None once sent.
    Streaming(Option<ProxyBody>),
}

impl ReplayBody {
    /// Buffers the body when asked (retries are possible, or an idempotency key needs its
    /// fingerprint) and its declared length fits the replay limit; streams it otherwise (such a
    /// request is not retried once its body was sent).
    pub(super) async fn new(
        body: ProxyBody,
        declared: Option<u64>,
        buffer: bool,
        max_replay: u64,
    ) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(Self::Empty);
        }
        let small = declared.is_some_and(|n| n <= max_replay);
        if !buffer || !small {
            return Ok(Self::Streaming(Some(body)));
        }
        match body.collect().await {
            Ok(collected) => Ok(Self::Buffered(collected.to_bytes())),
            Err(error) => Err(client_body_error(&error)),
        }
    }

    pub(super) fn for_try(&mut self) -> Option<ProxyBody> {
        match self {
            Self::Empty => Some(crate::body::empty()),
            Self::Buffered(bytes) => Some(crate::body::full(bytes.clone())),
            Self::Streaming(body) => body.take(),
        }
    }

    pub(super) fn state(&self) -> RequestBody {
        match self {
            Self::Empty => RequestBody::Buffered { len: 0 },
            Self::Buffered(bytes) => RequestBody::Buffered {
                len: bytes.len() as u64,
            },
            Self::Streaming(_) => RequestBody::Consumed,
        }
    }
}

/// A client body that failed while being buffered: too large, stalled, or the client went
/// away.
pub(super) fn client_body_error(error: &BoxError) -> ProxyError {
    ProxyError::new(crate::limits::broken_limit(&**error).unwrap_or_else(|| {
        ErrorKind::ClientBody {
            reason: error.to_string(),
        }
    }))
}
