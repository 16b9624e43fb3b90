//! gatehouse-http: the L7 data path.
//!
//! Request flow (see docs/architecture.md):
//!
//! ```text
//! server (accept, connection limit, listener ACL) -> HTTP/2 preface? h2::serve : h1_server (strict heads via
//!   h1_guard, bodies via chunked) -> server::handle_request (load snapshot once, request id)
//!   -> router (pure) -> protect (route ACL, rate limit) -> proxy::forward (limit, pick, rewrite, exchange, respond)
//!   -> pool (per-endpoint keep-alive h1 / multiplexed h2) -> upstream
//! ```
//!
//! - [`faults`]: runtime fault injection slots (latency, aborts, blackholes).
//! - [`gateway`]: owns the snapshot and the listeners; applies configs (start and reload).
//! - [`snapshot`]: the immutable runtime view of one config; pools and stats outlive it.
//! - [`server`]: accept loops and per-connection serving, graceful drain.
//! - [`h1_server`]: HTTP/1.1 for clients, one task per connection, no intermediate layers;
//!   [`h1_guard`]: strict head scanning and parsing (what may be smuggled is refused);
//!   [`wire`]: writing HTTP/1.1 heads' fields and bodies (shared by server and client);
//!   [`name_cache`]: each connection's field names by position, so a peer's usual names are
//!   not parsed again on every head.
//! - [`h2`]: HTTP/2 for clients (h2c, and h2 over TLS), one task per connection: frame codec, HPACK, flow
//!   control, streams polled inside the connection's future.
//! - [`router`]: host/path/method/header matching, no I/O.
//! - [`proxy`]: forwarding one request in named phases.
//! - [`pool`]: upstream connections; [`h1_client`]: HTTP/1.1 to upstreams, driven inline;
//!   [`chunked`]: the chunked coding decoder both directions share; [`splice`]: long bodies
//!   handed from an upstream's socket to the client's and moved without copying.
//! - [`headers`]: hop-by-hop removal, X-Forwarded-*, Via, request ids.
//! - [`health`]: endpoint health (active checks, ejections) as lock-free flags;
//!   [`resilience`]: a cluster's retry policy and budget, breakers and outlier detector;
//!   [`hedge_timer`]: hedged requests' deadlines, kept off tokio's timer wheel;
//!   [`idempotency`]: `Idempotency-Key` claims, replays and recording.
//! - [`cache_layer`]: the shared HTTP cache on a route's forward path (rules in gatehouse-cache).
//! - [`limits`], [`body`]: body size limit, body types and locally generated responses.
//! - [`protect`]: listener and route ACLs, trusted proxies and the real client address,
//!   connections per client, rate limits, security headers.
//! - [`tls_edge`]: TLS listeners' acceptors and certificate watching, clusters' upstream TLS;
//!   [`stream_io`]: one read/write half type for cleartext and TLS connections;
//!   [`redirect`]: 308 to https for cleartext listeners that only redirect.

pub mod body;
pub mod cache_layer;
pub mod chunked;
pub mod compress;
pub mod drain;
pub mod faults;
pub mod gateway;
pub mod h1_client;
pub mod h1_guard;
pub mod h1_server;
pub mod h2;
pub mod header_maps;
pub mod headers;
pub mod health;
pub mod hedge_timer;
pub mod idempotency;
pub mod idle;
pub mod limits;
pub mod name_cache;
pub mod pool;
pub mod protect;
pub mod proxy;
pub mod redirect;
pub mod resilience;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod splice;
pub mod stream_io;
pub mod tls_edge;
pub mod upgrade;
pub mod wire;

pub use gateway::{ApplyError, Gateway};
