//! Choosing the certificate for a handshake by SNI.
//!
//! Exact names first, then a wildcard covering exactly one more label (`*.example.com` serves
//! `api.example.com`, not `example.com` or `a.b.example.com`, as RFC 6125 says), then the
//! default: the first certificate configured, also served to clients that send no SNI (those
//! connecting by IP address). The store is immutable and swapped whole, so a handshake sees
//! one consistent set and rotation never touches connections already open.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::LoadedCertificate;

/// The certificates one listener serves.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertStore {
    /// A store of `certificates`; the first is the default. `None` when there are none.
    /// When two certificates claim a name, the first one configured keeps it.
    pub fn new(certificates: &[LoadedCertificate]) -> Option<Self> {
        let default = Arc::clone(&certificates.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in certificates {
            for name in &certificate.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix),
                    None => (&mut exact, name.as_str()),
                };
                map.entry(key.to_owned())
                    .or_insert_with(|| Arc::clone(&certificate.key));
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate for `server_name` (the client's SNI, if any).
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.');
        let lowered;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = name.to_ascii_lowercase();
            lowered.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// The rustls hook: serves from whichever store was swapped in last.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl SniResolver {
    pub fn new(store: CertStore) -> Self {
        Self {
            store: ArcSwap::from_pointee(store),
        }
    }

    /// Serves `store` to every handshake from now on.
    pub fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.store.load().select(hello.server_name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{DevCa, Validity};
    use crate::load::{CertificateFiles, load_certificate, unix_now};

    fn certificate(ca: &DevCa, hosts: &[&str]) -> LoadedCertificate {
        let issued = ca.issue(hosts, Validity::default()).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "gh-sni-{}-{}",
            std::process::id(),
            hosts[0].replace('*', "star")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = CertificateFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&files.cert, issued.chain_pem).unwrap();
        std::fs::write(&files.key, issued.key_pem).unwrap();
        load_certificate(&files, unix_now()).unwrap()
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let ca = DevCa::generate().unwrap();
        let fallback = certificate(&ca, &["default.test"]);
        let api = certificate(&ca, &["api.example.com"]);
        let wild = certificate(&ca, &["*.example.com"]);
        let store = CertStore::new(&[fallback.clone(), api.clone(), wild.clone()]).unwrap();
        let is = |name: Option<&str>, expected: &LoadedCertificate| {
            Arc::ptr_eq(store.select(name), &expected.key)
        };
        assert!(is(Some("api.example.com"), &api));
        assert!(is(Some("API.Example.com."), &api), "case and trailing dot");
        assert!(is(Some("www.example.com"), &wild));
        assert!(
            is(Some("example.com"), &fallback),
            "a wildcard needs one more label"
        );
        assert!(is(Some("a.b.example.com"), &fallback), "and only one");
        assert!(is(Some("other.test"), &fallback));
        assert!(is(None, &fallback));
    }

    #[test]
    fn the_first_certificate_keeps_a_contested_name() {
        let ca = DevCa::generate().unwrap();
        let first = certificate(&ca, &["same.test"]);
        let second = certificate(&ca, &["same.test", "only-second.test"]);
        let store = CertStore::new(&[first.clone(), second.clone()]).unwrap();
        assert!(Arc::ptr_eq(store.select(Some("same.test")), &first.key));
        assert!(Arc::ptr_eq(
            store.select(Some("only-second.test")),
            &second.key
        ));
        assert!(CertStore::new(&[]).is_none());
    }
}
