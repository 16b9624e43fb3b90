//! gatehouse-dns: an authoritative DNS server.
//!
//! A query goes through these parts, each in its own module:
//! - [`query`]: parses the request (header, the question's name lowercased without allocation,
//!   EDNS: payload size, version, DO, Client Subnet) and decides drop vs FORMERR;
//! - [`respond`]: the checks before any zone (opcode, EDNS version, class, zone transfers),
//!   picks the zone, fits the answer to the client's size limit (TC), adds OPT;
//! - [`authority`]: the zone store: the [`Authority`] trait (one zone's answers, given the
//!   request context with the client subnet) and the swappable [`ZoneSet`];
//! - [`zone`]: a compiled zone file: names in a hash map, RFC 1034 answer logic (CNAME chains,
//!   wildcards, delegations and glue, NODATA/NXDOMAIN with SOA) and pre-encoded responses for
//!   every exact name, which a query only patches;
//! - [`service_zone`]: the zone built from the service registry and health state (A/AAAA/SRV
//!   of serving instances, rotated per response, chosen by the client's region), precomputed
//!   per membership or health change; [`geo`] places a client in a region and computes the
//!   EDNS Client Subnet scope;
//! - [`zonefile`]: RFC 1035 zone file text into records, errors with file:line;
//! - [`wire`]: the response writer with name compression;
//! - [`server`]: UDP workers (SO_REUSEPORT, recvmmsg/sendmmsg) and TCP.
//!
//! The request-to-response path never panics on input and never allocates once its buffers
//! have grown. docs/dns.md describes the behaviour and how it differs from Knot DNS.

pub mod authority;
mod fasthash;
pub mod geo;
pub mod query;
pub mod respond;
pub mod server;
pub mod service_zone;
pub mod wire;
pub mod zone;
pub mod zonefile;

pub use authority::{Authority, Context, SharedZones, Transport, ZoneSet};
pub use respond::Responder;
pub use server::Server;
pub use service_zone::{
    Endpoint, Policy, ServiceOverride, ServiceRecords, ServiceSnapshot, ServiceZone,
    ServiceZoneSettings,
};
pub use zone::Zone;
pub use zonefile::ZoneFileError;

use std::path::Path;
use std::sync::Arc;

/// Reads and compiles one zone file.
pub fn load_zone(path: &Path) -> Result<Zone, ZoneFileError> {
    let records = zonefile::read(path)?;
    Zone::build(&path.display().to_string(), records)
}

/// Reads zone files into a zone set (origins must differ).
pub fn load_zones(paths: &[impl AsRef<Path>]) -> Result<ZoneSet, String> {
    let mut zones: Vec<Arc<dyn Authority>> = Vec::new();
    for p in paths {
        zones.push(Arc::new(load_zone(p.as_ref()).map_err(|e| e.to_string())?));
    }
    ZoneSet::new(zones)
}

/// A wire-form name as text ("example.test."), for messages.
pub fn wire_to_text(name: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        let label = name.get(at + 1..at + 1 + len as usize).unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(label));
        out.push('.');
        at += 1 + len as usize;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}
