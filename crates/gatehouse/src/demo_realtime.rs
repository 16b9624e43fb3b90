//! The demo's real-time upstream: a WebSocket echo (`/ws`), server-sent events (`/events`), a
//! cacheable answer (`/cached`) and a page (`/realtime`) that uses the first two from a
//! browser, so a newcomer can watch each kind of traffic pass through the gateway.

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_realtime_echo::{Body, query_param};

/// The page: opens a WebSocket and an EventSource through the gateway and shows what comes
/// back, with how long each event took from the upstream to the page.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>gatehouse: WebSocket and server-sent events</title>
<h1>WebSocket and server-sent events through gatehouse</h1>
<h2>WebSocket echo</h2><pre id="ws"></pre>
<h2>Server-sent events</h2><pre id="sse"></pre>
<p id="status">waiting for messages...</p>
<script>
const params = new URLSearchParams(location.search);
const count = Number(params.get("count") || 5);
const interval = params.get("interval_ms") || 500;
const log = (id, text) => { document.getElementById(id).textContent += text + "\n"; };
let echoes = 0, events = 0, worst = 0;
function report() {
  if (echoes === 3 && events === count) {
    document.getElementById("status").textContent =
      `done: ${echoes} echoes, ${events} events, slowest event ${worst.toFixed(1)} ms`;
  }
}
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.onopen = () => { for (let i = 0; i < 3; i++) ws.send(`hello ${i}`); };
ws.onmessage = (e) => { echoes++; log("ws", `echo: ${e.data}`); report(); };
ws.onerror = () => log("ws", "WebSocket error");
const es = new EventSource(`/events?count=${count}&interval_ms=${interval}`);
es.onmessage = (e) => {
  // The event's id is when the upstream sent it, in microseconds since the epoch.
  const delay = Date.now() - Number(e.lastEventId) / 1000;
  worst = Math.max(worst, delay);
  events++;
  log("sse", `event ${e.data}: ${delay.toFixed(1)} ms after it was sent`);
  if (events === count) es.close(); // else the browser reconnects when the stream ends
  report();
};
// ?hold_ms=N holds the page's load event for N ms with a request that takes that long: a
// headless browser that prints the page once it has loaded then shows the whole run.
const hold = Number(params.get("hold_ms") || 0);
if (hold > 0) {
  const img = document.createElement("img");
  img.hidden = true;
  img.src = `/hold?ms=${hold}`;
  document.body.appendChild(img);
}
</script>
"#;

/// Starts the upstream on an ephemeral loopback port.
pub async fn start() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the demo's real-time upstream on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let generated = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let generated = Arc::clone(&generated);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let generated = Arc::clone(&generated);
                    async move { Ok::<_, Infallible>(answer(req, &generated).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(req: Request<Incoming>, generated: &AtomicU64) -> Response<Body> {
    match req.uri().path() {
        "/hold" => {
            // Answers after ?ms=N milliseconds (at most 30 s): keeps a page loading.
            let ms = query_param(&req, "ms").unwrap_or(0).min(30_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(String::new())
        }
        "/ws" => gatehouse_realtime_echo::websocket_echo(req),
        "/events" => gatehouse_realtime_echo::events(
            query_param(&req, "count").unwrap_or(u64::MAX),
            Duration::from_millis(query_param(&req, "interval_ms").unwrap_or(1000).max(10)),
        ),
        "/cached" => {
            // Each answer the upstream really makes is numbered: a cache hit repeats a number.
            let n = generated.fetch_add(1, Ordering::Relaxed) + 1;
            let mut r = text(format!(
                "answer #{n} from the upstream; cacheable for 30 s\n"
            ));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=30"),
            );
            r
        }
        _ => {
            let mut r = text(PAGE.to_owned());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    }
}

fn text(body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
