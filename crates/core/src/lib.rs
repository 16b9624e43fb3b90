//! gatehouse-core: the vocabulary every other gatehouse crate shares.
//!
//! - [`error`]: the proxy error model. Every failure says which side caused it
//!   ([`Side`]) and whether retrying it elsewhere is safe ([`Retry`]); retry and
//!   breaker logic read those fields, never message strings.
//! - [`endpoint`]: endpoint identity ([`EndpointId`]), the key under which health,
//!   outlier and load statistics survive configuration reloads.
//! - [`clock`]: a monotonic clock origin so pure crates can take `now` as plain nanoseconds.
//!
//! This crate has no networking or async dependencies on purpose: it is the bottom of the graph.

pub mod clock;
pub mod endpoint;
pub mod error;

pub use clock::MonotonicClock;
pub use endpoint::EndpointId;
pub use error::{ErrorKind, ProxyError, Retry, Side};
