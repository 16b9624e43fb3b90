//! A cluster's resilience state on the data path: retry policy and budget, per-try timeout,
//! and the passive outlier detector, glued to the pure state machines of
//! `gatehouse-resilience` and `gatehouse-balance`.
//!
//! Healthy traffic stays lock-free: a success only reaches the outlier detector (under its
//! mutex) when it ends a run of failures on that endpoint.

use crate::health::EndpointHealth;
use gatehouse_balance::LatencyWindow;
use gatehouse_balance::OutlierConfig;
use gatehouse_balance::outlier::{Outcome, OutlierDetector, Reason};
use gatehouse_config::{BreakerSettings, Cluster, Hedge, Outlier};
use gatehouse_core::MonotonicClock;
use gatehouse_observe::{BreakerLabels, EjectionLabels, EndpointLabels, Label, Metrics, label};
use gatehouse_resilience::breaker::{Outcome as BreakerOutcome, Permit, State, Transition};
use gatehouse_resilience::{
    AdaptiveTimeoutConfig, Backoff, BreakerConfig, RetryBudget, RetryBudgetConfig, RetryPolicy,
    SharedAdaptiveTimeout, SharedBreaker,
};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// How a try ended, as resilience sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No usable answer: connect failed, reset, timed out or garbage before a head.
    GatewayFailure,
}

pub struct ClusterResilience {
    pub retry: RetryPolicy,
    pub budget: RetryBudget,
    /// Time allowed for one try's response head (None: the request's remaining time).
    pub try_timeout: Option<Duration>,
    /// The cluster's own breaker (None when the cluster has no `[clusters.breaker]`).
    pub breaker: Option<SharedBreaker>,
    /// A per-try timeout learned from recent tries (replaces `try_timeout` when set).
    pub adaptive_timeout: Option<SharedAdaptiveTimeout>,
    adaptive_cache: Cached,
    tracks_latency: bool,
    outlier: Option<Mutex<OutlierDetector>>,
}

impl ClusterResilience {
    pub fn new(cluster: &Cluster) -> Self {
        let r = &cluster.retry;
        Self {
            retry: RetryPolicy {
                max_attempts: r.attempts,
                max_replay_body: r.max_replay_body,
                backoff: Backoff {
                    base: r.backoff_base,
                    cap: r.backoff_max,
                },
                retry_on_status: r.on_status.clone(),
            },
            budget: RetryBudget::new(RetryBudgetConfig {
                ratio: f64::from(r.budget_percent) / 100.0,
                min_retries_per_second: r.budget_min_per_second,
                ttl: Duration::from_secs(10),
            }),
            try_timeout: cluster.try_timeout,
            breaker: cluster
                .breaker
                .as_ref()
                .map(|b| SharedBreaker::new(breaker_config(b))),
            adaptive_timeout: cluster.adaptive_timeout.as_ref().map(|a| {
                SharedAdaptiveTimeout::new(AdaptiveTimeoutConfig {
                    quantile: f64::from(a.quantile) / 100.0,
                    factor: f64::from(a.factor_tenths) / 10.0,
                    floor: a.floor,
                    min: a.min,
                    max: a.max,
                    // Tries are sampled (one in four, see proxy::exchange): 5 samples ~ 20 tries.
                    min_samples: 5,
                    window: Duration::from_secs(30),
                })
            }),
            adaptive_cache: Cached::default(),
            tracks_latency: cluster
                .outlier
                .as_ref()
                .is_some_and(|o| o.latency_factor_tenths.is_some()),
            outlier: cluster.outlier.as_ref().map(|o| {
                Mutex::new(OutlierDetector::new(
                    outlier_config(o),
                    cluster.endpoints.len(),
                ))
            }),
        }
    }

