//! A load generator for TLS handshakes: every request on a new connection (full handshake,
//! no session reuse), the certificate verified against a CA file, for a fixed time.
//!
//! usage: tls-handshake-load ADDR SERVER_NAME CA_PEM CONNECTIONS SECONDS \[PATH\]
//!
//! Prints one line: `handshakes=N seconds=S rate=R p50_ms=.. p99_ms=.. errors=E`.
//! Built for bench/tls-bench: wrk's OpenSSL client spends ~250 µs of CPU per connection, so on
//! a two-core machine it, not the server, set the pace; this client spends far less.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: tls-handshake-load ADDR SERVER_NAME CA_PEM CONNECTIONS SECONDS [PATH]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    let name = ServerName::try_from(args[2].clone()).expect("SERVER_NAME");
    let ca = rustls_pki_types::CertificateDer::from_pem_file(&args[3]).expect("CA_PEM");
    let connections: usize = args[4].parse().expect("CONNECTIONS");
    let seconds: u64 = args[5].parse().expect("SECONDS");
    let path = args.get(6).cloned().unwrap_or_else(|| "/".into());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA");
    let mut config = rustls::ClientConfig::builder_with_provider(gatehouse_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // No resumption: every connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        args[2]
    );
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let connector = connector.clone();
            let name = name.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut buf = vec![0u8; 4096];
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let exchange = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        let mut tls = connector.connect(name.clone(), tcp).await?;
                        tls.write_all(request.as_bytes()).await?;
                        let mut got = Vec::new();
                        loop {
                            let n = tls.read(&mut buf).await?;
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        Ok::<_, std::io::Error>(got.starts_with(b"HTTP/1.1 200"))
                    };
                    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
                        Ok(Ok(true)) => latencies.push(t0.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("task");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "handshakes={} seconds={elapsed:.2} rate={:.0} p50_ms={:.3} p99_ms={:.3} errors={errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        at(0.5),
        at(0.99)
    );
}
