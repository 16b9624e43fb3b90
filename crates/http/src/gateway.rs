//! The gateway: owns the current snapshot and the listeners, and reconciles them on reload.
//!
//! [`Gateway::apply`] is the one way a configuration takes effect, at start and on every reload:
//! bind the listeners the new config adds (failing here refuses the whole config, and the old one
//! keeps serving), build the snapshot, swap it in atomically, then start the new accept loops and
//! stop the ones the config removed. Open connections are never cut by a reload; connections of
//! a removed listener finish on their own.

use crate::faults::Faults;
use crate::health::HealthCheckers;
use crate::protect::rate_limit::RateLimiterStore;
use crate::server::{ConnectionLimit, Shared, accept_loop};
use crate::snapshot::{EndpointStore, Snapshot};
use arc_swap::ArcSwap;
use gatehouse_config::{Config, Discovery, EndpointConfig, Listener};
use gatehouse_core::MonotonicClock;
use gatehouse_observe::Metrics;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A config could not be applied; the previous one is still serving.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("listener {name:?} cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls_edge::TlsSetupError),
}

/// A running listener.
struct ListenerHandle {
    /// The address as configured (port 0 stays 0), to tell whether a reload changed it.
    configured: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
    connection_limit: Arc<ConnectionLimit>,
    /// A duplicate of the listening socket, so a reload can hand it to a renamed listener.
    socket: std::net::TcpListener,
}

/// The L7 gateway: listeners plus the swappable snapshot they serve from.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<String, ListenerHandle>>,
    store: EndpointStore,
    /// Route rate limiters, kept across reloads while a route's limit is unchanged.
    limiters: RateLimiterStore,
    faults: Faults,
    /// The HTTP cache's store, kept across reloads.
    cache: Mutex<Arc<gatehouse_cache::HttpCache>>,
    health_checkers: HealthCheckers,
    tls: crate::tls_edge::TlsRuntimes,
    generation: AtomicU64,
    /// Serialises reloads (SIGHUP and file watch may race) and discovery updates.
    apply_lock: tokio::sync::Mutex<()>,
    /// What discovery found, by cluster name, with the source it came from: a cluster whose
    /// source a reload changed must not serve the old source's endpoints.
    discovered: Mutex<HashMap<String, (Discovery, Vec<EndpointConfig>)>>,
    /// The TLS prepared for the serving config, reused when discovery rebuilds the snapshot.
    prepared_tls: Mutex<Arc<crate::tls_edge::PreparedTls>>,
}

