//! The client's real address: the TCP peer, or, when the peer is a trusted proxy, the address
//! that proxy (and the trusted ones before it) put in `X-Forwarded-For`.
//!
//! Each proxy appends the address it received the request from, so the chain reads
//! `client, proxy1, proxy2` and the peer is the last proxy. Only entries appended by trusted
//! proxies are believed: walking from the right, each entry is what a trusted hop saw, until
//! the first entry that is not itself a trusted proxy, which is the client. Anything left of it
//! was written by the client and may be forged. So:
//!
//! - peer not trusted: the peer (its header is ignored, whatever it says);
//! - an entry that is not an address (`unknown`, garbage, an empty list element): the peer,
//!   since the chain cannot be followed past it;
//! - every entry trusted: the left-most one, the farthest hop known;
//! - no header: the peer.
//!
//! Entries may carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write
//! them. IPv4-mapped IPv6 addresses are read as IPv4.

use crate::headers::X_FORWARDED_FOR;
use gatehouse_net::CidrTable;
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The real client of a request that came from `peer` (see the module docs).
pub fn real_client(peer: IpAddr, headers: &HeaderMap, trusted: &CidrTable<()>) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let mut farthest = peer;
    // Later header lines were appended later: walk them, and their entries, from the right.
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = line.to_str() else {
            return peer;
        };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_entry(entry.trim()) else {
                return peer;
            };
            if !trusted.contains(ip) {
                return ip;
            }
            farthest = ip;
        }
    }
    farthest
}

/// One `X-Forwarded-For` element: an address, optionally with a port (IPv6 then bracketed).
pub fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> CidrTable<()> {
        list.iter().map(|p| (p.parse().unwrap(), ())).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        h
    }

    fn real(peer: &str, lines: &[&str], t: &[&str]) -> IpAddr {
        real_client(ip(peer), &xff(lines), &trusted(t))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            real("203.0.113.9", &["198.51.100.1"], &["10.0.0.0/8"]),
            ip("203.0.113.9")
        );
        assert_eq!(real("203.0.113.9", &[], &[]), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        assert_eq!(
            real("10.0.0.1", &["198.51.100.1"], &["10.0.0.0/8"]),
            ip("198.51.100.1")
        );
        // Without a header the trusted peer itself is the client (a health checker, say).
        assert_eq!(real("10.0.0.1", &[], &["10.0.0.0/8"]), ip("10.0.0.1"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_followed_to_the_first_untrusted_entry() {
        let t = ["10.0.0.0/8", "192.168.0.0/16"];
        // client -> 192.168.1.1 (trusted) -> 10.0.0.1 (peer)
        assert_eq!(
            real("10.0.0.1", &["198.51.100.1, 192.168.1.1"], &t),
            ip("198.51.100.1")
        );
        // The same chain split over two header lines.
        assert_eq!(
            real("10.0.0.1", &["198.51.100.1", "192.168.1.1"], &t),
            ip("198.51.100.1")
        );
        // Every hop trusted: the farthest one known.
        assert_eq!(
            real("10.0.0.1", &["192.168.7.7, 10.2.2.2"], &t),
            ip("192.168.7.7")
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_client_are_ignored() {
        // The client sent "X-Forwarded-For: 1.1.1.1, 10.9.9.9" hoping to look like a trusted
        // proxy's client; the trusted proxy appended the client's real address.
        let t = ["10.0.0.0/8"];
        assert_eq!(
            real("10.0.0.1", &["1.1.1.1, 10.9.9.9, 203.0.113.50"], &t),
            ip("203.0.113.50")
        );
    }

    #[test]
    fn garbage_falls_back_to_the_peer() {
        let t = ["10.0.0.0/8"];
        for chain in [
            "unknown",
            "198.51.100.1, not-an-ip",
            "198.51.100.1,,",
            "",
            "198.51.100.1, 10.0.0.2 10.0.0.3",
            "_hidden",
        ] {
            assert_eq!(real("10.0.0.1", &[chain], &t), ip("10.0.0.1"), "{chain:?}");
        }
        // Garbage left of the first untrusted entry is never read.
        assert_eq!(
            real("10.0.0.1", &["garbage, 198.51.100.1"], &t),
            ip("198.51.100.1")
        );
        // A header line that is not text.
        let mut h = HeaderMap::new();
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(
            real_client(ip("10.0.0.1"), &h, &trusted(&t)),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = ["10.0.0.0/8", "2001:db8::/32"];
        assert_eq!(
            real("10.0.0.1", &["198.51.100.1:4711"], &t),
            ip("198.51.100.1")
        );
        assert_eq!(
            real("10.0.0.1", &["[2001:db9::1]:443"], &t),
            ip("2001:db9::1")
        );
        assert_eq!(real("10.0.0.1", &["[2001:db9::2]"], &t), ip("2001:db9::2"));
        // A mapped peer matches the IPv4 trust rule, and a mapped entry reads as IPv4.
        assert_eq!(
            real("::ffff:10.0.0.1", &["::ffff:198.51.100.3"], &t),
            ip("198.51.100.3")
        );
        assert_eq!(real("2001:db8::5", &["203.0.113.1"], &t), ip("203.0.113.1"));
    }
}
