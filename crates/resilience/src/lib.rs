//! Resilience decisions for gatehouse: when to stop calling an upstream, when to retry and
//! after how long, how long to wait, and which requests to deduplicate or sabotage on purpose.
//!
//! The crate is pure: it performs no I/O, never reads the clock and owns no random generator.
//! Time comes in as `now_nanos` (monotonic nanoseconds from
//! `gatehouse_core::MonotonicClock::now_nanos()`) and randomness as a caller-supplied `u64`, so
//! every decision is reproducible from its inputs and the tests need no sleeps. A `now` earlier
//! than one already seen is treated as that latest time (reports racing from several threads),
//! never as a reason to panic. The tower layers that drive these types (DESIGN.md's
//! "fault injection -> idempotency -> deadline/timeout -> retry (budget) -> circuit breaker")
//! are a separate step.
//!
//! Written here rather than taken from crates (failsafe, backoff, ...) because those read the
//! clock and draw their own random numbers, which is exactly what this crate must not do; each
//! mechanism is small and says where its rules come from (Finagle, linkerd, Envoy, gRPC,
//! Stripe).
//!
//! Parts:
//! - [`breaker`]: circuit breaker ([`Breaker`], [`SharedBreaker`]): Closed/Open/HalfOpen on
//!   consecutive failures or a failure ratio over a sliding window; returns its transitions.
//! - [`retry`]: retry policy ([`RetryPolicy::decide`], [`is_idempotent`]): may this failed
//!   try be sent again, and after which backoff.
//! - [`backoff`]: exponential backoff with full jitter ([`Backoff`]).
//! - [`budget`]: retry budget ([`RetryBudget`], shared by a cluster's requests; deposits take
//!   no lock): retries capped at a ratio of recent requests plus a per-second floor, against
//!   retry storms.
//! - [`deadline`]: request deadlines ([`Deadline`], [`parse_timeout`]): the client's
//!   `x-gatehouse-timeout` / `grpc-timeout` header, the route timeout, and the budget passed
//!   upstream.
//! - [`adaptive_timeout`]: per-try timeout from the recent p99 ([`AdaptiveTimeout`]).
//! - [`idempotency`]: `Idempotency-Key` store ([`IdempotencyStore`], [`InMemoryStore`],
//!   [`Fingerprinter`]): replay the first response to a retried non-idempotent request.
//! - [`fault`]: fault injection decisions ([`FaultConfig::decide`]).
//! - [`rate_limit`]: rate limits ([`RateLimiter`], [`InMemoryRateLimiter`], [`Gcra`]): GCRA per
//!   key with burst, remaining quota and retry-after, in a store bounded in keys.
//!
//! Passive outlier detection and active health-check state are resilience too, but they live
//! in gatehouse-balance (`gatehouse_balance::OutlierDetector`, `gatehouse_balance::HealthState`):
//! DESIGN.md gives balance the health and outlier state machines, and they decide exactly
//! what the balancer reads on every pick (eligibility and weight). This crate builds on two
//! of balance's building blocks: `SlidingWindow` (breaker ratio window, retry budget) and
//! `LatencyWindow` (adaptive timeout), the same ones outlier detection uses.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod adaptive_timeout;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod deadline;
pub mod fault;
pub mod idempotency;
mod random;
pub mod rate_limit;
pub mod retry;
mod time;

pub use adaptive_timeout::{AdaptiveTimeout, AdaptiveTimeoutConfig, SharedAdaptiveTimeout};
pub use backoff::Backoff;
pub use breaker::{Breaker, BreakerConfig, SharedBreaker};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use deadline::{Deadline, parse_timeout};
pub use fault::{BasisPoints, FaultAction, FaultConfig};
pub use idempotency::{
    Fingerprinter, IdempotencyKey, IdempotencyStore, InMemoryStore, StoreLimits, StoredResponse,
};
pub use rate_limit::{Gcra, InMemoryRateLimiter, Quota, RateDecision, RateLimiter};
pub use retry::{RetryPolicy, is_idempotent};
