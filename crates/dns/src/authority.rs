//! The zone store: what answers for which names, swappable as a whole.
//!
//! [`Authority`] is one zone's answer function; [`Zone`] (a compiled zone file) is one, and a
//! zone built from the live registry (A/AAAA/SRV of healthy endpoints, rotated, chosen by the
//! client's subnet) can be another: it gets the parsed question and the request [`Context`],
//! which carries the EDNS Client Subnet. A [`ZoneSet`] maps names to the authority with the
//! longest matching origin; servers read it through [`SharedZones`] (an `ArcSwap`), so the
//! gateway can rebuild and swap it without stopping the sockets.

use crate::query::ClientSubnet;
use crate::zone::{Meta, Plan, Question, Zone};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What an answer may depend on beyond the question.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub peer: SocketAddr,
    pub transport: Transport,
    /// EDNS Client Subnet from the request, if it sent one (RFC 7871).
    pub client_subnet: Option<ClientSubnet>,
}

/// One zone's answers.
pub trait Authority: Send + Sync + 'static {
    /// The origin in lowercase wire form.
    fn origin(&self) -> &[u8];

    /// Writes the whole response (header, question as given, records; no OPT, which the
    /// server adds) for a question at or below the origin, and returns where its additional
    /// section can be cut. `plan` is scratch space reused between queries.
    fn answer(&self, q: &Question<'_>, ctx: &Context, plan: &mut Plan, buf: &mut Vec<u8>) -> Meta;
}

impl Authority for Zone {
    fn origin(&self) -> &[u8] {
        Zone::origin(self)
    }

    fn answer(&self, q: &Question<'_>, _ctx: &Context, plan: &mut Plan, buf: &mut Vec<u8>) -> Meta {
        Zone::answer(self, q, plan, buf)
    }
}

/// The authorities a server answers for.
#[derive(Default, Clone)]
pub struct ZoneSet {
    zones: Vec<Arc<dyn Authority>>,
}

/// The zone set as the servers read it; `store` a new one to swap.
pub type SharedZones = Arc<ArcSwap<ZoneSet>>;

impl ZoneSet {
    /// Fails (naming the origin) when two authorities claim the same origin.
    pub fn new(zones: Vec<Arc<dyn Authority>>) -> Result<Self, String> {
        for (i, z) in zones.iter().enumerate() {
            if zones[..i].iter().any(|o| o.origin() == z.origin()) {
                return Err(format!(
                    "two zones have the origin {}",
                    crate::wire_to_text(z.origin())
                ));
            }
        }
        Ok(ZoneSet { zones })
    }

    /// Wraps the set for sharing with servers.
    pub fn shared(self) -> SharedZones {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// The authority with the longest origin at or above the name (`starts`: label starts).
    pub fn find(&self, qname_lower: &[u8], starts: &[u8]) -> Option<&dyn Authority> {
        starts.iter().find_map(|&s| {
            let suffix = &qname_lower[s as usize..];
            self.zones
                .iter()
                .find(|z| z.origin() == suffix)
                .map(|z| z.as_ref())
        })
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}