    /// No retries, no outlier detection (a cluster that does not exist).
    pub fn none() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            budget: RetryBudget::new(RetryBudgetConfig::default()),
            try_timeout: None,
            breaker: None,
            adaptive_timeout: None,
            adaptive_cache: Cached::default(),
            tracks_latency: false,
            outlier: None,
        }
    }

    /// The per-try timeout now: learned, configured, or none (the request's deadline).
    pub fn try_timeout(&self, now_nanos: impl FnOnce() -> u64) -> Option<Duration> {
        match &self.adaptive_timeout {
            Some(adaptive) => {
                let now = now_nanos();
                Some(Duration::from_nanos(
                    self.adaptive_cache
                        .get(now, || nanos(adaptive.timeout(now))),
                ))
            }
            None => self.try_timeout,
        }
    }

    /// Feeds a try's latency to the adaptive timeout (timed-out tries too, with the time they
    /// waited: leaving them out would make the estimate only see fast tries and shrink).
    pub fn observe_try(&self, now_nanos: u64, latency: Duration) {
        if let Some(adaptive) = &self.adaptive_timeout {
            adaptive.record(
                now_nanos,
                u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
            );
        }
    }

    /// Whether tries' latencies feed outlier detection (then each try is timed).
    pub fn tracks_latency(&self) -> bool {
        self.tracks_latency
    }

    /// Records a try's latency for latency-based ejection.
    pub fn observe_latency(&self, index: usize, now_nanos: u64, latency: Duration) {
        if let Some(detector) = &self.outlier {
            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            detector.lock().record_latency(now_nanos, index, nanos);
        }
    }

    /// The periodic pass: latency ejections (and returns that are due) for this cluster.
    pub fn sweep(
        &self,
        endpoints: &[crate::snapshot::EndpointRuntime],
        clock: &MonotonicClock,
        metrics: &Metrics,
    ) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let now = clock.now_nanos();
        let sweep = detector.lock().sweep(now);
        for ejection in sweep.ejections.iter().filter(|e| e.enforced) {
            let Some(endpoint) = endpoints.get(ejection.index) else {
                continue;
            };
            endpoint.health.eject_until(ejection.until_nanos.max(1));
            tracing::warn!(cluster = %endpoint.labels.cluster, endpoint = %endpoint.labels.endpoint, reason = "latency", "endpoint ejected");
            metrics
                .outlier_ejections
                .get_or_create(&EjectionLabels {
                    cluster: Arc::clone(&endpoint.labels.cluster),
                    endpoint: Arc::clone(&endpoint.labels.endpoint),
                    reason: "latency",
                })
                .inc();
        }
    }

    /// Feeds a try's outcome to outlier detection; ejects the endpoint when it crosses a
    /// threshold.
    pub fn record(&self, target: RecordTarget<'_>, outcome: TryOutcome) {
        let Some(detector) = &self.outlier else {
            return;
        };
        let failed = match outcome {
            TryOutcome::GatewayFailure => true,
            TryOutcome::Status(status) => status >= 500,
        };
        if failed {
            target.health.mark_failing();
        } else if !target.health.mark_succeeding() {
            return; // the usual case: a success after a success changes nothing
        }
        let now = target.clock.now_nanos();
        let ejection = detector.lock().record(
            now,
            target.index,
            match outcome {
                TryOutcome::Status(status) => Outcome::Status(status),
                TryOutcome::GatewayFailure => Outcome::GatewayFailure,
            },
        );
        let Some(ejection) = ejection else { return };
        let reason = match ejection.reason {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Reason::Latency { .. } => "latency",
        };
        if !ejection.enforced {
            tracing::info!(cluster = %target.labels.cluster, endpoint = %target.labels.endpoint, reason, "outlier not ejected: too many of the cluster are out already");
            return;
        }
        target.health.eject_until(ejection.until_nanos.max(1));
        tracing::warn!(
            cluster = %target.labels.cluster,
            endpoint = %target.labels.endpoint,
            reason,
            for_ms = ejection.until_nanos.saturating_sub(now) / 1_000_000,
            "endpoint ejected"
        );
        target
            .metrics
            .outlier_ejections
            .get_or_create(&EjectionLabels {
                cluster: Arc::clone(&target.labels.cluster),
                endpoint: Arc::clone(&target.labels.endpoint),
                reason,
            })
            .inc();
    }
}

/// A value recomputed at most once per period and read lock-free in between: quantiles walk a
/// histogram, which is too much work for every request.
#[derive(Default)]
struct Cached {
    value: std::sync::atomic::AtomicU64,
    refresh_at: std::sync::atomic::AtomicU64,
}

/// How long a learned delay or timeout is reused before it is recomputed.
const REFRESH_NANOS: u64 = 100_000_000;

