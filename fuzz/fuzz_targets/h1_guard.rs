//! Request heads: the scanner finds the same end (or refusal) however the bytes are split across
//! reads, never claims more than it was given, and parsing a found head never panics and gives
//! the same answer whether the connection's name cache is fresh or has seen earlier heads.
#![no_main]

use gatehouse_http::h1_guard::{HeadScanner, parse_request_head};
use gatehouse_http::name_cache::NameCache;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

thread_local! {
    /// A cache that has seen the previous inputs' heads, as a connection's would.
    static WARM: RefCell<NameCache> = const { RefCell::new(NameCache::new()) };
}

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
        let head = bytes::Bytes::copy_from_slice(&input[..len]);
        let fresh = parse_request_head(head.clone(), &mut NameCache::new());
        let warm = WARM.with(|cache| parse_request_head(head, &mut cache.borrow_mut()));
        assert_eq!(format!("{fresh:?}"), format!("{warm:?}"), "a warm name cache changed the head");
    }
});
