//! Live per-endpoint counters: requests in flight and a peak-EWMA latency
//! estimate. Shared as `Arc<EndpointStats>` between the proxy (which reports
//! request start/end) and the balancer (which reads them to rank endpoints),
//! and kept across config reloads so a new balancer starts with warm data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Decay time constant of the latency estimate, 10 s as in Finagle and
/// linkerd: long enough to smooth out noise, short enough that an endpoint
/// that recovered gets traffic back within tens of seconds.
const DECAY_NANOS: f64 = 10_000_000_000.0;

/// Live per-endpoint counters shared by the balancer and the proxy. Shared as
/// Arc so they survive config reloads.
pub struct EndpointStats {
    /// Plain atomic: every request touches it twice, so it must not contend.
    in_flight: AtomicU64,
    /// The estimate and the time it was last updated have to change together
    /// (the decay depends on both), which a pair of independent atomics cannot
    /// guarantee. The critical section is a few float operations, so an
    /// uncontended parking_lot lock (one CAS) is cheaper than a seqlock's
    /// complexity would be worth.
    latency: Mutex<PeakEwma>,
}

impl EndpointStats {
    /// Fresh counters: nothing in flight, no latency sample.
    pub fn new() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            latency: Mutex::new(PeakEwma::default()),
        }
    }

    /// Requests currently in flight to this endpoint.
    pub fn in_flight(&self) -> u64 {
        // Relaxed: the value is a load hint, nothing else is published with it.
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request to this endpoint started.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (success or failure) after `latency`; updates
    /// in-flight and the peak-EWMA latency.
    pub fn end(&self, latency: Duration, now_nanos: u64) {
        self.end_untimed();
        // u128 -> f64 loses precision only beyond 2^53 ns (~104 days).
        let sample = latency.as_nanos() as f64;
        self.latency.lock().observe(sample, now_nanos);
    }

    /// A request finished, for a balancer that does not weigh latency: only
    /// the in-flight count changes (no lock, no estimate to update).
    pub fn end_untimed(&self) {
        // Saturating, so an unmatched `end` (a caller bug) cannot wrap the
        // counter to u64::MAX and starve this endpoint forever.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Peak-EWMA latency estimate in nanoseconds at `now_nanos` (decay time
    /// constant ~10 s, as in Finagle/linkerd; a new sample above the estimate
    /// replaces it at once ("peak"), below it decays in). Returns 0.0 when
    /// there is no sample yet.
    ///
    /// As in Finagle and linkerd the estimate also decays toward zero while no
    /// samples arrive, so an endpoint that was slow and therefore stopped
    /// getting traffic is eventually tried again instead of being shunned on
    /// stale data.
    pub fn peak_ewma_nanos(&self, now_nanos: u64) -> f64 {
        self.latency_estimate(now_nanos).unwrap_or(0.0)
    }

    /// Like [`Self::peak_ewma_nanos`] but tells "no sample yet" apart from a
    /// (decayed or genuinely) zero estimate, which the P2C cost needs.
    pub(crate) fn latency_estimate(&self, now_nanos: u64) -> Option<f64> {
        self.latency.lock().estimate_at(now_nanos)
    }
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let latency = self.latency.lock();
        f.debug_struct("EndpointStats")
            .field("in_flight", &self.in_flight())
            .field("peak_ewma_nanos", &latency.estimate)
            .field("sampled", &latency.sampled)
            .finish()
    }
}

/// Peak-sensitive exponentially weighted moving average (Finagle's
/// `PeakEwma`): the estimate jumps straight up to a slower sample, so a
/// degrading endpoint is penalised at once, but only decays down gradually,
/// so a single fast response cannot make a slow endpoint look healthy.
#[derive(Debug, Default)]
struct PeakEwma {
    /// Estimate as of `stamp`, in nanoseconds.
    estimate: f64,
    /// When `estimate` was last updated (caller's monotonic nanoseconds).
    stamp: u64,
    sampled: bool,
}

impl PeakEwma {
    /// Weight the old estimate keeps after `now` - `stamp` has elapsed.
    /// Time running backwards (out-of-order reports from several threads)
    /// counts as no time passing rather than as growth.
    fn retained(&self, now_nanos: u64) -> f64 {
        let elapsed = now_nanos.saturating_sub(self.stamp) as f64;
        (-elapsed / DECAY_NANOS).exp()
    }

    fn estimate_at(&self, now_nanos: u64) -> Option<f64> {
        self.sampled
            .then(|| self.estimate * self.retained(now_nanos))
    }

