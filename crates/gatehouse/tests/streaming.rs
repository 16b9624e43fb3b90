//! End to end: bodies stream both ways in bounded memory.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_keeps_rss_flat() {
    let up = TestUpstream::start("up").await;
    let gw = Gatehouse::start(
        bin(),
        &format!(
            "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"2GiB\"\n{}",
            to_cluster(&[&up])
        ),
        &[],
    )
    .await;
    let addr = gw.addr("main");
    // Warm up so the baseline includes the allocator's steady state.
    let c = h1();
    assert_eq!(
        get(&c, addr, "/bytes/1048576", &[]).await.body.len(),
        1 << 20
    );
    let before = gw.rss_kib();

    // Download: count bytes as they arrive, never holding them.
    let response = c
        .request(
            Request::get(format!("http://{addr}/bytes/{GIB}"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut peak = before;
    // Counted frame by frame (not collected) so RSS can be sampled while the bytes flow.
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
            if received % (64 << 20) < data.len() as u64 {
                peak = peak.max(gw.rss_kib());
            }
        }
    }
    assert_eq!(received, GIB);

    // Upload: a generated 1 GiB stream the upstream counts.
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let chunks = GIB / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let response = client
        .request(
            Request::post(format!("http://{addr}/upload"))
                .body(StreamBody::new(stream))
                .unwrap(),
        )
        .await
        .unwrap();
    let uploaded = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(uploaded, GIB.to_string());
    peak = peak.max(gw.rss_kib());

    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib <= 8,
        "RSS grew {growth_mib} MiB while streaming 2 GiB (before {before} KiB, peak {peak} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_upstreams_stream_both_ways_at_once() {
    // The upstream answers at once and echoes the upload as it arrives. 32 MiB is far more than
    // the socket buffers hold, so this only finishes if the upload and the response move together.
    let up = TestUpstream::start("up").await;
    let gw = gateway_to(&[&up]).await;
    let total: u64 = 32 << 20;
    let chunk = Bytes::from(vec![9u8; 64 * 1024]);
    let stream = futures_util::stream::iter(
        (0..total / chunk.len() as u64)
            .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))),
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let exchange = async {
        let response = client
            .request(
                Request::post(format!("http://{}/echo-stream", gw.addr("main")))
                    .body(StreamBody::new(stream))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        count_bytes(response.into_body()).await
    };
    let received = tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
        .await
        .expect("full-duplex exchange stalled");
    assert_eq!(received, total);
}

/// Reads a body to its end, counting bytes without keeping them.
async fn count_bytes(mut body: hyper::body::Incoming) -> u64 {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
        }
    }
    received
}
