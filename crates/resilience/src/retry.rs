//! Retry policy: whether a failed try may be sent again, and after how long.
//!
//! [`RetryPolicy::decide`] is a pure function of what the proxy knows when a try fails, checked
//! in this order (the first that applies wins):
//!
//! 1. **Response started**: bytes of a response already went to the client; a second response
//!    cannot be spliced in. Never retry.
//! 2. **Error class** ([`gatehouse_core::Retry`], from `ProxyError::retry()` or from
//!    [`RetryPolicy::classify_status`] for an upstream answer): `Never` stops here.
//! 3. **Attempts**: `attempts` tries made (the first included) must be below `max_attempts`.
//! 4. **Idempotency**: an `IfIdempotent` failure (the upstream may have acted) is retried only
//!    for idempotent methods ([`is_idempotent`]) or requests carrying an `Idempotency-Key`,
//!    which tells us the upstream (or gatehouse's idempotency layer in front of it) will not
//!    act twice. A `Safe` failure (nothing reached the upstream) is retried for any method.
//! 5. **Body**: the request body must still be sendable: not yet touched, or fully buffered
//!    within `max_replay_body`.
//! 6. **Deadline**: the backoff must end before the request's deadline.
//!
//! It does not consult the [`RetryBudget`](crate::RetryBudget): withdraw from the budget only
//! when `decide` says [`Decision::Retry`], so refused retries do not spend it.

use std::time::Duration;

use gatehouse_core::Retry;
use http::Method;

use crate::backoff::Backoff;

/// Whether `method` is idempotent (RFC 9110 §9.2.2): GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
/// Sending it twice has the same effect as sending it once, so a retry after the upstream may
/// have acted is safe.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Retry settings of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, the first included: 1 (or 0) means never retry.
    pub max_attempts: u32,
    /// Largest request body kept for replay, in bytes.
    pub max_replay_body: u64,
    /// Waits between tries.
    pub backoff: Backoff,
    /// Upstream statuses treated as retryable failures (the upstream answered, so they are
    /// `IfIdempotent`).
    pub retry_on_status: Vec<u16>,
}

impl Default for RetryPolicy {
    /// Two tries, 64 KiB replay buffer, Envoy's backoff, retry on 502/503/504.
    fn default() -> Self {
        Self {
            max_attempts: 2,
            max_replay_body: 64 * 1024,
            backoff: Backoff::default(),
            retry_on_status: vec![502, 503, 504],
        }
    }
}

/// Where the request body stands when a try fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No byte of it was consumed (e.g. connect failed before sending): it can still be sent,
    /// whatever its size.
    Untouched,
    /// The whole body (`len` bytes; 0 for no body) is held in the replay buffer.
    Buffered {
        /// Body length in bytes.
        len: u64,
    },
    /// Part of it was streamed to the failed try and not kept.
    Consumed,
}

/// What the proxy knows about a failed try.
#[derive(Debug, Clone, Copy)]
pub struct FailedTry<'a> {
    /// Request method.
    pub method: &'a Method,
    /// The request carries an `Idempotency-Key` header.
    pub has_idempotency_key: bool,
    /// Response bytes (head or body) were already sent to the client.
    pub response_started: bool,
    /// How safe a retry of this failure is.
    pub retry: Retry,
    /// Tries made so far, including the one that just failed (0 reads as 1).
    pub attempts: u32,
    /// The request body's state.
    pub body: RequestBody,
    /// Time left before the request's deadline; None when it has none.
    pub remaining: Option<Duration>,
}

/// The verdict on a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after waiting `backoff` (then withdraw from the retry budget).
    Retry {
        /// Wait before the next try.
        backoff: Duration,
    },
    /// Give up; the failure goes to the client.
    Stop(Stop),
}

/// Why a failed try is not retried (one per rule in the module docs, for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stop {
    /// Response bytes already reached the client.
    ResponseStarted,
    /// The failure is never retryable (client error, ...).
    NotRetryable,
    /// `max_attempts` tries were made.
    AttemptsExhausted,
    /// The upstream may have acted and the request is neither idempotent nor keyed.
    NotIdempotent,
    /// The body was consumed or is larger than the replay buffer.
    BodyNotReplayable,
    /// The backoff would end at or after the deadline.
    DeadlineTooClose,
}

