//! Upstream TLS (end-to-end encryption): what gatehouse trusts when it connects to an
//! upstream, and the certificate it shows when the upstream asks (mutual TLS).
//!
//! Trust is either the system's roots (Debian's ca-certificates, read once when the config is
//! built) or one CA bundle, never both: an internal CA should not widen to the whole web PKI.
//! The name checked against the upstream's certificate is the cluster's `server_name`, or the
//! endpoint's host when none is set (see the http crate's pool).

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use crate::{CertificateFiles, TlsError, load};

/// A cluster's upstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientOptions {
    /// A CA bundle to trust instead of the system roots.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate for upstreams that require one.
    pub identity: Option<CertificateFiles>,
    /// ALPN names to offer (`h2` for an HTTP/2 cluster, `http/1.1` otherwise).
    pub alpn: Vec<Vec<u8>>,
}

/// The rustls client config for `options`.
pub fn client_config(options: &ClientOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &options.ca {
        Some(ca) => crate::server::ca_roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut config = match &options.identity {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = load::read_certificates(&files.cert)?;
            let key = load::read_key(&files.key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| TlsError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    reason: err.to_string(),
                })?
        }
    };
    config.alpn_protocols = options.alpn.clone();
    Ok(Arc::new(config))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Other(
            "no system CA certificates found (install the ca-certificates package, or set the \
             cluster's tls.ca)"
                .into(),
        ));
    }
    Ok(roots)
}
