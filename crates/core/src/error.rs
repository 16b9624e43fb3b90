//! The proxy error model.
//!
//! A proxy failure is useful to three readers: the client (which status code), the operator
//! (which peer and which layer failed) and the resilience logic (may this be retried?). Each
//! [`ProxyError`] carries all three as typed fields so no caller ever parses a message.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Which side of the proxy caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or went away.
    Downstream,
    /// The upstream refused, reset, timed out or answered garbage.
    Upstream,
    /// gatehouse itself (configuration, routing, exhausted resources).
    Internal,
}

/// Whether a failed request may be sent again (to another endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the upstream (e.g. connect refused): always safe to retry.
    Safe,
    /// The upstream may have processed the request: only idempotent requests may be retried.
    IfIdempotent,
    /// Never retry (client error, response already started, body not replayable).
    Never,
}

/// What went wrong, precise enough to pick a status code and write a useful message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route matched the request.
    NoRoute,
    /// The route's cluster has no endpoint that may be picked.
    NoHealthyEndpoint { cluster: String },
    /// TCP connect to the endpoint was refused.
    ConnectRefused { endpoint: SocketAddr },
    /// TCP connect did not complete in time.
    ConnectTimeout {
        endpoint: SocketAddr,
        after: Duration,
    },
    /// Any other connect failure (unreachable, out of ports, ...).
    ConnectFailed {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The TLS handshake with the upstream failed (untrusted or mismatched certificate,
    /// no common protocol version, the upstream wanted a client certificate...).
    UpstreamTls {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The upstream closed or reset the connection before a complete response head.
    UpstreamReset { endpoint: SocketAddr },
    /// The upstream did not send a response head in time.
    UpstreamTimeout {
        endpoint: SocketAddr,
        after: Duration,
    },
    /// The upstream sent bytes that are not a valid HTTP response.
    UpstreamProtocol {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The client's request was malformed.
    BadRequest { reason: String },
    /// The client's request body exceeded the configured limit.
    BodyTooLarge { limit: u64 },
    /// The client's body stream failed (client went away mid-upload).
    ClientBody { reason: String },
    /// The client sent none of the request body being waited for within the listener's
    /// `stall_timeout`.
    ClientStalled { after: Duration },
    /// The request's deadline (the client's time budget, or the route's timeout across all
    /// tries) passed before an upstream answered.
    DeadlineExceeded { budget: Duration },
    /// A circuit breaker (the cluster's, or every eligible endpoint's) is open: the upstream
    /// has been failing, so gatehouse answers at once instead of adding load.
    CircuitOpen {
        cluster: String,
        retry_after: Duration,
    },
    /// A request with this Idempotency-Key is still running.
    IdempotencyInFlight,
    /// This Idempotency-Key was used for a different request (method, target or body).
    IdempotencyMismatch,
    /// Fault injection aborted the request with this status (set through the admin API).
    FaultInjected { status: u16 },
    /// The route's access list does not admit the client's address.
    AccessDenied { client: IpAddr },
    /// The route's rate limit refused the request; a request after `retry_after` is admitted.
    RateLimited { retry_after: Duration },
    /// The route requires a verified client certificate and the connection has none.
    ClientCertificateRequired,
}

/// A failure while proxying one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        Self { kind }
    }

    pub fn side(&self) -> Side {
        match &self.kind {
            ErrorKind::NoRoute
            | ErrorKind::NoHealthyEndpoint { .. }
            | ErrorKind::DeadlineExceeded { .. }
            | ErrorKind::CircuitOpen { .. }
            | ErrorKind::FaultInjected { .. } => Side::Internal,
            ErrorKind::IdempotencyInFlight
            | ErrorKind::IdempotencyMismatch
            | ErrorKind::AccessDenied { .. }
            | ErrorKind::RateLimited { .. } => Side::Downstream,
            ErrorKind::ConnectRefused { .. }
            | ErrorKind::ConnectTimeout { .. }
            | ErrorKind::ConnectFailed { .. }
            | ErrorKind::UpstreamTls { .. }
            | ErrorKind::UpstreamReset { .. }
            | ErrorKind::UpstreamTimeout { .. }
            | ErrorKind::UpstreamProtocol { .. } => Side::Upstream,
            ErrorKind::BadRequest { .. }
            | ErrorKind::BodyTooLarge { .. }
            | ErrorKind::ClientBody { .. }
            | ErrorKind::ClientStalled { .. }
            | ErrorKind::ClientCertificateRequired => Side::Downstream,
        }
    }

    pub fn retry(&self) -> Retry {
        match &self.kind {
            // Nothing was sent: another endpoint can take it.
            ErrorKind::ConnectRefused { .. }
            | ErrorKind::ConnectTimeout { .. }
            | ErrorKind::ConnectFailed { .. }
            // Nothing of the request was sent before the handshake completed.
            | ErrorKind::UpstreamTls { .. }
            | ErrorKind::NoHealthyEndpoint { .. } => Retry::Safe,
            // The request may have been (partly) processed.
            ErrorKind::UpstreamReset { .. }
            | ErrorKind::UpstreamTimeout { .. }
            | ErrorKind::UpstreamProtocol { .. } => Retry::IfIdempotent,
            ErrorKind::NoRoute
            | ErrorKind::BadRequest { .. }
            | ErrorKind::BodyTooLarge { .. }
            | ErrorKind::ClientBody { .. }
            | ErrorKind::ClientStalled { .. }
            | ErrorKind::DeadlineExceeded { .. }
            | ErrorKind::CircuitOpen { .. }
            | ErrorKind::IdempotencyInFlight
            | ErrorKind::IdempotencyMismatch
            | ErrorKind::FaultInjected { .. }
            | ErrorKind::AccessDenied { .. }
            | ErrorKind::RateLimited { .. }
            | ErrorKind::ClientCertificateRequired => Retry::Never,
        }
    }

    /// The HTTP status a client sees for this error.
    pub fn status(&self) -> u16 {
        match &self.kind {
            ErrorKind::NoRoute => 404,
            ErrorKind::NoHealthyEndpoint { .. } | ErrorKind::CircuitOpen { .. } => 503,
            ErrorKind::ConnectRefused { .. }
            | ErrorKind::ConnectFailed { .. }
            | ErrorKind::UpstreamTls { .. }
            | ErrorKind::UpstreamReset { .. }
            | ErrorKind::UpstreamProtocol { .. } => 502,
            ErrorKind::ConnectTimeout { .. }
            | ErrorKind::UpstreamTimeout { .. }
            | ErrorKind::DeadlineExceeded { .. } => 504,
            ErrorKind::BadRequest { .. } | ErrorKind::ClientBody { .. } => 400,
            ErrorKind::BodyTooLarge { .. } => 413,
            ErrorKind::ClientStalled { .. } => 408,
            ErrorKind::IdempotencyInFlight => 409,
            ErrorKind::IdempotencyMismatch => 422,
            ErrorKind::FaultInjected { status } => *status,
            ErrorKind::AccessDenied { .. } => 403,
            ErrorKind::RateLimited { .. } => 429,
            ErrorKind::ClientCertificateRequired => 403,
        }
    }

    /// The endpoint involved, if any.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match &self.kind {
            ErrorKind::ConnectRefused { endpoint }
            | ErrorKind::ConnectTimeout { endpoint, .. }
            | ErrorKind::ConnectFailed { endpoint, .. }
            | ErrorKind::UpstreamTls { endpoint, .. }
            | ErrorKind::UpstreamReset { endpoint }
            | ErrorKind::UpstreamTimeout { endpoint, .. }
            | ErrorKind::UpstreamProtocol { endpoint, .. } => Some(*endpoint),
            _ => None,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::NoRoute => write!(f, "no route matches this request"),
            ErrorKind::NoHealthyEndpoint { cluster } => {
                write!(f, "cluster {cluster:?} has no healthy endpoint")
            }
            ErrorKind::ConnectRefused { endpoint } => {
                write!(f, "upstream {endpoint} refused the TCP connection")
            }
            ErrorKind::ConnectTimeout { endpoint, after } => write!(
                f,
                "TCP connect to upstream {endpoint} timed out after {} ms",
                after.as_millis()
            ),
            ErrorKind::ConnectFailed { endpoint, reason } => {
                write!(f, "TCP connect to upstream {endpoint} failed: {reason}")
            }
            ErrorKind::UpstreamTls { endpoint, reason } => {
                write!(f, "TLS handshake with upstream {endpoint} failed: {reason}")
            }
            ErrorKind::UpstreamReset { endpoint } => write!(
                f,
                "upstream {endpoint} closed or reset the connection before a complete response"
            ),
            ErrorKind::UpstreamTimeout { endpoint, after } => write!(
                f,
                "upstream {endpoint} sent no response within {} ms",
                after.as_millis()
            ),
            ErrorKind::UpstreamProtocol { endpoint, reason } => {
                write!(
                    f,
                    "upstream {endpoint} sent an invalid HTTP response: {reason}"
                )
            }
            ErrorKind::BadRequest { reason } => write!(f, "bad request: {reason}"),
            ErrorKind::BodyTooLarge { limit } => {
                write!(f, "request body exceeds the limit of {limit} bytes")
            }
            ErrorKind::ClientBody { reason } => {
                write!(f, "reading the request body failed: {reason}")
            }
            ErrorKind::ClientStalled { after } => write!(
                f,
                "the client sent none of its request body for {} ms (the listener's stall_timeout)",
                after.as_millis()
            ),
            ErrorKind::CircuitOpen {
                cluster,
                retry_after,
            } => write!(
                f,
                "the circuit breaker of cluster {cluster:?} is open after repeated failures; retry after {} s",
                retry_after.as_secs_f64().ceil()
            ),
            ErrorKind::FaultInjected { status } => write!(
                f,
                "fault injection aborted this request with status {status} (see the admin API /faults)"
            ),
            ErrorKind::ClientCertificateRequired => write!(
                f,
                "this route requires a client certificate; connect with one the listener's client_ca trusts"
            ),
            ErrorKind::IdempotencyInFlight => write!(
                f,
                "a request with this Idempotency-Key is still being processed; retry later"
            ),
            ErrorKind::IdempotencyMismatch => write!(
                f,
                "this Idempotency-Key was already used for a different request (method, target or body)"
            ),
            ErrorKind::DeadlineExceeded { budget } => write!(
                f,
                "the request's time budget of {} ms ran out before an upstream answered",
                budget.as_millis()
            ),
            ErrorKind::AccessDenied { client } => {
                write!(f, "client address {client} is not allowed on this route")
            }
            ErrorKind::RateLimited { retry_after } => write!(
                f,
                "rate limit exceeded; retry after {} s",
                retry_after.as_secs_f64().ceil().max(1.0)
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn connect_failures_are_502_or_504_and_safe_to_retry() {
        let refused = ProxyError::new(ErrorKind::ConnectRefused { endpoint: addr() });
        assert_eq!(refused.status(), 502);
        assert_eq!(refused.retry(), Retry::Safe);
        assert_eq!(refused.side(), Side::Upstream);
        let timeout = ProxyError::new(ErrorKind::ConnectTimeout {
            endpoint: addr(),
            after: Duration::from_millis(250),
        });
        assert_eq!(timeout.status(), 504);
        assert!(timeout.to_string().contains("250 ms"));
    }

    #[test]
    fn messages_name_the_endpoint() {
        let reset = ProxyError::new(ErrorKind::UpstreamReset { endpoint: addr() });
        assert!(reset.to_string().contains("127.0.0.1:9"));
        assert_eq!(reset.retry(), Retry::IfIdempotent);
        assert_eq!(reset.endpoint(), Some(addr()));
    }

    #[test]
    fn client_errors_are_never_retried() {
        let big = ProxyError::new(ErrorKind::BodyTooLarge { limit: 10 });
        assert_eq!(big.status(), 413);
        assert_eq!(big.retry(), Retry::Never);
        assert_eq!(big.side(), Side::Downstream);
        assert_eq!(ProxyError::new(ErrorKind::NoRoute).status(), 404);
    }

    #[test]
    fn protection_refusals_are_the_client_side_and_name_the_cause() {
        let denied = ProxyError::new(ErrorKind::AccessDenied {
            client: "192.0.2.7".parse().unwrap(),
        });
        assert_eq!((denied.status(), denied.side()), (403, Side::Downstream));
        assert_eq!(
            denied.to_string(),
            "client address 192.0.2.7 is not allowed on this route"
        );
        let limited = ProxyError::new(ErrorKind::RateLimited {
            retry_after: Duration::from_millis(2100),
        });
        assert_eq!((limited.status(), limited.retry()), (429, Retry::Never));
        assert!(limited.to_string().contains("retry after 3 s"), "{limited}");
    }
}
