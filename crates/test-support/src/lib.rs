//! gatehouse-test-support: real servers and processes for gatehouse's tests. Never shipped in the
//! binary.
//!
//! - [`upstream`]: [`TestUpstream`], a named HTTP/1.1 + h2c server on an OS-chosen loopback port
//!   that counts requests, echoes what it received, streams and swallows large bodies, stalls,
//!   answers any status, or resets the connection, as the request path asks.
//! - [`process`]: [`Gatehouse`], the real gatehouse binary started on a config file in a fresh
//!   temporary directory, with the addresses it bound read from its output.
//! - [`dns`]: [`TestDns`], a tiny authoritative DNS server on a loopback UDP port whose A, AAAA
//!   and SRV records a test changes while it runs (or silences).
//! - [`tls`]: a test CA that writes server and client certificates to files, rustls configs
//!   for TLS upstreams, and an HTTPS client that reports what the handshake chose.

pub mod dns;
pub mod process;
pub mod tls;
pub mod upstream;

pub use dns::{SrvRecord, TestDns};
pub use process::{Gatehouse, temp_dir};
pub use upstream::TestUpstream;