impl Gateway {
    /// A gateway serving nothing yet; call [`Gateway::apply`] with the first config.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        let empty = Config {
            server: gatehouse_config::Server {
                drain_timeout: Duration::from_secs(30),
                deadline_header: None,
            },
            admin: None,
            listeners: vec![],
            routes: vec![],
            clusters: vec![],
            cache: gatehouse_config::CacheSettings::default(),
            regions: vec![],
            registry: gatehouse_config::RegistrySettings::default(),
            dns: None,
        };
        let store = EndpointStore::default();
        let faults = Faults::default();
        let limiters = RateLimiterStore::default();
        let snapshot = Snapshot::build(
            empty,
            0,
            &store,
            &limiters,
            &metrics,
            &faults,
            &crate::tls_edge::PreparedTls::default(),
        );
        Arc::new(Self {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(snapshot),
                metrics,
                clock: MonotonicClock::new(),
                draining: crate::drain::Drain::default(),
                connections: TaskTracker::new(),
                // Bounded by entries and bytes; replays for 24 h (see docs/resilience.md).
                idempotency: Arc::new(gatehouse_resilience::idempotency::InMemoryStore::new(
                    gatehouse_resilience::idempotency::StoreLimits::default(),
                )),
                hedges: Arc::default(),
            }),
            listeners: Mutex::new(HashMap::new()),
            store,
            limiters,
            faults,
            cache: Mutex::new(Arc::new(gatehouse_cache::HttpCache::new(
                gatehouse_config::CacheSettings::default().max_size,
            ))),
            health_checkers: HealthCheckers::default(),
            tls: crate::tls_edge::TlsRuntimes::default(),
            generation: AtomicU64::new(0),
            apply_lock: tokio::sync::Mutex::new(()),
            discovered: Mutex::new(HashMap::new()),
            prepared_tls: Mutex::new(Arc::default()),
        })
    }

    /// Reloads listener certificates whose files changed, until shutdown (see
    /// [`crate::tls_edge`]).
    pub async fn watch_certificates(self: Arc<Self>) {
        let mut tick = tokio::time::interval(crate::tls_edge::CERT_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.draining.started() => return,
                _ = tick.tick() => {}
            }
            // Looking is a few stats; loading (reads, parsing, key checks) is kept off the
            // reactor threads, and only then is a blocking-pool thread started. A process
            // that never starts a second thread keeps glibc's single-thread fast path, in
            // which its socket calls skip the cancellation-point bookkeeping (measured at
            // about 0.13 µs per proxied request).
            if !self.tls.certificates_changed() {
                continue;
            }
            let gateway = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || gateway.tls.reload_changed_certificates())
                .await;
        }
    }

    /// Fires hedged requests' deadlines until shutdown (without it running, hedged routes
    /// just wait for their first try).
    pub async fn run_hedge_timers(self: Arc<Self>) {
        Arc::clone(&self.shared.hedges)
            .run(self.shared.draining.token().clone())
            .await;
    }

    /// Runs outlier detection's periodic pass (latency ejections) over the serving snapshot,
    /// every `every`, until shutdown.
    pub async fn sweep_outliers(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.draining.started() => return,
                _ = tick.tick() => {}
            }
            let snapshot = self.snapshot();
            for cluster in &snapshot.clusters {
                cluster.resilience.sweep(
                    &cluster.endpoints,
                    &self.shared.clock,
                    &self.shared.metrics,
                );
            }
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The clock the data path reads (for turning stored instants into durations).
    pub fn clock(&self) -> MonotonicClock {
        self.shared.clock
    }

    /// Runtime fault injection (the admin API sets it).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The HTTP cache shared by the routes that cache (for purges and metrics).
    pub fn cache(&self) -> Arc<gatehouse_cache::HttpCache> {
        Arc::clone(&self.cache.lock())
    }

    /// The store for a config's `[cache] max_size`: the current one, kept with its entries
    /// across reloads, unless the size changed (moka's bound is fixed when it is built).
    fn cache_store(&self, max_size: u64) -> Arc<gatehouse_cache::HttpCache> {
        let mut current = self.cache.lock();
        if current.max_size() != max_size {
            *current = Arc::new(gatehouse_cache::HttpCache::new(max_size));
        }
        Arc::clone(&current)
    }

    /// Bound addresses by listener name (port 0 resolved to the real port).
    pub fn bound_addresses(&self) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<_> = self
            .listeners
            .lock()
            .iter()
            .map(|(name, h)| (name.clone(), h.bound))
            .collect();
        out.sort();
        out
    }

    /// Makes `config` the serving configuration. Returns the new generation number.
    pub async fn apply(&self, config: Config) -> Result<u64, ApplyError> {
        let _serialised = self.apply_lock.lock().await;

        // Certificates first, then binding: a missing certificate or a port conflict must
        // refuse the config before anything changes.
        let tls = self.tls.prepare(&config)?;
        let mut fresh = Vec::new();
        {
            let running = self.listeners.lock();
            for listener in &config.listeners {
                let unchanged = running
                    .get(&listener.name)
                    .is_some_and(|h| h.configured == listener.listen);
                if !unchanged {
                    fresh.push(listener.clone());
                }
            }
        }
        let mut bound = Vec::new();
        for listener in fresh {
            // A listener renamed (or an address handed from one listener to another) keeps the
            // open socket: binding the address again would fail while the old one still holds it.
            let inherited = (listener.listen.port() != 0)
                .then(|| {
                    let running = self.listeners.lock();
                    running
                        .iter()
                        .find(|(name, h)| {
                            **name != listener.name && h.configured == listener.listen
                        })
                        .and_then(|(_, h)| h.socket.try_clone().ok())
                })
                .flatten();
            let socket = match inherited {
                Some(socket) => tokio::net::TcpListener::from_std(socket).map_err(|source| {
                    ApplyError::Bind {
                        name: listener.name.clone(),
                        addr: listener.listen,
                        source,
                    }
                })?,
                None => self.bind(&listener)?,
            };
            bound.push((listener, socket));
        }

        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.faults
            .apply_config(&config, &self.shared.snapshot.load().config);
        // Forget what sources this config no longer uses.
        self.discovered.lock().retain(|name, (source, _)| {
            config
                .cluster(name)
                .is_some_and(|c| c.discovery.as_ref() == Some(source))
        });
        let snapshot = self.install(self.with_discovered(config), generation, Arc::new(tls));
        let wanted: HashMap<String, (SocketAddr, u64)> = snapshot
            .config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), (l.listen, l.limits.max_connections)))
            .collect();
        self.shared.metrics.config_generation.set(generation as i64);

        let mut running = self.listeners.lock();
        running.retain(|name, handle| match wanted.get(name) {
            Some((addr, max_connections)) if *addr == handle.configured => {
                handle.connection_limit.resize(*max_connections);
                true
            }
            _ => {
                tracing::info!(listener = %name, addr = %handle.bound, "listener closed");
                handle.stop.cancel();
                false
            }
        });
        for (listener, socket) in bound {
            let stop = CancellationToken::new();
            let addr = socket.local_addr().unwrap_or(listener.listen);
            let (socket, duplicate) = match duplicate(socket) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::error!(listener = %listener.name, %addr, error = %err, "cannot start listener");
                    continue;
                }
            };
            tracing::info!(listener = %listener.name, %addr, "listening");
            let connection_limit = ConnectionLimit::new(listener.limits.max_connections);
            tokio::spawn(accept_loop(
                socket,
                listener.name.clone(),
                Arc::clone(&self.shared),
                stop.clone(),
                Arc::clone(&connection_limit),
            ));
            running.insert(
                listener.name.clone(),
                ListenerHandle {
                    configured: listener.listen,
                    bound: addr,
                    stop,
                    connection_limit,
                    socket: duplicate,
                },
            );
        }
        Ok(generation)
    }

    /// Builds the snapshot for `config`, swaps it in and reconciles what lives beside it
    /// (endpoint store, health checkers). Called with `apply_lock` held.
    fn install(
        &self,
        config: Config,
        generation: u64,
        tls: Arc<crate::tls_edge::PreparedTls>,
    ) -> Arc<Snapshot> {
        let cache = self.cache_store(config.cache.max_size);
        let snapshot = Snapshot::build(
            config,
            generation,
            &self.store,
            &self.limiters,
            &self.shared.metrics,
            &self.faults,
            &tls,
        )
        .with_cache(&cache, &self.shared.metrics);
        self.tls.commit(&tls);
        *self.prepared_tls.lock() = tls;
        self.store.retain(&snapshot.endpoint_ids());
        let (checked, unchecked) = snapshot.health_check_targets();
        self.health_checkers.reconcile(
            checked,
            &unchecked,
            &self.shared.metrics,
            self.shared.clock,
        );
        let snapshot = Arc::new(snapshot);
        self.shared.snapshot.store(Arc::clone(&snapshot));
        snapshot
    }

    /// `config` with each discovery cluster's endpoints filled in from what its source found.
    fn with_discovered(&self, mut config: Config) -> Config {
        let discovered = self.discovered.lock();
        for cluster in &mut config.clusters {
            if let Some(source) = &cluster.discovery {
                cluster.endpoints = match discovered.get(&cluster.name) {
                    Some((from, endpoints)) if from == source => endpoints.clone(),
                    _ => Vec::new(),
                };
            }
        }
        config
    }

    /// Discovery found `endpoints` for `cluster` from `source`. When the serving config's
    /// cluster uses that source and its endpoint set changed, the snapshot is rebuilt from the
    /// same config: no listener is touched, and endpoints that stay keep their identity
    /// (cluster + address), so their pools, statistics, health and breakers carry over.
    /// Returns whether the serving snapshot changed.
    pub async fn set_discovered_endpoints(
        &self,
        cluster: &str,
        source: &Discovery,
        mut endpoints: Vec<EndpointConfig>,
    ) -> bool {
        let _serialised = self.apply_lock.lock().await;
        // One order for one set, so an unchanged set is recognised.
        endpoints.sort_by_key(|e| e.address);
        endpoints.dedup_by_key(|e| e.address);
        self.discovered
            .lock()
            .insert(cluster.to_owned(), (source.clone(), endpoints));
        let current = self.shared.snapshot.load_full();
        let uses_source = current
            .config
            .cluster(cluster)
            .is_some_and(|c| c.discovery.as_ref() == Some(source));
        if !uses_source {
            return false;
        }
        let config = self.with_discovered((*current.config).clone());
        if config == *current.config {
            return false;
        }
        let tls = Arc::clone(&self.prepared_tls.lock());
        self.install(config, current.generation, tls);
        true
    }

    /// Whether the endpoint at `addr` of the clusters fed by `source` is in rotation: None when
    /// no serving cluster has it, false when any of them took it out.
    pub fn discovered_endpoint_in_rotation(
        &self,
        source: &Discovery,
        addr: SocketAddr,
    ) -> Option<bool> {
        let snapshot = self.snapshot();
        let now = self.shared.clock.now_nanos();
        let mut verdict = None;
        for (config, runtime) in snapshot.config.clusters.iter().zip(&snapshot.clusters) {
            if config.discovery.as_ref() != Some(source) {
                continue;
            }
            if let Some(endpoint) = runtime.endpoints.iter().find(|e| e.id.addr == addr) {
                verdict = Some(verdict.unwrap_or(true) && endpoint.in_rotation(now));
            }
        }
        verdict
    }

    fn bind(&self, listener: &Listener) -> Result<tokio::net::TcpListener, ApplyError> {
        gatehouse_net::bind_listener(listener.listen).map_err(|source| ApplyError::Bind {
            name: listener.name.clone(),
            addr: listener.listen,
            source,
        })
    }

    /// Stops accepting, lets open connections finish their requests for up to `drain_timeout`,
    /// then returns. Returns whether every connection finished in time.
    pub async fn shutdown(&self, drain_timeout: Duration) -> bool {
        // Held to the end: a reload racing the drain must not start new accept loops.
        let _no_more_reloads = self.apply_lock.lock().await;
        for (_, handle) in self.listeners.lock().drain() {
            handle.stop.cancel();
        }
        self.health_checkers.stop_all();
        self.shared.draining.start();
        self.shared.connections.close();
        tokio::time::timeout(drain_timeout, self.shared.connections.wait())
            .await
            .is_ok()
    }
}

