//! The read API for the service DNS zone and the admin API: every service with its instances
//! and whether each one may take traffic.
//!
//! Health lives in the gateway (active checks, ejections, breakers: `gatehouse_http`), which
//! this crate does not depend on; the gateway's side is reached through [`HealthLookup`].

use crate::registry::Registry;
use crate::state::Instance;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Whether the gateway would send traffic to an instance of a service.
pub trait HealthLookup: Send + Sync {
    /// None when no cluster takes its endpoints from `service` (nothing checks the instance);
    /// false when a cluster that does took `addr` out of rotation.
    fn in_rotation(&self, service: &str, addr: SocketAddr) -> Option<bool>;
}

/// Every instance counts as healthy (for tests and tools without a gateway).
pub struct NoHealth;

impl HealthLookup for NoHealth {
    fn in_rotation(&self, _service: &str, _addr: SocketAddr) -> Option<bool> {
        None
    }
}

/// All services at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub services: Vec<ServiceEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceEntry {
    pub name: String,
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    #[serde(flatten)]
    pub instance: Instance,
    /// Time left on its lease; None: from the config file, never expires.
    pub expires_in_ms: Option<u64>,
    /// What the gateway's clusters say (see [`HealthLookup::in_rotation`]).
    pub in_rotation: Option<bool>,
    /// What DNS should go by: registered and not taken out of rotation.
    pub healthy: bool,
}

/// The registry plus the gateway's health: what the service DNS zone answers from.
#[derive(Clone)]
pub struct ServiceDirectory {
    registry: Arc<Registry>,
    health: Arc<dyn HealthLookup>,
}

impl ServiceDirectory {
    pub fn new(registry: Arc<Registry>, health: Arc<dyn HealthLookup>) -> Self {
        Self { registry, health }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Every service, by name, with its instances (by id).
    pub fn view(&self) -> ServiceView {
        ServiceView {
            services: self
                .registry
                .services()
                .into_iter()
                .map(|(name, instances)| self.entry(name, instances))
                .collect(),
        }
    }

    /// One service; None when it has no instances.
    pub fn service(&self, name: &str) -> Option<ServiceEntry> {
        self.registry
            .services()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(name, instances)| self.entry(name, instances))
    }

    /// Changes when membership changes (health changes are read from [`Self::view`] when
    /// answering; they do not notify).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.registry.subscribe()
    }

    fn entry(&self, name: String, instances: Vec<crate::registry::InstanceState>) -> ServiceEntry {
        let instances = instances
            .into_iter()
            .map(|i| {
                let in_rotation = self.health.in_rotation(&name, i.instance.socket_addr());
                InstanceView {
                    expires_in_ms: i.expires_in.map(|d| d.as_millis() as u64),
                    healthy: in_rotation != Some(false),
                    in_rotation,
                    instance: i.instance,
                }
            })
            .collect();
        ServiceEntry { name, instances }
    }
}