impl RetryPolicy {
    /// Decides whether to retry a failed try (see the module docs for the rules). `random`
    /// is a uniformly random value that draws the backoff.
    pub fn decide(&self, failed: &FailedTry<'_>, random: u64) -> Decision {
        if failed.response_started {
            return Decision::Stop(Stop::ResponseStarted);
        }
        if failed.retry == Retry::Never {
            return Decision::Stop(Stop::NotRetryable);
        }
        let attempts = failed.attempts.max(1);
        if attempts >= self.max_attempts.max(1) {
            return Decision::Stop(Stop::AttemptsExhausted);
        }
        if failed.retry == Retry::IfIdempotent
            && !is_idempotent(failed.method)
            && !failed.has_idempotency_key
        {
            return Decision::Stop(Stop::NotIdempotent);
        }
        let replayable = match failed.body {
            RequestBody::Untouched => true,
            RequestBody::Buffered { len } => len <= self.max_replay_body,
            RequestBody::Consumed => false,
        };
        if !replayable {
            return Decision::Stop(Stop::BodyNotReplayable);
        }
        // The retry about to happen is retry number `attempts` (the first retry follows the
        // first try).
        let backoff = self.backoff.delay(attempts, random);
        if failed.remaining.is_some_and(|left| backoff >= left) {
            return Decision::Stop(Stop::DeadlineTooClose);
        }
        Decision::Retry { backoff }
    }

