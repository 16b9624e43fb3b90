//! Slow-client resistance: a thousand connections that trickle a request head one byte a second
//! neither stop normal clients nor outlive the header timeout; a client that stops reading its
//! response, or stops sending its request body, is cut after the stall timeout, and the
//! upstream connection it held is let go.

mod common;

use common::*;
use http::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SLOW_CLIENTS: usize = 1000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects and sends a head one byte a second until gatehouse answers or closes; returns how
/// long that took and what came back.
async fn trickle(addr: std::net::SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return (started.elapsed(), "connect failed".into());
    };
    let (mut read, mut write) = stream.into_split();
    let head = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Trickle: 1234567890\r\n\r\n";
    let writer = tokio::spawn(async move {
        for byte in head {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), read.read_to_end(&mut answer)).await;
    writer.abort();
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_do_not_stop_normal_ones() {
    // This process holds a thousand sockets: more than a 1024 soft limit leaves room for.
    gatehouse_net::raise_open_file_limit().expect("raise the open file limit");
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &format!(
            r#"
[[listeners]]
name = "main"
listen = "127.0.0.1:0"
header_read_timeout = "{}s"
{}"#,
            HEADER_TIMEOUT.as_secs(),
            to_cluster(&[&up])
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(trickle(addr)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Normal clients, each on a fresh connection, while the slow ones hold theirs.
    let client = h1();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let answer = get(&client, addr, &format!("/normal/{i}"), &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a normal request took {slowest:?}"
    );

    let mut cut_late = 0;
    for task in slow {
        let (took, answer) = task.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 "),
            "a slow client got {answer:?}"
        );
        // Cut at the header timeout (plus scheduling slack), long before its head could finish.
        if took > HEADER_TIMEOUT + Duration::from_secs(3) {
            cut_late += 1;
        }
    }
    assert_eq!(cut_late, 0, "slow clients outlived the header timeout");
    assert_eq!(up.requests(), 20, "no slow request reached the upstream");
}

/// An upstream that answers its first request with an endless body (a declared length of 1 TB,
/// or chunked) and reports when gatehouse stops taking it.
async fn endless_upstream(
    chunked: bool,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_seen) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            if stream.read_exact(&mut byte).await.is_err() {
                return;
            }
            head.push(byte[0]);
        }
        let framing = if chunked {
            "transfer-encoding: chunked"
        } else {
            "content-length: 1000000000000"
        };
        let mut out = format!("HTTP/1.1 200 OK\r\n{framing}\r\n\r\n").into_bytes();
        let piece = vec![b'x'; 64 * 1024];
        loop {
            if chunked {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(&piece);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&piece);
            }
            if stream.write_all(&out).await.is_err() {
                let _ = cut.send(Instant::now());
                return;
            }
            out.clear();
        }
    });
    (addr, cut_seen)
}

/// gatehouse with a 1 s stall timeout, routing everything to `endpoints` (a TOML list).
async fn with_stall_timeout(endpoints: &str) -> Gatehouse {
    let rest = format!(
        "stall_timeout = \"1s\"\n[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = {endpoints}\n"
    );
    Gatehouse::start(bin(), &config(&rest), &[]).await
}

/// A raw connection to the "main" listener that has sent `bytes`.
async fn send_raw(gw: &Gatehouse, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut client = tokio::net::TcpStream::connect(gw.addr("main"))
        .await
        .unwrap();
    client.write_all(bytes).await.unwrap();
    client
}

/// A client that stops reading its response is cut after the stall timeout, and the upstream
/// connection feeding it is let go (nginx's `send_timeout`).
async fn a_client_that_stops_reading_frees_its_upstream(chunked: bool) {
    let (upstream, cut) = endless_upstream(chunked).await;
    let gw = with_stall_timeout(&format!("[\"{upstream}\"]")).await;
    let mut client = send_raw(&gw, b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // From here on the client reads nothing: the socket buffers fill, then nothing moves.
    let asked = Instant::now();
    let cut_at = tokio::time::timeout(Duration::from_secs(30), cut)
        .await
        .expect("the upstream connection was held")
        .unwrap();
    // Between one and two stall timeouts after the socket buffers filled.
    assert!(
        cut_at - asked < Duration::from_secs(10),
        "let go after {:?}",
        cut_at - asked
    );
    // The client's connection ends short of the body, which has no end.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the client connection stayed open");
}

#[tokio::test]
async fn a_client_that_stops_reading_a_spliced_body_frees_its_upstream() {
    a_client_that_stops_reading_frees_its_upstream(false).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_copied_body_frees_its_upstream() {
    a_client_that_stops_reading_frees_its_upstream(true).await;
}

/// Sends 10 bytes of a 100,000-byte upload and nothing more; returns all gatehouse answers
/// before it closes (within 10 s).
async fn stall_an_upload(gw: &Gatehouse) -> String {
    let head = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n";
    let mut client = send_raw(gw, &[&head[..], b"ten bytes."].concat()).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("no answer to a stalled upload")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that stops sending its request body midway gets 408 after the stall timeout
/// (nginx's `client_body_timeout`).
#[tokio::test]
async fn a_client_that_stalls_its_upload_gets_408() {
    let up = TestUpstream::start("up").await;
    let gw = with_stall_timeout(&endpoints(&[&up])).await;
    let started = Instant::now();
    let answer = stall_an_upload(&gw).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("stall_timeout"), "{answer}");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "cut after {took:?}");
}

/// A response that takes longer than two header timeouts leaves its keep-alive connection
/// waiting a whole header timeout for the next request, not closed the moment it is idle.
#[tokio::test]
async fn a_slow_response_keeps_its_connection_for_the_next_request() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &config(&format!(
            "header_read_timeout = \"1s\"\n{}",
            to_cluster(&[&up])
        )),
        &[],
    )
    .await;
    let mut connection = Connection::open("127.0.0.1".parse().unwrap(), gw.addr("main"))
        .await
        .unwrap();
    let slow = connection.get("/slow/2500", &[]).await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert!(
        !connection.closed_within(Duration::from_millis(300)).await,
        "closed as soon as it was idle"
    );
    let next = connection.get("/next", &[]).await;
    assert_eq!(next.map(|answer| answer.status), Ok(StatusCode::OK));
}

/// An upstream that answers `100 Continue` at once and then reads the body forever.
async fn continuing_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0
            || stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    addr
}

/// A stalled upload is 408 even when the upstream already sent an interim `100 Continue`
/// (its final answer is not waited for).
#[tokio::test]
async fn a_stalled_upload_after_an_interim_answer_gets_408() {
    let upstream = continuing_upstream().await;
    let gw = with_stall_timeout(&format!("[\"{upstream}\"]")).await;
    let answer = stall_an_upload(&gw).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
}
