//! Admission of new connections: the listener's access list and the cap on connections per
//! client address, decided right after accept, before a byte is read.
//!
//! Both look at the TCP peer (no request has been read yet, so X-Forwarded-For is unknown).
//! Connections from trusted proxies are not counted per address: a proxy carries many clients,
//! and capping it would cap all of them together.

use crate::protect::ListenerProtection;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Why a connection was refused (the `reason` label of the `rejected` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener's access list denies the peer.
    AclDenied,
    /// The peer already holds `max_connections_per_ip` connections.
    PerIpLimit,
}

impl Refused {
    pub fn reason(self) -> &'static str {
        match self {
            Self::AclDenied => "acl_denied",
            Self::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Open connections per peer address on one listener. Kept across reloads (it lives beside the
/// listener's accept loop); an address is forgotten when its last connection closes, so memory
/// follows the connections actually open.
#[derive(Debug, Default)]
pub struct ConnectionsPerIp {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; dropping it (the connection ended) uncounts it.
#[derive(Debug)]
pub struct IpSlot {
    owner: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// Counts a connection from `ip` unless it already has `max` open.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= max {
            if *count == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(IpSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open
            .lock()
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Addresses with at least one connection open.
    pub fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Decides whether a new connection from `peer` may stay open. `Ok(Some(slot))`: hold the slot
/// for the connection's life.
pub fn admit(
    protection: &ListenerProtection,
    peer: IpAddr,
    per_ip: &Arc<ConnectionsPerIp>,
) -> Result<Option<IpSlot>, Refused> {
    if let Some(acl) = &protection.acl
        && !acl.allows(peer)
    {
        return Err(Refused::AclDenied);
    }
    let Some(max) = protection.max_connections_per_ip else {
        return Ok(None);
    };
    if protection.is_trusted_proxy(peer) {
        return Ok(None);
    }
    per_ip
        .try_open(peer, max)
        .map(Some)
        .ok_or(Refused::PerIpLimit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn protection(text: &str) -> ListenerProtection {
        let config = gatehouse_config::parse(
            &format!(
                "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n{text}\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n"
            ),
            "t.toml",
        )
        .unwrap();
        ListenerProtection::build(&config.listeners[0].protection)
    }

    #[test]
    fn slots_count_per_address_and_are_freed_on_drop() {
        let per_ip = Arc::new(ConnectionsPerIp::default());
        let a1 = per_ip.try_open(ip("192.0.2.1"), 2).unwrap();
        let a2 = per_ip.try_open(ip("::ffff:192.0.2.1"), 2).unwrap();
        assert!(per_ip.try_open(ip("192.0.2.1"), 2).is_none());
        let b = per_ip.try_open(ip("192.0.2.2"), 2).unwrap();
        assert_eq!(per_ip.open(ip("192.0.2.1")), 2);
        drop(a1);
        assert!(per_ip.try_open(ip("192.0.2.1"), 2).is_some());
        drop(a2);
        drop(b);
        assert_eq!(per_ip.addresses(), 0, "closed clients leave nothing behind");
        // A limit that refuses leaves no empty entry either.
        assert!(per_ip.try_open(ip("192.0.2.3"), 0).is_none());
        assert_eq!(per_ip.addresses(), 0);
    }

    #[test]
    fn the_acl_and_the_per_ip_cap_decide_at_accept() {
        let p = protection(
            "max_connections_per_ip = 1\ntrusted_proxies = [\"10.0.0.0/8\"]\n[listeners.acl]\ndeny = [\"192.0.2.0/24\"]",
        );
        let per_ip = Arc::new(ConnectionsPerIp::default());
        assert_eq!(
            admit(&p, ip("192.0.2.9"), &per_ip).unwrap_err(),
            Refused::AclDenied
        );
        let first = admit(&p, ip("198.51.100.1"), &per_ip).unwrap();
        assert!(first.is_some());
        assert_eq!(
            admit(&p, ip("198.51.100.1"), &per_ip).unwrap_err(),
            Refused::PerIpLimit
        );
        // A trusted proxy is not capped.
        for _ in 0..5 {
            assert!(admit(&p, ip("10.1.1.1"), &per_ip).unwrap().is_none());
        }
        drop(first);
        assert!(admit(&p, ip("198.51.100.1"), &per_ip).is_ok());
        // Without any setting, everyone is admitted and nothing is counted.
        let open = ListenerProtection::default();
        assert!(admit(&open, ip("192.0.2.9"), &per_ip).unwrap().is_none());
        assert_eq!(Refused::PerIpLimit.reason(), "per_ip_limit");
    }
}
