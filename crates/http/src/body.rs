//! Body types and the responses gatehouse writes itself.

use bytes::Bytes;
use gatehouse_core::ProxyError;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body that crosses the proxy: client uploads, upstream responses, local answers.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub static X_GATEHOUSE_ERROR: header::HeaderName =
    header::HeaderName::from_static("x-gatehouse-error");

/// An empty body.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body broke off or was malformed on the wire, on either side of the proxy.
#[derive(Debug)]
pub struct BodyError {
    /// Downstream: the client's request body; upstream: the upstream's response body.
    pub side: gatehouse_core::Side,
    pub reason: String,
}

impl BodyError {
    pub fn client(reason: String) -> Self {
        Self {
            side: gatehouse_core::Side::Downstream,
            reason,
        }
    }

    pub fn upstream(reason: String) -> Self {
        Self {
            side: gatehouse_core::Side::Upstream,
            reason,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let which = match self.side {
            gatehouse_core::Side::Upstream => "upstream response body",
            _ => "request body",
        };
        write!(f, "{which}: {}", self.reason)
    }
}

impl std::error::Error for BodyError {}

/// A small local body.
pub fn full(text: impl Into<Bytes>) -> ProxyBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response gatehouse answers itself.
pub fn text_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The client-facing answer for a proxy error: status from the error, a body naming the cause
/// (and the endpoint, when one was involved), and `x-gatehouse-error` with a stable kind.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = text_response(
        status,
        format!(
            "{} {}: {error}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    );
    response.headers_mut().insert(
        X_GATEHOUSE_ERROR.clone(),
        HeaderValue::from_static(error_kind(error)),
    );
    if let gatehouse_core::ErrorKind::CircuitOpen { retry_after, .. }
    | gatehouse_core::ErrorKind::RateLimited { retry_after } = &error.kind
    {
        // Whole seconds, rounded up: a client that waits this long finds the breaker probing,
        // or its rate limit with room again.
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(*retry_after)),
        );
    }
    response
}

/// A wait as whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A short stable name for metrics labels and the `x-gatehouse-error` header.
pub fn error_kind(error: &ProxyError) -> &'static str {
    use gatehouse_core::ErrorKind::*;
    match error.kind {
        NoRoute => "no_route",
        NoHealthyEndpoint { .. } => "no_healthy_endpoint",
        ConnectRefused { .. } => "connect_refused",
        ConnectTimeout { .. } => "connect_timeout",
        ConnectFailed { .. } => "connect_failed",
        UpstreamTls { .. } => "upstream_tls",
        UpstreamReset { .. } => "upstream_reset",
        UpstreamTimeout { .. } => "upstream_timeout",
        UpstreamProtocol { .. } => "upstream_protocol",
        BadRequest { .. } => "bad_request",
        BodyTooLarge { .. } => "body_too_large",
        ClientBody { .. } => "client_body",
        ClientStalled { .. } => "client_stalled",
        DeadlineExceeded { .. } => "deadline_exceeded",
        CircuitOpen { .. } => "circuit_open",
        IdempotencyInFlight => "idempotency_in_flight",
        IdempotencyMismatch => "idempotency_mismatch",
        FaultInjected { .. } => "fault_injected",
        AccessDenied { .. } => "access_denied",
        RateLimited { .. } => "rate_limited",
        ClientCertificateRequired => "client_certificate_required",
    }
}
