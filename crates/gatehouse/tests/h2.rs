//! End to end: gatehouse's own HTTP/2 server (h2c) against real clients (hyper's) and a raw
//! frame-level client that sends what real clients never would.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use gatehouse_http::h2::hpack::{Decoder, Name};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113 §6), spelled out here rather than taken from the code
// under test.
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

const NO_ERROR: u32 = 0;
const PROTOCOL_ERROR: u32 = 1;
const FRAME_SIZE_ERROR: u32 = 6;
const FLOW_CONTROL_ERROR: u32 = 3;
const REFUSED_STREAM: u32 = 7;
const CANCEL: u32 = 8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an N-bit prefix.
fn hpack_int(out: &mut Vec<u8>, value: usize, prefix: u8, pattern: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literals without indexing, names sent as given (even if invalid).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, name.len(), 7, 0);
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn get_fields(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ]
}

#[derive(Debug)]
struct RawFrame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Bytes,
    /// `:status`, for a HEADERS frame that carried one.
    status: Option<u16>,
}

/// A frame-level HTTP/2 client.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Raw {
    /// Connects and sends the preface and an empty SETTINGS frame.
    async fn connect(addr: SocketAddr) -> Self {
        let mut raw = Self::connect_bare(addr).await;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        raw.send(&hello).await;
        raw
    }

    async fn connect_bare(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        Self {
            tcp,
            buf: BytesMut::new(),
            decoder: Decoder::new(4096),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    async fn request(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(&frame(HEADERS, flags, stream, &block(fields)))
            .await;
    }

    /// The next frame, or None when the server closed the connection.
    async fn frame(&mut self) -> Option<RawFrame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head = self.buf.split_to(9);
                    let payload = self.buf.split_to(len).freeze();
                    let mut frame = RawFrame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
                        payload,
                        status: None,
                    };
                    if frame.kind == HEADERS {
                        // Every block goes through one decoder, keeping the HPACK state in step
                        // (heads this small never need CONTINUATION).
                        let mut status = None;
                        self.decoder
                            .decode(&frame.payload, usize::MAX, |f| {
                                if f.name == Name::Status {
                                    status = std::str::from_utf8(&f.value)
                                        .ok()
                                        .and_then(|s| s.parse().ok());
                                }
                            })
                            .expect("response header block decodes");
                        frame.status = status;
                    }
                    return Some(frame);
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.tcp.read_buf(&mut self.buf))
                    .await
                    .expect("no frame within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skips frames until one matches.
    async fn until(&mut self, what: &str, pred: impl Fn(&RawFrame) -> bool) -> RawFrame {
        loop {
            match self.frame().await {
                Some(f) if pred(&f) => return f,
                Some(_) => {}
                None => panic!("connection closed while waiting for {what}"),
            }
        }
    }

    /// Waits for GOAWAY: (last stream id, error code).
    async fn goaway(&mut self) -> (u32, u32) {
        let f = self.until("GOAWAY", |f| f.kind == GOAWAY).await;
        let p = &f.payload;
        (
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        )
    }

    /// Waits for RST_STREAM on `stream`: its error code.
    async fn reset(&mut self, stream: u32) -> u32 {
        let f = self
            .until("RST_STREAM", |f| f.kind == RST_STREAM && f.stream == stream)
            .await;
        u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]])
    }

    /// Waits for the response HEADERS on `stream` and returns its status.
    async fn status(&mut self, stream: u32) -> u16 {
        loop {
            let Some(f) = self.frame().await else {
                panic!("connection closed while waiting for a response on stream {stream}");
            };
            if f.kind == RST_STREAM && f.stream == stream {
                panic!("stream {stream} reset: {:?}", f.payload);
            }
            if f.kind == HEADERS && f.stream == stream {
                return f.status.expect("response without :status");
            }
        }
    }

    /// Reads a whole response on `stream`: status and body.
    async fn response(&mut self, stream: u32) -> (u16, Vec<u8>) {
        let status = self.status(stream).await;
        let mut body = Vec::new();
        loop {
            let f = self
                .until("DATA", |f| {
                    f.stream == stream && (f.kind == DATA || f.kind == HEADERS)
                })
                .await;
            if f.kind == DATA {
                body.extend_from_slice(&f.payload);
            }
            if f.flags & END_STREAM != 0 {
                return (status, body);
            }
        }
    }
}

