//! The live registry: [`RegistryState`] behind a lock, with the process clock, a change
//! watch for the clusters that take their endpoints from it, metrics, and the expiry sweep.

use crate::state::{Instance, Registered, Registration, RegistryError, RegistryState};
use gatehouse_config::{Config, EndpointConfig};
use gatehouse_core::MonotonicClock;
use gatehouse_observe::{Metrics, ServiceLabels, label};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often leases are checked: an instance leaves at most this long after its TTL ran out.
pub const EXPIRY_SWEEP: Duration = Duration::from_millis(100);

/// The embedded service registry.
pub struct Registry {
    state: Mutex<Inner>,
    clock: MonotonicClock,
    /// Bumped on every change of membership or instance data (not on heartbeats, which change
    /// nothing a cluster sees).
    changes: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

struct Inner {
    state: RegistryState,
    /// Region names the config defines; registrations must use one of them.
    regions: Vec<String>,
    /// Services that have a gauge series, so one that empties is set to 0 rather than left
    /// at its last count.
    gauged: BTreeSet<String>,
}

/// One instance as the registry holds it now.
#[derive(Debug, Clone)]
pub struct InstanceState {
    pub instance: Instance,
    /// Time left on its lease; None: a static instance (never expires).
    pub expires_in: Option<Duration>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>, clock: MonotonicClock) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Inner {
                state: RegistryState::default(),
                regions: Vec::new(),
                gauged: BTreeSet::new(),
            }),
            clock,
            changes: watch::Sender::new(0),
            metrics,
        })
    }

    /// Takes the config's static instances and region names (at start and on every reload).
    pub fn apply_config(&self, config: &Config) {
        let mut inner = self.state.lock();
        inner.regions = config.regions.iter().map(|r| r.name.clone()).collect();
        if inner.state.set_static(&config.registry.instances) {
            self.changed(&mut inner);
        }
    }

    pub fn register(&self, registration: Registration) -> Result<Registered, RegistryError> {
        let mut inner = self.state.lock();
        let outcome = inner.state.register(registration, self.clock.now_nanos())?;
        self.changed(&mut inner);
        Ok(outcome)
    }

    /// Renews a lease; returns the instance's TTL.
    pub fn heartbeat(&self, service: &str, id: &str) -> Result<Duration, RegistryError> {
        self.state
            .lock()
            .state
            .heartbeat(service, id, self.clock.now_nanos())
    }

    pub fn deregister(&self, service: &str, id: &str) -> Result<Instance, RegistryError> {
        let mut inner = self.state.lock();
        let removed = inner.state.deregister(service, id)?;
        self.changed(&mut inner);
        Ok(removed)
    }

    /// Removes instances whose lease ran out; returns how many.
    pub fn expire(&self) -> usize {
        let mut inner = self.state.lock();
        let gone = inner.state.expire(self.clock.now_nanos());
        for (service, id) in &gone {
            tracing::info!(
                service,
                id,
                "registry instance expired: no heartbeat within its TTL"
            );
            self.metrics
                .registry_expirations
                .get_or_create(&ServiceLabels {
                    service: label(service),
                })
                .inc();
        }
        if !gone.is_empty() {
            self.changed(&mut inner);
        }
        gone.len()
    }

    /// Removes expired instances every [`EXPIRY_SWEEP`] until `stop`.
    pub async fn run_expiry(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => { self.expire(); }
            }
        }
    }

    /// A service's instances as cluster endpoints (see [`RegistryState::endpoints`]).
    pub fn endpoints(&self, service: &str) -> Vec<EndpointConfig> {
        self.state.lock().state.endpoints(service)
    }

    /// Every service with its instances, by name.
    pub fn services(&self) -> Vec<(String, Vec<InstanceState>)> {
        let now = self.clock.now_nanos();
        let inner = self.state.lock();
        inner
            .state
            .services()
            .map(|(name, instances)| {
                let instances = instances
                    .map(|i| InstanceState {
                        expires_in: i
                            .expires_at
                            .map(|at| Duration::from_nanos(at.saturating_sub(now))),
                        instance: i.clone(),
                    })
                    .collect();
                (name.to_owned(), instances)
            })
            .collect()
    }

    pub fn instance(&self, service: &str, id: &str) -> Option<Instance> {
        self.state.lock().state.instance(service, id).cloned()
    }

    /// Region names the config defines.
    pub fn regions(&self) -> Vec<String> {
        self.state.lock().regions.clone()
    }

    /// Changes whenever membership or instance data changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Called with the lock held, so versions and gauges follow the order of changes.
    fn changed(&self, inner: &mut Inner) {
        self.changes.send_modify(|version| *version += 1);
        let live: BTreeSet<String> = inner
            .state
            .services()
            .map(|(name, _)| name.to_owned())
            .collect();
        for service in live.union(&inner.gauged) {
            self.metrics
                .registry_instances
                .get_or_create(&ServiceLabels {
                    service: label(service),
                })
                .set(inner.state.count(service) as i64);
        }
        inner.gauged = live;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Registration;

    fn registration(id: &str, ttl: Duration) -> Registration {
        Registration {
            service: "web".into(),
            id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 80,
            weight: 1,
            tags: vec![],
            region: None,
            ttl,
        }
    }

    #[test]
    fn changes_notify_watchers_and_expiries_are_counted() {
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(Arc::clone(&metrics), MonotonicClock::new());
        let mut changes = registry.subscribe();
        changes.borrow_and_update();
        registry
            .register(registration("long", Duration::from_secs(60)))
            .unwrap();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        // A heartbeat changes nothing a cluster sees: no notification.
        registry.heartbeat("web", "long").unwrap();
        assert!(!changes.has_changed().unwrap());
        // A lease of zero has run out by the next sweep.
        registry
            .register(registration("short", Duration::ZERO))
            .unwrap();
        changes.borrow_and_update();
        assert_eq!(registry.expire(), 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(registry.expire(), 0);
        let text = metrics.encode();
        assert!(
            text.contains(r#"gatehouse_registry_expirations_total{service="web"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"gatehouse_registry_instances{service="web"} 1"#),
            "{text}"
        );
        // The last instance leaves: the gauge drops to 0 instead of keeping its last value.
        registry.deregister("web", "long").unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"gatehouse_registry_instances{service="web"} 0"#)
        );
        assert!(registry.services().is_empty());
    }
}
