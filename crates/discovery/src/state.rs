//! The registry's contents: services -> instances, with expiry. Pure: every method that needs
//! the time takes `now` (clock nanoseconds), so expiry is tested without sleeping.

use gatehouse_config::{EndpointConfig, StaticInstance};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What a client asks the registry to hold (validated: see [`crate::registration`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub tags: Vec<String>,
    pub region: Option<String>,
    /// The instance expires this long after its last registration or heartbeat.
    pub ttl: Duration,
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub tags: Vec<String>,
    pub region: Option<String>,
    pub origin: Origin,
    /// None for static instances, which never expire.
    #[serde(skip)]
    pub ttl: Option<Duration>,
    /// Clock nanoseconds after which the instance is gone (None: never).
    #[serde(skip)]
    pub expires_at: Option<u64>,
}

impl Instance {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// Where an instance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `[[registry.instances]]` in the config file.
    Config,
    /// The admin API.
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("service {service:?} has no instance {id:?}")]
    NotFound { service: String, id: String },
    #[error(
        "instance {id:?} of service {service:?} comes from the config file ([[registry.instances]]); change it there"
    )]
    FromConfig { service: String, id: String },
}

/// Whether a registration added an instance or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Created,
    Updated,
}

/// Services and their instances.
#[derive(Debug, Default)]
pub struct RegistryState {
    services: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl RegistryState {
    /// Makes the config's static instances the registry's: those no longer listed go, the rest
    /// are added or replaced (a static instance replaces an API one of the same id). Returns
    /// whether anything changed.
    pub fn set_static(&mut self, instances: &[StaticInstance]) -> bool {
        let mut changed = false;
        for (name, service) in &mut self.services {
            let before = service.len();
            service.retain(|id, instance| {
                instance.origin != Origin::Config
                    || instances.iter().any(|s| s.service == *name && s.id == *id)
            });
            changed |= service.len() != before;
        }
        for s in instances {
            let instance = Instance {
                id: s.id.clone(),
                address: s.address,
                port: s.port,
                weight: s.weight,
                tags: s.tags.clone(),
                region: s.region.clone(),
                origin: Origin::Config,
                ttl: None,
                expires_at: None,
            };
            let slot = self.services.entry(s.service.clone()).or_default();
            if slot.get(&s.id) != Some(&instance) {
                slot.insert(s.id.clone(), instance);
                changed = true;
            }
        }
        self.drop_empty_services();
        changed
    }

    /// Adds or replaces an instance; it expires `ttl` after `now` unless heartbeats renew it.
    pub fn register(
        &mut self,
        registration: Registration,
        now: u64,
    ) -> Result<Registered, RegistryError> {
        let slot = self
            .services
            .entry(registration.service.clone())
            .or_default();
        let outcome = match slot.get(&registration.id) {
            Some(existing) if existing.origin == Origin::Config => {
                let error = RegistryError::FromConfig {
                    service: registration.service.clone(),
                    id: registration.id.clone(),
                };
                self.drop_empty_services();
                return Err(error);
            }
            Some(_) => Registered::Updated,
            None => Registered::Created,
        };
        slot.insert(
            registration.id.clone(),
            Instance {
                id: registration.id,
                address: registration.address,
                port: registration.port,
                weight: registration.weight,
                tags: registration.tags,
                region: registration.region,
                origin: Origin::Api,
                ttl: Some(registration.ttl),
                expires_at: Some(deadline(now, registration.ttl)),
            },
        );
        Ok(outcome)
    }

    /// Renews an instance's lease: it now expires its TTL after `now`. Returns the TTL.
    pub fn heartbeat(
        &mut self,
        service: &str,
        id: &str,
        now: u64,
    ) -> Result<Duration, RegistryError> {
        let instance = self
            .services
            .get_mut(service)
            .and_then(|s| s.get_mut(id))
            .ok_or_else(|| not_found(service, id))?;
        match instance.ttl {
            Some(ttl) => {
                instance.expires_at = Some(deadline(now, ttl));
                Ok(ttl)
            }
            None => Err(RegistryError::FromConfig {
                service: service.to_owned(),
                id: id.to_owned(),
            }),
        }
    }

    /// Removes an instance registered through the API.
    pub fn deregister(&mut self, service: &str, id: &str) -> Result<Instance, RegistryError> {
        let slot = self
            .services
            .get_mut(service)
            .ok_or_else(|| not_found(service, id))?;
        match slot.get(id) {
            None => return Err(not_found(service, id)),
            Some(i) if i.origin == Origin::Config => {
                return Err(RegistryError::FromConfig {
                    service: service.to_owned(),
                    id: id.to_owned(),
                });
            }
            Some(_) => {}
        }
        let removed = slot.remove(id).ok_or_else(|| not_found(service, id))?;
        self.drop_empty_services();
        Ok(removed)
    }

    /// Removes every instance whose lease ran out by `now`; returns (service, id) of each.
    pub fn expire(&mut self, now: u64) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for (service, instances) in &mut self.services {
            instances.retain(|id, instance| {
                let alive = instance.expires_at.is_none_or(|at| at > now);
                if !alive {
                    gone.push((service.clone(), id.clone()));
                }
                alive
            });
        }
        if !gone.is_empty() {
            self.drop_empty_services();
        }
        gone
    }

