//! Conversions between `Duration` and the plain nanoseconds the state machines run on.

use std::time::Duration;

/// `d` in nanoseconds, saturating at `u64::MAX` (~584 years) instead of wrapping, so a
/// configured "forever" stays forever.
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_saturates() {
        assert_eq!(saturating_nanos(Duration::from_micros(3)), 3_000);
        assert_eq!(saturating_nanos(Duration::MAX), u64::MAX);
    }
}
