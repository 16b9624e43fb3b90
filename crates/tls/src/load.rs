//! Certificates and keys from PEM files, checked before they are served: a proxy that starts
//! with an expired certificate or a key for another certificate fails every handshake, so
//! those are startup (and reload) errors that name the file, not handshake mysteries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use crate::TlsError;

/// Where a certificate chain (leaf first) and its private key live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate ready to serve, with the names it was issued for.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the subjectAltName extension (or the subject CN when there is none),
    /// lower-case; wildcards keep their `*.` prefix.
    pub names: Vec<String>,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
}

/// Loads and checks `files` at `now_unix` (seconds since the Unix epoch).
pub fn load_certificate(
    files: &CertificateFiles,
    now_unix: i64,
) -> Result<LoadedCertificate, TlsError> {
    let chain = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let (names, not_after_unix) = inspect_leaf(&files.cert, &chain[0], now_unix)?;
    let provider = crate::provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: format!("the key cannot be used: {err}"),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(err) => {
            return Err(TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
                reason: err.to_string(),
            });
        }
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names,
        not_after_unix,
    })
}

/// Every certificate in a PEM file, in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadPem {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The leaf's names and expiry; refuses a leaf outside its validity period.
fn inspect_leaf(
    path: &Path,
    leaf: &CertificateDer<'_>,
    now_unix: i64,
) -> Result<(Vec<String>, i64), TlsError> {
    let bad = |reason: String| TlsError::BadCertificate {
        path: path.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    if now_unix < validity.not_before.timestamp() {
        return Err(TlsError::NotYetValid {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
        });
    }
    if now_unix > validity.not_after.timestamp() {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            not_after: validity.not_after.to_string(),
            not_after_unix: validity.not_after.timestamp(),
        });
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Legacy certificates name their host only in the subject's CN.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.trim_end_matches('.').to_ascii_lowercase()),
        );
    }
    Ok((names, validity.not_after.timestamp()))
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::{DevCa, Validity};

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gh-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_leaf(dir: &Path, ca: &DevCa, hosts: &[&str], validity: Validity) -> CertificateFiles {
        let leaf = ca.issue(hosts, validity).unwrap();
        let files = CertificateFiles {
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
        };
        std::fs::write(&files.cert, leaf.chain_pem).unwrap();
        std::fs::write(&files.key, leaf.key_pem).unwrap();
        files
    }

    #[test]
    fn loads_a_valid_certificate_with_its_names() {
        let dir = dir("ok");
        let ca = DevCa::generate().unwrap();
        let files = write_leaf(
            &dir,
            &ca,
            &["Example.COM", "*.api.example.com", "127.0.0.1"],
            Validity::default(),
        );
        let loaded = load_certificate(&files, unix_now()).unwrap();
        assert_eq!(loaded.names, ["example.com", "*.api.example.com"]);
        assert!(loaded.not_after_unix > unix_now());
        assert_eq!(loaded.key.cert.len(), 2, "leaf and CA");
    }

    #[test]
    fn refuses_missing_files_naming_them() {
        let files = CertificateFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = load_certificate(&files, unix_now()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn refuses_expired_and_future_certificates() {
        let dir = dir("expired");
        let ca = DevCa::generate().unwrap();
        let files = write_leaf(&dir, &ca, &["example.com"], Validity::default());
        let later = load_certificate(&files, unix_now()).unwrap().not_after_unix + 10;
        let err = load_certificate(&files, later).unwrap_err();
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("leaf.pem"), "{err}");
        let err = load_certificate(&files, 0).unwrap_err();
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err}");
    }

    #[test]
    fn refuses_a_key_for_another_certificate() {
        let dir = dir("mismatch");
        let ca = DevCa::generate().unwrap();
        let files = write_leaf(&dir, &ca, &["a.example"], Validity::default());
        let other = ca.issue(&["b.example"], Validity::default()).unwrap();
        std::fs::write(&files.key, other.key_pem).unwrap();
        let err = load_certificate(&files, unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("leaf.key"), "{err}");
    }

    #[test]
    fn refuses_files_without_pem_items() {
        let dir = dir("empty");
        let files = CertificateFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        std::fs::write(&files.cert, "not a certificate").unwrap();
        std::fs::write(&files.key, "").unwrap();
        let err = load_certificate(&files, unix_now()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }
}
