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
    }
}
