//! Upstream handlers for long-lived traffic, for the demo's real-time upstream and the tests'
//! upstream (one implementation for both; neither ships the other's code):
//!
//! - [`websocket_echo`]: answers a WebSocket handshake with 101 and echoes every text and binary
//!   message on the upgraded connection (tungstenite answers Close and Ping itself);
//! - [`events`]: a server-sent event stream whose events carry their send time as `id:`, so a
//!   client can tell how long each took to arrive.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// The body type of the answers here (they never fail).
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Answers a WebSocket handshake with 101 and echoes messages on the upgraded connection; a
/// request without `Sec-WebSocket-Key` gets a 400. The connection must be served with upgrades
/// enabled (`serve_connection_with_upgrades`).
pub fn websocket_echo<B>(mut req: Request<B>) -> Response<Body> {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full(
            "this is a WebSocket echo: connect with a WebSocket client\n",
        ));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        // A Close is answered by tungstenite itself; reading on sends that answer and ends.
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = r.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    r
}

/// `count` server-sent events (`data: 0`, `data: 1`, ...), `interval` apart, one frame each, with
/// `id:` the time each was sent in microseconds since the Unix epoch.
pub fn events(count: u64, interval: Duration) -> Response<Body> {
    let stream = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent == count {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(interval).await;
        }
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let event = format!("id: {micros}\ndata: {sent}\n\n");
        Some((Ok(Frame::data(Bytes::from(event))), sent + 1))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// A numeric query parameter (`?count=5`).
pub fn query_param<B>(req: &Request<B>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes())).boxed()
}
