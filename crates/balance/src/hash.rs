//! Stable hashing: [`hash_key`] for request affinity keys and endpoint
//! identities, plus the small mixers the ring and Maglev builders use to
//! derive many well-spread values from one endpoint key.
//!
//! Everything here is fixed arithmetic (FNV-1a 64 and murmur3's `fmix64`), so
//! a key hashes to the same value in every process, on every platform and with
//! every Rust release. That matters because affinity has to survive restarts
//! and be shared by several proxy instances; std's `RandomState` is randomly
//! keyed per process and `DefaultHasher`'s algorithm is explicitly unstable.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit golden-ratio increment used by splitmix64; adding it before
/// mixing keeps small consecutive inputs (replica 0, 1, 2, ...) far apart and
/// keeps 0 away from `fmix64`'s fixed point at 0.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Stable 64-bit hash of an affinity key or endpoint identity.
///
/// FNV-1a 64 over the bytes followed by murmur3's `fmix64` finalizer. FNV-1a
/// alone is fast and stable but leaves the high bits poorly mixed for short
/// keys, which would cluster them on a hash ring; the finalizer fixes that
/// (full avalanche) at the cost of a few multiplies.
pub fn hash_key(bytes: &[u8]) -> u64 {
    fmix64(fnv1a64(bytes))
}

/// Plain FNV-1a 64, kept separate so tests can pin it against the published
/// reference vectors.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// murmur3's 64-bit finalizer: a bijection with full avalanche.
pub(crate) const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Derives the `salt`-th pseudo-random value from an endpoint `key`.
///
/// Used for ring points (salt = replica number) and Maglev's offset/skip.
/// Depending only on the key (never on the endpoint's position in the list)
/// is what keeps other endpoints' points in place when one is removed. For a
/// fixed key distinct salts give distinct outputs, because `fmix64` is a
/// bijection and XOR with a constant is too.
pub(crate) const fn mix2(key: u64, salt: u64) -> u64 {
    fmix64(key ^ fmix64(salt.wrapping_add(GOLDEN_GAMMA)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hash_key_is_pinned() {
        // Computed once; these must never change, or every affinity mapping
        // in a running fleet moves on upgrade.
        assert_eq!(hash_key(b""), PINNED_EMPTY);
        assert_eq!(hash_key(b"hello"), PINNED_HELLO);
    }

    // Cross-checked against an independent implementation of the same
    // construction (FNV-1a 64, then fmix64).
    const PINNED_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
    const PINNED_HELLO: u64 = 0xe9c5_62c0_fdb2_3244;

    #[test]
    fn fmix64_is_murmur3_finalizer() {
        assert_eq!(fmix64(0), 0);
        // Distinct inputs stay distinct (spot check of the bijection).
        assert_ne!(fmix64(1), fmix64(2));
    }

    #[test]
    fn mix2_distinct_salts_give_distinct_values() {
        let key = hash_key(b"10.0.0.1:80");
        let mut seen: Vec<u64> = (0..1000).map(|salt| mix2(key, salt)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn similar_keys_hash_far_apart() {
        let a = hash_key(b"user-1");
        let b = hash_key(b"user-2");
        // Full avalanche: roughly half the bits differ.
        let differing = (a ^ b).count_ones();
        assert!((16..=48).contains(&differing), "{differing} bits differ");
    }
}
