//! Arbitrary header values never panic the parsers that read them on every response: the
//! Accept-Encoding negotiation (compression) and the cache's directive and validator readers;
//! a chosen coding is always one the route offers and the client did not refuse outright.
#![no_main]

use gatehouse_config::ContentCoding;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

const OFFERED: &[ContentCoding] = &[ContentCoding::Zstd, ContentCoding::Brotli, ContentCoding::Gzip];

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: Accept-Encoding, Cache-Control, ETag, If-None-Match, Last-Modified.
    let mut fields = data.split(|&b| b == 0);
    let mut next = || fields.next().and_then(|f| HeaderValue::from_bytes(f).ok());

    if let Some(accept) = next() {
        if let Some(coding) = gatehouse_http::compress::choose(accept.as_bytes(), OFFERED) {
            assert!(OFFERED.contains(&coding));
        }
    }
    let mut response = HeaderMap::new();
    let mut request = HeaderMap::new();
    if let Some(v) = next() {
        response.insert(header::CACHE_CONTROL, v);
    }
    if let Some(v) = next() {
        response.insert(header::ETAG, v);
    }
    if let Some(v) = next() {
        request.insert(header::IF_NONE_MATCH, v);
    }
    if let Some(v) = next() {
        response.insert(header::LAST_MODIFIED, v.clone());
        request.insert(header::IF_MODIFIED_SINCE, v);
    }
    for directive in ["max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"] {
        let _ = gatehouse_cache::directives::seconds(&response, directive);
    }
    let _ = gatehouse_cache::directives::has(&response, "no-store");
    let _ = gatehouse_cache::directives::StaleAllowance::of(&response);
    let _ = gatehouse_cache::directives::not_modified(&request, &response);
});