    /// A service's instances as cluster endpoints, one per address (an address registered
    /// under two ids counts once, with the larger weight), ordered by address.
    pub fn endpoints(&self, service: &str) -> Vec<EndpointConfig> {
        let mut by_addr: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for instance in self
            .services
            .get(service)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            let weight = by_addr.entry(instance.socket_addr()).or_insert(0);
            *weight = (*weight).max(instance.weight);
        }
        by_addr
            .into_iter()
            .map(|(address, weight)| EndpointConfig { address, weight })
            .collect()
    }

    /// Every service with its instances, by name.
    pub fn services(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &Instance>)> {
        self.services
            .iter()
            .map(|(name, instances)| (name.as_str(), instances.values()))
    }

    pub fn instance(&self, service: &str, id: &str) -> Option<&Instance> {
        self.services.get(service)?.get(id)
    }

    pub fn count(&self, service: &str) -> usize {
        self.services.get(service).map_or(0, BTreeMap::len)
    }

    fn drop_empty_services(&mut self) {
        self.services.retain(|_, instances| !instances.is_empty());
    }
}

fn deadline(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}

fn not_found(service: &str, id: &str) -> RegistryError {
    RegistryError::NotFound {
        service: service.to_owned(),
        id: id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn registration(id: &str, port: u16, ttl_secs: u64) -> Registration {
        Registration {
            service: "pay".into(),
            id: id.into(),
            address: "10.0.0.1".parse().unwrap(),
            port,
            weight: 1,
            tags: vec![],
            region: None,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    fn ports(state: &RegistryState) -> Vec<u16> {
        state
            .endpoints("pay")
            .iter()
            .map(|e| e.address.port())
            .collect()
    }

    #[test]
    fn an_instance_lives_as_long_as_its_heartbeats() {
        let mut s = RegistryState::default();
        assert_eq!(
            s.register(registration("a", 1, 10), 0),
            Ok(Registered::Created)
        );
        assert_eq!(
            s.register(registration("b", 2, 10), 0),
            Ok(Registered::Created)
        );
        // a keeps beating, b does not.
        assert_eq!(
            s.heartbeat("pay", "a", 8 * SECOND),
            Ok(Duration::from_secs(10))
        );
        assert!(s.expire(10 * SECOND - 1).is_empty());
        assert_eq!(s.expire(10 * SECOND), [("pay".to_owned(), "b".to_owned())]);
        assert_eq!(ports(&s), [1]);
        assert!(s.expire(18 * SECOND - 1).is_empty());
        assert_eq!(s.expire(18 * SECOND).len(), 1);
        // The empty service is gone, and so is any trace of it.
        assert_eq!(s.services().count(), 0);
        assert!(matches!(
            s.heartbeat("pay", "a", 0),
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[test]
    fn registering_again_updates_and_renews() {
        let mut s = RegistryState::default();
        s.register(registration("a", 1, 10), 0).unwrap();
        let mut moved = registration("a", 5, 10);
        moved.weight = 7;
        assert_eq!(s.register(moved, 5 * SECOND), Ok(Registered::Updated));
        assert_eq!(
            s.endpoints("pay"),
            [EndpointConfig {
                address: "10.0.0.1:5".parse().unwrap(),
                weight: 7
            }]
        );
        assert!(
            s.expire(14 * SECOND).is_empty(),
            "the lease restarted at 5 s"
        );
        assert_eq!(s.deregister("pay", "a").map(|i| i.port), Ok(5));
        assert!(matches!(
            s.deregister("pay", "a"),
            Err(RegistryError::NotFound { .. })
        ));
    }

    #[test]
    fn one_address_under_two_ids_is_one_endpoint_with_the_larger_weight() {
        let mut s = RegistryState::default();
        s.register(registration("a", 1, 10), 0).unwrap();
        let mut twin = registration("b", 1, 10);
        twin.weight = 4;
        s.register(twin, 0).unwrap();
        assert_eq!(s.endpoints("pay").len(), 1);
        assert_eq!(s.endpoints("pay")[0].weight, 4);
        assert_eq!(s.count("pay"), 2);
    }

    #[test]
    fn static_instances_follow_the_config_and_the_api_cannot_touch_them() {
        let mut s = RegistryState::default();
        let fixed = StaticInstance {
            service: "pay".into(),
            id: "fixed".into(),
            address: "10.0.0.9".parse().unwrap(),
            port: 9,
            weight: 1,
            tags: vec![],
            region: Some("eu".into()),
        };
        assert!(s.set_static(std::slice::from_ref(&fixed)));
        assert!(!s.set_static(std::slice::from_ref(&fixed)), "no change");
        assert!(
            s.expire(u64::MAX).is_empty(),
            "static instances never expire"
        );
        assert!(matches!(
            s.register(registration("fixed", 1, 10), 0),
            Err(RegistryError::FromConfig { .. })
        ));
        assert!(matches!(
            s.heartbeat("pay", "fixed", 0),
            Err(RegistryError::FromConfig { .. })
        ));
        assert!(matches!(
            s.deregister("pay", "fixed"),
            Err(RegistryError::FromConfig { .. })
        ));
        s.register(registration("dynamic", 1, 10), 0).unwrap();
        // The config drops it: the API's instance stays.
        assert!(s.set_static(&[]));
        assert_eq!(ports(&s), [1]);
        // A failed registration of a new service leaves no empty service behind.
        let mut other = registration("x", 1, 10);
        other.service = "other".into();
        s.set_static(&[StaticInstance {
            service: "other".into(),
            id: "x".into(),
            ..fixed
        }]);
        assert!(s.register(other, 0).is_err());
        assert_eq!(s.services().count(), 2);
    }
}
