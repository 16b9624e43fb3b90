//! The runtime snapshot: everything a request needs, built once per configuration.
//!
//! A [`Snapshot`] is immutable. A reload builds a new one and swaps it in atomically; a request
//! loads one `Arc<Snapshot>` at its start and uses it to the end, so it never sees half of two
//! configurations. Per-endpoint state that must outlive a snapshot (connection pools, in-flight
//! counts, latency estimates, health and ejections) lives in the [`EndpointStore`] and is
//! picked up by identity.

use crate::faults::{FaultSlot, Faults, Target};
use crate::health::{CheckTarget, EndpointHealth};
use crate::pool::{EndpointPool, PoolSettings};
use crate::protect::rate_limit::RateLimiterStore;
use crate::protect::{ListenerProtection, RouteProtection};
use crate::resilience::ClusterResilience;
use crate::router::Router;
use gatehouse_balance::{Balancer, Endpoint, EndpointStats, Policy, hash_key};
use gatehouse_config::{
    BalancePolicy, Cluster, Config, HashOn, Limits, Protocols, UpstreamProtocol,
};
use gatehouse_core::EndpointId;
use gatehouse_observe::{EndpointLabels, Label, Metrics, RouteLabels, label};
use gatehouse_resilience::{BreakerConfig, SharedBreaker};
use http::HeaderValue;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// One configuration, ready to serve.
pub struct Snapshot {
    pub generation: u64,
    /// The header carrying a client's time budget (None: propagation off).
    pub deadline_header: Option<http::HeaderName>,
    pub config: Arc<Config>,
    pub routes: Vec<RouteRuntime>,
    pub clusters: Vec<Arc<ClusterRuntime>>,
    /// By name, sorted: every request looks its listener up, and a binary search over a handful
    /// of names costs a comparison or two where a `HashMap` hashed the name with SipHash.
    listeners: Box<[(String, ListenerRuntime)]>,
    empty_router: Router,
}

/// Per-listener settings that apply to new connections.
#[derive(Debug, Clone)]
pub struct ListenerRuntime {
    pub label: Label,
    pub protocols: Protocols,
    pub limits: Limits,
    pub protection: Arc<ListenerProtection>,
    /// None: cleartext.
    pub tls: Option<Arc<crate::tls_edge::ListenerTlsRuntime>>,
    /// Every request on this (cleartext) listener gets a 308 to https on this port.
    pub https_redirect_port: Option<u16>,
    /// Shared: a connection's copy of these settings must not copy the table.
    pub router: Arc<Router>,
}

pub struct RouteRuntime {
    pub name: Label,
    /// Carries the verified client certificate's subject upstream (mutual TLS).
    pub client_cert_header: Option<http::HeaderName>,
    /// 403 for requests on connections without a verified client certificate.
    pub require_client_cert: bool,
    pub cluster: Arc<ClusterRuntime>,
    pub host_rewrite: Option<HeaderValue>,
    /// Time allowed for the upstream's response head.
    pub timeout: Duration,
    /// Longest silence in a streamed response body or an upgraded connection.
    pub read_timeout: Duration,
    pub labels: RouteLabels,
    /// This route's latency histogram, resolved once per snapshot (not per request).
    pub duration: gatehouse_observe::LatencyHistogram,
    /// Faults injected into this route (set through the admin API).
    pub fault: FaultSlot,
    /// Hedged requests, when the route asks for them.
    pub hedge: Option<crate::resilience::HedgeRuntime>,
    /// ACL, rate limit and security headers.
    pub protection: RouteProtection,
    /// The shared HTTP cache, when the route opts in (set by [`Snapshot::with_cache`]).
    pub cache: Option<crate::cache_layer::RouteCache>,
    /// Response compression, when the route asks for it.
    pub compression: Option<gatehouse_config::Compression>,
    /// The fields this hop adds to the requests it forwards.
    pub forward_headers: gatehouse_config::ForwardHeaders,
}

pub struct ClusterRuntime {
    pub name: Label,
    pub balancer: Balancer,
    pub endpoints: Vec<EndpointRuntime>,
    pub hash_on: Option<HashOn>,
    pub protocol: UpstreamProtocol,
    pub resilience: ClusterResilience,
    /// Faults injected into this cluster (set through the admin API).
    pub fault: FaultSlot,
}