    /// Retry class of an upstream response status: `IfIdempotent` when it is in
    /// `retry_on_status` (the upstream answered, so it may have acted), `Never` otherwise.
    pub fn classify_status(&self, status: u16) -> Retry {
        if self.retry_on_status.contains(&status) {
            Retry::IfIdempotent
        } else {
            Retry::Never
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            max_replay_body: 1024,
            backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(100),
            },
            retry_on_status: vec![503],
        }
    }

    /// A GET that failed on its first try with a connect error, no deadline.
    fn failed(method: &Method) -> FailedTry<'_> {
        FailedTry {
            method,
            has_idempotency_key: false,
            response_started: false,
            retry: Retry::Safe,
            attempts: 1,
            body: RequestBody::Buffered { len: 0 },
            remaining: None,
        }
    }

    fn stop(reason: Stop) -> Decision {
        Decision::Stop(reason)
    }

    #[test]
    fn idempotent_methods() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&method), "{method}");
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert!(!is_idempotent(&custom));
    }

    #[test]
    fn retries_a_safe_failure_with_backoff() {
        let get = Method::GET;
        assert_eq!(
            policy().decide(&failed(&get), u64::MAX),
            Decision::Retry {
                backoff: Duration::from_millis(10)
            }
        );
        let second = FailedTry {
            attempts: 2,
            ..failed(&get)
        };
        assert_eq!(
            policy().decide(&second, u64::MAX),
            Decision::Retry {
                backoff: Duration::from_millis(20)
            }
        );
        assert_eq!(
            policy().decide(&second, 0),
            Decision::Retry {
                backoff: Duration::ZERO
            }
        );
    }

    #[test]
    fn stops_after_max_attempts() {
        let get = Method::GET;
        let third = FailedTry {
            attempts: 3,
            ..failed(&get)
        };
        assert_eq!(policy().decide(&third, 0), stop(Stop::AttemptsExhausted));
        let once = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(once.decide(&failed(&get), 0), stop(Stop::AttemptsExhausted));
        let zero = RetryPolicy {
            max_attempts: 0,
            ..policy()
        };
        assert_eq!(zero.decide(&failed(&get), 0), stop(Stop::AttemptsExhausted));
        // attempts = 0 is read as the first try.
        let unset = FailedTry {
            attempts: 0,
            ..failed(&get)
        };
        assert!(matches!(policy().decide(&unset, 0), Decision::Retry { .. }));
    }

    #[test]
    fn never_retries_once_the_response_started() {
        let get = Method::GET;
        let started = FailedTry {
            response_started: true,
            ..failed(&get)
        };
        assert_eq!(policy().decide(&started, 0), stop(Stop::ResponseStarted));
    }

    #[test]
    fn never_class_is_final() {
        let get = Method::GET;
        let never = FailedTry {
            retry: Retry::Never,
            ..failed(&get)
        };
        assert_eq!(policy().decide(&never, 0), stop(Stop::NotRetryable));
    }

    #[test]
    fn post_is_retried_only_when_nothing_was_sent_or_it_is_keyed() {
        let post = Method::POST;
        // Connect refused: the upstream never saw it.
        assert!(matches!(
            policy().decide(&failed(&post), 0),
            Decision::Retry { .. }
        ));
        // Reset after sending: the upstream may have acted.
        let maybe_acted = FailedTry {
            retry: Retry::IfIdempotent,
            ..failed(&post)
        };
        assert_eq!(policy().decide(&maybe_acted, 0), stop(Stop::NotIdempotent));
        let keyed = FailedTry {
            has_idempotency_key: true,
            ..maybe_acted
        };
        assert!(matches!(policy().decide(&keyed, 0), Decision::Retry { .. }));
        // An idempotent method needs no key.
        let put = Method::PUT;
        let put_reset = FailedTry {
            retry: Retry::IfIdempotent,
            ..failed(&put)
        };
        assert!(matches!(
            policy().decide(&put_reset, 0),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn body_must_be_replayable() {
        let put = Method::PUT;
        let cases = [
            (RequestBody::Untouched, true),
            (RequestBody::Buffered { len: 0 }, true),
            (RequestBody::Buffered { len: 1024 }, true),
            (RequestBody::Buffered { len: 1025 }, false),
            (RequestBody::Buffered { len: u64::MAX }, false),
            (RequestBody::Consumed, false),
        ];
        for (body, retried) in cases {
            let try_ = FailedTry {
                body,
                ..failed(&put)
            };
            let decision = policy().decide(&try_, 0);
            if retried {
                assert!(matches!(decision, Decision::Retry { .. }), "{body:?}");
            } else {
                assert_eq!(decision, stop(Stop::BodyNotReplayable), "{body:?}");
            }
        }
    }

    #[test]
    fn backoff_must_end_before_the_deadline() {
        let get = Method::GET;
        let tight = FailedTry {
            remaining: Some(Duration::from_millis(10)),
            ..failed(&get)
        };
        // Full backoff (10 ms) would end exactly at the deadline.
        assert_eq!(
            policy().decide(&tight, u64::MAX),
            stop(Stop::DeadlineTooClose)
        );
        // A shorter draw fits.
        assert_eq!(
            policy().decide(&tight, u64::MAX / 2),
            Decision::Retry {
                backoff: Duration::from_millis(5)
            }
        );
        let expired = FailedTry {
            remaining: Some(Duration::ZERO),
            ..failed(&get)
        };
        assert_eq!(policy().decide(&expired, 0), stop(Stop::DeadlineTooClose));
    }

    #[test]
    fn rules_apply_in_order() {
        // Everything wrong at once: the response having started is reported first.
        let post = Method::POST;
        let hopeless = FailedTry {
            method: &post,
            has_idempotency_key: false,
            response_started: true,
            retry: Retry::IfIdempotent,
            attempts: 9,
            body: RequestBody::Consumed,
            remaining: Some(Duration::ZERO),
        };
        assert_eq!(policy().decide(&hopeless, 0), stop(Stop::ResponseStarted));
        let next = FailedTry {
            response_started: false,
            ..hopeless
        };
        assert_eq!(policy().decide(&next, 0), stop(Stop::AttemptsExhausted));
        let next = FailedTry {
            attempts: 1,
            ..next
        };
        assert_eq!(policy().decide(&next, 0), stop(Stop::NotIdempotent));
        let next = FailedTry {
            has_idempotency_key: true,
            ..next
        };
        assert_eq!(policy().decide(&next, 0), stop(Stop::BodyNotReplayable));
        let next = FailedTry {
            body: RequestBody::Untouched,
            ..next
        };
        assert_eq!(policy().decide(&next, 0), stop(Stop::DeadlineTooClose));
    }

    #[test]
    fn statuses_are_classified_by_the_list() {
        let p = policy();
        assert_eq!(p.classify_status(503), Retry::IfIdempotent);
        assert_eq!(p.classify_status(502), Retry::Never);
        assert_eq!(p.classify_status(200), Retry::Never);
        let defaults = RetryPolicy::default();
        for status in [502, 503, 504] {
            assert_eq!(defaults.classify_status(status), Retry::IfIdempotent);
        }
        assert_eq!(defaults.classify_status(500), Retry::Never);
    }

    #[test]
    fn core_error_classes_drive_the_decision() {
        use gatehouse_core::{ErrorKind, ProxyError};
        let endpoint = "127.0.0.1:9".parse().unwrap();
        let post = Method::POST;
        let refused = ProxyError::new(ErrorKind::ConnectRefused { endpoint });
        let reset = ProxyError::new(ErrorKind::UpstreamReset { endpoint });
        let from_error = |error: &ProxyError| FailedTry {
            retry: error.retry(),
            ..failed(&post)
        };
        assert!(matches!(
            policy().decide(&from_error(&refused), 0),
            Decision::Retry { .. }
        ));
        assert_eq!(
            policy().decide(&from_error(&reset), 0),
            stop(Stop::NotIdempotent)
        );
    }
}
