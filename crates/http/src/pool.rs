//! Upstream connections, pooled per endpoint.
//!
//! HTTP/1.1 ([`crate::h1_client`], driven inline by each request): a stack of idle keep-alive
//! connections (most recently used first, so a few warm connections carry the load and the rest
//! age out). A connection returns to the stack once its response body has been read to the end.
//! A pooled connection the upstream has closed is detected before use and skipped; if the
//! upstream closes it just as a request without a body is sent, the same bytes go out again on
//! a fresh connection (for idempotent methods, or when the write itself failed).
//!
//! HTTP/2 (hyper's client): one multiplexed connection per endpoint, re-established when it
//! closes.

use crate::body::{BoxError, ProxyBody};
use crate::h1_client::{
    self, ConnectionHome, ExchangeError, H1Connection, RequestFraming, UpstreamHead,
};
use crate::stream_io::{self, ConnRead, ConnWrite};
use crate::upgrade::UpgradeRequested;
use gatehouse_config::UpstreamProtocol;
use gatehouse_core::{ErrorKind, ProxyError};
use http_body_util::BodyExt;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How the pool reaches one endpoint; a change of any of these makes a new pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub protocol: UpstreamProtocol,
    /// Covers the TCP connect and, with TLS, the handshake.
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
    /// None: cleartext.
    pub tls: Option<crate::tls_edge::UpstreamTls>,
}

/// Counts connections opened (for metrics), without this module knowing the metrics registry.
pub type OnConnect = Box<dyn Fn() + Send + Sync>;

/// Connections to one endpoint.
pub struct EndpointPool {
    addr: SocketAddr,
    settings: PoolSettings,
    /// Most recently used at the back (taken first), oldest at the front (expired first).
    idle: Mutex<VecDeque<H1Connection>>,
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Held while an HTTP/2 connection is being established, so concurrent first requests share
    /// one connection instead of each opening their own.
    h2_connecting: tokio::sync::Mutex<()>,
    on_connect: OnConnect,
}

/// A try's deadline passed before its response head arrived.
#[derive(Debug)]
pub struct DeadlinePassed;