pub struct EndpointRuntime {
    pub id: EndpointId,
    pub label: Label,
    pub pool: Arc<EndpointPool>,
    pub stats: Arc<EndpointStats>,
    pub health: Arc<EndpointHealth>,
    /// This endpoint's circuit breaker, when its cluster has one.
    pub breaker: Option<Arc<gatehouse_resilience::SharedBreaker>>,
    pub labels: EndpointLabels,
    /// Response head latency of this endpoint (`gatehouse_upstream_response_duration_seconds`).
    pub duration: gatehouse_observe::LatencyHistogram,
}

impl EndpointRuntime {
    /// Whether the balancer may pick this endpoint at `now` (clock nanoseconds): its health
    /// checks pass, it is not ejected, and its breaker is not open.
    pub fn in_rotation(&self, now: u64) -> bool {
        self.health.in_rotation(|| now)
            && !self
                .breaker
                .as_ref()
                .is_some_and(|b| b.state() == gatehouse_resilience::breaker::State::Open)
    }
}

impl Snapshot {
    /// Builds a snapshot, reusing pools and statistics of endpoints that already exist, and
    /// the rate limiters of routes whose limit did not change.
    /// `tls` holds what [`crate::tls_edge::TlsRuntimes::prepare`] loaded for this config.
    pub fn build(
        config: Config,
        generation: u64,
        store: &EndpointStore,
        limiters: &RateLimiterStore,
        metrics: &Arc<Metrics>,
        faults: &Faults,
        tls: &crate::tls_edge::PreparedTls,
    ) -> Self {
        let clusters: Vec<Arc<ClusterRuntime>> = config
            .clusters
            .iter()
            .map(|c| {
                let upstream_tls = tls.clusters.get(&c.name).cloned();
                Arc::new(ClusterRuntime::build(
                    c,
                    store,
                    metrics,
                    faults,
                    upstream_tls,
                ))
            })
            .collect();
        let by_name: HashMap<&str, &Arc<ClusterRuntime>> =
            clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                // Indices must match config.routes (the router returns them). Validation
                // guarantees the cluster exists; should it not, the route answers 503.
                let cluster = by_name.get(r.cluster.as_str()).map_or_else(
                    || Arc::new(ClusterRuntime::empty(&r.cluster, faults)),
                    |c| Arc::clone(c),
                );
                let timeout = r.timeout.unwrap_or_else(|| {
                    config
                        .cluster(&r.cluster)
                        .map_or(Duration::from_secs(60), |c| c.timeout)
                });
                let labels = RouteLabels {
                    route: label(&r.name),
                    cluster: Arc::clone(&cluster.name),
                };
                RouteRuntime {
                    protection: RouteProtection::build(&r.name, &r.protection, limiters, metrics),
                    client_cert_header: r
                        .client_cert_header
                        .as_deref()
                        .and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()),
                    require_client_cert: r.require_client_cert,
                    hedge: r.hedge.clone().map(crate::resilience::HedgeRuntime::new),
                    fault: faults.slot(Target::Route, &r.name),
                    name: label(&r.name),
                    duration: metrics.request_duration.get_or_create(&labels).clone(),
                    labels,
                    cluster,
                    host_rewrite: r
                        .host_rewrite
                        .as_deref()
                        .and_then(|h| HeaderValue::from_str(h).ok()),
                    timeout,
                    cache: None,
                    read_timeout: r.read_timeout,
                    compression: r.compression.clone(),
                    forward_headers: r.forward_headers,
                }
            })
            .collect();
        limiters.retain(config.routes.iter().filter_map(|r| {
            r.protection
                .rate_limit
                .as_ref()
                .map(|l| (r.name.as_str(), l))
        }));
        let mut listeners: Vec<(String, ListenerRuntime)> = config
            .listeners
            .iter()
            .map(|l| {
                (
                    l.name.clone(),
                    ListenerRuntime {
                        label: label(&l.name),
                        protocols: l.protocols,
                        limits: l.limits,
                        protection: Arc::new(ListenerProtection::build(&l.protection)),
                        tls: tls.listeners.get(&l.name).cloned(),
                        https_redirect_port: l.https_redirect_port,
                        router: Arc::new(Router::new(&config.routes, &l.name)),
                    },
                )
            })
            .collect();
        listeners.sort_by(|(a, _), (b, _)| a.cmp(b));
        Self {
            generation,
            deadline_header: config
                .server
                .deadline_header
                .as_deref()
                .and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()),
            config: Arc::new(config),
            routes,
            clusters,
            listeners: listeners.into_boxed_slice(),
            empty_router: Router::default(),
        }
    }

    /// Gives the routes that opt into caching their handle on the gateway's shared store.
    pub fn with_cache(
        mut self,
        store: &Arc<gatehouse_cache::HttpCache>,
        metrics: &Metrics,
    ) -> Self {
        for (route, config) in self.routes.iter_mut().zip(&self.config.routes) {
            route.cache = config.cache.map(|settings| {
                crate::cache_layer::RouteCache::new(
                    Arc::clone(store),
                    settings,
                    &route.labels,
                    metrics,
                )
            });
        }
        self
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerRuntime> {
        let found = self
            .listeners
            .binary_search_by(|(listener, _)| listener.as_str().cmp(name));
        found.ok().map(|index| &self.listeners[index].1)
    }

    /// A listener and its router, in one lookup; a listener removed by a reload routes
    /// nothing.
    pub fn listener_and_router(&self, name: &str) -> (Option<&ListenerRuntime>, &Router) {
        let listener = self.listener(name);
        (listener, listener.map_or(&self.empty_router, |l| &l.router))
    }

    /// The endpoints whose clusters ask for active health checks, and the health of the rest.
    pub fn health_check_targets(&self) -> (Vec<CheckTarget>, Vec<Arc<EndpointHealth>>) {
        let mut checked = Vec::new();
        let mut unchecked = Vec::new();
        for cluster in &self.config.clusters {
            let Some(runtime) = self.clusters.iter().find(|c| *c.name == cluster.name) else {
                continue;
            };
            for endpoint in &runtime.endpoints {
                match &cluster.health_check {
                    Some(check) => checked.push(CheckTarget {
                        id: endpoint.id.clone(),
                        health: Arc::clone(&endpoint.health),
                        config: check.clone(),
                        tls: endpoint.pool.settings().tls.clone(),
                    }),
                    None => unchecked.push(Arc::clone(&endpoint.health)),
                }
            }
        }
        (checked, unchecked)
    }

    /// Every endpoint identity in this snapshot (for pruning the store).
    pub fn endpoint_ids(&self) -> HashSet<EndpointId> {
        self.clusters
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| e.id.clone()))
            .collect()
    }
}

