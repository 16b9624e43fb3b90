//! gatehouse-tls: the TLS edge, on rustls with the ring provider.
//!
//! - [`load`]: reads a certificate chain and its key from PEM files and refuses, naming the
//!   file, one that is missing, unreadable, expired, not yet valid, or whose key does not match.
//! - [`sni`]: the certificate store a listener serves from: exact names, `*.suffix` wildcards
//!   and a default, chosen per handshake by SNI; swapped whole (an `ArcSwap`), so a rotated
//!   certificate applies to new handshakes while open connections keep theirs.
//! - [`server`]: the listener's rustls `ServerConfig`: TLS 1.2 and 1.3 with rustls's modern
//!   suites only (AEAD with forward secrecy), ALPN `h2`/`http/1.1`, session resumption by
//!   tickets and a session cache, optional or required client certificates (mutual TLS).
//! - [`identity`]: a verified client certificate as the text passed upstream.
//! - [`client`]: upstream TLS: system roots or a given CA, SNI, a client certificate.
//! - [`dev`]: a local CA and leaf certificates for trying HTTPS (`gatehouse cert dev`, demo).
//! - [`files`]: a cheap fingerprint of certificate files, so a watcher can see them change.

pub mod client;
pub mod dev;
pub mod files;
pub mod identity;
pub mod load;
pub mod server;
pub mod sni;

use std::path::PathBuf;

pub use load::{CertificateFiles, LoadedCertificate, load_certificate};
pub use sni::{CertStore, SniResolver};

/// The one crypto provider gatehouse uses (ring: builds without cmake or NASM).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Why a TLS setting could not be put to use. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("{path}: invalid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: the certificate expired at {not_after} (Unix time {not_after_unix})")]
    Expired {
        path: PathBuf,
        not_after: String,
        not_after_unix: i64,
    },
    #[error("{path}: the certificate is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("{key} does not match the certificate in {cert}: {reason}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{path}: no usable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Other(String),
}
