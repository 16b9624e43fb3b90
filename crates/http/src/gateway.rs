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
use gatehouse_config::{Config, Listener};
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
    /// Serialises reloads (SIGHUP and file watch may race).
    apply_lock: tokio::sync::Mutex<()>,
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
                draining: CancellationToken::new(),
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
        })
    }

    /// Reloads listener certificates whose files changed, until shutdown (see
    /// [`crate::tls_edge`]).
    pub async fn watch_certificates(self: Arc<Self>) {
        let mut tick = tokio::time::interval(crate::tls_edge::CERT_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.draining.cancelled() => return,
                _ = tick.tick() => {}
            }
            // File system calls: kept off the reactor threads.
            let gateway = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || gateway.tls.reload_changed_certificates())
                .await;
        }
    }

    /// Fires hedged requests' deadlines until shutdown (without it running, hedged routes
    /// just wait for their first try).
    pub async fn run_hedge_timers(self: Arc<Self>) {
        Arc::clone(&self.shared.hedges)
            .run(self.shared.draining.clone())
            .await;
    }

    /// Runs outlier detection's periodic pass (latency ejections) over the serving snapshot,
    /// every `every`, until shutdown.
    pub async fn sweep_outliers(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shared.draining.cancelled() => return,
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

        let cache = self.cache_store(config.cache.max_size);
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.faults
            .apply_config(&config, &self.shared.snapshot.load().config);
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
        self.store.retain(&snapshot.endpoint_ids());
        let wanted: HashMap<String, (SocketAddr, u64)> = snapshot
            .config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), (l.listen, l.limits.max_connections)))
            .collect();
        let (checked, unchecked) = snapshot.health_check_targets();
        self.health_checkers.reconcile(
            checked,
            &unchecked,
            &self.shared.metrics,
            self.shared.clock,
        );
        self.shared.snapshot.store(Arc::new(snapshot));
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
        self.shared.draining.cancel();
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