/// Splits a listening socket into the one the accept loop uses and a duplicate kept aside.
fn duplicate(
    socket: tokio::net::TcpListener,
) -> std::io::Result<(tokio::net::TcpListener, std::net::TcpListener)> {
    let socket = socket.into_std()?;
    let duplicate = socket.try_clone()?;
    Ok((tokio::net::TcpListener::from_std(socket)?, duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(discovery: &str) -> Config {
        gatehouse_config::parse(
            &format!(
                "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\ndiscovery = {discovery}\n"
            ),
            "test",
        )
        .unwrap()
    }

    fn endpoints(ports: &[u16]) -> Vec<EndpointConfig> {
        ports
            .iter()
            .map(|p| EndpointConfig {
                address: SocketAddr::from(([127, 0, 0, 1], *p)),
                weight: 1,
            })
            .collect()
    }

    fn ports(gateway: &Gateway) -> Vec<u16> {
        gateway.snapshot().clusters[0]
            .endpoints
            .iter()
            .map(|e| e.id.addr.port())
            .collect()
    }

    #[tokio::test]
    async fn discovered_endpoints_keep_their_identity_across_changes_and_reloads() {
        let gateway = Gateway::new(Arc::new(gatehouse_observe::Metrics::new()));
        let registry = Discovery::Registry {
            service: "web".into(),
        };
        let generation = gateway
            .apply(config("{ registry = \"web\" }"))
            .await
            .unwrap();
        assert!(ports(&gateway).is_empty(), "nothing discovered yet");

        assert!(
            gateway
                .set_discovered_endpoints("c", &registry, endpoints(&[2, 1]))
                .await
        );
        assert_eq!(ports(&gateway), [1, 2]);
        let stats = Arc::clone(&gateway.snapshot().clusters[0].endpoints[0].stats);
        // The same set again changes nothing; a discovery update is not a config generation.
        assert!(
            !gateway
                .set_discovered_endpoints("c", &registry, endpoints(&[1, 2]))
                .await
        );
        assert_eq!(gateway.snapshot().generation, generation);

        // 2 leaves, 3 joins: 1 keeps its statistics (and with them pool and health).
        assert!(
            gateway
                .set_discovered_endpoints("c", &registry, endpoints(&[1, 3]))
                .await
        );
        assert_eq!(ports(&gateway), [1, 3]);
        let kept = &gateway.snapshot().clusters[0].endpoints[0];
        assert!(Arc::ptr_eq(&stats, &kept.stats));
        assert_eq!(
            gateway.discovered_endpoint_in_rotation(&registry, kept.id.addr),
            Some(true)
        );
        assert_eq!(
            gateway.discovered_endpoint_in_rotation(&registry, endpoints(&[2])[0].address),
            None
        );

        // A reload of the same config keeps the discovered set at once.
        gateway
            .apply(config("{ registry = \"web\" }"))
            .await
            .unwrap();
        assert_eq!(ports(&gateway), [1, 3]);
        assert!(Arc::ptr_eq(
            &stats,
            &gateway.snapshot().clusters[0].endpoints[0].stats
        ));

        // A reload that changes the source starts empty, and the old source's late updates
        // are not applied to it.
        gateway
            .apply(config("{ registry = \"api\" }"))
            .await
            .unwrap();
        assert!(ports(&gateway).is_empty());
        assert!(
            !gateway
                .set_discovered_endpoints("c", &registry, endpoints(&[4]))
                .await
        );
        assert!(ports(&gateway).is_empty());
    }
}
