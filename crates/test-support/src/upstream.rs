//! A test upstream whose behaviour is chosen by the request path:
//!
//! | path | answer |
//! |---|---|
//! | `/bytes/N` | N bytes of a repeating pattern, streamed in 64 KiB chunks |
//! | `/upload` | reads the whole body as it streams and answers its length |
//! | `/echo-stream` | answers at once and streams the request body back as it arrives (full duplex) |
//! | `/slow/MS` | waits MS milliseconds, then echoes |
//! | `/status/N` | status N, echo body |
//! | `/reset` | closes the connection without answering |
//! | `/ws`, or any WebSocket handshake | a WebSocket echo (text and binary messages come back as sent) |
//! | `/events?count=N&interval_ms=M` | server-sent events: N events `data: i`, M ms apart, each stamped with the time it was sent (`id:` = microseconds since the Unix epoch) |
//! | anything else | JSON echo: upstream name, method, path, query, headers, body length |
//!
//! Every response carries `x-upstream: NAME`, and each request header
//! `x-respond-header: Name: value` becomes a response header `Name: value` (for tests of what a
//! proxy does with an upstream's headers). [`TestUpstream::set_delay`] makes every answer
//! slow. [`TestUpstream::requests`] counts requests that
//! reached the server (including `/reset`); each answer carries its number in `x-served`.
//!
//! Conditional requests (for caches): when the answer has an `ETag` that the request's
//! `If-None-Match` lists, or a `Last-Modified` equal to its `If-Modified-Since`, the answer is
//! 304 with the same headers and no body.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, std::io::Error>;

const CHUNK: usize = 64 * 1024;

/// A running test upstream; stops when dropped.
pub struct TestUpstream {
    pub name: String,
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl TestUpstream {
    /// Starts an upstream named `name` on 127.0.0.1 with an OS-chosen port.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test upstream");
        Self::serve(name, listener)
    }

    /// Starts an upstream that speaks HTTPS with `tls` (HTTP/1.1 or h2 by ALPN).
    pub async fn start_tls(
        name: &str,
        tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test upstream");
        Self::serve_with(name, listener, Some(tokio_rustls::TlsAcceptor::from(tls)))
    }

    /// Starts an upstream on an existing listener (to restart one on the same port).
    pub fn serve(name: &str, listener: TcpListener) -> Self {
        Self::serve_with(name, listener, None)
    }

