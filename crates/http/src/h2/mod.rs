//! gatehouse's own server-side HTTP/2 (RFC 9113), for h2c with prior knowledge today and
//! TLS with ALPN later (it serves any `AsyncRead + AsyncWrite + Unpin`).
//!
//! Why not hyper's: per request, hyper's HTTP/2 server spawns a task per stream, moves
//! kilobyte-sized futures several times, goes through h2's locked stream store and
//! Huffman-encodes every response value; together about 2 µs of CPU per request more than our
//! HTTP/1.1 server. Here one task serves a connection: stream handlers are polled inside the
//! connection's own future, frames for many streams are gathered in one output buffer and
//! written with one write per turn, and response headers are encoded for CPU, not bytes.
//!
//! - [`frame`]: the frame codec (parse from the read buffer without copying payloads, encode
//!   into the output buffer).
//! - [`hpack`]: header compression (decoder with Huffman, cheap encoder).
//! - [`flow`]: flow-control windows.
//! - [`stream`]: turning a header block into an `http::Request` (RFC 9113 §8 rules) and the
//!   request body the connection feeds.
//! - [`server`]: the connection: frames in, handler futures polled, frames out.
//! - `output`: the frames out: one buffer per turn, response heads, bodies within the
//!   windows, trailers.

pub mod flow;
pub mod frame;
pub mod hpack;
mod output;
pub mod server;
pub mod stream;

pub use frame::Reason;
pub use server::serve;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Per-connection settings, from the listener's configuration.
#[derive(Debug, Clone, Copy)]
pub struct H2Settings {
    /// Streams a client may have open at once; more get RST_STREAM(REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Largest decoded request header list (RFC 9113 §6.5.2); larger gets 431.
    pub max_header_list_size: u32,
    /// The receive window of each stream, and of the connection as a whole. Larger than the
    /// protocol's 64 KiB default so one stream can fill a fast link; the connection window
    /// bounds what one client can make us buffer.
    pub stream_window: u32,
    pub connection_window: u32,
    /// A connection with no open stream and no frame for this long gets GOAWAY and closes (it
    /// also bounds the wait for the preface and first SETTINGS).
    pub idle_timeout: Duration,
    /// A client that holds the connection up this long (between one and two of it) gets
    /// GOAWAY and is closed: it takes none of the output waiting for it (a full socket buffer,
    /// or windows it keeps shut), or sends none of a request body a handler waits for.
    pub stall_timeout: Duration,
    /// Rapid-reset protection (CVE-2023-44487): streams the client may cancel, or make us
    /// reset, per `abuse_window` before the connection gets GOAWAY(ENHANCE_YOUR_CALM).
    pub max_resets: u32,
    /// Control frames that need an answer (PING, SETTINGS) and empty frames a client may send
    /// per `abuse_window`.
    pub max_control_frames: u32,
    pub abuse_window: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 64 * 1024,
            stream_window: 1 << 20,
            connection_window: 2 << 20,
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            max_resets: 400,
            max_control_frames: 2000,
            abuse_window: Duration::from_secs(10),
        }
    }
}

/// A map keyed by small integers (stream ids, precomputed hashes).
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Hashes an integer key with one multiplication: stream ids are sequential and hashes are
/// already spread, so SipHash's strength would be wasted per lookup.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A hash of `bytes` continuing from `seed` (0 to start), eight bytes per step: the HPACK
/// encoder hashes every response field, and a byte-at-a-time hash was a visible share of its
/// time. Only for table lookups that compare the bytes afterwards; not collision-resistant.
pub(crate) fn field_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    // The length goes in first, so ("ab", "c") and ("a", "bc") differ.
    let mut hash = (seed ^ bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        hash = (hash.rotate_left(23) ^ word).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        hash = (hash.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    hash ^ (hash >> 29)
}

#[cfg(test)]
mod tests {
    use super::field_hash;

    #[test]
    fn field_hashes_separate_names_from_values_and_see_every_byte() {
        let split = |name: &[u8], value: &[u8]| field_hash(field_hash(0, name), value);
        assert_ne!(split(b"ab", b"c"), split(b"a", b"bc"));
        assert_ne!(split(b"server", b""), split(b"serve", b"r"));
        // A change in the last byte of a long value, or trailing zeros, changes the hash.
        let value = b"application/json; charset=utf-8".to_vec();
        let mut other = value.clone();
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(field_hash(0, &value), field_hash(0, &other));
        assert_ne!(field_hash(0, b"a"), field_hash(0, b"a\0"));
        assert_eq!(field_hash(7, b"same"), field_hash(7, b"same"));
    }
}
