//! Upstream response heads and chunked bodies: any bytes give a parsed head, "incomplete", or a
//! protocol error, never a panic; a parsed head takes bytes only when complete, and is the same
//! whether the connection's name cache is fresh or has seen the previous input; the chunked
//! decoder never reports data or consumption outside its input.
#![no_main]

use gatehouse_http::chunked::ChunkedDecoder;
use gatehouse_http::h1_client::parse_head;
use gatehouse_http::name_cache::NameCache;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    /// A cache that has seen the previous inputs' heads, as a connection's would.
    static WARM: RefCell<NameCache> = const { RefCell::new(NameCache::new()) };
}

fuzz_target!(|data: &[u8]| {
    let method = if data.first().is_some_and(|b| b & 1 == 1) {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let mut buf = bytes::BytesMut::from(data);
    let mut again = buf.clone();
    let parsed = parse_head(&mut buf, &method, &mut NameCache::new());
    let warm = WARM.with(|cache| parse_head(&mut again, &method, &mut cache.borrow_mut()));
    assert_eq!(format!("{parsed:?}"), format!("{warm:?}"), "a warm name cache changed the head");
    assert_eq!(buf, again);
    match parsed {
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
