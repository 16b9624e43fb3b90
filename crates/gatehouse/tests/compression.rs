//! End to end: a route that compresses answers each client in a coding it accepts, over
//! HTTP/1.1 and HTTP/2, and leaves alone what must not be compressed.

mod common;

use common::*;
use std::io::Read;

async fn gateway(up: &TestUpstream) -> Gatehouse {
    let rest = format!(
        "[[routes]]\ncluster = \"c\"\n[routes.compression]\nmin_size = \"1KiB\"\n[[clusters]]\nname = \"c\"\nendpoints = {}\n",
        endpoints(&[up])
    );
    Gatehouse::start(bin(), &config(&rest), &[]).await
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("valid gzip");
    plain
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_as_the_client_accepts() {
    let up = TestUpstream::start("up").await;
    let gw = gateway(&up).await;
    let addr = gw.addr("main");
    // A JSON echo padded past min_size by a long header the upstream echoes back.
    let padding = "x".repeat(1500);
    for client in [h1(), h2()] {
        let gzip = get(
            &client,
            addr,
            "/json",
            &[("accept-encoding", "br;q=0.5, gzip"), ("x-pad", &padding)],
        )
        .await;
        assert_eq!(gzip.status, 200);
        assert_eq!(gzip.headers["content-encoding"], "gzip");
        assert_eq!(gzip.headers["vary"], "accept-encoding");
        let plain = gunzip(&gzip.body);
        let json: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(json["headers"]["x-pad"], padding.as_str());
        // The upstream itself was asked for an uncompressed body (the header passes through
        // as the client sent it, and the upstream does not compress).
        assert_eq!(json["headers"]["accept-encoding"], "br;q=0.5, gzip");

        let zstd = get(
            &client,
            addr,
            "/json",
            &[("accept-encoding", "gzip, zstd"), ("x-pad", &padding)],
        )
        .await;
        assert_eq!(zstd.headers["content-encoding"], "zstd");
        let plain = zstd::stream::decode_all(&zstd.body[..]).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&plain).unwrap()["headers"]["x-pad"],
            padding.as_str()
        );

        // A body long enough to be spliced is still compressed, every byte of it.
        let long_padding = "y".repeat(20_000);
        let long = get(
            &client,
            addr,
            "/json",
            &[("accept-encoding", "gzip"), ("x-pad", &long_padding)],
        )
        .await;
        assert_eq!(long.headers["content-encoding"], "gzip");
        let json: serde_json::Value = serde_json::from_slice(&gunzip(&long.body)).unwrap();
        assert_eq!(json["headers"]["x-pad"], long_padding.as_str());

        // No Accept-Encoding: the plain body, with Vary saying it could differ.
        let plain = get(&client, addr, "/json", &[("x-pad", &padding)]).await;
        assert!(!plain.headers.contains_key("content-encoding"));
        assert_eq!(plain.headers["vary"], "accept-encoding");
        assert_eq!(plain.json()["headers"]["x-pad"], padding.as_str());

        // Binary and event streams are not compressed; neither are small bodies.
        let binary = get(
            &client,
            addr,
            "/bytes/100000",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert!(!binary.headers.contains_key("content-encoding"));
        assert_eq!(binary.body.len(), 100_000);
        let events = get(
            &client,
            addr,
            "/events?count=3&interval_ms=1",
            &[("accept-encoding", "gzip")],
        )
        .await;
        assert!(!events.headers.contains_key("content-encoding"));
        assert_eq!(events.text().matches("data: ").count(), 3);
        let small = get(&client, addr, "/json", &[("accept-encoding", "gzip")]).await;
        assert!(small.body.len() < 1024);
        assert!(
            !small.headers.contains_key("content-encoding"),
            "{:?}",
            small.headers
        );
    }
}
