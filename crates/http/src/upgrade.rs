//! Upgraded connections (WebSocket, and any other HTTP/1.1 `Upgrade`), passed through as bytes.
//!
//! The HTTP/1 server marks a request that asks to switch protocols ([`UpgradeRequested`]); the
//! proxy forwards it with `Connection: upgrade` and its `Upgrade` header. When the upstream
//! answers `101 Switching Protocols`, the upstream client does not pool the connection: it hands
//! it over in the response ([`UpstreamTunnel`]). The server writes the 101 and then [`splice`]
//! copies bytes both ways between the two connections until both directions have ended, one
//! fails, or neither has moved a byte for the route's read timeout.
//!
//! Frames are not parsed: a proxy that forwards bytes cannot get WebSocket framing wrong, and the
//! endpoints check it themselves. The tunnel lives in the client connection's task and holds no
//! reference to the config snapshot, so reloads leave it alone.

use crate::body::ProxyBody;
use crate::stream_io::{ConnRead, ConnWrite};
use bytes::BytesMut;
use http::HeaderValue;
use http::header::{self, HeaderMap};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Bytes read at a time in each direction (into a per-thread buffer, see [`pump`]).
const TUNNEL_BUFFER: usize = 16 * 1024;
/// How long the other direction may stay silent once one side has closed its own.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(5);

/// Request extension: this HTTP/1.1 request asks to switch to `protocol` (e.g. `websocket`).
#[derive(Clone, Debug)]
pub struct UpgradeRequested {
    pub protocol: HeaderValue,
}

/// The `Upgrade` value of a request that asks for an upgrade: `Connection` lists `upgrade` and
/// an `Upgrade` header names the protocol. `h2c` is not offered (HTTP/2 over cleartext is
/// spoken with prior knowledge), so such a request is served as plain HTTP/1.1.
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(header::UPGRADE)?;
    if protocol.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return None;
    }
    let listed = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    listed.then(|| protocol.clone())
}

/// Request extension: the request came as an HTTP/2 extended CONNECT (RFC 8441), served as the
/// HTTP/1.1 upgrade it stands for; its answer is a 200 whose body and request body carry the
/// tunnel ([`h2_tunnel_response`]).
#[derive(Clone, Copy, Debug)]
pub struct ExtendedConnect;

/// One side of a tunnel: a connection's halves and the bytes already read from it that belong
/// to the new protocol (a client may send its first frame right behind the request head).
pub struct TunnelEnd {
    pub read: ConnRead,
    pub write: ConnWrite,
    pub buffered: BytesMut,
}

/// Response extension on a 101 from an upstream: its side of the tunnel, taken once.
/// (Extensions must be `Clone`; the connection itself is not, hence the shared slot.)
#[derive(Clone)]
pub struct UpstreamTunnel(Arc<parking_lot::Mutex<Option<TunnelEnd>>>);

impl UpstreamTunnel {
    pub fn new(end: TunnelEnd) -> Self {
        Self(Arc::new(parking_lot::Mutex::new(Some(end))))
    }

    pub fn take(&self) -> Option<TunnelEnd> {
        self.0.lock().take()
    }
}

/// Response extension the proxy sets on a 101: how long the tunnel may stay silent.
#[derive(Clone, Copy, Debug)]
pub struct TunnelIdle(pub Duration);

/// Both ends of an upgraded connection, ready to run ([`Tunnel::run`]), with whatever must live
/// as long as it does (the response body that counts it, the connection's limit permits).
pub struct Tunnel {
    client: TunnelEnd,
    upstream: TunnelEnd,
    idle: Duration,
    kept: Vec<Box<dyn std::any::Any + Send>>,
}

impl Tunnel {
    pub fn new(client: TunnelEnd, upstream: TunnelEnd, idle: Duration) -> Self {
        Self {
            client,
            upstream,
            idle,
            kept: Vec::new(),
        }
    }

    /// Keeps `item` alive until the tunnel ends.
    pub fn keep(&mut self, item: impl std::any::Any + Send) {
        self.kept.push(Box::new(item));
    }