    fn serve_with(
        name: &str,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let name_arc: Arc<str> = Arc::from(name);
        {
            let requests = Arc::clone(&requests);
            let delay_ms = Arc::clone(&delay_ms);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let requests = Arc::clone(&requests);
                    let delay_ms = Arc::clone(&delay_ms);
                    let name = Arc::clone(&name_arc);
                    let stop = stop.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let reset = CancellationToken::new();
                        let reset_signal = reset.clone();
                        let service = service_fn(move |req: Request<Incoming>| {
                            let served = requests.fetch_add(1, Ordering::SeqCst) + 1;
                            let name = Arc::clone(&name);
                            let reset = reset_signal.clone();
                            let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                            async move {
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let mut response = answer(&name, req, &reset).await;
                                response
                                    .headers_mut()
                                    .insert("x-served", http::HeaderValue::from(served));
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let builder = auto::Builder::new(TokioExecutor::new());
                        match tls {
                            None => {
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                tokio::select! {
                                    _ = conn => {}
                                    _ = reset.cancelled() => {}
                                    _ = stop.cancelled() => {}
                                }
                            }
                            Some(acceptor) => {
                                // A failed handshake (an untrusting client) just ends it.
                                let Ok(stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let conn = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service);
                                tokio::select! {
                                    _ = conn => {}
                                    _ = reset.cancelled() => {}
                                    _ = stop.cancelled() => {}
                                }
                            }
                        }
                    });
                }
            });
        }
        Self {
            name: name.to_owned(),
            addr,
            requests,
            delay_ms,
            stop,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Delays every later answer by `delay` (a slow endpoint).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops accepting and closes open connections.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(name: &str, req: Request<Incoming>, reset: &CancellationToken) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let if_none_match = req.headers().get(http::header::IF_NONE_MATCH).cloned();
    let if_modified_since = req.headers().get(http::header::IF_MODIFIED_SINCE).cloned();
    let respond_headers: Vec<(http::HeaderName, http::HeaderValue)> = req
        .headers()
        .get_all("x-respond-header")
        .iter()
        .filter_map(|v| {
            let (name, value) = v.to_str().ok()?.split_once(':')?;
            Some((
                http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(value.trim()).ok()?,
            ))
        })
        .collect();
    let mut response = if let Some(n) = path.strip_prefix("/bytes/") {
        stream_bytes(n.parse().unwrap_or(0))
    } else if path == "/echo-stream" {
        let body = req
            .into_body()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Response::new(body)
    } else if path == "/upload" {
        let mut total: u64 = 0;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        total += data.len() as u64;
                    }
                }
                Err(_) => break,
            }
        }
        text(StatusCode::OK, format!("{total}"))
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        echo(name, req).await
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut r = echo(name, req).await;
        *r.status_mut() = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        r
    } else if path == "/ws" || req.headers().contains_key("sec-websocket-key") {
        shared(gatehouse_realtime_echo::websocket_echo(req))
    } else if path == "/events" {
        let count = gatehouse_realtime_echo::query_param(&req, "count").unwrap_or(3);
        let interval = gatehouse_realtime_echo::query_param(&req, "interval_ms").unwrap_or(100);
        shared(gatehouse_realtime_echo::events(
            count,
            Duration::from_millis(interval),
        ))
    } else if path == "/reset" {
        reset.cancel();
        // Never answered: the connection is dropped by the select in the connection task.
        std::future::pending::<()>().await;
        text(StatusCode::INTERNAL_SERVER_ERROR, String::new())
    } else {
        echo(name, req).await
    };
    if let Ok(v) = http::HeaderValue::from_str(name) {
        response.headers_mut().insert("x-upstream", v);
    }
    for (name, value) in respond_headers {
        response.headers_mut().append(name, value);
    }
    if not_modified(
        response.headers(),
        if_none_match.as_ref(),
        if_modified_since.as_ref(),
    ) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.body_mut() = Full::new(Bytes::new()).map_err(|e| match e {}).boxed();
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    response
}

/// Whether the answer's validators match the request's conditions (exact comparisons: tests
/// send back what they were given).
fn not_modified(
    response: &http::HeaderMap,
    if_none_match: Option<&http::HeaderValue>,
    if_modified_since: Option<&http::HeaderValue>,
) -> bool {
    if let (Some(etag), Some(inm)) = (response.get(http::header::ETAG), if_none_match) {
        let (Ok(etag), Ok(inm)) = (etag.to_str(), inm.to_str()) else {
            return false;
        };
        return inm.split(',').any(|t| t.trim() == etag || t.trim() == "*");
    }
    match (response.get(http::header::LAST_MODIFIED), if_modified_since) {
        (Some(modified), Some(since)) => modified == since,
        _ => false,
    }
}

async fn echo(name: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), serde_json::Value::String(v));
            }
        }
    }
    let json = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut r = text(StatusCode::OK, json.to_string());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

fn stream_bytes(total: u64) -> Response<Body> {
    let pattern: Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let stream = futures_util::stream::unfold(total, move |remaining| {
        let pattern = pattern.clone();
        async move {
            if remaining == 0 {
                return None;
            }
            let n = remaining.min(CHUNK as u64) as usize;
            Some((
                Ok::<_, std::io::Error>(Frame::data(pattern.slice(..n))),
                remaining - n as u64,
            ))
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(total));
    r
}

/// The shared real-time handlers' answers, in this upstream's body type.
fn shared(response: Response<gatehouse_realtime_echo::Body>) -> Response<Body> {
    response.map(|body| body.map_err(|never| match never {}).boxed())
}
