//! TLS for listeners and clusters, prepared when a config is applied.
//!
//! - A TLS listener's [`ListenerTlsRuntime`] holds its acceptor and the SNI resolver it serves
//!   certificates from. A reload that leaves the listener's TLS settings unchanged keeps the
//!   runtime, and with it the session cache and ticket keys, so clients keep resuming.
//! - Certificate files are watched ([`TlsRuntimes::reload_changed_certificates`], every
//!   [`CERT_CHECK_INTERVAL`]): a changed file is loaded and checked, then swapped in for new
//!   handshakes; open connections keep the certificate they were made with. A bad file is
//!   logged and the old certificate keeps serving.
//! - A cluster's [`UpstreamTls`] is the rustls client config its pools connect with.
//!
//! Every failure names the file (see gatehouse-tls's `TlsError`), and a config whose
//! certificates cannot be served is refused as a whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_config::{
    CertificatePaths, ClientAuth, Cluster, ClusterTls, Config, Listener, ListenerTls,
    UpstreamProtocol,
};
use gatehouse_tls::server::{ClientAuth as TlsClientAuth, ServerOptions};
use gatehouse_tls::{CertStore, CertificateFiles, SniResolver, TlsError};
use parking_lot::Mutex;
use rustls_pki_types::ServerName;

/// How often certificate files are checked for changes.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A TLS listener's handshake side.
pub struct ListenerTlsRuntime {
    pub acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<SniResolver>,
    settings: ListenerTls,
    /// Of the certificate and key files, when last loaded.
    fingerprint: AtomicU64,
}

impl std::fmt::Debug for ListenerTlsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTlsRuntime")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A cluster's client side of TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: tokio_rustls::TlsConnector,
    /// The name verified against the upstream's certificate and sent as SNI; `None`: the
    /// endpoint's address.
    pub server_name: Option<ServerName<'static>>,
    settings: ClusterTls,
}

impl UpstreamTls {
    /// The name to verify for an endpoint at `addr`.
    pub fn name_for(&self, addr: std::net::SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

impl PartialEq for UpstreamTls {
    /// Pools are rebuilt when a cluster's TLS settings change, not on every reload.
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A TLS problem that refuses a config.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("listener {listener:?}: {error}")]
    Listener { listener: String, error: TlsError },
    #[error("cluster {cluster:?}: {error}")]
    Cluster { cluster: String, error: TlsError },
}

/// The TLS runtimes of the config being served, by listener and by cluster name.
#[derive(Default)]
pub struct TlsRuntimes {
    listeners: Mutex<HashMap<String, Arc<ListenerTlsRuntime>>>,
}

/// What a config needs, prepared before it is applied.
#[derive(Default)]
pub struct PreparedTls {
    pub listeners: HashMap<String, Arc<ListenerTlsRuntime>>,
    pub clusters: HashMap<String, UpstreamTls>,
}

impl TlsRuntimes {
    /// Loads everything `config` needs, reusing the runtimes of listeners whose TLS settings
    /// did not change. Nothing is swapped in yet: see [`TlsRuntimes::commit`].
    pub fn prepare(&self, config: &Config) -> Result<PreparedTls, TlsSetupError> {
        let running = self.listeners.lock().clone();
        let mut prepared = PreparedTls::default();
        for listener in &config.listeners {
            let Some(settings) = &listener.tls else {
                continue;
            };
            let runtime = match running.get(&listener.name) {
                Some(runtime) if runtime.settings == *settings => Arc::clone(runtime),
                _ => Arc::new(listener_runtime(listener, settings).map_err(|error| {
                    TlsSetupError::Listener {
                        listener: listener.name.clone(),
                        error,
                    }
                })?),
            };
            prepared.listeners.insert(listener.name.clone(), runtime);
        }
        for cluster in &config.clusters {
            let Some(settings) = &cluster.tls else {
                continue;
            };
            let upstream =
                upstream_tls(cluster, settings).map_err(|error| TlsSetupError::Cluster {
                    cluster: cluster.name.clone(),
                    error,
                })?;
            prepared.clusters.insert(cluster.name.clone(), upstream);
        }
        Ok(prepared)
    }

    /// Makes `prepared` the runtimes whose certificates are watched.
    pub fn commit(&self, prepared: &PreparedTls) {
        *self.listeners.lock() = prepared.listeners.clone();
    }

