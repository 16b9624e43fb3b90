//! Shared helpers for the end-to-end tests: the binary's path and real HTTP clients.
#![allow(dead_code)] // each test file uses a different subset

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

pub use gatehouse_test_support::{Gatehouse, TestUpstream};

/// The binary under test: the one cargo built beside these tests, or `$GATEHOUSE_BIN` (to run
/// the suite against another build of the same source, as `scripts/build-pgo` does to train).
pub fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var_os("GATEHOUSE_BIN")
            .map_or_else(|| env!("CARGO_BIN_EXE_gatehouse").into(), Into::into)
    })
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// HTTP/1.1 keep-alive client.
pub fn h1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 prior-knowledge (h2c) client.
pub fn h2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The upstream that answered (from the test upstream's `x-upstream` header).
    pub fn upstream(&self) -> String {
        self.headers
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    }
}

/// One HTTP/1.1 keep-alive connection to `to` from the loopback address `source` (127.0.0.2,
/// 127.0.0.3, ...: all of 127/8 is local), so one test can act as several clients.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    to: SocketAddr,
    /// Ends when the server closes the connection.
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connects; Err when the TCP connect itself fails.
    pub async fn open(source: IpAddr, to: SocketAddr) -> std::io::Result<Self> {
        let socket = match source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(to).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, to, driver })
    }

    /// A GET on this connection; Err when the server closed it (or never answers within 5 s).
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
        let mut builder = Request::builder()
            .uri(path)
            .header(http::header::HOST, self.to.to_string());
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(Bytes::new())).expect("request");
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("not ready: {e}"))?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
            .await
            .map_err(|_| "no answer within 5 s".to_owned())?
    }

    /// Whether the server closed the connection (waits up to `within`).
    pub async fn closed_within(&mut self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, &mut self.driver).await.is_ok()
    }
}

/// A GET on a fresh connection from `source` (see [`Connection`]).
pub async fn get_from(
    source: &str,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let source: IpAddr = source.parse().expect("source address");
    let mut conn = Connection::open(source, to)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    conn.get(path, headers).await
}

/// Sends a request and reads the whole answer.
pub async fn send(
    client: &HttpClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client
        .request(builder.body(Full::new(body)).expect("request"))
        .await
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(client, Method::GET, addr, path, headers, Bytes::new()).await
}

/// Polls `check` every 50 ms until it holds, for at most `within`.
pub async fn eventually(within: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A config with one listener "main" on an ephemeral port, an admin API, and `rest` appended.
pub fn config(rest: &str) -> String {
    format!(
        r#"
[server]
drain_timeout = "10s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "main"
listen = "127.0.0.1:0"
{rest}"#
    )
}

/// Routes every request to one cluster "c" over `upstreams` (append to [`config`]).
pub fn to_cluster(upstreams: &[&TestUpstream]) -> String {
    format!(
        "[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(upstreams)
    )
}

/// The real binary with [`config`] routing everything to `upstreams`.
pub async fn gateway_to(upstreams: &[&TestUpstream]) -> Gatehouse {
    Gatehouse::start(bin(), &config(&to_cluster(upstreams)), &[]).await
}

/// `["a:1", "b:2"]` as TOML endpoint strings.
pub fn endpoints(upstreams: &[&TestUpstream]) -> String {
    let list: Vec<String> = upstreams
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect();
    format!("[{}]", list.join(", "))
}

/// Counts answers per upstream name.
pub fn tally(
    answers: impl IntoIterator<Item = String>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for a in answers {
        *counts.entry(a).or_insert(0) += 1;
    }
    counts
}

/// A steady, bounded GET load on `addr` from `clients` keep-alive clients (at most 20 000
/// requests each), counting answers that were 200 and those that were not.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyLoad {
    pub fn start(addr: SocketAddr, clients: usize) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let c = h1();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) && n < 20_000 {
                        n += 1;
                        let counter = if get(&c, addr, "/", &[]).await.status == StatusCode::OK {
                            &ok
                        } else {
                            &failed
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients and returns (ok, failed).
    pub async fn finish(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("load client panicked");
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// `gatehouse demo` with every port chosen by the OS, started and its banner read.
pub struct Demo {
    /// Killed when the test ends.
    pub process: tokio::process::Child,
    /// The gateway's cleartext listener.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dns: SocketAddr,
    /// Everything printed up to the end of the banner.
    pub banner: String,
}

impl Demo {
    /// Starts the demo and returns once its banner is printed (by then everything listens).
    pub async fn start() -> Demo {
        use tokio::io::AsyncBufReadExt;
        let mut process = tokio::process::Command::new(bin())
            .args(["demo", "--workers", "2"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--https", "127.0.0.1:0", "--dns", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            // Left to the test harness: it shows it when a test fails.
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start gatehouse demo");
        let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
        let banner = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut banner = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Stop with ctrl-c") {
                    return banner;
                }
            }
            panic!("the demo ended before finishing its banner:\n{banner}");
        })
        .await
        .expect("the demo starts within 20 s");
        // Nobody reads the rest, but the demo must never block on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let address = |prefix: &str| -> SocketAddr {
            banner
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{banner}"))
                .parse()
                .unwrap_or_else(|e| panic!("the address after {prefix:?}: {e}\n{banner}"))
        };
        Demo {
            listen: address("gatehouse: listener demo on http://"),
            admin: address("gatehouse: admin on http://"),
            dns: address("gatehouse: dns on udp+tcp "),
            process,
            banner,
        }
    }
}
