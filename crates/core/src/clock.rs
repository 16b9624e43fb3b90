//! A monotonic clock expressed as nanoseconds since a fixed origin.
//!
//! Pure state machines (balancers, health, breakers) take `now_nanos: u64` instead of reading the
//! clock themselves, so tests drive them with invented time. The I/O layers own one
//! `MonotonicClock` and pass `clock.now_nanos()` in.

use std::time::Instant;

/// Monotonic time source with a process-wide origin.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since this clock was created (saturates after ~584 years).
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The clock's reading at `instant`, without reading the clock: for an instant the caller
    /// already has (a request's arrival), this saves a system clock read on the hot path.
    pub fn nanos_at(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_moves_forward() {
        let clock = MonotonicClock::new();
        let a = clock.now_nanos();
        let b = clock.now_nanos();
        assert!(b >= a);
        let later = Instant::now() + std::time::Duration::from_millis(5);
        assert!(clock.nanos_at(later) >= b + 5_000_000);
        assert_eq!(
            clock.nanos_at(clock.origin - std::time::Duration::from_secs(1)),
            0
        );
    }
}
