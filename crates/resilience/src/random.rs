//! Turning a caller-supplied random `u64` into the draws a decision needs.
//!
//! The state machines never own a random generator: callers pass `fastrand::u64(..)` (or a
//! seeded `fastrand::Rng` in tests), which keeps every decision reproducible from its inputs.

/// Uniform value in `0..=max` from a uniform `random`, by multiply-shift: no division, and a
/// bias below 2^-64 × max, which no caller can observe.
pub(crate) fn up_to(random: u64, max: u64) -> u64 {
    let span = u128::from(max) + 1;
    // (random * span) >> 64 < span <= 2^64, so the result fits in u64.
    ((u128::from(random) * span) >> 64) as u64
}

/// The `n`-th independent-looking value derived from one random input (splitmix64 over
/// `random + n × golden gamma`), so one caller-supplied `u64` can feed several draws that do
/// not move together.
pub(crate) fn derive(random: u64, n: u64) -> u64 {
    let mut z = random.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_covers_the_whole_range() {
        assert_eq!(up_to(0, 10), 0);
        assert_eq!(up_to(u64::MAX, 10), 10);
        assert_eq!(up_to(u64::MAX, 0), 0);
        assert_eq!(up_to(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(up_to(1 << 63, 100), 50);
    }

    #[test]
    fn derived_values_differ_and_are_stable() {
        assert_ne!(derive(0, 0), derive(0, 1));
        assert_ne!(derive(0, 0), derive(1, 0));
        assert_eq!(derive(42, 3), derive(42, 3));
        // splitmix64's first output for seed 0 (reference value of the published algorithm).
        assert_eq!(derive(0, 0), 0xe220_a839_7b1d_cdaf);
    }
}