impl EndpointPool {
    pub fn new(addr: SocketAddr, settings: PoolSettings, on_connect: OnConnect) -> Arc<Self> {
        Arc::new(Self {
            addr,
            settings,
            idle: Mutex::new(VecDeque::new()),
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

    /// Sends a request and returns the response head, or [`DeadlinePassed`] when `deadline`
    /// comes first; the body streams from the connection. The head is borrowed, so a failed try
    /// leaves it for the next one. `arrived` is when the request arrived (it stands in for the
    /// clock; see `H1Connection::last_used`).
    pub async fn send(
        self: &Arc<Self>,
        head: UpstreamHead<'_>,
        body: ProxyBody,
        arrived: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Result<http::Response<ProxyBody>, ProxyError>, DeadlinePassed> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => self.send_h1(head, body, arrived, deadline).await,
            UpstreamProtocol::H2 => {
                let mut request = http::Request::from_parts(head.parts.clone(), body);
                head.fields.insert_into(request.headers_mut());
                // Boxed: hyper's client future is large, and HTTP/1.1 requests should not carry
                // its space in theirs.
                let sent = tokio::time::timeout_at(deadline, Box::pin(self.send_h2(request)));
                Ok(sent.await.map_err(|_| DeadlinePassed)?.map(|response| {
                    response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed())
                }))
            }
        }
    }

    /// HTTP/1.1: an idle connection (its own timer keeps the deadline, see
    /// [`h1_client::exchange`]) or a new one.
    async fn send_h1(
        self: &Arc<Self>,
        head: UpstreamHead<'_>,
        body: ProxyBody,
        arrived: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Result<http::Response<ProxyBody>, ProxyError>, DeadlinePassed> {
        let parts = head.parts;
        let framing = h1_client::request_framing(&parts.method, &body);
        // With no body to stream, the head bytes can be sent again on another connection.
        let replayable = matches!(framing, RequestFraming::None | RequestFraming::Length(0));
        let mut body = Some(body);
        let mut use_idle = true;
        loop {
            let pooled = if use_idle {
                self.checkout_idle(arrived)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut connection = match pooled {
                Some(connection) => connection,
                // Boxed: connecting (with TLS, a handshake) makes a large future, and most
                // requests find an idle connection.
                None => {
                    let connect = tokio::time::timeout_at(deadline, Box::pin(self.connect_h1()));
                    match connect.await.map_err(|_| DeadlinePassed)? {
                        Ok(halves) => H1Connection::new(halves, arrived),
                        Err(error) => return Ok(Err(error)),
                    }
                }
            };
            connection.last_used = arrived;
            connection.encode_head(head, framing);
            let send_body = if replayable { None } else { body.take() };
            let result = h1_client::exchange(
                connection,
                send_body,
                framing,
                &parts.method,
                parts.extensions.get::<UpgradeRequested>().is_some(),
                Arc::clone(self),
                deadline,
            )
            .await;
            match result {
                Ok(response) => return Ok(Ok(response)),
                Err((ExchangeError::DeadlinePassed, _closed)) => return Err(DeadlinePassed),
                Err((error, _closed)) => {
                    let stale = reused
                        && replayable
                        && match error {
                            ExchangeError::Write(_) => true,
                            ExchangeError::ClosedBeforeResponse => parts.method.is_idempotent(),
                            _ => false,
                        };
                    if stale {
                        use_idle = false;
                        continue;
                    }
                    return Ok(Err(self.map_exchange_error(error)));
                }
            }
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        request: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, ProxyError> {
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

    /// The most recently used idle connection that has not expired by `now`.
    fn checkout_idle(&self, now: Instant) -> Option<H1Connection> {
        let mut idle = self.idle.lock();
        while let Some(mut connection) = idle.pop_back() {
            if now.saturating_duration_since(connection.last_used) < self.settings.idle_timeout
                && !connection.is_stale()
            {
                return Some(connection);
            }
            // Expired or closed by the upstream: dropping it closes our side.
        }
        None
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

    /// A new HTTP/1 connection, TLS when the cluster says so.
    async fn connect_h1(&self) -> Result<(ConnRead, ConnWrite), ProxyError> {
        let started = tokio::time::Instant::now();
        let tcp = self.connect_tcp().await?;
        Ok(match &self.settings.tls {
            None => stream_io::split_tcp(tcp),
            Some(tls) => stream_io::split_client_tls(self.handshake(tls, tcp, started).await?),
        })
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
        let started = tokio::time::Instant::now();
        let tcp = self.connect_tcp().await?;
        let builder = http2::Builder::new(TokioExecutor::new());
        // Two handshakes, not one over a boxed stream: the cleartext path keeps its plain type.
        let sender = match &self.settings.tls {
            None => {
                let (sender, connection) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|err| self.map_hyper_error(err))?;
                tokio::spawn(connection);
                sender
            }
            Some(tls) => {
                let stream = self.handshake(tls, tcp, started).await?;
                let (sender, connection) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|err| self.map_hyper_error(err))?;
                tokio::spawn(connection);
                sender
            }
        };
        Ok(sender)
    }

    /// The TLS handshake over a fresh connection, within what is left of the connect timeout.
    async fn handshake(
        &self,
        tls: &crate::tls_edge::UpstreamTls,
        tcp: TcpStream,
        started: tokio::time::Instant,
    ) -> Result<stream_io::ClientTls, ProxyError> {
        let endpoint = self.addr;
        let timeout = self.settings.connect_timeout;
        let handshake = tls.connector.connect(tls.name_for(endpoint), tcp);
        match tokio::time::timeout_at(started + timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(ProxyError::new(ErrorKind::UpstreamTls {
                endpoint,
                reason: err.to_string(),
            })),
            Err(_) => Err(ProxyError::new(ErrorKind::ConnectTimeout {
                endpoint,
                after: timeout,
            })),
        }
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

    fn map_exchange_error(&self, error: ExchangeError) -> ProxyError {
        let endpoint = self.addr;
        ProxyError::new(match error {
            ExchangeError::Write(_)
            | ExchangeError::ClosedBeforeResponse
            | ExchangeError::Read(_) => ErrorKind::UpstreamReset { endpoint },
            ExchangeError::Protocol(reason) => ErrorKind::UpstreamProtocol { endpoint, reason },
            // `send` reports it as `DeadlinePassed`, and the caller names the limit that ran out.
            ExchangeError::DeadlinePassed => ErrorKind::UpstreamTimeout {
                endpoint,
                after: Duration::ZERO,
            },
            ExchangeError::ClientBody(err) => {
                crate::limits::broken_limit(&*err).unwrap_or_else(|| ErrorKind::ClientBody {
                    reason: with_causes(&*err),
                })
            }
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

impl ConnectionHome for EndpointPool {
    fn put_idle(&self, connection: H1Connection) {
        let mut idle = self.idle.lock();
        // Under steady load the oldest connections are never taken; close them once expired
        // rather than holding upstream sockets past idle_timeout. (`connection` was stamped
        // recently, so its stamp stands in for the clock.)
        while idle.front().is_some_and(|c| {
            connection.last_used.saturating_duration_since(c.last_used)
                >= self.settings.idle_timeout
        }) {
            idle.pop_front();
        }
        if idle.len() < self.settings.max_idle {
            idle.push_back(connection);
        }
    }
}

/// If the error came from reading the client's request body, says how.
fn client_body_error(err: &hyper::Error) -> Option<ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(kind) = crate::limits::broken_limit(cause) {
            return Some(kind);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::ProxyFields;

    async fn connection(listener: &tokio::net::TcpListener) -> H1Connection {
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        H1Connection::new(stream_io::split_tcp(stream), Instant::now())
    }

    #[tokio::test]
    async fn expired_idle_connections_are_closed_when_others_return() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = EndpointPool::new(
            listener.local_addr().unwrap(),
            PoolSettings {
                protocol: UpstreamProtocol::Http1,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
                max_idle: 8,
                tls: None,
            },
            Box::new(|| {}),
        );
        let mut old = connection(&listener).await;
        old.last_used -= Duration::from_secs(120);
        pool.put_idle(old);
        pool.put_idle(connection(&listener).await);
        pool.put_idle(connection(&listener).await);
        assert_eq!(
            pool.idle_count(),
            2,
            "the expired one is gone, the fresh ones stay"
        );
        assert!(pool.checkout_idle(Instant::now()).is_some());
    }

    /// An upstream that answers each request on a connection after `delay`.
    async fn slow_upstream(delay: Duration) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {
                        tokio::time::sleep(delay).await;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn reused_deadline_timers_keep_each_tries_own_deadline() {
        let settings = PoolSettings {
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            max_idle: 8,
            tls: None,
        };
        let pool = EndpointPool::new(
            slow_upstream(Duration::from_millis(200)).await,
            settings,
            Box::new(|| {}),
        );
        let (parts, ()) = http::Request::new(()).into_parts();
        let fields = ProxyFields::default();
        let head = UpstreamHead {
            parts: &parts,
            fields: &fields,
        };
        // Sends with a deadline `after` from now; a response's (empty) body is read to its end,
        // which puts the connection, with its timer, back in the pool.
        let send = async |after: Duration| {
            let deadline = tokio::time::Instant::now() + after;
            let sent = pool
                .send(head, crate::body::empty(), Instant::now(), deadline)
                .await;
            match sent {
                Ok(Ok(response)) => {
                    response.into_body().collect().await.unwrap();
                    Some(pool.idle_count())
                }
                Err(DeadlinePassed) => None,
                Ok(Err(error)) => panic!("{error}"),
            }
        };
        // Each answer takes 200 ms. The first try's timer stays with its connection, still armed
        // for 250 ms after that try started; the second try, on that connection, outlasts that
        // moment on the same timer moved later.
        assert_eq!(send(Duration::from_millis(250)).await, Some(1));
        assert_eq!(
            send(Duration::from_secs(2)).await,
            Some(1),
            "a later deadline does not fire at the earlier one"
        );
        // The timer, armed for two seconds, is moved earlier: it fires there, before the
        // answer (which would have made this a success).
        assert_eq!(
            send(Duration::from_millis(50)).await,
            None,
            "an earlier deadline than the timer had fires"
        );
        assert_eq!(
            pool.idle_count(),
            0,
            "a timed-out exchange closes its connection"
        );
        assert_eq!(send(Duration::from_secs(2)).await, Some(1));
    }
}
