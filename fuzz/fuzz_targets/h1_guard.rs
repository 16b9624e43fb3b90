//! The framing guard decides the same way however the bytes are split across reads, never
//! releases more than it was given, and never panics.
#![no_main]

use gatehouse_http::h1_guard::RequestGuard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, input)) = data.split_first() else {
        return;
    };
    // All at once.
    let whole = RequestGuard::new(4096).scan(input);
    assert!(whole.released <= input.len());

    // In pieces: `pending` always starts at the first unreleased byte, as the I/O wrapper does.
    let mut guard = RequestGuard::new(4096);
    let step = usize::from(split_seed % 17) + 1;
    let mut released = 0;
    let mut received = 0;
    let mut rejection = None;
    while received < input.len() && rejection.is_none() {
        received = (received + step).min(input.len());
        let scan = guard.scan(&input[released..received]);
        assert!(scan.released <= received - released);
        released += scan.released;
        rejection = scan.rejection;
    }
    assert_eq!(released, whole.released, "split reads released a different amount");
    assert_eq!(rejection, whole.rejection, "split reads decided differently");
});