    fn observe(&mut self, sample: f64, now_nanos: u64) {
        if !self.sampled {
            self.estimate = sample;
            self.stamp = now_nanos;
            self.sampled = true;
            return;
        }
        let keep = self.retained(now_nanos);
        // The estimate "now" has decayed toward zero since the last update;
        // the sample fills in the weight that decay gave up. Comparing
        // against the decayed value keeps reads and updates consistent.
        let current = self.estimate * keep;
        self.estimate = if sample > current {
            sample
        } else {
            current + sample * (1.0 - keep)
        };
        self.stamp = self.stamp.max(now_nanos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn in_flight_counts_begin_and_end() {
        let stats = EndpointStats::new();
        assert_eq!(stats.in_flight(), 0);
        stats.begin();
        stats.begin();
        stats.begin();
        assert_eq!(stats.in_flight(), 3);
        stats.end(Duration::from_millis(1), 0);
        assert_eq!(stats.in_flight(), 2);
        stats.end(Duration::from_millis(1), 0);
        stats.end(Duration::from_millis(1), 0);
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn untimed_ends_count_without_a_latency_sample() {
        let stats = EndpointStats::new();
        stats.begin();
        stats.begin();
        stats.end_untimed();
        assert_eq!(stats.in_flight(), 1);
        assert_eq!(stats.latency_estimate(SEC), None);
        stats.end_untimed();
        stats.end_untimed(); // unmatched: saturates at zero
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn unmatched_end_does_not_underflow() {
        let stats = EndpointStats::default();
        stats.end(Duration::from_millis(1), 0);
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn no_sample_reads_zero() {
        let stats = EndpointStats::new();
        assert_eq!(stats.peak_ewma_nanos(0), 0.0);
        assert_eq!(stats.peak_ewma_nanos(100 * SEC), 0.0);
        assert_eq!(stats.latency_estimate(0), None);
    }

    #[test]
    fn first_sample_is_the_estimate() {
        let stats = EndpointStats::new();
        stats.begin();
        stats.end(Duration::from_millis(5), SEC);
        assert_eq!(stats.peak_ewma_nanos(SEC), (5 * MS) as f64);
    }

    #[test]
    fn peak_jumps_up_immediately() {
        let stats = EndpointStats::new();
        stats.end(Duration::from_millis(1), SEC);
        stats.end(Duration::from_millis(100), SEC + MS);
        let estimate = stats.peak_ewma_nanos(SEC + MS);
        assert_eq!(estimate, (100 * MS) as f64);
    }

    #[test]
    fn decays_toward_lower_samples_over_time() {
        let stats = EndpointStats::new();
        let mut now = SEC;
        stats.end(Duration::from_millis(100), now);
        let mut previous = stats.peak_ewma_nanos(now);
        // A steady stream of 1 ms responses, one every 100 ms for 60 s.
        for _ in 0..600 {
            now += 100 * MS;
            stats.end(Duration::from_millis(1), now);
            let estimate = stats.peak_ewma_nanos(now);
            assert!(estimate < previous, "{estimate} !< {previous}");
            assert!(
                estimate >= (MS as f64) * 0.999,
                "{estimate} fell below the samples"
            );
            previous = estimate;
        }
        // After six time constants the 100 ms peak has all but vanished.
        assert!(previous < (2 * MS) as f64, "{previous}");
    }

    #[test]
    fn one_fast_sample_does_not_erase_a_peak() {
        let stats = EndpointStats::new();
        stats.end(Duration::from_millis(100), SEC);
        stats.end(Duration::from_millis(1), SEC + 10 * MS);
        // 10 ms is 1/1000 of the time constant: the estimate barely moves.
        assert!(stats.peak_ewma_nanos(SEC + 10 * MS) > (99 * MS) as f64);
    }

    #[test]
    fn idle_estimate_decays_toward_zero() {
        let stats = EndpointStats::new();
        stats.end(Duration::from_millis(100), SEC);
        let later = stats.peak_ewma_nanos(SEC + 10 * SEC);
        let expected = (100 * MS) as f64 * (-1.0f64).exp();
        assert!((later - expected).abs() < 1.0, "{later} vs {expected}");
        // Reading does not change the state: reading earlier again gives the
        // undecayed value.
        assert_eq!(stats.peak_ewma_nanos(SEC), (100 * MS) as f64);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let stats = EndpointStats::new();
        stats.end(Duration::from_millis(10), 10 * SEC);
        stats.end(Duration::from_millis(1), 5 * SEC);
        // No elapsed time: a lower sample has zero weight, so the estimate stays.
        assert_eq!(stats.peak_ewma_nanos(10 * SEC), (10 * MS) as f64);
        assert_eq!(stats.peak_ewma_nanos(0), (10 * MS) as f64);
    }

    #[test]
    fn stats_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EndpointStats>();
    }
}
