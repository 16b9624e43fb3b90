//! Which region a client is in, and how far that answer reaches (the EDNS Client Subnet scope).
//!
//! A region table is a handful of CIDRs per region (`[regions]` in the config), so a linear
//! scan is faster than any trie here, and the scope computation needs to look at every
//! network anyway. The client is the EDNS Client Subnet when the query carries one (only its
//! first `source_prefix` bits are known), else the peer address.

use crate::query::ClientSubnet;
use std::net::IpAddr;

/// Region networks, flattened: (network address, prefix length, region index).
#[derive(Debug, Clone, Default)]
pub struct RegionTable {
    nets: Vec<(IpAddr, u8, u16)>,
}

/// Where a client was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Index into the region list; None: in no region.
    pub region: Option<u16>,
    /// RFC 7871 SCOPE PREFIX-LENGTH: every address sharing this many leading bits with the
    /// client is placed the same way, so a resolver may cache the answer for that network.
    pub scope: u8,
}

impl RegionTable {
    /// `regions[i]` lists the networks of region `i` as (address, prefix length); host bits of
    /// the address are ignored, prefix lengths past the family's width are clamped.
    pub fn new(regions: &[Vec<(IpAddr, u8)>]) -> Self {
        let mut nets = Vec::new();
        for (i, list) in regions.iter().enumerate() {
            for &(addr, len) in list {
                let addr = addr.to_canonical();
                let len = len.min(width(addr));
                nets.push((mask(addr, len), len, i as u16));
            }
        }
        RegionTable { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Places a client: the longest network holding it (only networks no longer than the
    /// known prefix count), and the scope over which that placement holds.
    pub fn place(&self, peer: IpAddr, subnet: Option<&ClientSubnet>) -> Placement {
        let (addr, known) = match subnet {
            // A source prefix of 0 means "do not tailor on my behalf" (RFC 7871 7.1.2): the
            // client is then the peer, as without the option.
            Some(cs) if cs.source_prefix > 0 => (cs.addr, cs.source_prefix),
            _ => (peer.to_canonical(), width(peer.to_canonical())),
        };
        let mut best: Option<(u8, u16)> = None;
        for &(net, len, region) in &self.nets {
            if len <= known
                && same_family(net, addr)
                && prefix_eq(net, addr, len)
                && best.is_none_or(|(l, _)| len > l)
            {
                best = Some((len, region));
            }
        }
        let region = best.map(|(_, r)| r);
        let matched = best.map_or(0, |(l, _)| l);
        // The placement holds for addr/matched unless a longer network of another region lies
        // inside that block: then only addresses sharing bits up to where that network and the
        // client diverge (or all of that network's bits) are placed alike.
        let mut scope = matched;
        for &(net, len, r) in &self.nets {
            if len > matched
                && Some(r) != region
                && same_family(net, addr)
                && prefix_eq(net, addr, matched)
            {
                scope = scope.max(common_prefix(net, addr).saturating_add(1).min(len));
            }
        }
        Placement { region, scope }
    }
}

fn width(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        // Left-aligned, so prefix arithmetic is the same for both families.
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    let m = bits(addr) & prefix_mask(len);
    match addr {
        IpAddr::V4(_) => IpAddr::V4(((m >> 96) as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(m.into()),
    }
}

fn prefix_eq(a: IpAddr, b: IpAddr, len: u8) -> bool {
    (bits(a) ^ bits(b)) & prefix_mask(len) == 0
}

fn common_prefix(a: IpAddr, b: IpAddr) -> u8 {
    ((bits(a) ^ bits(b)).leading_zeros() as u8).min(width(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> (IpAddr, u8) {
        let (a, l) = s.split_once('/').unwrap();
        (a.parse().unwrap(), l.parse().unwrap())
    }

    fn table() -> RegionTable {
        RegionTable::new(&[
            vec![net("10.1.0.0/16"), net("2001:db8:1::/48")],
            vec![net("10.2.0.0/16"), net("10.1.200.0/24")],
        ])
    }

    fn ecs(s: &str) -> ClientSubnet {
        let (addr, source_prefix) = net(s);
        ClientSubnet {
            addr,
            source_prefix,
            scope_prefix: 0,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn peer_address_places_by_longest_match() {
        let t = table();
        assert_eq!(t.place(ip("10.1.5.5"), None).region, Some(0));
        assert_eq!(t.place(ip("10.1.200.9"), None).region, Some(1));
        assert_eq!(t.place(ip("10.2.0.1"), None).region, Some(1));
        assert_eq!(t.place(ip("192.0.2.1"), None).region, None);
        assert_eq!(t.place(ip("2001:db8:1::5"), None).region, Some(0));
        // A v4 peer seen on a dual-stack socket.
        assert_eq!(t.place(ip("::ffff:10.2.3.4"), None).region, Some(1));
    }

    #[test]
    fn client_subnet_wins_over_the_peer_and_sets_the_scope() {
        let t = table();
        let p = t.place(ip("127.0.0.1"), Some(&ecs("10.2.7.0/24")));
        assert_eq!(
            p,
            Placement {
                region: Some(1),
                scope: 16
            }
        );
        // 10.1.0.0/16 holds 10.1.200.0/24 of another region: 10.1.7.0 shares 16 bits with
        // it and diverges at bit 16 (7 = 00000111 vs 200 = 11001000), so the scope is 17.
        let p = t.place(ip("127.0.0.1"), Some(&ecs("10.1.7.0/24")));
        assert_eq!(
            p,
            Placement {
                region: Some(0),
                scope: 17
            }
        );
        let p = t.place(ip("127.0.0.1"), Some(&ecs("10.1.200.0/24")));
        assert_eq!(
            p,
            Placement {
                region: Some(1),
                scope: 24
            }
        );
        // In no region: the scope covers the block up to the nearest region network.
        let p = t.place(ip("127.0.0.1"), Some(&ecs("192.0.2.0/24")));
        assert_eq!(
            p,
            Placement {
                region: None,
                scope: 1
            }
        );
        let p = t.place(ip("127.0.0.1"), Some(&ecs("10.3.0.0/24")));
        // 10.3 and 10.2 share 15 bits (3 = 00000011, 2 = 00000010): 16 separates them.
        assert_eq!(
            p,
            Placement {
                region: None,
                scope: 16
            }
        );
    }

    #[test]
    fn a_short_source_prefix_cannot_match_a_longer_network() {
        let t = table();
        // 10.0.0.0/8 says nothing about which /16 the client is in; scope 16 asks for more.
        let p = t.place(ip("127.0.0.1"), Some(&ecs("10.0.0.0/8")));
        assert_eq!(p.region, None);
        assert_eq!(p.scope, 16);
        // Source prefix 0: the peer decides, as without the option.
        let p = t.place(ip("10.2.0.1"), Some(&ecs("0.0.0.0/0")));
        assert_eq!(p.region, Some(1));
    }

    #[test]
    fn empty_table_places_nobody_with_scope_zero() {
        let t = RegionTable::new(&[]);
        let p = t.place(ip("10.0.0.1"), Some(&ecs("10.0.0.0/24")));
        assert_eq!(
            p,
            Placement {
                region: None,
                scope: 0
            }
        );
    }
}
