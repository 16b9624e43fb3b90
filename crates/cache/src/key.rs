//! Cache keys: route, host (case-insensitive) and request target (path and query).
//!
//! The store is keyed by a 64-bit hash of the three, computed from borrowed request parts so a
//! lookup allocates nothing. Every stored entry keeps its key in full ([`StoredKey`]) and a
//! lookup compares it ([`KeyParts::matches`]), so a hash collision is a miss, never another
//! URL's response.

use std::hash::{BuildHasher, Hasher};

/// A request's key, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// Routes do not share entries: two routes may send one URL to different clusters.
    pub route: &'a str,
    pub host: &'a str,
    /// Path and query, exactly as the client sent them.
    pub target: &'a str,
}

/// The key kept beside a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub route: Box<str>,
    /// Lower-case.
    pub host: Box<str>,
    pub target: Box<str>,
}

impl KeyParts<'_> {
    pub fn hash(&self, hasher: &impl BuildHasher) -> u64 {
        let mut h = hasher.build_hasher();
        h.write(self.route.as_bytes());
        h.write_u8(0xff);
        // Host names are case-insensitive; hashing byte by byte avoids a lower-cased copy.
        for b in self.host.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.write_u8(0xff);
        h.write(self.target.as_bytes());
        h.finish()
    }

    pub fn matches(&self, stored: &StoredKey) -> bool {
        *stored.route == *self.route
            && stored.host.eq_ignore_ascii_case(self.host)
            && *stored.target == *self.target
    }

    pub fn to_stored(&self) -> StoredKey {
        StoredKey {
            route: self.route.into(),
            host: self.host.to_ascii_lowercase().into(),
            target: self.target.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::RandomState;

    #[test]
    fn hosts_compare_without_case_targets_with_it() {
        let s = RandomState::new();
        let a = KeyParts {
            route: "r",
            host: "Example.COM",
            target: "/a?b=1",
        };
        let b = KeyParts {
            host: "example.com",
            ..a
        };
        let c = KeyParts {
            target: "/A?b=1",
            ..a
        };
        let d = KeyParts {
            route: "other",
            ..a
        };
        assert_eq!(a.hash(&s), b.hash(&s));
        assert!(b.matches(&a.to_stored()));
        assert_ne!(a.hash(&s), c.hash(&s));
        assert!(!c.matches(&a.to_stored()));
        assert!(!d.matches(&a.to_stored()));
    }
}
