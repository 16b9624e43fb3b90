//! Upstream connections, pooled per endpoint.
//!
//! HTTP/1.1: a stack of idle keep-alive connections (most recently used first, so a few warm
//! connections carry the load and the rest age out). A connection returns to the stack once its
//! response body has been read to the end. A pooled connection the upstream has closed is
//! detected before use (`try_send_request` hands the request back) and replaced, so a stale
//! keep-alive connection never fails a request.
//!
//! HTTP/2: one multiplexed connection per endpoint, re-established when it closes.

use crate::body::ProxyBody;
use gatehouse_config::UpstreamProtocol;
use gatehouse_core::{ErrorKind, ProxyError};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How the pool reaches one endpoint; a change of any of these makes a new pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Counts connections opened (for metrics), without this module knowing the metrics registry.
pub type OnConnect = Box<dyn Fn() + Send + Sync>;

/// Connections to one endpoint.
pub struct EndpointPool {
    addr: SocketAddr,
    settings: PoolSettings,
    idle: Mutex<Vec<IdleConnection>>,
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Held while an HTTP/2 connection is being established, so concurrent first requests share
    /// one connection instead of each opening their own.
    h2_connecting: tokio::sync::Mutex<()>,
    on_connect: OnConnect,
}

/// An HTTP/1.1 connection whose response is still being read; see [`Reusable::give_back`].
pub struct Reusable {
    sender: http1::SendRequest<ProxyBody>,
    pool: Arc<EndpointPool>,
}

impl Reusable {
    /// Returns the connection to the pool; call it once the response body has ended. hyper's
    /// connection task usually has the connection ready again by then, so it goes straight back;
    /// otherwise a small task waits for it. (Dropping a `Reusable` instead closes the connection:
    /// right for a body abandoned midway.)
    pub fn give_back(mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        match self.sender.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => self.pool.put_idle(self.sender),
            Poll::Ready(Err(_)) => {} // closed: drop it
            Poll::Pending => {
                tokio::spawn(async move {
                    if self.sender.ready().await.is_ok() {
                        self.pool.put_idle(self.sender);
                    }
                });
            }
        }
    }
}

struct IdleConnection {
    sender: http1::SendRequest<ProxyBody>,
    idle_since: Instant,
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, settings: PoolSettings, on_connect: OnConnect) -> Arc<Self> {
        Arc::new(Self {
            addr,
            settings,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            on_connect,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Number of idle HTTP/1 connections (for tests and the admin API).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().len()
    }

    /// Sends a request and returns the response head; its body streams from the connection.
    /// For HTTP/1.1 the caller gets the connection back as [`Reusable`], to return to the pool
    /// once the response body has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Option<Reusable>), ProxyError> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_h1(request).await,
            UpstreamProtocol::H2 => Ok((self.send_h2(request).await?, None)),
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut request: http::Request<ProxyBody>,
    ) -> Result<(http::Response<Incoming>, Option<Reusable>), ProxyError> {
        // Try idle connections first; each one that turns out closed hands the request back.
        while let Some(mut sender) = self.checkout_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Some(self.reusable(sender)))),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(self.map_hyper_error(err.into_error())),
                },
            }
        }
        let mut sender = self.connect_h1().await?;
        match sender.send_request(request).await {
            Ok(response) => Ok((response, Some(self.reusable(sender)))),
            Err(err) => Err(self.map_hyper_error(err)),
        }
    }

    fn reusable(self: &Arc<Self>, sender: http1::SendRequest<ProxyBody>) -> Reusable {
        Reusable {
            sender,
            pool: Arc::clone(self),
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        request: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        let mut sender = match self.live_h2() {
            Some(sender) => sender,
            None => {
                let _connecting = self.h2_connecting.lock().await;
                match self.live_h2() {
                    Some(sender) => sender, // another request connected meanwhile
                    None => {
                        let sender = self.connect_h2().await?;
                        *self.h2.lock() = Some(sender.clone());
                        sender
                    }
                }
            }
        };
        sender
            .send_request(request)
            .await
            .map_err(|err| self.map_hyper_error(err))
    }

    fn live_h2(&self) -> Option<http2::SendRequest<ProxyBody>> {
        self.h2.lock().clone().filter(|s| !s.is_closed())
    }

    fn checkout_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock();
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < self.settings.idle_timeout && conn.sender.is_ready() {
                return Some(conn.sender);
            }
            // Expired or closed: dropping the sender closes the connection.
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<ProxyBody>) {
        let mut idle = self.idle.lock();
        if idle.len() < self.settings.max_idle {
            idle.push(IdleConnection {
                sender,
                idle_since: Instant::now(),
            });
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ProxyError> {
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(self.map_connect_error(&err)),
            Err(_) => {
                return Err(ProxyError::new(ErrorKind::ConnectTimeout {
                    endpoint: self.addr,
                    after: timeout,
                }));
            }
        };
        // Nagle would hold small proxied writes back behind delayed ACKs.
        let _ = gatehouse_net::tune_stream(&stream);
        (self.on_connect)();
        Ok(stream)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<ProxyBody>, ProxyError> {
        let stream = self.connect_tcp().await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.map_hyper_error(err))?;
        tokio::spawn(async move {
            // Errors surface on the request that was using the connection.
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
        let stream = self.connect_tcp().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.map_hyper_error(err))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn map_connect_error(&self, err: &io::Error) -> ProxyError {
        let endpoint = self.addr;
        ProxyError::new(match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused { endpoint },
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout {
                endpoint,
                after: self.settings.connect_timeout,
            },
            _ => ErrorKind::ConnectFailed {
                endpoint,
                reason: err.to_string(),
            },
        })
    }

    /// Classifies a hyper client error: the client's body failing is the client's fault (or a
    /// size limit), anything else is the upstream's.
    fn map_hyper_error(&self, err: hyper::Error) -> ProxyError {
        let endpoint = self.addr;
        if let Some(kind) = client_body_error(&err) {
            return ProxyError::new(kind);
        }
        ProxyError::new(if err.is_parse() {
            ErrorKind::UpstreamProtocol {
                endpoint,
                reason: err.to_string(),
            }
        } else {
            ErrorKind::UpstreamReset { endpoint }
        })
    }
}

/// If the error came from reading the client's request body, says how.
fn client_body_error(err: &hyper::Error) -> Option<ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(limit) = cause.downcast_ref::<crate::limits::BodyTooLarge>() {
            return Some(ErrorKind::BodyTooLarge { limit: limit.limit });
        }
        if let Some(hyper_err) = cause.downcast_ref::<hyper::Error>() {
            // The inner error is the server side (client connection) failing mid-body.
            return Some(ErrorKind::ClientBody {
                reason: with_causes(hyper_err),
            });
        }
        source = cause.source();
    }
    if err.is_user() {
        return Some(ErrorKind::ClientBody {
            reason: err.to_string(),
        });
    }
    None
}

/// An error and its causes, "outer: inner: innermost" (the framing guard's reason is innermost).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
