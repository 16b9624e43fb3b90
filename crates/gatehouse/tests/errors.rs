//! End to end: every error a client can see is precise, and ambiguous HTTP/1.1 framing is refused
//! before anything reaches an upstream (raw sockets, so the bytes are exactly what we say).

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes`, then reads until the server closes; returns what it sent.
/// Panics if the server keeps the connection open for 5 s (the refusal must close it).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the connection was not closed")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

async fn gateway_with_limits(up: &TestUpstream) -> Gatehouse {
    Gatehouse::start(
        bin(),
        &format!(
            r#"
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "main"
listen = "127.0.0.1:0"
max_header_bytes = "4KiB"
max_body_bytes = 1024
header_read_timeout = "1s"
[[routes]]
path_prefix = "/fast"
cluster = "fast"
[[routes]]
cluster = "c"
[[clusters]]
name = "c"
endpoints = {e}
[[clusters]]
name = "fast"
timeout = "200ms"
endpoints = {e}
"#,
            e = endpoints(&[up])
        ),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_with_limits(&up).await;
    let addr = gw.addr("main");
    let cases: &[(&str, &str)] = &[
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Content-Length together with Transfer-Encoding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            "Content-Length together with Transfer-Encoding",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            "repeated Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "repeated Content-Length",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
            "invalid Content-Length",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n  b\r\n\r\n",
            "invalid header name",
        ),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", "invalid header name"),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
            "invalid header value",
        ),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n", "bare CR"),
        ("GET / HTTP/1.1\r\n\r\n", "without Host"),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "repeated Host",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "invalid chunk size",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            "chunk data not followed by CRLF",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            "chunk size too large",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "exactly \"chunked\"",
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding in HTTP/1.0",
        ),
    ];
    for (request, reason) in cases {
        let answer = raw(addr, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "{request:?} -> {answer:?}"
        );
        assert!(answer.contains(reason), "{request:?} -> {answer:?}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_eq!(up.requests(), 0, "nothing may reach the upstream");

    // A valid request pipelined before a smuggling attempt is answered; the attempt is not.
    let answer = raw(
        addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert_eq!(up.requests(), 1);

    let metrics = get(&h1(), gw.admin.unwrap(), "/metrics", &[]).await.text();
    assert!(metrics.contains("gatehouse_requests_rejected_total{listener=\"main\",reason=\"repeated Content-Length\"} 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_give_431_and_413() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_with_limits(&up).await;
    let addr = gw.addr("main");
    let big_header = "a".repeat(5000);
    let answer = raw(
        addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big_header}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    let c = h1();
    let answer = send(
        &c,
        Method::POST,
        addr,
        "/upload",
        &[],
        Bytes::from(vec![b'x'; 2000]),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert!(answer.text().contains("1024 bytes"), "{}", answer.text());
    assert_eq!(
        up.requests(),
        0,
        "a declared oversized body is refused before the upstream"
    );

    // A chunked body is cut as it streams past the limit.
    let mut request =
        String::from("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        request.push_str(&format!("200\r\n{}\r\n", "y".repeat(512)));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw(addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");

    let ok = send(
        &c,
        Method::POST,
        addr,
        "/upload",
        &[],
        Bytes::from(vec![b'x'; 1000]),
    )
    .await;
    assert_eq!(ok.text(), "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_and_504_naming_the_endpoint() {
    let up = TestUpstream::start("up").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"
[[routes]]
path_prefix = "/refused"
cluster = "refused"
[[routes]]
path_prefix = "/slow"
cluster = "fast"
[[routes]]
cluster = "c"
[[clusters]]
name = "refused"
endpoints = ["{closed}"]
[[clusters]]
name = "fast"
timeout = "200ms"
endpoints = {e}
[[clusters]]
name = "c"
endpoints = {e}
"#,
            e = endpoints(&[&up])
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let c = h1();

    let refused = get(&c, addr, "/refused", &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(
        refused
            .text()
            .contains(&format!("upstream {closed} refused")),
        "{}",
        refused.text()
    );
    assert_eq!(refused.headers["x-gatehouse-error"], "connect_refused");

    let reset = get(&c, addr, "/reset", &[]).await;
    assert_eq!(reset.status, StatusCode::BAD_GATEWAY);
    assert!(
        reset.text().contains(&up.addr.to_string()),
        "{}",
        reset.text()
    );
    assert_eq!(reset.headers["x-gatehouse-error"], "upstream_reset");

    let slow = get(&c, addr, "/slow/3000", &[]).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(slow.text().contains("within 200 ms"), "{}", slow.text());

    // The upstream's own statuses pass through untouched.
    assert_eq!(
        get(&c, addr, "/status/503", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // A malformed request line is a 400 from gatehouse itself.
    let answer = raw(addr, b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_at_the_header_timeout() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_with_limits(&up).await;
    let addr = gw.addr("main");
    // Connects and says nothing: closed without an answer.
    let silent = raw(addr, b"").await;
    assert_eq!(silent, "");
    // Sends half a head and stalls: 408.
    let slow = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(slow.starts_with("HTTP/1.1 408 "), "{slow}");
    // An idle keep-alive connection (raw() never half-closes) is closed after the timeout too,
    // once its answer is out.
    let kept = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(kept.starts_with("HTTP/1.1 200 "), "{kept}");
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_without_host_reaches_the_upstream_with_one() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_with_limits(&up).await;
    let answer = raw(gw.addr("main"), b"GET /echo HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200 ") || answer.starts_with("HTTP/1.1 200 "),
        "{answer}"
    );
    assert!(
        answer.contains(&format!("\"host\":\"{}\"", up.addr)),
        "{answer}"
    );
}

/// A hand-written upstream that answers every connection with `reply` and then closes.
async fn scripted_upstream(reply: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = socket.read(&mut head).await;
                let _ = socket.write_all(reply).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_responses_are_502_or_cut() {
    let garbage = scripted_upstream(b"SMTP ready\r\n\r\n").await;
    let truncated =
        scripted_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            r#"
[[routes]]
path_prefix = "/garbage"
cluster = "garbage"
[[routes]]
cluster = "truncated"
[[clusters]]
name = "garbage"
endpoints = ["{garbage}"]
[[clusters]]
name = "truncated"
endpoints = ["{truncated}"]
"#
        )),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let answer = get(&h1(), addr, "/garbage", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.headers["x-gatehouse-error"], "upstream_protocol");
    assert!(
        answer.text().contains(&garbage.to_string()),
        "{}",
        answer.text()
    );
    // The head arrived, the body broke off: the client's connection closes short of the
    // announced length (or before any byte), never with a complete-looking response.
    let raw_answer = raw(addr, b"GET /t HTTP/1.1\r\nHost: a\r\n\r\n").await;
    if let Some((head, body)) = raw_answer.split_once("\r\n\r\n") {
        assert!(head.starts_with("HTTP/1.1 200 "), "{raw_answer}");
        assert!(body.len() < 100, "{raw_answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_and_expect_continue_behave() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let c = h1();
    let head = send(&c, Method::HEAD, addr, "/bytes/1000", &[], Bytes::new()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "1000");
    assert!(head.body.is_empty());
    // The pooled connection is still usable after a body-less response.
    assert_eq!(get(&c, addr, "/bytes/10", &[]).await.body.len(), 10);

    // A client that waits for 100 Continue before sending its body gets it.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert!(String::from_utf8_lossy(&interim[..n]).starts_with("HTTP/1.1 100 Continue"));
    stream.write_all(b"hello").await.unwrap();
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&rest[..n]).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200 ") && answer.ends_with("5"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_http_1_0_keep_alive_requests_are_answered_in_order() {
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let addr = gw.addr("main");
    let answer = raw(
        addr,
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let one = answer.find("\"path\":\"/one\"").expect(&answer);
    let two = answer.find("\"path\":\"/two\"").expect(&answer);
    assert!(one < two, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");

    // HTTP/1.0 with keep-alive: told so, and the connection carries a second request.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for path in ["/first", "/second"] {
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.contains("connection: keep-alive"), "{text}");
        assert!(text.contains(path), "{text}");
    }
}
