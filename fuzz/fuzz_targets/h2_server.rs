//! The HTTP/2 connection as a whole: after the preface and an empty SETTINGS frame, arbitrary
//! frames from a client never panic the server and never make it hang (time is paused, so
//! timeouts pass at once). The handler reads the request body and answers with a small body.
#![no_main]

use bytes::{Bytes, BytesMut};
use gatehouse_http::body::ProxyBody;
use gatehouse_http::h2::{self, H2Settings};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(16 * 1024);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut input = h2::PREFACE.to_vec();
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        input.extend_from_slice(data);
        let writer = async move {
            let _ = client_write.write_all(&input).await;
            // Keep the connection open a while so responses are written, then hang up.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = client_write.shutdown().await;
        };
        let reader = async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = client_read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let settings = H2Settings {
            max_header_list_size: 2048,
            max_concurrent_streams: 8,
            ..H2Settings::default()
        };
        let serve = h2::serve(
            server,
            BytesMut::new(),
            settings,
            CancellationToken::new(),
            |request: Request<ProxyBody>| async move {
                let (_, body) = request.into_parts();
                let got = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                let body: ProxyBody = Full::new(Bytes::from(got.to_string()))
                    .map_err(|never| match never {})
                    .boxed();
                Response::new(body)
            },
        );
        let all = async { tokio::join!(writer, reader, serve) };
        tokio::time::timeout(Duration::from_secs(3600), all)
            .await
            .expect("the connection hung");
    });
});
