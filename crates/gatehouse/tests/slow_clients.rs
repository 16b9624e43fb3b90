//! Slow-loris resistance: a thousand connections that trickle a request head one byte a second
//! neither stop normal clients nor outlive the header timeout.

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
