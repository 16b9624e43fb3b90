//! A latency histogram that records without a lock.
//!
//! prometheus-client's `Histogram` keeps its buckets behind a `RwLock` and takes the write lock
//! for every observation: every worker answering on a busy route would queue on one lock per
//! request. Here each bucket is an atomic counter and the sum is kept in whole nanoseconds (an
//! integer add, where an `f64` sum would need a compare-and-swap loop), so recording is a
//! binary search and two relaxed atomic adds. A scrape may see an observation's bucket before
//! its sum; Prometheus histograms promise no more than that.

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
    /// One counter per bound plus the last, for everything above (`+Inf`).
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// A histogram with these upper bounds, in seconds (sorted here; `+Inf` is implied).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| !b.is_nan()).collect();
        bounds.sort_by(f64::total_cmp);
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds: bounds.into_boxed_slice(),
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = self.inner.bounds.partition_point(|&bound| bound < seconds);
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
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
