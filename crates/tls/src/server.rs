//! A listener's rustls configuration.
//!
//! - Versions: TLS 1.3 and 1.2 (or 1.3 only). rustls has no CBC, RC4, 3DES, static-RSA or
//!   export suites at all, so "modern suites only" holds by construction: every suite is an
//!   AEAD with ECDHE forward secrecy. The server's suite order wins over the client's.
//! - ALPN: what the listener speaks, h2 first (clients pick from our order).
//! - Resumption: stateless tickets (TLS 1.3 and 1.2, key rotated by rustls every 6 hours)
//!   plus a 10k-entry session cache; a resumed handshake skips the certificate signature,
//!   the costliest step. No 0-RTT early data: it can be replayed.
//! - Client certificates: none, optional (verified when sent) or required, against a CA file.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use crate::{SniResolver, TlsError, load};

/// How a listener treats client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    Off,
    /// Verified against `ca` when the client sends one; a client without one still connects.
    Optional {
        ca: PathBuf,
    },
    /// The handshake fails without a certificate that chains to `ca`.
    Required {
        ca: PathBuf,
    },
}

/// Everything about a TLS listener except its certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// ALPN protocol names in preference order (`h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    pub tls13_only: bool,
    pub session_tickets: bool,
    pub client_auth: ClientAuth,
}

/// Sessions remembered for resumption by session id (tickets need no server memory).
const SESSION_CACHE_ENTRIES: usize = 10_000;

/// The rustls config for a listener serving certificates from `resolver`.
pub fn server_config(
    resolver: Arc<SniResolver>,
    options: &ServerOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crate::provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if options.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let builder = match &options.client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Optional { ca } | ClientAuth::Required { ca } => {
            let roots = Arc::new(ca_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if matches!(options.client_auth, ClientAuth::Optional { .. }) {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|err| TlsError::BadCa {
                path: ca.clone(),
                reason: err.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = options.alpn.clone();
    // Our order (AES-256-GCM, AES-128-GCM, ChaCha20) rather than whatever a client lists first:
    // every suite is strong, but a server that defers to clients can be steered to its weakest.
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    if options.session_tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    } else {
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// The certificates of a CA bundle file as trust anchors.
pub fn ca_roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let certificates = load::read_certificates(path).map_err(|err| match err {
        TlsError::NoCertificate { path } => TlsError::BadCa {
            path,
            reason: "the file holds no PEM certificate".into(),
        },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(TlsError::BadCa {
            path: path.to_owned(),
            reason: "no certificate in it can serve as a trust anchor".into(),
        });
    }
    Ok(roots)
}
