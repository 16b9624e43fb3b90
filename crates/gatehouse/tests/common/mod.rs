//! Shared helpers for the end-to-end tests: the binary's path and real HTTP clients.
#![allow(dead_code)] // each test file uses a different subset

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::Path;

pub use gatehouse_test_support::{Gatehouse, TestUpstream};

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gatehouse"))
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
