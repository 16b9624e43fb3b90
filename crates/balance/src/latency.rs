//! Recent-latency quantiles: a log-scale histogram over a sliding window.
//!
//! Outlier detection (p99 of each endpoint against its peers) and adaptive timeouts (per-try
//! timeout from the route's p99) both need "the p99 of the last few tens of seconds", cheaply,
//! for every endpoint. [`LatencyWindow`] keeps a small fixed-bucket histogram per time slice
//! (4 slices of a [`SlidingWindow`]) and sums the live slices on demand.
//!
//! Buckets: one for everything below 1.024 µs, then 8 per power of two up to 2^40 ns (~18 min),
//! then one overflow bucket: 242 `u32` counters, under 1 KiB per slice. Eight sub-buckets per
//! octave make a bucket at most 12.5% wide relative to its lower bound. A quantile is reported
//! as the upper bound of the bucket it falls in (so it errs high, which is the safe side for a
//! timeout), clamped to the largest sample actually seen in the window; a window of identical
//! samples therefore reports them exactly. An HdrHistogram would be finer but costs tens of KiB
//! per endpoint and has no notion of forgetting.

use std::time::Duration;

use crate::window::SlidingWindow;

/// Values below 2^MIN_EXP ns share bucket 0: sub-microsecond differences do not matter for
/// timeouts or outliers.
const MIN_EXP: u32 = 10;
/// Values at or above 2^MAX_EXP ns (~18 minutes) share the overflow bucket.
const MAX_EXP: u32 = 40;
const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Underflow bucket + log buckets + overflow bucket.
const BUCKETS: usize = 1 + (MAX_EXP - MIN_EXP) as usize * SUB_BUCKETS + 1;
/// Time slices per window: the live window covers 75–100% of the configured window.
const SLICES: usize = 4;

/// Sliding-window latency histogram answering quantile queries (see the module docs).
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    slices: SlidingWindow<Histogram>,
}

/// One slice's histogram. `counts` is allocated on the first sample, so idle slices (and idle
/// endpoints) cost no heap memory.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max: u64,
}

impl LatencyWindow {
    /// A histogram remembering roughly the last `window` of samples.
    pub fn new(window: Duration) -> Self {
        Self {
            slices: SlidingWindow::new(window, SLICES),
        }
    }

    /// Records one latency sample (nanoseconds) observed at `now`.
    pub fn record(&mut self, now_nanos: u64, latency_nanos: u64) {
        let slice = self.slices.current_mut(now_nanos);
        if slice.counts.is_empty() {
            slice.counts = vec![0; BUCKETS];
        }
        if let Some(count) = slice.counts.get_mut(bucket_index(latency_nanos)) {
            *count = count.saturating_add(1);
        }
        slice.total = slice.total.saturating_add(1);
        slice.max = slice.max.max(latency_nanos);
    }

    /// Samples in the window at `now`.
    pub fn count(&self, now_nanos: u64) -> u64 {
        self.slices
            .live(now_nanos)
            .fold(0u64, |sum, slice| sum.saturating_add(slice.total))
    }