fn h2_only_config(rest: &str) -> String {
    format!(
        "[server]\ndrain_timeout = \"10s\"\n[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\nprotocols = [\"h2c\"]\n{rest}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_one_connection() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let client = h2();
    // The first request brings the server's SETTINGS (max concurrent streams) to the client.
    assert_eq!(
        get(&client, addr, "/warm", &[]).await.status,
        StatusCode::OK
    );
    let answers = futures_util::future::join_all((0..400).map(|i| {
        let client = client.clone();
        async move { get(&client, addr, &format!("/n/{i}"), &[]).await }
    }))
    .await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.json()["path"], format!("/n/{i}"));
        assert_eq!(answer.json()["version"], "HTTP/1.1");
    }

    // Past the announced limit, a raw client's extra stream is refused.
    up.set_delay(Duration::from_secs(3));
    let mut raw = Raw::connect(addr).await;
    for i in 0..257u32 {
        raw.request(1 + 2 * i, &get_fields("/slow"), true).await;
    }
    assert_eq!(raw.reset(513).await, REFUSED_STREAM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mebibytes_each_way_in_bounded_memory() {
    const TOTAL: u64 = 64 << 20;
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>();
    let empty = || {
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed()
    };
    // Warm up so the baseline includes the allocator's steady state.
    let warm = client
        .request(
            Request::get(format!("http://{addr}/bytes/4194304"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(count_bytes(warm.into_body(), None).await, 4 << 20);
    let before = gw.rss_kib();

    let response = client
        .request(
            Request::get(format!("http://{addr}/bytes/{TOTAL}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut peak = before;
    let received = count_bytes(response.into_body(), Some((&gw, &mut peak))).await;
    assert_eq!(received, TOTAL);

    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let stream = futures_util::stream::iter(
        (0..TOTAL / chunk.len() as u64)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let response = client
        .request(
            Request::post(format!("http://{addr}/upload"))
                .body(StreamBody::new(stream).boxed())
                .unwrap(),
        )
        .await
        .unwrap();
    let uploaded = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(uploaded, TOTAL.to_string());
    peak = peak.max(gw.rss_kib());
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("RSS before {before} KiB, peak {peak} KiB");
    assert!(
        growth_mib <= 16,
        "RSS grew {growth_mib} MiB while streaming 128 MiB over h2c (before {before} KiB, peak {peak} KiB)"
    );
}

async fn count_bytes(
    mut body: hyper::body::Incoming,
    mut rss: Option<(&Gatehouse, &mut u64)>,
) -> u64 {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
            if received % (8 << 20) < data.len() as u64
                && let Some((gw, peak)) = rss.as_mut()
            {
                **peak = (**peak).max(gw.rss_kib());
            }
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_end_the_body() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    // hyper's client: data, then trailers.
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::data(Bytes::from_static(b" world"))),
        Ok(Frame::trailers(trailers)),
    ]);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<StreamBody<_>>();
    let response = client
        .request(
            Request::post(format!("http://{addr}/upload"))
                .body(StreamBody::new(frames))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "11"
    );

    // Raw: HEADERS, DATA, trailing HEADERS with END_STREAM.
    let mut raw = Raw::connect(addr).await;
    let mut fields = get_fields("/upload");
    fields[0] = (":method", "POST");
    raw.request(1, &fields, false).await;
    raw.send(&frame(DATA, 0, 1, b"abc")).await;
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&[("x-sum", "1")]),
    ))
    .await;
    assert_eq!(raw.response(1).await, (200, b"3".to_vec()));
    // Trailers without END_STREAM are malformed.
    raw.request(3, &fields, false).await;
    raw.send(&frame(HEADERS, END_HEADERS, 3, &block(&[("x-sum", "1")])))
        .await;
    assert_eq!(raw.reset(3).await, PROTOCOL_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_cancels_the_upstream_request() {
    // An upstream that takes the request and never answers, watching its connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            "[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"{upstream}\"]\n"
        )),
        &[],
    )
    .await;
    let mut raw = Raw::connect(gw.addr("main")).await;
    raw.request(1, &get_fields("/never"), true).await;
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("request reached the upstream")
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "upstream connection closed before the head");
        head.extend_from_slice(&buf[..n]);
    }
    raw.send(&frame(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()))
        .await;
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the upstream request was not cancelled: {closed:?}"
    );
    // The connection itself is fine.
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_goaway_and_finishes_open_streams() {
    let up = TestUpstream::start("up").await;
    let mut gw = gateway_to(&[&up]).await;
    let mut raw = Raw::connect(gw.addr("main")).await;
    raw.request(1, &get_fields("/slow/1500"), true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    assert_eq!(raw.goaway().await, (1, NO_ERROR));
    // A stream opened after GOAWAY is refused; the open one finishes.
    raw.request(3, &get_fields("/late"), true).await;
    assert_eq!(raw.reset(3).await, REFUSED_STREAM);
    let (status, body) = raw.response(1).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/slow/1500"));
    // Then the server closes and exits cleanly.
    while raw.frame().await.is_some() {}
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_stream_errors() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let mut raw = Raw::connect(addr).await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("uppercase name", {
            let mut f = get_fields("/");
            f.push(("X-Upper", "1"));
            f
        }),
        ("connection header", {
            let mut f = get_fields("/");
            f.push(("connection", "keep-alive"));
            f
        }),
        ("transfer-encoding", {
            let mut f = get_fields("/");
            f.push(("transfer-encoding", "chunked"));
            f
        }),
        ("te: gzip", {
            let mut f = get_fields("/");
            f.push(("te", "gzip"));
            f
        }),
        (
            "missing :path",
            vec![(":method", "GET"), (":scheme", "http"), (":authority", "x")],
        ),
        ("pseudo after regular", {
            let mut f = vec![(":method", "GET"), (":scheme", "http"), ("x", "1")];
            f.push((":path", "/"));
            f
        }),
        ("unknown pseudo", {
            let mut f = get_fields("/");
            f.push((":foo", "bar"));
            f
        }),
    ];
    let mut stream = 1;
    for (what, fields) in &cases {
        raw.request(stream, fields, true).await;
        assert_eq!(raw.reset(stream).await, PROTOCOL_ERROR, "{what}");
        stream += 2;
    }
    // The connection is still good.
    let (status, _) = raw.response_after(stream, &get_fields("/fine")).await;
    assert_eq!(status, 200);
    stream += 2;

    // Content-length that the DATA frames do not match.
    let mut fields = get_fields("/upload");
    fields[0] = (":method", "POST");
    fields.push(("content-length", "5"));
    raw.request(stream, &fields, false).await;
    raw.send(&frame(DATA, END_STREAM, stream, b"abc")).await;
    assert_eq!(
        raw.reset(stream).await,
        PROTOCOL_ERROR,
        "content-length mismatch"
    );
    stream += 2;

    // A head above max_header_bytes (64 KiB) in HEADERS + CONTINUATION: 431, connection kept.
    let big = "x".repeat(70_000);
    let mut fields = get_fields("/big");
    fields.push(("x-big", &big));
    let whole = block(&fields);
    let mut chunks = whole.chunks(16_384).peekable();
    let first = chunks.next().unwrap();
    raw.send(&frame(HEADERS, END_STREAM, stream, first)).await;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        raw.send(&frame(CONTINUATION, flags, stream, chunk)).await;
    }
    assert_eq!(raw.response(stream).await.0, 431);
    stream += 2;
    assert_eq!(
        raw.response_after(stream, &get_fields("/after")).await.0,
        200
    );
}