impl ClusterRuntime {
    /// A cluster with no endpoints: every request to it gets 503.
    fn empty(name: &str, faults: &Faults) -> Self {
        Self {
            fault: faults.slot(Target::Cluster, name),
            name: label(name),
            balancer: Balancer::new(Policy::RoundRobin, Vec::new()),
            endpoints: Vec::new(),
            hash_on: None,
            protocol: UpstreamProtocol::Http1,
            resilience: ClusterResilience::none(),
        }
    }

    fn build(
        cluster: &Cluster,
        store: &EndpointStore,
        metrics: &Arc<Metrics>,
        faults: &Faults,
        tls: Option<crate::tls_edge::UpstreamTls>,
    ) -> Self {
        let name = label(&cluster.name);
        let settings = PoolSettings {
            protocol: cluster.protocol,
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.idle_timeout,
            max_idle: cluster.max_idle_per_endpoint as usize,
            tls,
        };
        let breaker = cluster
            .breaker
            .as_ref()
            .map(crate::resilience::breaker_config);
        let endpoints: Vec<EndpointRuntime> = cluster
            .endpoints
            .iter()
            .map(|e| {
                let id = EndpointId::new(cluster.name.as_str(), e.address);
                let (pool, stats, health, breaker) =
                    store.get_or_create(&id, &settings, breaker.as_ref(), metrics);
                let endpoint_label = label(&e.address.to_string());
                let labels = EndpointLabels {
                    cluster: Arc::clone(&name),
                    endpoint: Arc::clone(&endpoint_label),
                };
                EndpointRuntime {
                    duration: metrics.upstream_duration.get_or_create(&labels).clone(),
                    labels,
                    id,
                    label: endpoint_label,
                    pool,
                    stats,
                    health,
                    breaker,
                }
            })
            .collect();
        let balancer_endpoints = cluster
            .endpoints
            .iter()
            .zip(&endpoints)
            .map(|(config, runtime)| Endpoint {
                key: hash_key(config.address.to_string().as_bytes()),
                weight: config.weight,
                stats: Arc::clone(&runtime.stats),
            })
            .collect();
        Self {
            fault: faults.slot(Target::Cluster, &cluster.name),
            balancer: Balancer::new(policy(&cluster.balance), balancer_endpoints),
            name,
            endpoints,
            hash_on: cluster.hash_on.clone(),
            protocol: cluster.protocol,
            resilience: ClusterResilience::new(cluster),
        }
    }
}

