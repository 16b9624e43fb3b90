//! Allow/deny lists over CIDR prefixes.
//!
//! The rule, for listeners and routes alike: the most specific prefix containing the address
//! decides (a `/24` deny inside a `/8` allow denies that `/24`). An address no prefix contains is
//! denied when the list has any allow entry (an allow list names who may come in), and allowed
//! when it has only deny entries (a deny list names who may not). So "everyone except" is a deny
//! list, "nobody except" an allow list, and a mix reads as the allow list with holes cut out.
//! A prefix listed as both allow and deny is denied (validation refuses such a config anyway).

use crate::cidr::CidrTable;
use ipnet::IpNet;
use std::net::IpAddr;

/// What an access list says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allow,
    Deny,
}

/// An allow/deny list with longest-prefix-match semantics (see the module docs).
#[derive(Debug, Clone)]
pub struct AccessList {
    table: CidrTable<Access>,
    /// The answer for an address no prefix contains.
    otherwise: Access,
}

impl AccessList {
    pub fn new(
        allow: impl IntoIterator<Item = IpNet>,
        deny: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        let mut table = CidrTable::new();
        for prefix in allow {
            table.insert(prefix, Access::Allow);
        }
        let has_allow = !table.is_empty();
        // Inserted second, so a prefix in both lists ends up denied.
        for prefix in deny {
            table.insert(prefix, Access::Deny);
        }
        Self {
            table,
            otherwise: if has_allow {
                Access::Deny
            } else {
                Access::Allow
            },
        }
    }

    pub fn check(&self, ip: IpAddr) -> Access {
        self.table.lookup(ip).copied().unwrap_or(self.otherwise)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.check(ip) == Access::Allow
    }

    /// The answer for an address no prefix contains.
    pub fn otherwise(&self) -> Access {
        self.otherwise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_deny_list_allows_everyone_else() {
        let acl = AccessList::new([], nets(&["192.0.2.0/24", "2001:db8::/32"]));
        assert!(!acl.allows(ip("192.0.2.9")));
        assert!(!acl.allows(ip("2001:db8::1")));
        assert!(acl.allows(ip("198.51.100.1")));
        assert!(acl.allows(ip("::1")));
        assert_eq!(acl.otherwise(), Access::Allow);
    }

    #[test]
    fn an_allow_list_denies_everyone_else() {
        let acl = AccessList::new(nets(&["10.0.0.0/8"]), []);
        assert!(acl.allows(ip("10.2.3.4")));
        assert!(acl.allows(ip("::ffff:10.2.3.4")));
        assert!(!acl.allows(ip("11.0.0.1")));
        assert!(!acl.allows(ip("fd00::1")));
    }

    #[test]
    fn the_most_specific_prefix_decides() {
        let acl = AccessList::new(nets(&["10.0.0.0/8", "10.1.2.0/24"]), nets(&["10.1.0.0/16"]));
        assert!(acl.allows(ip("10.9.0.1"))); // /8 allow
        assert!(!acl.allows(ip("10.1.9.1"))); // /16 deny inside it
        assert!(acl.allows(ip("10.1.2.1"))); // /24 allow inside the deny
        assert!(!acl.allows(ip("172.16.0.1"))); // nothing matches: an allow list
        // "Everyone but a /16, except one host in it": the defaults written out.
        let acl = AccessList::new(
            nets(&["0.0.0.0/0", "::/0", "10.1.0.7/32"]),
            nets(&["10.1.0.0/16"]),
        );
        assert!(acl.allows(ip("8.8.8.8")));
        assert!(acl.allows(ip("2001:db8::1")));
        assert!(!acl.allows(ip("10.1.0.8")));
        assert!(acl.allows(ip("10.1.0.7")));
    }

    #[test]
    fn a_prefix_in_both_lists_is_denied() {
        let acl = AccessList::new(nets(&["10.0.0.0/8"]), nets(&["10.0.0.0/8"]));
        assert!(!acl.allows(ip("10.0.0.1")));
    }
}
