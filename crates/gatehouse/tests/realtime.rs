//! End to end: traffic that does not end with one response. WebSocket upgrades pass through
//! (and survive reloads), server-sent events stream without being held back, and a route's
//! read timeout ends streams and tunnels that went silent.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket client through the gateway at `addr` to the test upstream's echo.
async fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    ws
}

async fn echo(ws: &mut Ws, message: Message) {
    ws.send(message.clone()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("open")
        .expect("a message");
    assert_eq!(answer, message);
}

async fn metric(gw: &Gatehouse, prefix: &str) -> Option<f64> {
    let text = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_both_ways_and_are_counted() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");

    let mut ws = ws_connect(addr).await;
    echo(&mut ws, Message::text("hello through the proxy")).await;
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echo(&mut ws, Message::binary(big)).await;
    for i in 0..50 {
        echo(&mut ws, Message::text(format!("message {i}"))).await;
    }
    assert_eq!(metric(&gw, "gatehouse_tunnels_open").await, Some(1.0));
    assert_eq!(
        metric(
            &gw,
            "gatehouse_upgrades_total{route=\"route0\",cluster=\"c\"}"
        )
        .await,
        Some(1.0)
    );

    // The client closes; the close handshake completes through the tunnel.
    ws.close(None).await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(rest, Ok(None) | Ok(Some(Ok(Message::Close(_))))),
        "{rest:?}"
    );
    drop(ws);
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&gw, "gatehouse_tunnels_open").await == Some(0.0)
        })
        .await,
        "the tunnel is counted as closed"
    );
    // Plain requests still work on the same gateway and upstream.
    assert_eq!(get(&h1(), addr, "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_an_ordinary_response_on_a_connection_that_stays_usable() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr("main"))
        .await
        .unwrap();
    // The echo path does not switch protocols: the upstream answers 200, and the headers that
    // asked for the upgrade reached it (hop by hop, so asked again by the proxy).
    let request =
        "GET /status/200 HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("\"upgrade\":\"websocket\""), "{first}");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// Reads one response with a content-length body.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_websockets_stay_open_across_reloads() {
    gatehouse_net::raise_open_file_limit().expect("raise the open file limit");
    let up = TestUpstream::start("up").await;
    let other = TestUpstream::start("other").await;
    let base = to_cluster(&[&up]);
    let gw = Gatehouse::start(bin(), &config(&base), &[]).await;
    let addr = gw.addr("main");

    let mut sockets = Vec::new();
    for _ in 0..1000 {
        sockets.push(ws_connect(addr).await);
    }
    assert_eq!(metric(&gw, "gatehouse_tunnels_open").await, Some(1000.0));
    // Two reloads that add and then change another route and cluster (the WebSocket route is
    // unchanged), and one that is refused.
    let with_other = |path: &str| {
        format!(
            "[[routes]]\npath_prefix = \"{path}\"\ncluster = \"o\"\n{base}[[clusters]]\nname = \"o\"\nendpoints = {}\n",
            endpoints(&[&other])
        )
    };
    for (round, next) in [
        config(&with_other("/other")),
        config(&with_other("/elsewhere")),
        "[[listeners]\nbroken".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        gw.write_config(&next);
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        if round == 0 {
            assert_eq!(get(&h1(), addr, "/other", &[]).await.upstream(), "other");
        }
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        echo(ws, Message::text(format!("still here {i}"))).await;
    }
    assert_eq!(metric(&gw, "gatehouse_tunnels_open").await, Some(1000.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_as_they_are_sent() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr("main"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /events?count=8&interval_ms=150 HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut seen = String::new();
    let mut events = 0;
    let mut worst = Duration::ZERO;
    let mut chunk = [0u8; 4096];
    while events < 8 {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("events keep coming")
            .unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        let arrived = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
        for line in text.lines() {
            if let Some(sent) = line.strip_prefix("id: ") {
                let sent: u128 = sent.trim().parse().unwrap();
                worst = worst.max(Duration::from_micros((arrived - sent) as u64));
                events += 1;
            }
        }
        seen.push_str(&text);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    // Each event reaches the client as soon as the upstream sends it, not with the next one.
    assert!(worst < Duration::from_millis(50), "an event took {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_timeout_ends_silent_streams_and_tunnels_but_not_busy_ones() {
    let up = TestUpstream::start("up").await;
    let rest = format!(
        "[[routes]]\ncluster = \"c\"\nread_timeout = \"400ms\"\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(&[&up])
    );
    let gw = Gatehouse::start(bin(), &config(&rest), &[]).await;
    let addr = gw.addr("main");

    // Events every 100 ms keep the stream alive well past the timeout.
    let started = Instant::now();
    let busy = get(&h1(), addr, "/events?count=12&interval_ms=100", &[]).await;
    assert_eq!(busy.text().matches("data: ").count(), 12);
    assert!(started.elapsed() >= Duration::from_millis(1100));

    // Two seconds of silence after the first event: the gateway gives up on the upstream and
    // ends the response short of its framing, so the client sees it incomplete.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /events?count=2&interval_ms=2000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "the silent stream was cut");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("data: 0"), "{text}");
    assert!(!text.contains("data: 1"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "no clean end of the chunked body: {text}"
    );
    assert!(took < Duration::from_millis(1500), "cut after {took:?}");

    // A silent WebSocket is closed too; an active one stays.
    let mut quiet = ws_connect(addr).await;
    let mut active = ws_connect(addr).await;
    for i in 0..12 {
        echo(&mut active, Message::text(format!("ping {i}"))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), quiet.next()).await;
    assert!(
        matches!(
            closed,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_))))
        ),
        "the quiet tunnel was closed: {closed:?}"
    );
    echo(&mut active, Message::text("still open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_a_cached_route_are_not_cached_or_coalesced() {
    let up = TestUpstream::start("up").await;
    let rest = format!(
        "[[routes]]\ncluster = \"c\"\n[routes.cache]\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(&[&up])
    );
    let gw = Gatehouse::start(bin(), &config(&rest), &[]).await;
    let addr = gw.addr("main");
    // Opened together: coalescing them would hand one upstream connection to both.
    let (mut a, mut b) = tokio::join!(ws_connect(addr), ws_connect(addr));
    echo(&mut a, Message::text("to a")).await;
    echo(&mut b, Message::text("to b")).await;
    let mut c = ws_connect(addr).await;
    echo(&mut c, Message::text("to c")).await;
    assert_eq!(metric(&gw, "gatehouse_tunnels_open").await, Some(3.0));
}