    /// Carries bytes both ways until the tunnel ends (see [`splice`]).
    pub async fn run(self) -> TunnelEnded {
        let ended = splice(self.client, self.upstream, self.idle).await;
        tracing::debug!(?ended, "upgraded connection closed");
        drop(self.kept);
        ended
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnded {
    /// Both sides closed their direction.
    Closed,
    /// A read or write failed (a reset, usually).
    Failed,
    /// No byte moved either way for the idle timeout.
    Idle,
}

/// Copies bytes both ways between `client` and `upstream` until both directions have ended (a
/// side that closes its sending direction has that close passed on, and the other direction
/// keeps going), either fails, or neither moves a byte for `idle`. Once one direction has
/// ended, the other may stay silent for at most `HALF_CLOSED_GRACE`: a peer that left
/// should not hold the tunnel open for a whole idle period (HAProxy's `timeout client-fin`).
pub async fn splice(client: TunnelEnd, upstream: TunnelEnd, idle: Duration) -> TunnelEnded {
    let activity = AtomicU64::new(0);
    let up = pump(client.read, client.buffered, upstream.write, &activity);
    let down = pump(upstream.read, upstream.buffered, client.write, &activity);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let allowed = if up_done || down_done {
            idle.min(HALF_CLOSED_GRACE)
        } else {
            idle
        };
        tokio::select! {
            ended = &mut up, if !up_done => match ended {
                Ok(()) => up_done = true,
                Err(_) => return TunnelEnded::Failed,
            },
            ended = &mut down, if !down_done => match ended {
                Ok(()) => down_done = true,
                Err(_) => return TunnelEnded::Failed,
            },
            () = silence(&activity, allowed) => return TunnelEnded::Idle,
        }
    }
    TunnelEnded::Closed
}

/// Returns once `activity` has not changed for a whole `idle` period. A period starts at the
/// last check, not at the last byte, so a silent tunnel ends between one and two periods after
/// its last byte: no clock read or timer update per byte.
async fn silence(activity: &AtomicU64, idle: Duration) {
    loop {
        let seen = activity.load(Ordering::Relaxed);
        tokio::time::sleep(idle).await;
        if activity.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}

/// Copies one direction: first the bytes already buffered, then whatever arrives, until the
/// reader ends (then the writer's direction is shut down too) or either side fails.
///
/// An idle tunnel holds no buffer: each read goes into a per-thread scratch buffer within one
/// poll, and only the bytes read are copied out to be written. Most WebSockets are idle most of
/// the time, so this is what keeps many open ones cheap.
async fn pump(
    mut read: ConnRead,
    buffered: BytesMut,
    mut write: ConnWrite,
    activity: &AtomicU64,
) -> io::Result<()> {
    if !buffered.is_empty() {
        write.write_all(&buffered).await?;
        write.flush().await?;
    }
    drop(buffered);
    loop {
        let data = std::future::poll_fn(|cx| poll_read_owned(&mut read, cx)).await?;
        if data.is_empty() {
            // Pass the half-close on: the other side may still be sending.
            let _ = write.shutdown().await;
            return Ok(());
        }
        activity.fetch_add(1, Ordering::Relaxed);
        write.write_all(&data).await?;
        write.flush().await?;
    }
}

/// Reads what is ready into the thread's scratch buffer and returns a copy of it (empty at the
/// end of the stream).
fn poll_read_owned(read: &mut ConnRead, cx: &mut Context<'_>) -> Poll<io::Result<Vec<u8>>> {
    thread_local! {
        static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; TUNNEL_BUFFER].into_boxed_slice());
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        match Pin::new(&mut *read).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().to_vec())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The answer to an HTTP/2 extended CONNECT whose upgrade the upstream accepted (`switched`: the
/// 101 carrying the upstream connection): a 200 with the upstream's WebSocket headers but not
/// its Upgrade/Connection/Accept (the HTTP/1.1 handshake stays on that hop). Its body is what the
/// upstream sends; the client's request body (its DATA frames) is written to the upstream as
/// the response body is polled, all inside the HTTP/2 connection's task.
pub fn h2_tunnel_response(
    switched: http::Response<ProxyBody>,
    client_body: ProxyBody,
    idle: Duration,
) -> http::Response<ProxyBody> {
    let (mut parts, kept) = switched.into_parts();
    let Some(upstream) = parts
        .extensions
        .get::<UpstreamTunnel>()
        .and_then(UpstreamTunnel::take)
    else {
        let mut refused = http::Response::new(crate::body::full("upgrade without a connection\n"));
        *refused.status_mut() = http::StatusCode::BAD_GATEWAY;
        return refused;
    };
    parts.status = http::StatusCode::OK;
    parts.headers.remove(header::UPGRADE);
    parts.headers.remove(header::CONNECTION);
    parts.headers.remove("sec-websocket-accept");
    parts.extensions = http::Extensions::new();
    let TunnelEnd {
        read,
        write,
        buffered,
    } = upstream;
    let body = TunnelBody {
        read: Some(read),
        pending: (!buffered.is_empty()).then(|| buffered.freeze()),
        upload: Some(Box::pin(upload(client_body, write))),
        idle: crate::idle::IdleWatch::new(idle),
        _kept: kept,
    };
    http::Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
}

type Upload = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Writes the client's DATA to the upstream; ends the upstream's sending direction when the
/// client ends its stream.
async fn upload(mut body: ProxyBody, mut write: ConnWrite) {
    use http_body_util::BodyExt;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data()
            && (write.write_all(&data).await.is_err() || write.flush().await.is_err())
        {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// The upstream's side of an HTTP/2 tunnel as a response body (see [`h2_tunnel_response`]).
struct TunnelBody {
    /// None once the upstream ended.
    read: Option<ConnRead>,
    /// Bytes that came right behind the upstream's 101.
    pending: Option<bytes::Bytes>,
    /// The client's side going up; None once done.
    upload: Option<Upload>,
    idle: crate::idle::IdleWatch,
    /// The 101's body: it holds the endpoint's in-flight count and the open-tunnel gauge.
    _kept: ProxyBody,
}

impl http_body::Body for TunnelBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(upload) = this.upload.as_mut()
            && upload.as_mut().poll(cx).is_ready()
        {
            this.upload = None;
        }
        if let Some(data) = this.pending.take() {
            this.idle.moved();
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        let Some(read) = this.read.as_mut() else {
            return Poll::Ready(None);
        };
        match poll_read_owned(read, cx) {
            Poll::Ready(Ok(data)) if data.is_empty() => {
                this.read = None;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(data)) => {
                this.idle.moved();
                Poll::Ready(Some(Ok(http_body::Frame::data(data.into()))))
            }
            Poll::Ready(Err(e)) => {
                this.read = None;
                Poll::Ready(Some(Err(Box::new(crate::body::BodyError::upstream(
                    e.to_string(),
                )))))
            }
            Poll::Pending if this.idle.poll_expired(cx) => {
                this.read = None;
                Poll::Ready(Some(Err(crate::idle::upstream_silent(&this.idle))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.pending.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn an_upgrade_needs_both_headers_and_is_never_h2c() {
        let ws = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested(&ws).unwrap(), "websocket");
        assert!(requested(&map(&[("upgrade", "websocket")])).is_none());
        assert!(requested(&map(&[("connection", "upgrade")])).is_none());
        let h2c = map(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(requested(&h2c).is_none());
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn end(stream: tokio::net::TcpStream, buffered: &[u8]) -> TunnelEnd {
        let (read, write) = crate::stream_io::split_tcp(stream);
        TunnelEnd {
            read,
            write,
            buffered: BytesMut::from(buffered),
        }
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_buffered_first_and_half_closes_pass_on() {
        // client_app <-> (client_side | upstream_side) <-> upstream_app
        let (mut client_app, client_side) = pair().await;
        let (upstream_side, mut upstream_app) = pair().await;
        let tunnel = tokio::spawn(splice(
            end(client_side, b"early "),
            end(upstream_side, b"hello "),
            Duration::from_secs(5),
        ));
        client_app.write_all(b"frame").await.unwrap();
        let mut got = [0u8; 11];
        upstream_app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early frame");
        upstream_app.write_all(b"world").await.unwrap();
        let mut got = [0u8; 11];
        client_app.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        // The client stops sending; the upstream sees the end and can still answer.
        client_app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        upstream_app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        upstream_app.write_all(b"bye").await.unwrap();
        upstream_app.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_app.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
        assert_eq!(tunnel.await.unwrap(), TunnelEnded::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_ends_after_its_idle_time() {
        let (_client_app, client_side) = pair().await;
        let (upstream_side, _upstream_app) = pair().await;
        let started = tokio::time::Instant::now();
        let ended = splice(
            end(client_side, b""),
            end(upstream_side, b""),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(ended, TunnelEnded::Idle);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(30) && took < Duration::from_secs(61),
            "{took:?}"
        );
    }
}
