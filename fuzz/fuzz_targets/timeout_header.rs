//! Client timeout headers (`x-gatehouse-timeout`, `grpc-timeout`): any bytes parse or give an
//! error whose message stays short (the value is echoed shortened); a parsed timeout survives
//! the way gatehouse passes it upstream, rounded down and never up.
#![no_main]

use gatehouse_resilience::deadline::{format_grpc_timeout, format_millis, parse_timeout};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let timeout = match parse_timeout(data) {
        Ok(timeout) => timeout,
        Err(e) => {
            // Each echo is at most 33 characters, escaped (at most 10 bytes each), and an
            // error echoes at most two: the message cannot grow with the input.
            assert!(e.to_string().len() < 1024, "an error message as long as the input");
            return;
        }
    };
    let millis = parse_timeout(format_millis(timeout).as_bytes()).expect("milliseconds parse");
    assert_eq!(millis, Duration::from_millis(timeout.as_millis() as u64));
    let grpc = parse_timeout(format_grpc_timeout(timeout).as_bytes()).expect("grpc-timeout parses");
    assert!(grpc <= timeout, "{grpc:?} promises more than {timeout:?}");
});
