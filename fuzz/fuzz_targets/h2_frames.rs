//! HTTP/2 frames: arbitrary bytes through the frame decoder never panic, a decoded frame never
//! claims more bytes than it was given, and a split input decodes to the same frames.
#![no_main]

use bytes::BytesMut;
use gatehouse_http::h2::frame::{self, Frame, FrameError};
use libfuzzer_sys::fuzz_target;

fn decode_all(input: &[u8], step: usize) -> Vec<Result<Frame, FrameError>> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    loop {
        let before = buf.len();
        match frame::decode(&mut buf, frame::DEFAULT_MAX_FRAME_SIZE) {
            Ok(Some(f)) => {
                assert!(buf.len() < before, "a frame consumes bytes");
                if let Frame::Data { data, flow_len, .. } = &f {
                    assert!(data.len() <= *flow_len as usize);
                    assert!(*flow_len <= frame::DEFAULT_MAX_FRAME_SIZE);
                }
                frames.push(Ok(f));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame is left alone");
                if fed == input.len() {
                    return frames;
                }
                let next = (fed + step).min(input.len());
                buf.extend_from_slice(&input[fed..next]);
                fed = next;
            }
            Err(FrameError::Stream { stream, reason }) => {
                frames.push(Err(FrameError::Stream { stream, reason }));
            }
            Err(e) => {
                frames.push(Err(e));
                return frames;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = decode_all(input, input.len().max(1));
    let split = decode_all(input, usize::from(seed % 31) + 1);
    assert_eq!(whole, split, "split reads decoded differently");
});
