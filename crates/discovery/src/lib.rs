//! gatehouse-discovery: where clusters' endpoints come from when they are not listed in the
//! config file.
//!
//! - [`state`]: the registry's contents (services -> instances, leases), pure: time is passed
//!   in, so expiry is tested without sleeping;
//! - [`registry`]: the live [`Registry`]: the state behind a lock, with the process clock, a
//!   change watch, metrics, and the expiry sweep;
//! - [`registration`]: checks an admin API registration body field by field (400s name the
//!   field);
//! - [`dns`]: resolves a cluster's A/AAAA/SRV source once and says when to ask again;
//! - [`sources`]: one task per discovery cluster that pushes endpoint sets to the gateway
//!   (through [`EndpointSink`]) when they change, keeping the last good DNS answer on failure;
//! - [`view`]: the read API for the service DNS zone and the admin API ([`ServiceDirectory`]:
//!   services, instances, and each instance's health as the gateway sees it).
//!
//! Data flow: admin API / config / expiry -> [`Registry`] -> watch -> [`sources`] task ->
//! `Gateway::set_discovered_endpoints` -> new snapshot, endpoints keep their identity.

pub mod dns;
pub mod registration;
pub mod registry;
pub mod sources;
pub mod state;
pub mod view;

pub use registry::Registry;
pub use sources::{EndpointSink, Sources};
pub use state::{Instance, Origin, Registered, Registration, RegistryError};
pub use view::{HealthLookup, InstanceView, NoHealth, ServiceDirectory, ServiceEntry, ServiceView};
