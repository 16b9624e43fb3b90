//! A latency histogram that records without a lock.
//!
//! prometheus-client's `Histogram` keeps its buckets behind a `RwLock` and takes the write lock
//! for every observation: every worker answering on a busy route would queue on one lock per
//! request. Here each bucket is an atomic counter and the sum is kept in whole nanoseconds (an
//! integer add, where an `f64` sum would need a compare-and-swap loop), so recording is finding
//! the bucket and two relaxed atomic adds. A scrape may see an observation's bucket before its
//! sum; Prometheus histograms promise no more than that.
//!
//! The bucket is found in integer nanoseconds, starting from the first bucket that can hold a
//! value of that many significant bits: for exponential bounds that is a step or two, where a
//! binary search over 64 `f64` bounds is six dependent compares after a float division.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A handle on one latency series (cheap to clone; clones record into the same series).
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, ascending (Prometheus `le`: a value equal to a bound is in it).
    bounds: Box<[f64]>,
    /// The same bounds in whole nanoseconds: for each, the largest number of nanoseconds whose
    /// value in seconds is at most the bound (see [`bound_in_nanos`]).
    bound_nanos: Box<[u64]>,
    /// For a value with `m` significant bits (`64 - leading_zeros`), the first bucket whose
    /// bound is at least the smallest such value: where the search for its bucket starts.
    first_bucket_by_bits: [u32; 65],
    /// One counter per bound plus the last, for everything above (`+Inf`).
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// A histogram with these upper bounds, in seconds (sorted here; `+Inf` is implied; bounds
    /// below zero, which no latency can be at or under, and NaN are left out).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| *b >= 0.0).collect();
        bounds.sort_by(f64::total_cmp);
        let bound_nanos: Box<[u64]> = bounds.iter().map(|&b| bound_in_nanos(b)).collect();
        let first_bucket_by_bits = std::array::from_fn(|bits| {
            let smallest = if bits == 0 { 0 } else { 1u64 << (bits - 1) };
            let first = bound_nanos.partition_point(|&bound| bound < smallest);
            u32::try_from(first).unwrap_or(u32::MAX)
        });
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds: bounds.into_boxed_slice(),
                bound_nanos,
                first_bucket_by_bits,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let inner = &*self.inner;
        inner.counts[inner.bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of every observation.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.inner.sum_nanos.load(Ordering::Relaxed))
    }

    /// Each bucket's upper bound (`f64::MAX` for the last, which the encoder writes as `+Inf`)
    /// and its own count (the encoder makes them cumulative).
    fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = self.inner.bounds.iter().copied().chain([f64::MAX]);
        bounds
            .zip(self.inner.counts.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The largest whole number of nanoseconds that is at most `bound` seconds, as an observation
/// is compared in seconds (`Duration::as_secs_f64`). `floor(bound * 1e9)` is not it: the product
/// rounds, and 0.00013 * 1e9 is 129999.99999999999, which would put a 130 µs value above the
/// 130 µs bound. Starting from the rounded product, a step or two settles it.
fn bound_in_nanos(bound: f64) -> u64 {
    let seconds = |nanos: u64| Duration::from_nanos(nanos).as_secs_f64();
    // `as` saturates: a bound beyond u64::MAX nanoseconds (585 years) holds every value.
    let mut nanos = (bound * 1e9).round() as u64;
    while nanos > 0 && seconds(nanos) > bound {
        nanos -= 1;
    }
    while nanos < u64::MAX && seconds(nanos + 1) <= bound {
        nanos += 1;
    }
    nanos
}

impl Inner {
    /// The first bucket whose bound is at least `nanos` (the last, `+Inf`, when none is).
    fn bucket_of(&self, nanos: u64) -> usize {
        let bits = (u64::BITS - nanos.leading_zeros()) as usize;
        let mut bucket = self.first_bucket_by_bits[bits] as usize;
        while self
            .bound_nanos
            .get(bucket)
            .is_some_and(|&bound| bound < nanos)
        {
            bucket += 1;
        }
        bucket
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum().as_secs_f64(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_at_or_above_them() {
        let h = LatencyHistogram::new([0.002, 0.001, 0.004]);
        for ms in [0, 1, 2, 3, 4, 5, 500] {
            h.observe(Duration::from_millis(ms));
        }
        let counts: Vec<u64> = h.buckets().iter().map(|(_, n)| *n).collect();
        // le=0.001: 0 and 1 ms; le=0.002: 2; le=0.004: 3 and 4; +Inf: 5 and 500.
        assert_eq!(counts, [2, 1, 2, 2]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum(), Duration::from_millis(515));
    }

    #[test]
    fn the_bucket_is_the_first_bound_at_or_above_the_value() {
        let h = LatencyHistogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.000_1, 1.25, 64,
        ));
        let inner = &*h.inner;
        let expected = |nanos: u64| inner.bound_nanos.partition_point(|&b| b < nanos);
        let mut values = vec![0, 1, 2, 1_000, u64::MAX - 1, u64::MAX];
        for &bound in inner.bound_nanos.iter() {
            values.extend([bound - 1, bound, bound + 1]);
        }
        values.extend((0..60).map(|shift| (1u64 << shift) + 12_345));
        for nanos in values {
            assert_eq!(inner.bucket_of(nanos), expected(nanos), "{nanos} ns");
        }
        // Bounds that are not exponential, and no bounds at all.
        let uneven = LatencyHistogram::new([0.0, 0.000_000_5, 0.000_000_6, 0.000_000_7, 3.0]);
        let inner = &*uneven.inner;
        for (nanos, bucket) in [
            (0, 0),
            (1, 1),
            (500, 1),
            (501, 2),
            (700, 3),
            (701, 4),
            (u64::MAX, 5),
        ] {
            assert_eq!(inner.bucket_of(nanos), bucket, "{nanos} ns");
        }
        assert_eq!(LatencyHistogram::new([]).inner.bucket_of(77), 0);
    }

    #[test]
    fn a_value_at_a_decimal_bound_is_in_that_bound() {
        // Bounds whose product with 1e9 rounds below the whole number (0.00013 * 1e9 is
        // 129999.99999999999): the bucket must be the one comparing in seconds gives.
        let bounds = [65e-6, 0.000_13, 0.001, 0.002_08, 0.1, 1.0, 2.5];
        let h = LatencyHistogram::new(bounds);
        for bound in bounds {
            let at = (bound * 1e9).round() as u64;
            for nanos in at - 2..=at + 2 {
                let seconds = Duration::from_nanos(nanos).as_secs_f64();
                let by_seconds = bounds.partition_point(|&b| b < seconds);
                assert_eq!(h.inner.bucket_of(nanos), by_seconds, "{nanos} ns");
            }
        }
        assert_eq!(bound_in_nanos(0.000_13), 130_000);
        assert_eq!(bound_in_nanos(0.0), 0);
        assert_eq!(bound_in_nanos(1e30), u64::MAX);
    }

    #[test]
    fn clones_share_the_series_and_threads_lose_no_observation() {
        let h = LatencyHistogram::new([0.001]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let h = h.clone();
                s.spawn(move || {
                    for _ in 0..10_000 {
                        h.observe(Duration::from_micros(500));
                    }
                });
            }
        });
        assert_eq!(h.count(), 40_000);
        assert_eq!(h.sum(), Duration::from_secs(20));
    }

    #[test]
    fn encodes_cumulative_buckets_sum_and_count() {
        let mut registry = prometheus_client::registry::Registry::default();
        let h = LatencyHistogram::new([0.001, 0.01]);
        registry.register("latency_seconds", "test", h.clone());
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "latency_seconds_bucket{le=\"0.001\"} 1",
            "latency_seconds_bucket{le=\"0.01\"} 2",
            "latency_seconds_bucket{le=\"+Inf\"} 3",
            "latency_seconds_count 3",
            "latency_seconds_sum 1.0055",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