    /// The `q` quantile (0.0..=1.0, e.g. 0.99) of the samples in the window at `now`, in
    /// nanoseconds, or None when the window is empty. `q` outside 0..=1 is clamped; NaN reads
    /// as 1.0 (the maximum), the conservative answer.
    pub fn quantile(&self, now_nanos: u64, q: f64) -> Option<u64> {
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let live: Vec<&Histogram> = self
            .slices
            .live(now_nanos)
            .filter(|slice| slice.total > 0)
            .collect();
        let total = live
            .iter()
            .fold(0u64, |sum, slice| sum.saturating_add(slice.total));
        if total == 0 {
            return None;
        }
        let max = live.iter().map(|slice| slice.max).max().unwrap_or(0);
        // Rank of the sample that answers the quantile, 1-based: ceil(q * total), at least 1.
        // The small slack keeps float error (0.07 * 100 = 7.000000000000001) from bumping the rank
        // past an exact product.
        let rank = ((q * total as f64 - 1e-9).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for bucket in 0..BUCKETS {
            for slice in &live {
                let count = slice.counts.get(bucket).copied().unwrap_or(0);
                seen = seen.saturating_add(u64::from(count));
            }
            if seen >= rank {
                return Some(bucket_upper_bound(bucket).min(max));
            }
        }
        // Bucket counters saturate at u32::MAX while totals do not; if that ever leaves the
        // walk short, the maximum is the honest conservative answer.
        Some(max)
    }

    /// Forgets every sample (e.g. when an ejected endpoint returns with a clean slate).
    pub fn clear(&mut self) {
        self.slices.clear();
    }
}

/// Bucket of a latency value (see the module docs for the layout).
fn bucket_index(nanos: u64) -> usize {
    if nanos < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - nanos.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((nanos >> (exp - SUB_BUCKET_BITS)) as usize) & (SUB_BUCKETS - 1);
    1 + (exp - MIN_EXP) as usize * SUB_BUCKETS + sub
}

/// Largest value that falls in `bucket`.
fn bucket_upper_bound(bucket: usize) -> u64 {
    if bucket == 0 {
        return (1 << MIN_EXP) - 1;
    }
    if bucket >= BUCKETS - 1 {
        return u64::MAX;
    }
    let k = bucket - 1;
    let exp = MIN_EXP + (k / SUB_BUCKETS) as u32;
    let sub = (k % SUB_BUCKETS) as u64;
    let width = 1u64 << (exp - SUB_BUCKET_BITS);
    (1u64 << exp) + sub * width + width - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn bucket_bounds_contain_their_values() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let value = rng.u64(0..(1 << 41));
            let bucket = bucket_index(value);
            assert!(value <= bucket_upper_bound(bucket), "{value} in {bucket}");
            if bucket > 0 {
                assert!(
                    value > bucket_upper_bound(bucket - 1),
                    "{value} in {bucket}"
                );
            }
        }
        // Every value from 1 µs up sits in a bucket at most 12.5% wide.
        for bucket in 1..BUCKETS - 1 {
            let lower = bucket_upper_bound(bucket - 1) + 1;
            let upper = bucket_upper_bound(bucket);
            assert!((upper - lower + 1) * 8 <= lower, "bucket {bucket}");
        }
    }

    #[test]
    fn extremes_land_in_the_end_buckets() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1023), 0);
        assert_eq!(bucket_index(1024), 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_index(1 << MAX_EXP), BUCKETS - 1);
        assert_eq!(bucket_index((1 << MAX_EXP) - 1), BUCKETS - 2);
    }

    #[test]
    fn empty_window_has_no_quantile() {
        let window = LatencyWindow::new(Duration::from_secs(10));
        assert_eq!(window.quantile(0, 0.99), None);
        assert_eq!(window.count(0), 0);
    }

    #[test]
    fn identical_samples_are_reported_exactly() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        for _ in 0..100 {
            window.record(SEC, 20 * MS);
        }
        assert_eq!(window.count(SEC), 100);
        assert_eq!(window.quantile(SEC, 0.5), Some(20 * MS));
        assert_eq!(window.quantile(SEC, 0.99), Some(20 * MS));
    }

    #[test]
    fn p99_finds_the_tail_within_bucket_precision() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        // 990 fast samples at 1 ms, 10 slow ones at 100 ms: p99 is still 1 ms, p99.5 is 100 ms.
        for _ in 0..990 {
            window.record(SEC, MS);
        }
        for _ in 0..10 {
            window.record(SEC, 100 * MS);
        }
        let p99 = window.quantile(SEC, 0.99).unwrap();
        assert!((MS..=MS + MS / 8).contains(&p99), "{p99}");
        assert_eq!(window.quantile(SEC, 0.995), Some(100 * MS));
        assert_eq!(window.quantile(SEC, 1.0), Some(100 * MS));
        let p0 = window.quantile(SEC, 0.0).unwrap();
        assert!((MS..=MS + MS / 8).contains(&p0), "{p0}");
    }

    #[test]
    fn uniform_samples_give_a_close_p99() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        for i in 1..=10_000u64 {
            window.record(SEC, i * 10_000); // 10 µs .. 100 ms
        }
        let p99 = window.quantile(SEC, 0.99).unwrap() as f64;
        let exact = 99.0 * MS as f64;
        assert!(p99 >= exact && p99 <= exact * 1.125, "{p99} vs {exact}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut window = LatencyWindow::new(Duration::from_secs(8));
        window.record(0, 500 * MS);
        for second in 1..=8 {
            window.record(second * SEC, 5 * MS);
        }
        // At 8 s the slice holding the 500 ms sample ([0, 2 s)) has expired.
        assert_eq!(window.quantile(8 * SEC, 1.0), Some(5 * MS));
        assert_eq!(window.count(8 * SEC), 7);
        assert_eq!(window.count(100 * SEC), 0);
        assert_eq!(window.quantile(100 * SEC, 0.99), None);
    }

    #[test]
    fn odd_quantiles_are_clamped() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        window.record(0, MS);
        window.record(0, 9 * MS);
        assert_eq!(window.quantile(0, f64::NAN), Some(9 * MS));
        assert_eq!(window.quantile(0, 7.0), Some(9 * MS));
        let low = window.quantile(0, -1.0).unwrap();
        assert!(low < 2 * MS, "{low}");
    }

    #[test]
    fn huge_and_zero_samples_do_not_panic() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        window.record(u64::MAX, u64::MAX);
        window.record(u64::MAX, 0);
        assert_eq!(window.quantile(u64::MAX, 1.0), Some(u64::MAX));
        assert_eq!(window.quantile(u64::MAX, 0.5), Some(1023));
    }

    #[test]
    fn clear_forgets_samples() {
        let mut window = LatencyWindow::new(Duration::from_secs(10));
        window.record(SEC, MS);
        window.clear();
        assert_eq!(window.count(SEC), 0);
        assert_eq!(window.quantile(SEC, 0.5), None);
    }
}
