//! HPACK: arbitrary header blocks through one decoder with a small dynamic table never panic,
//! the table never grows past its limit, and the emitted header list never passes the limit.
#![no_main]

use bytes::Bytes;
use gatehouse_http::h2::hpack::Decoder;
use libfuzzer_sys::fuzz_target;

const TABLE: usize = 256;
const MAX_LIST: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(TABLE);
    // Blocks are separated by 0xfe bytes, so that the table carries state from one to the next.
    for block in data.split(|&b| b == 0xfe) {
        let block = Bytes::copy_from_slice(block);
        let mut emitted = 0usize;
        let result = decoder.decode(&block, MAX_LIST, |field| emitted += field.size());
        assert!(decoder.table().size() <= decoder.table().max_size());
        assert!(decoder.table().max_size() <= TABLE);
        match result {
            Ok(decoded) => {
                assert!(emitted <= MAX_LIST);
                assert_eq!(decoded.over_limit, decoded.list_size > MAX_LIST);
                if !decoded.over_limit {
                    assert_eq!(emitted, decoded.list_size);
                }
            }
            // The connection would end here: the compression state is lost.
            Err(_) => return,
        }
    }
});
