//! gatehouse-cache: the shared HTTP cache (RFC 9111) that routes opt into.
//!
//! The data path (`gatehouse_http::cache_layer`) asks this crate three questions per request
//! and does the I/O itself:
//!
//! - **may this be served from the cache?** [`HttpCache::lookup`] finds the stored variants of
//!   a URL ([`key`]) and [`lookup::find`] decides, without I/O, whether one of them is fresh,
//!   stale (revalidate, or serve while revalidating, or serve because the origin failed), or
//!   missing. Freshness, `Authorization` and `no-store` rules come from the
//!   `http-cache-semantics` crate ([`policy`] adapts it); the extensions it lacks
//!   (`stale-while-revalidate`, `stale-if-error`, the Set-Cookie rule, validators for a
//!   client's own conditional request) are small pure functions in [`directives`].
//! - **who asks the origin?** [`HttpCache::join`] collapses concurrent misses for one URL into
//!   one upstream request ([`coalesce`]); the others wait for it to be stored.
//! - **what is kept?** A storable response's body is recorded while it streams to the first
//!   client ([`record`], on [`tee`]'s body that streams on while a bounded copy accumulates,
//!   which the idempotency store uses too) and stored when it ends, unless it grows past the route's
//!   `max_object_size`. The store ([`store`]) is a moka cache bounded by bytes (its weigher
//!   counts body and headers), shared by every route of the gateway; a hit clones an `Arc`
//!   and the stored body's `Bytes`, never the body itself.
//!
//! [`status`] names the outcomes for the `Cache-Status` header (RFC 9211) and metrics.

pub mod coalesce;
pub mod directives;
pub mod entry;
pub mod key;
pub mod lookup;
pub mod policy;
pub mod record;
pub mod status;
pub mod store;
pub mod tee;

pub use entry::{Stored, Variants};
pub use key::{KeyParts, StoredKey};
pub use lookup::Lookup;
pub use status::Outcome;
pub use store::{HttpCache, PurgeFilter, StoreStats};