    /// Whether a listener's certificate files changed since they were loaded: a few `stat`s,
    /// cheap enough for the reactor thread (loading them is not; see
    /// [`Self::reload_changed_certificates`]).
    pub fn certificates_changed(&self) -> bool {
        let running: Vec<Arc<ListenerTlsRuntime>> =
            self.listeners.lock().values().cloned().collect();
        running.iter().any(|runtime| {
            fingerprint(&runtime.settings.certificates)
                != runtime.fingerprint.load(Ordering::Relaxed)
        })
    }

    /// Reloads the certificates of listeners whose files changed since they were loaded.
    pub fn reload_changed_certificates(&self) {
        let running: Vec<(String, Arc<ListenerTlsRuntime>)> = self
            .listeners
            .lock()
            .iter()
            .map(|(name, runtime)| (name.clone(), Arc::clone(runtime)))
            .collect();
        for (name, runtime) in running {
            let now = fingerprint(&runtime.settings.certificates);
            if now == runtime.fingerprint.load(Ordering::Relaxed) {
                continue;
            }
            // Recorded before loading: a bad file is reported once, not every interval.
            runtime.fingerprint.store(now, Ordering::Relaxed);
            match load_store(&runtime.settings.certificates) {
                Ok(store) => {
                    runtime.resolver.swap(store);
                    tracing::info!(listener = %name, "certificates reloaded");
                }
                Err(error) => {
                    tracing::error!(listener = %name, %error, "certificate change refused; the previous certificates keep serving");
                }
            }
        }
    }
}

/// Checks that every certificate `config` names can be served (for `gatehouse check`).
pub fn check(config: &Config) -> Result<(), TlsSetupError> {
    TlsRuntimes::default().prepare(config).map(drop)
}

fn listener_runtime(
    listener: &Listener,
    settings: &ListenerTls,
) -> Result<ListenerTlsRuntime, TlsError> {
    let print = fingerprint(&settings.certificates);
    let resolver = Arc::new(SniResolver::new(load_store(&settings.certificates)?));
    let mut alpn = Vec::new();
    if listener.protocols.h2 {
        alpn.push(b"h2".to_vec());
    }
    if listener.protocols.http1 {
        alpn.push(b"http/1.1".to_vec());
    }
    let options = ServerOptions {
        alpn,
        tls13_only: settings.tls13_only,
        session_tickets: settings.session_tickets,
        client_auth: match &settings.client_auth {
            ClientAuth::Off => TlsClientAuth::Off,
            ClientAuth::Optional { ca } => TlsClientAuth::Optional { ca: ca.clone() },
            ClientAuth::Required { ca } => TlsClientAuth::Required { ca: ca.clone() },
        },
    };
    let config = gatehouse_tls::server::server_config(Arc::clone(&resolver), &options)?;
    Ok(ListenerTlsRuntime {
        acceptor: tokio_rustls::TlsAcceptor::from(config),
        resolver,
        settings: settings.clone(),
        fingerprint: AtomicU64::new(print),
    })
}

fn load_store(certificates: &[CertificatePaths]) -> Result<CertStore, TlsError> {
    let now = gatehouse_tls::load::unix_now();
    let loaded = certificates
        .iter()
        .map(|c| gatehouse_tls::load_certificate(&files(c), now))
        .collect::<Result<Vec<_>, _>>()?;
    CertStore::new(&loaded).ok_or_else(|| TlsError::Other("no certificate configured".into()))
}

fn upstream_tls(cluster: &Cluster, settings: &ClusterTls) -> Result<UpstreamTls, TlsError> {
    let alpn = match cluster.protocol {
        UpstreamProtocol::H2 => b"h2".to_vec(),
        UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
    };
    let options = gatehouse_tls::client::ClientOptions {
        ca: settings.ca.clone(),
        identity: settings.client_certificate.as_ref().map(files),
        alpn: vec![alpn],
    };
    let config = gatehouse_tls::client::client_config(&options)?;
    let server_name = settings
        .server_name
        .as_ref()
        .map(|name| {
            ServerName::try_from(name.clone())
                .map_err(|err| TlsError::Other(format!("server_name {name:?}: {err}")))
        })
        .transpose()?;
    Ok(UpstreamTls {
        connector: tokio_rustls::TlsConnector::from(config),
        server_name,
        settings: settings.clone(),
    })
}

fn files(paths: &CertificatePaths) -> CertificateFiles {
    CertificateFiles {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
    }
}

fn fingerprint(certificates: &[CertificatePaths]) -> u64 {
    gatehouse_tls::files::fingerprint(
        certificates
            .iter()
            .flat_map(|c| [c.cert.as_path(), c.key.as_path()]),
    )
}
