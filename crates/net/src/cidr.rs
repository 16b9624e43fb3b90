//! CIDR tables: the most specific configured prefix an address falls in (longest-prefix match).
//!
//! A [`CidrTable`] maps prefixes (`10.0.0.0/8`, `2001:db8::/32`) to values. A lookup returns the
//! value of the longest prefix containing the address. The table keeps one sorted level per
//! prefix length that occurs, longest first, and binary-searches each level for the address
//! masked to that length: the first hit is the most specific. Real tables (ACLs, trusted proxy
//! lists) use a handful of distinct lengths, so a lookup is a few binary searches over small
//! sorted vectors, with no hashing and no allocation. A trie (`prefix-trie`) pays off for
//! routing-table sizes; these tables are written by hand in a config file.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4: a lookup reads them as `a.b.c.d`,
//! and a mapped prefix (`::ffff:10.0.0.0/104`) is stored as the IPv4 prefix it covers
//! (`10.0.0.0/8`). So a dual-stack socket's view of an IPv4 client matches IPv4 rules.
//! `::/0` covers IPv6 only: "everything" is `0.0.0.0/0` plus `::/0`.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefixes mapped to values, answering longest-prefix-match lookups.
#[derive(Debug, Clone)]
pub struct CidrTable<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

impl<T> Default for CidrTable<T> {
    fn default() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

impl<T> CidrTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `prefix` (host bits are ignored: `10.1.2.3/8` is `10.0.0.0/8`); returns the value it
    /// replaced when the same prefix was already present.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        match canonical_prefix(prefix) {
            IpNet::V4(net) => self
                .v4
                .insert(u32::from(net.network()), net.prefix_len(), value),
            IpNet::V6(net) => self
                .v6
                .insert(u128::from(net.network()), net.prefix_len(), value),
        }
    }

    /// The value of the most specific prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        self.longest_match(ip).map(|(_, value)| value)
    }

    /// The most specific prefix containing `ip`, and its value.
    pub fn longest_match(&self, ip: IpAddr) -> Option<(IpNet, &T)> {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.v4.lookup(u32::from(ip)).map(|(network, len, value)| {
                let net = Ipv4Net::new(Ipv4Addr::from(network), len).unwrap_or_default();
                (IpNet::V4(net), value)
            }),
            IpAddr::V6(ip) => self.v6.lookup(u128::from(ip)).map(|(network, len, value)| {
                let net = Ipv6Net::new(Ipv6Addr::from(network), len).unwrap_or_default();
                (IpNet::V6(net), value)
            }),
        }
    }

    /// Whether some prefix contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.lookup(ip).is_some()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> FromIterator<(IpNet, T)> for CidrTable<T> {
    /// Later duplicates of a prefix replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (IpNet, T)>>(iter: I) -> Self {
        let mut table = Self::new();
        for (prefix, value) in iter {
            table.insert(prefix, value);
        }
        table
    }
}

/// `prefix` with host bits cleared, and an IPv4-mapped IPv6 prefix of length 96 or more
/// turned into the IPv4 prefix it covers.
pub fn canonical_prefix(prefix: IpNet) -> IpNet {
    match prefix.trunc() {
        IpNet::V6(net) if net.prefix_len() >= 96 => match net.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, net.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(IpNet::V6(net)),
            None => IpNet::V6(net),
        },
        other => other,
    }
}

/// Address bits of one family.
trait Bits: Copy + Ord + std::ops::BitAnd<Output = Self> {
    const WIDTH: u8;
    const ONES: Self;
    const ZERO: Self;
    fn shl(self, by: u32) -> Option<Self>;

    /// The netmask of a prefix length (`len` at most `WIDTH`).
    fn mask(len: u8) -> Self {
        if len == 0 {
            Self::ZERO
        } else {
            Self::ONES
                .shl(u32::from(Self::WIDTH.saturating_sub(len)))
                .unwrap_or(Self::ZERO)
        }
    }
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    const ONES: Self = u32::MAX;
    const ZERO: Self = 0;
    fn shl(self, by: u32) -> Option<Self> {
        self.checked_shl(by)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    const ONES: Self = u128::MAX;
    const ZERO: Self = 0;
    fn shl(self, by: u32) -> Option<Self> {
        self.checked_shl(by)
    }
}

/// The prefixes of one address family.
#[derive(Debug, Clone)]
struct Family<K, T> {
    /// One level per prefix length present, longest first.
    levels: Vec<Level<K, T>>,
}

impl<K, T> Default for Family<K, T> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

#[derive(Debug, Clone)]
struct Level<K, T> {
    len: u8,
    mask: K,
    /// Networks (already masked) sorted ascending, each once.
    entries: Vec<(K, T)>,
}

impl<K: Bits, T> Family<K, T> {
    fn insert(&mut self, network: K, len: u8, value: T) -> Option<T> {
        let len = len.min(K::WIDTH);
        let mask = K::mask(len);
        let network = network & mask;
        // Levels stay sorted by length, longest first, so the first hit of a lookup wins.
        let at = match self.levels.binary_search_by(|l| len.cmp(&l.len)) {
            Ok(at) => at,
            Err(at) => {
                self.levels.insert(
                    at,
                    Level {
                        len,
                        mask,
                        entries: Vec::new(),
                    },
                );
                at
            }
        };
        let level = &mut self.levels[at];
        match level.entries.binary_search_by(|(n, _)| n.cmp(&network)) {
            Ok(i) => Some(std::mem::replace(&mut level.entries[i].1, value)),
            Err(i) => {
                level.entries.insert(i, (network, value));
                None
            }
        }
    }

