//! TLS for tests: a CA whose certificates are written where a gatehouse config can name them,
//! and a client that speaks HTTP/1.1 or h2 over TLS and reports the negotiated protocol and
//! the certificate the server showed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use gatehouse_tls::dev::{DevCa, Issued, Validity};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls;

/// A CA for one test, with its certificate written to `dir/ca.pem`.
pub struct TestCa {
    pub ca: DevCa,
    pub dir: PathBuf,
}

/// Paths of a certificate chain and key written by [`TestCa`].
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub issued: Issued,
}

impl TestCa {
    pub fn new(dir: &Path) -> Self {
        let ca = DevCa::generate().expect("test CA");
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).expect("write ca.pem");
        Self {
            ca,
            dir: dir.to_owned(),
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `hosts`, written as `NAME.pem` / `NAME.key`.
    pub fn server(&self, name: &str, hosts: &[&str]) -> CertFiles {
        let issued = self.ca.issue(hosts, Validity::default()).expect("issue");
        self.write(name, issued)
    }

    /// A client certificate with subject `CN=common_name`.
    pub fn client(&self, name: &str, common_name: &str) -> CertFiles {
        let issued = self
            .ca
            .issue_client(common_name, Validity::default())
            .expect("issue client");
        self.write(name, issued)
    }

    fn write(&self, name: &str, issued: Issued) -> CertFiles {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert, &issued.chain_pem).expect("write cert");
        std::fs::write(&key, &issued.key_pem).expect("write key");
        CertFiles { cert, key, issued }
    }

    /// A client config trusting this CA, offering `alpn`, optionally with a certificate.
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        identity: Option<&CertFiles>,
    ) -> Arc<rustls::ClientConfig> {
        self.client_config_with(alpn, identity, rustls::DEFAULT_VERSIONS)
    }

    /// [`TestCa::client_config`] limited to some TLS versions, without a client certificate.
    pub fn client_config_versions(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        self.client_config_with(alpn, None, versions)
    }

    fn client_config_with(
        &self,
        alpn: &[&[u8]],
        identity: Option<&CertFiles>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.cert_pem.as_bytes()).expect("ca pem"))
            .expect("add root");
        let builder = rustls::ClientConfig::builder_with_provider(gatehouse_tls::provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(files) => builder
                .with_client_auth_cert(chain(&files.issued), key(&files.issued))
                .expect("client cert"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A rustls server config for a TLS upstream serving `files`.
pub fn upstream_server_config(files: &CertFiles) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(gatehouse_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain(&files.issued), key(&files.issued))
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn chain(issued: &Issued) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain pem")
}

fn key(issued: &Issued) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key pem")
}

/// What one HTTPS exchange showed.
#[derive(Debug)]
pub struct HttpsAnswer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The ALPN protocol the server chose.
    pub alpn: Option<Vec<u8>>,
    /// The leaf certificate the server presented (DER).
    pub server_cert: Vec<u8>,
}

impl HttpsAnswer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TLS connection to `addr` with SNI `server_name`; `Err` when the handshake fails.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// An HTTP client session over one TLS connection, h2 or HTTP/1.1 as ALPN chose.
pub struct HttpsSession {
    sender: Sender,
    pub alpn: Option<Vec<u8>>,
    pub server_cert: Vec<u8>,
    /// The handshake resumed an earlier session (no certificate exchange).
    pub resumed: bool,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl HttpsSession {
    /// Connects and starts HTTP on the connection; `Err` when the handshake or the start fails.
    pub async fn open(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let stream = connect(addr, server_name, config).await?;
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let server_cert = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let io = TokioIo::new(stream);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            alpn,
            server_cert,
            resumed,
        })
    }

    /// GET `path` with `headers`; `Err` when the connection fails (a refused client
    /// certificate shows here in TLS 1.3, after the handshake).
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpsAnswer, String> {
        let mut builder = Request::builder().uri(path);
        if matches!(self.sender, Sender::H2(_)) {
            builder = builder.uri(format!("https://localhost{path}"));
        } else {
            builder = builder.header(http::header::HOST, "localhost");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = match &mut self.sender {
            Sender::H1(sender) => sender.send_request(request).await,
            Sender::H2(sender) => sender.send_request(request).await,
        }
        .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(HttpsAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
            alpn: self.alpn.clone(),
            server_cert: self.server_cert.clone(),
        })
    }
}

/// One GET over a fresh connection.
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<HttpsAnswer, String> {
    let mut session = HttpsSession::open(addr, server_name, config)
        .await
        .map_err(|e| e.to_string())?;
    session.get(path, &[]).await
}

/// The DER of the first certificate in a PEM chain.
pub fn leaf_der(chain_pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem")
        .to_vec()
}
