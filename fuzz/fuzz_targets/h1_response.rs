//! Upstream response heads and chunked bodies: any bytes give a parsed head, "incomplete", or a
//! protocol error, never a panic; a parsed head takes bytes only when complete, and
//! the chunked decoder never reports data or consumption outside its input.
#![no_main]

use gatehouse_http::chunked::ChunkedDecoder;
use gatehouse_http::h1_client::parse_head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let method = if data.first().is_some_and(|b| b & 1 == 1) {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let mut buf = bytes::BytesMut::from(data);
    match parse_head(&mut buf, &method) {
        Ok(Some(_)) => assert!(buf.len() < data.len(), "a head was taken"),
        Ok(None) => assert_eq!(buf.len(), data.len(), "nothing taken without a head"),
        Err(_) => {} // the connection is dropped
    }
    let mut decoder = ChunkedDecoder::new();
    let mut rest = data;
    while !rest.is_empty() {
        match decoder.decode(rest) {
            Ok(step) => {
                assert!(step.consumed <= rest.len());
                assert!(step.data.end <= step.consumed);
                if step.done || step.consumed == 0 {
                    break;
                }
                rest = &rest[step.consumed..];
            }
            Err(_) => break,
        }
    }
});