impl Cached {
    fn get(&self, now_nanos: u64, compute: impl FnOnce() -> u64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        if now_nanos < self.refresh_at.load(Relaxed) {
            return self.value.load(Relaxed);
        }
        let value = compute();
        self.value.store(value, Relaxed);
        self.refresh_at
            .store(now_nanos.saturating_add(REFRESH_NANOS), Relaxed);
        value
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A route's hedging: when to send the second try, learned from the route's own latency.
pub struct HedgeRuntime {
    config: Hedge,
    window: Mutex<LatencyWindow>,
    delay: Cached,
}

/// Samples needed before the quantile is trusted; until then the hedge waits `max_delay`.
const HEDGE_MIN_SAMPLES: u64 = 20;

impl HedgeRuntime {
    pub fn new(config: Hedge) -> Self {
        Self {
            config,
            window: Mutex::new(LatencyWindow::new(Duration::from_secs(30))),
            delay: Cached::default(),
        }
    }

    /// How long the first try may take before the hedge goes out (recomputed every 100 ms).
    pub fn delay(&self, now_nanos: u64) -> Duration {
        Duration::from_nanos(self.delay.get(now_nanos, || {
            let window = self.window.lock();
            if window.count(now_nanos) < HEDGE_MIN_SAMPLES {
                return nanos(self.config.max_delay);
            }
            window
                .quantile(now_nanos, f64::from(self.config.quantile) / 100.0)
                .map_or(nanos(self.config.max_delay), |q| {
                    q.clamp(nanos(self.config.min_delay), nanos(self.config.max_delay))
                })
        }))
    }

    /// Records a response head latency of the route.
    pub fn observe(&self, now_nanos: u64, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.window.lock().record(now_nanos, nanos);
    }
}

/// The endpoint a try went to.
pub struct RecordTarget<'a> {
    pub index: usize,
    pub health: &'a EndpointHealth,
    pub labels: &'a EndpointLabels,
    pub clock: &'a MonotonicClock,
    pub metrics: &'a Metrics,
}

pub fn breaker_config(b: &BreakerSettings) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: b.consecutive_failures,
        failure_ratio: f64::from(b.failure_percent) / 100.0,
        min_requests: b.min_requests,
        window: b.window,
        buckets: 10,
        open_base: b.open,
        open_max: b.open_max,
        half_open_probes: b.half_open_probes,
        half_open_successes: b.half_open_successes,
        probe_timeout: Duration::from_secs(30),
    }
}

/// A breaker verdict on how a request (or try) ended: upstream failures count, answers below
/// 500 succeed, and what the client caused (a bad body, its own deadline) says nothing.
pub fn breaker_outcome(result: Result<u16, &gatehouse_core::ProxyError>) -> BreakerOutcome {
    match result {
        Ok(status) if status >= 500 => BreakerOutcome::Failure,
        Ok(_) => BreakerOutcome::Success,
        Err(error) if error.side() == gatehouse_core::Side::Upstream => BreakerOutcome::Failure,
        Err(_) => BreakerOutcome::Ignored,
    }
}

/// Returns a permit to its breaker, logging and counting a state change.
pub fn settle(
    breaker: &SharedBreaker,
    permit: Permit,
    outcome: BreakerOutcome,
    now_nanos: u64,
    scope: BreakerScope<'_>,
) {
    if let Some(transition) = breaker.record(now_nanos, permit, outcome) {
        report_transition(transition, scope);
    }
}

/// Which breaker: the cluster's, or one endpoint's.
#[derive(Clone, Copy)]
pub struct BreakerScope<'a> {
    pub cluster: &'a Label,
    pub endpoint: Option<&'a Label>,
    pub metrics: &'a Metrics,
}

pub fn report_transition(transition: Transition, scope: BreakerScope<'_>) {
    let state = match transition.to {
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::Closed => "closed",
    };
    let endpoint = scope.endpoint.map_or("*", |e| e.as_str());
    match transition.to {
        State::Open => tracing::warn!(cluster = %scope.cluster, endpoint, "circuit breaker open"),
        _ => tracing::info!(cluster = %scope.cluster, endpoint, state, "circuit breaker"),
    }
    scope
        .metrics
        .breaker_transitions
        .get_or_create(&BreakerLabels {
            cluster: Arc::clone(scope.cluster),
            endpoint: scope.endpoint.map_or_else(|| label("*"), Arc::clone),
            state,
        })
        .inc();
}

fn outlier_config(o: &Outlier) -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway_failures: o.consecutive_gateway_failures,
        base_ejection: o.base_ejection,
        max_ejection: o.max_ejection,
        max_ejection_percent: o.max_ejection_percent,
        latency: o
            .latency_factor_tenths
            .map(|tenths| gatehouse_balance::LatencyOutlierConfig {
                factor: f64::from(tenths) / 10.0,
                // Tries are sampled (one in four, see proxy::exchange): 25 samples ~ 100 tries.
                min_samples: 25,
                ..Default::default()
            }),
    }
}
