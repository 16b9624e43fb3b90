//! gatehouse-observe: what the proxy tells operators about itself.
//!
//! - [`Metrics`]: every counter and histogram gatehouse exports, registered once, encoded as
//!   Prometheus text by [`Metrics::encode`] for the admin `/metrics` endpoint.
//! - Latency histograms use fine exponential buckets (100 µs to ~100 s, ratio 1.25) so that
//!   `histogram_quantile` gives p50/p90/p99/p999 within a few percent.
//!
//! Label values are `Arc<String>` built once per config snapshot, so recording a request costs a
//! hash lookup and an atomic add, not string formatting.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod latency_histogram;
mod request_counter;

pub use latency_histogram::LatencyHistogram;
pub use request_counter::RequestLabelRefs;

/// Shared label value: built once, cloned by reference count.
pub type Label = Arc<String>;

/// A counter handle (cheap to clone; clones count into the same series), for series resolved
/// once per snapshot.
pub use prometheus_client::metrics::counter::Counter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: Label,
    pub route: Label,
    pub cluster: Label,
    pub endpoint: Label,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Label,
    pub cluster: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: Label,
    pub endpoint: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub route: Label,
    pub cluster: Label,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub listener: Label,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteNameLabels {
    pub route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// "applied" or "rejected".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    pub cluster: Label,
    pub endpoint: Label,
    /// "pass" or "fail".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EjectionLabels {
    pub cluster: Label,
    pub endpoint: Label,
    /// "consecutive_5xx", "consecutive_gateway_failure" or "latency".
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub cluster: Label,
    /// For retries: the failure retried ("connect_refused", "status_503", ...). For refused
    /// retries: why ("budget", "not_idempotent", "body_not_replayable", "deadline", ...).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub cluster: Label,
    /// The endpoint, or "*" for the cluster's own breaker.
    pub endpoint: Label,
    /// The state entered: "open", "half_open" or "closed".
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabels {
    pub cluster: Label,
    /// "ok", "error" (the last good answer is kept) or "empty".
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: Label,
    /// "hit", "miss", "revalidated", "stale" or "bypass" (see gatehouse-cache's `Outcome`).
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, LatencyHistogram, fn() -> LatencyHistogram>;

fn latency_histogram() -> LatencyHistogram {
    LatencyHistogram::new(exponential_buckets(0.000_1, 1.25, 64))
}

/// All metrics of one gatehouse process.
pub struct Metrics {
    registry: Registry,
    /// Tells this process's `Metrics` apart in the per-thread request counter cache (tests run
    /// several gateways in one process).
    id: u64,
    /// The label of a request with no route or endpoint.
    dash: Label,
    /// Requests answered, by listener, route, cluster, endpoint ("-" when none) and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Whole-request latency seen by the client, by route (until the response head is sent).
    pub request_duration: HistogramFamily<RouteLabels>,
    /// Time from sending upstream to the upstream's response head, by endpoint.
    pub upstream_duration: HistogramFamily<EndpointLabels>,
    /// Proxy errors by route and kind (connect_refused, upstream_timeout, ...).
    pub proxy_errors: Family<ErrorLabels, Counter>,
    /// Open downstream connections by listener.
    pub connections_open: Family<ListenerLabels, Gauge>,
    /// Accepted downstream connections by listener.
    pub connections_total: Family<ListenerLabels, Counter>,
    /// Requests refused before routing (malformed, smuggling attempts, too large), and
    /// connections closed at accept (reason "acl_denied", "per_ip_limit").
    pub rejected: Family<RejectLabels, Counter>,
    /// Upstream connections opened, by endpoint (a high rate means pooling is not working).
    pub upstream_connects: Family<EndpointLabels, Counter>,
    /// Config reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Generation number of the config snapshot being served.
    pub config_generation: Gauge,
    /// 1 while an endpoint passes its active health checks (and is not ejected), else 0.
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
    /// Active health check results.
    pub health_checks: Family<HealthCheckLabels, Counter>,
    /// Outlier ejections (enforced ones only).
    pub outlier_ejections: Family<EjectionLabels, Counter>,
    /// Tries sent again, by cluster and the failure that caused them.
    pub retries: Family<RetryLabels, Counter>,
    /// Failed tries not sent again although the failure was retryable, by reason.
    pub retries_refused: Family<RetryLabels, Counter>,
    /// Circuit breaker state changes.
    pub breaker_transitions: Family<BreakerLabels, Counter>,
    /// Hedged second tries sent, by cluster.
    pub hedges: Family<RetryLabels, Counter>,
    /// Requests refused by a route's rate limit (429), by route.
    pub rate_limited: Family<RouteNameLabels, Counter>,
    /// Requests on cached routes, by route and what the cache did.
    pub cache_requests: Family<CacheLabels, Counter>,
    /// Bytes held by the HTTP cache (set when metrics are read).
    pub cache_bytes: Gauge,
    /// URLs held by the HTTP cache (set when metrics are read).
    pub cache_objects: Gauge,
    /// Entries the HTTP cache pushed out to stay within its size (set when metrics are read).
    pub cache_evictions: Gauge,
    /// Connections switched to another protocol (WebSocket) through the proxy, by route.
    pub upgrades: Family<RouteLabels, Counter>,
    /// Upgraded connections (WebSocket tunnels) open now.
    pub tunnels_open: Gauge,
    /// Live instances in the service registry, by service.
    pub registry_instances: Family<ServiceLabels, Gauge>,
    /// Registry instances removed because their heartbeats stopped, by service.
    pub registry_expirations: Family<ServiceLabels, Counter>,
    /// DNS discovery resolutions, by cluster and result.
    pub dns_discovery: Family<DiscoveryLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::default();
        let request_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        let upstream_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        let proxy_errors = Family::default();
        let connections_open = Family::default();
        let connections_total = Family::default();
        let rejected = Family::default();
        let upstream_connects = Family::default();
        let reloads = Family::default();
        let config_generation = Gauge::default();
        let endpoint_healthy = Family::default();
        let health_checks = Family::default();
        let outlier_ejections = Family::default();
        let retries = Family::default();
        let retries_refused = Family::default();
        let breaker_transitions = Family::default();
        let hedges = Family::default();
        let rate_limited = Family::default();
        let cache_requests = Family::default();
        let cache_bytes = Gauge::default();
        let cache_objects = Gauge::default();
        let cache_evictions = Gauge::default();
        registry.register(
            "cache_requests",
            "Requests on cached routes by result: hit, miss, revalidated (304 from the origin), stale (served stale), bypass",
            cache_requests.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the HTTP cache",
            cache_bytes.clone(),
        );
        registry.register(
            "cache_objects",
            "URLs held by the HTTP cache",
            cache_objects.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries the HTTP cache evicted to stay within its size since it was created",
            cache_evictions.clone(),
        );
        let upgrades = Family::default();
        let tunnels_open = Gauge::default();
        registry.register(
            "upgrades",
            "Connections switched to another protocol (WebSocket) through the proxy, by route",
            upgrades.clone(),
        );
        registry.register(
            "tunnels_open",
            "Upgraded connections (WebSocket tunnels) open now",
            tunnels_open.clone(),
        );
        let registry_instances = Family::default();
        let registry_expirations = Family::default();
        let dns_discovery = Family::default();
        registry.register(
            "registry_instances",
            "Live instances in the service registry",
            registry_instances.clone(),
        );
        registry.register(
            "registry_expirations",
            "Registry instances removed because their heartbeats stopped",
            registry_expirations.clone(),
        );
        registry.register(
            "dns_discovery_resolutions",
            "DNS discovery resolutions by result (error: the last good answer is kept)",
            dns_discovery.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a route's rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "hedged_requests",
            "Second tries sent because the first was slower than the route's usual latency",
            hedges.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            breaker_transitions.clone(),
        );
        registry.register(
            "endpoint_healthy",
            "1 while an endpoint is in rotation (healthy and not ejected)",
            endpoint_healthy.clone(),
        );
        registry.register(
            "health_checks",
            "Active health check results",
            health_checks.clone(),
        );
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by passive outlier detection",
            outlier_ejections.clone(),
        );
        registry.register("retries", "Tries sent again", retries.clone());
        registry.register(
            "retries_refused",
            "Retryable failures not retried (budget spent, unsafe method, body gone, deadline)",
            retries_refused.clone(),
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head, seen by gatehouse",
            request_duration.clone(),
        );
        registry.register(
            "upstream_response_duration_seconds",
            "Time from sending a request upstream to its response head",
            upstream_duration.clone(),
        );
        registry.register("proxy_errors", "Proxy errors by kind", proxy_errors.clone());
        registry.register(
            "downstream_connections_open",
            "Open client connections",
            connections_open.clone(),
        );
        registry.register(
            "downstream_connections",
            "Accepted client connections",
            connections_total.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests and connections refused before routing (malformed, ambiguous framing, too large; listener ACL, connections per client)",
            rejected.clone(),
        );
        registry.register(
            "upstream_connections",
            "Upstream connections opened",
            upstream_connects.clone(),
        );
        registry.register("config_reloads", "Configuration reloads", reloads.clone());
        registry.register(
            "config_generation",
            "Generation of the configuration being served",
            config_generation.clone(),
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            registry,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dash: label("-"),
            requests,
            request_duration,
            upstream_duration,
            proxy_errors,
            connections_open,
            connections_total,
            rejected,
            upstream_connects,
            reloads,
            config_generation,
            endpoint_healthy,
            health_checks,
            outlier_ejections,
            retries,
            retries_refused,
            breaker_transitions,
            hedges,
            rate_limited,
            cache_requests,
            cache_bytes,
            cache_objects,
            cache_evictions,
            upgrades,
            tunnels_open,
            registry_instances,
            registry_expirations,
            dns_discovery,
        }
    }

    /// Counts one answered request in `requests`; cheap on the hot path (see `request_counter`).
    pub fn count_request(&self, labels: RequestLabelRefs<'_>) {
        request_counter::count(self.id, &self.requests, &self.dash, labels);
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in an encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# encoding error\n");
        }
        out
    }
}

/// Raises a gauge while it lives (open connections, open tunnels): the decrement cannot be
/// forgotten on any way out.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes a label value.
pub fn label(text: &str) -> Label {
    Arc::new(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms() {
        let m = Metrics::new();
        let labels = RequestLabels {
            listener: label("public"),
            route: label("api"),
            cluster: label("web"),
            endpoint: label("127.0.0.1:1"),
            status: 200,
        };
        m.requests.get_or_create(&labels).inc();
        m.requests.get_or_create(&labels).inc();
        m.request_duration
            .get_or_create(&RouteLabels {
                route: label("api"),
                cluster: label("web"),
            })
            .observe(std::time::Duration::from_millis(2));
        m.reloads
            .get_or_create(&ReloadLabels { result: "rejected" })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"gatehouse_http_requests_total{listener="public",route="api",cluster="web",endpoint="127.0.0.1:1",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"gatehouse_config_reloads_total{result="rejected"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn buckets_cover_sub_millisecond_to_a_minute() {
        let buckets: Vec<f64> = exponential_buckets(0.000_1, 1.25, 64).collect();
        assert!(buckets[0] <= 0.000_1);
        assert!(*buckets.last().unwrap() > 60.0);
    }
}
