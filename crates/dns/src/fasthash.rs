//! A fast hash for short byte keys (domain names). SipHash, std's default, guards against
//! hash flooding by chosen keys; the keys here come from the operator's zone files, not from
//! clients (lookups only probe), so a multiply-rotate hash over 8-byte words is safe and
//! several times cheaper per lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Map from a lowercase wire name to a value.
pub type FastMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<WordHasher>>;

/// FxHash-style hasher: one multiply and rotate per 8 bytes.
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl WordHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Spread the high bits (hashbrown takes its control byte from the top 7).
        self.0.rotate_left(20)
    }
}