fn policy(config: &BalancePolicy) -> Policy {
    match config {
        BalancePolicy::RoundRobin => Policy::RoundRobin,
        BalancePolicy::WeightedRoundRobin => Policy::WeightedRoundRobin,
        BalancePolicy::LeastRequest => Policy::LeastRequest,
        BalancePolicy::P2c => Policy::PowerOfTwoChoices,
        BalancePolicy::RingHash { vnodes } => Policy::RingHash { vnodes: *vnodes },
        BalancePolicy::Maglev { table_size } => Policy::Maglev {
            table_size: *table_size,
        },
        BalancePolicy::Random => Policy::Random,
    }
}

type EndpointParts = (
    Arc<EndpointPool>,
    Arc<EndpointStats>,
    Arc<EndpointHealth>,
    Option<Arc<SharedBreaker>>,
);

/// Pools, statistics, health and breakers by endpoint identity, kept across snapshots.
#[derive(Default)]
pub struct EndpointStore {
    entries: Mutex<HashMap<EndpointId, StoreEntry>>,
}

struct StoreEntry {
    pool: Arc<EndpointPool>,
    stats: Arc<EndpointStats>,
    health: Arc<EndpointHealth>,
    breaker: Option<(BreakerConfig, Arc<SharedBreaker>)>,
}

impl EndpointStore {
    /// Returns the endpoint's pool and stats; a pool whose settings changed is replaced (its
    /// connections close as their requests finish), the stats are kept.
    /// Returns the endpoint's pool, stats, health and breaker; a pool whose settings changed is
    /// replaced (its connections close as their requests finish), and so is a breaker whose
    /// settings changed; the rest is kept.
    fn get_or_create(
        &self,
        id: &EndpointId,
        settings: &PoolSettings,
        breaker: Option<&BreakerConfig>,
        metrics: &Arc<Metrics>,
    ) -> EndpointParts {
        let mut entries = self.entries.lock();
        let entry = entries.entry(id.clone()).or_insert_with(|| StoreEntry {
            pool: new_pool(id, settings, metrics),
            stats: Arc::new(EndpointStats::new()),
            health: Arc::new(EndpointHealth::default()),
            breaker: None,
        });
        if entry.pool.settings() != settings {
            entry.pool = new_pool(id, settings, metrics);
        }
        match breaker {
            None => entry.breaker = None,
            Some(config) if entry.breaker.as_ref().is_some_and(|(c, _)| c == config) => {}
            Some(config) => {
                entry.breaker =
                    Some((config.clone(), Arc::new(SharedBreaker::new(config.clone()))));
            }
        }
        (
            Arc::clone(&entry.pool),
            Arc::clone(&entry.stats),
            Arc::clone(&entry.health),
            entry.breaker.as_ref().map(|(_, b)| Arc::clone(b)),
        )
    }

    /// Forgets endpoints that are no longer configured.
    pub fn retain(&self, live: &HashSet<EndpointId>) {
        self.entries.lock().retain(|id, _| live.contains(id));
    }
}

fn new_pool(id: &EndpointId, settings: &PoolSettings, metrics: &Arc<Metrics>) -> Arc<EndpointPool> {
    let counter = metrics
        .upstream_connects
        .get_or_create(&EndpointLabels {
            cluster: label(&id.cluster),
            endpoint: label(&id.addr.to_string()),
        })
        .clone();
    let addr: SocketAddr = id.addr;
    EndpointPool::new(
        addr,
        settings.clone(),
        Box::new(move || {
            counter.inc();
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_found_by_name_whatever_their_order() {
        let names = ["web", "api", "zeta", "admin-ish", "b"];
        let toml: String = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "[[listeners]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{}\"\n",
                    20_000 + i
                )
            })
            .collect();
        let config = gatehouse_config::parse(&toml, "test.toml").expect("valid config");
        let snapshot = Snapshot::build(
            config,
            1,
            &EndpointStore::default(),
            &RateLimiterStore::default(),
            &Arc::new(Metrics::default()),
            &Faults::default(),
            &crate::tls_edge::PreparedTls::default(),
        );
        for name in names {
            let found = snapshot.listener(name).expect(name);
            assert_eq!(&*found.label, name);
            assert!(snapshot.listener_and_router(name).0.is_some());
        }
        for missing in ["", "c", "webs", "zz"] {
            assert!(snapshot.listener(missing).is_none(), "{missing}");
        }
    }
}