    fn lookup(&self, addr: K) -> Option<(K, u8, &T)> {
        self.levels.iter().find_map(|level| {
            let network = addr & level.mask;
            level
                .entries
                .binary_search_by(|(n, _)| n.cmp(&network))
                .ok()
                .map(|i| (network, level.len, &level.entries[i].1))
        })
    }

    fn len(&self) -> usize {
        self.levels.iter().map(|l| l.entries.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(entries: &[(&str, &'static str)]) -> CidrTable<&'static str> {
        entries.iter().map(|(p, v)| (net(p), *v)).collect()
    }

    #[test]
    fn the_longest_matching_prefix_wins() {
        let t = table(&[
            ("10.0.0.0/8", "ten"),
            ("10.1.0.0/16", "ten-one"),
            ("10.1.2.0/24", "ten-one-two"),
            ("10.1.2.3/32", "host"),
            ("0.0.0.0/0", "any4"),
        ]);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&"ten-one-two"));
        assert_eq!(t.lookup(ip("10.1.3.1")), Some(&"ten-one"));
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(&"ten"));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&"any4"));
        // An IPv4 default does not cover IPv6.
        assert_eq!(t.lookup(ip("2001:db8::1")), None);
        assert_eq!(t.len(), 5);
        let (prefix, _) = t.longest_match(ip("10.1.3.1")).unwrap();
        assert_eq!(prefix, net("10.1.0.0/16"));
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let a = table(&[("10.0.0.0/8", "a"), ("10.1.0.0/16", "b")]);
        let b = table(&[("10.1.0.0/16", "b"), ("10.0.0.0/8", "a")]);
        for addr in ["10.1.0.1", "10.2.0.1", "11.0.0.1"] {
            assert_eq!(a.lookup(ip(addr)), b.lookup(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn ipv6_prefixes_match_by_length() {
        let t = table(&[
            ("2001:db8::/32", "doc"),
            ("2001:db8:1::/48", "site"),
            ("::1/128", "loopback"),
            ("::/0", "any6"),
        ]);
        assert_eq!(t.lookup(ip("2001:db8:1::5")), Some(&"site"));
        assert_eq!(t.lookup(ip("2001:db8:2::5")), Some(&"doc"));
        assert_eq!(t.lookup(ip("::1")), Some(&"loopback"));
        assert_eq!(t.lookup(ip("fe80::1")), Some(&"any6"));
        assert_eq!(t.lookup(ip("127.0.0.1")), None);
    }

    #[test]
    fn ipv4_mapped_addresses_and_prefixes_are_ipv4() {
        let t = table(&[("10.0.0.0/8", "v4"), ("::ffff:192.168.0.0/112", "mapped")]);
        // A mapped client matches the IPv4 rule.
        assert_eq!(t.lookup(ip("::ffff:10.9.8.7")), Some(&"v4"));
        // A mapped prefix is stored as IPv4 and matches plain IPv4 clients.
        assert_eq!(t.lookup(ip("192.168.3.4")), Some(&"mapped"));
        assert_eq!(t.lookup(ip("::ffff:192.168.3.4")), Some(&"mapped"));
        assert_eq!(canonical_prefix(net("::ffff:0:0/96")), net("0.0.0.0/0"));
        // Shorter than /96 is a genuine IPv6 prefix.
        assert_eq!(canonical_prefix(net("::/64")), net("::/64"));
    }

    #[test]
    fn host_bits_are_ignored_and_duplicates_replace() {
        let mut t = CidrTable::new();
        assert_eq!(t.insert(net("10.1.2.3/8"), 1), None);
        assert_eq!(t.insert(net("10.0.0.0/8"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.200.1.1")), Some(&2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn empty_tables_and_edges() {
        let t: CidrTable<()> = CidrTable::new();
        assert!(t.is_empty());
        assert!(!t.contains(ip("1.2.3.4")));
        let t = table(&[("255.255.255.255/32", "top"), ("0.0.0.0/32", "zero")]);
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(&"top"));
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(&"zero"));
        assert_eq!(t.lookup(ip("0.0.0.1")), None);
        let t = table(&[("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "top")]);
        assert!(t.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        // Random prefixes against random addresses: the table answers what a scan of every
        // prefix (keeping the longest containing one) answers.
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut prefixes = Vec::new();
        for i in 0..200u32 {
            // Few distinct high bits so prefixes overlap.
            let addr = Ipv4Addr::from(((next() as u32) & 0x0f0f_00ff) | 0x0a00_0000);
            let len = (next() % 33) as u8;
            prefixes.push((IpNet::V4(Ipv4Net::new(addr, len).unwrap().trunc()), i));
        }
        let t: CidrTable<u32> = prefixes.iter().cloned().collect();
        for _ in 0..2000 {
            let addr = IpAddr::V4(Ipv4Addr::from(
                ((next() as u32) & 0x0f0f_00ff) | 0x0a00_0000,
            ));
            // Last insert of a duplicate prefix wins, as in the table.
            let expected = prefixes
                .iter()
                .filter(|(p, _)| p.contains(&addr))
                .max_by_key(|(p, i)| (p.prefix_len(), *i))
                .map(|(p, _)| *p);
            let got = t.longest_match(addr).map(|(p, _)| p);
            assert_eq!(got, expected, "{addr}");
            if let Some(p) = expected {
                let value = prefixes
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, i)| i)
                    .max();
                assert_eq!(t.lookup(addr), value);
            }
        }
    }
}