impl Raw {
    async fn response_after(&mut self, stream: u32, fields: &[(&str, &str)]) -> (u16, Vec<u8>) {
        self.request(stream, fields, true).await;
        self.response(stream).await
    }
}

/// Opens a raw connection, sends `bytes` after the handshake, and expects GOAWAY(`code`).
async fn expect_goaway(addr: SocketAddr, bytes: &[u8], code: u32, what: &str) {
    let mut raw = Raw::connect(addr).await;
    raw.send(bytes).await;
    assert_eq!(raw.goaway().await.1, code, "{what}");
    assert!(
        raw.frame().await.is_none() || raw.frame().await.is_none(),
        "{what}: not closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_get_goaway() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(bin(), &h2_only_config(&to_cluster(&[&up])), &[]).await;
    let addr = gw.addr("main");

    // A bad preface on an h2c-only listener.
    let mut raw = Raw::connect_bare(addr).await;
    raw.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert_eq!(raw.goaway().await.1, PROTOCOL_ERROR, "bad preface");
    // HTTP/1.1 on an h2c-only listener.
    let mut raw = Raw::connect_bare(addr).await;
    raw.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(raw.goaway().await.1, PROTOCOL_ERROR, "HTTP/1.1");

    expect_goaway(
        addr,
        &frame(DATA, 0, 0, b"x"),
        PROTOCOL_ERROR,
        "DATA on stream 0",
    )
    .await;
    // A frame longer than our SETTINGS_MAX_FRAME_SIZE (the default 16 KiB), refused before
    // its payload is waited for.
    expect_goaway(
        addr,
        &frame(DATA, 0, 1, &vec![0u8; 16_385]),
        FRAME_SIZE_ERROR,
        "oversized frame",
    )
    .await;
    expect_goaway(
        addr,
        &frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
        FLOW_CONTROL_ERROR,
        "connection window overflow",
    )
    .await;
    expect_goaway(
        addr,
        &frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2,
            &block(&get_fields("/")),
        ),
        PROTOCOL_ERROR,
        "even stream id",
    )
    .await;
    expect_goaway(
        addr,
        &frame(CONTINUATION, END_HEADERS, 1, &[]),
        PROTOCOL_ERROR,
        "stray CONTINUATION",
    )
    .await;
    expect_goaway(
        addr,
        &frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]),
        PROTOCOL_ERROR,
        "PUSH_PROMISE",
    )
    .await;
    expect_goaway(
        addr,
        &frame(DATA, 0, 5, b"x"),
        PROTOCOL_ERROR,
        "DATA on an idle stream",
    )
    .await;
    // Decreasing stream ids.
    let mut bytes = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &block(&get_fields("/")),
    );
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &block(&get_fields("/")),
    ));
    expect_goaway(addr, &bytes, PROTOCOL_ERROR, "decreasing stream id").await;
    // Something between HEADERS and its CONTINUATION.
    let mut bytes = frame(HEADERS, 0, 1, &block(&get_fields("/")));
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    expect_goaway(addr, &bytes, PROTOCOL_ERROR, "interrupted header block").await;
    // A corrupt header block.
    expect_goaway(
        addr,
        &frame(HEADERS, END_HEADERS, 1, &[0xbe]),
        0x9,
        "bad HPACK index",
    )
    .await;

    // A stream window overflow resets only that stream.
    up.set_delay(Duration::from_secs(2));
    let mut raw = Raw::connect(addr).await;
    raw.request(1, &get_fields("/slow"), true).await;
    raw.send(&frame(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes()))
        .await;
    assert_eq!(raw.reset(1).await, FLOW_CONTROL_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_enhance_your_calm() {
    let up = TestUpstream::start("up").await;
    up.set_delay(Duration::from_secs(5));
    let gw = gateway_to(&[&up]).await;
    let mut raw = Raw::connect(gw.addr("main")).await;
    let mut burst = Vec::new();
    for i in 0..600u32 {
        let id = 1 + 2 * i;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &block(&get_fields("/r")),
        ));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    raw.send(&burst).await;
    assert_eq!(raw.goaway().await.1, ENHANCE_YOUR_CALM);
}
