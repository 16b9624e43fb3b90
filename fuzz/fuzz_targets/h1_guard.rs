//! Request heads: the scanner finds the same end (or refusal) however the bytes are split across
//! reads, never claims more than it was given, and parsing a found head never panics.
#![no_main]

use gatehouse_http::h1_guard::{HeadScanner, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, input)) = data.split_first() else {
        return;
    };
    let whole = HeadScanner::new(4096).find_end(input);

    let mut scanner = HeadScanner::new(4096);
    let step = usize::from(split_seed % 17) + 1;
    let mut received = 0;
    let pieces = loop {
        received = (received + step).min(input.len());
        match scanner.find_end(&input[..received]) {
            Ok(None) if received < input.len() => continue,
            other => break other,
        }
    };
    assert_eq!(pieces, whole, "split reads decided differently");
    if let Ok(Some(len)) = whole {
        assert!(len <= input.len());
        let _ = parse_request_head(bytes::Bytes::copy_from_slice(&input[..len]));
    }
});
