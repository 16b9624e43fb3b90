//! Arbitrary X-Forwarded-For values never panic the real-client walk, and its answer is either
//! the peer or an address that appears in the header.
#![no_main]

use gatehouse_http::protect::client::{parse_entry, real_client};
use gatehouse_net::CidrTable;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TRUSTED: OnceLock<CidrTable<()>> = OnceLock::new();
    let trusted = TRUSTED.get_or_init(|| {
        ["10.0.0.0/8", "192.0.2.0/24", "::1/128", "2001:db8::/32"]
            .iter()
            .map(|p| (p.parse().unwrap(), ()))
            .collect()
    });
    let mut headers = HeaderMap::new();
    // Split the input into several header lines at NUL bytes.
    for line in data.split(|&b| b == 0) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let real = real_client(peer, &headers, trusted);
    if real != peer {
        let named = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|e| parse_entry(e.trim()))
            .any(|ip| ip == real);
        assert!(named, "{real} is not in the header");
    }
});
