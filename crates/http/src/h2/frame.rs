//! HTTP/2 frames (RFC 9113 §4 and §6): decoding from the connection's read buffer and encoding
//! into its output buffer.
//!
//! Decoding never copies a payload: a frame's bytes are split off the read buffer as `Bytes`, so
//! a DATA payload reaches the request body as the very memory the socket read filled. The
//! decoder checks everything a frame says about itself (its length against the limit, padding,
//! the stream id its type allows, fixed payload sizes, SETTINGS values); what depends on the
//! connection's state (stream states, flow control) is the connection's job. Encoding appends
//! to one `Vec<u8>` that the connection writes once per turn, so many frames leave in one write.

use bytes::{Buf, Bytes, BytesMut};

/// The 9-byte frame header: length (24 bits), type, flags, stream id (31 bits).
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE starts at this, and may not be set below it.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE allowed (2^24 - 1).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// Flow-control windows may not exceed 2^31 - 1.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Every window starts at this until SETTINGS or WINDOW_UPDATE say otherwise.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// RFC 8441: the client may use extended CONNECT (WebSocket over HTTP/2).
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// An HTTP/2 error code (RFC 9113 §7), carried by RST_STREAM and GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The name RFC 9113 gives the code, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// A decoded frame. Header blocks are still HPACK-encoded; priority fields are parsed only
/// far enough to reject a stream depending on itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        data: Bytes,
        end_stream: bool,
        /// The whole payload length, padding included: what flow control counts.
        flow_len: u32,
    },
    Headers {
        stream: u32,
        block: Bytes,
        end_stream: bool,
        end_headers: bool,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings(Settings),
    SettingsAck,
    PushPromise {
        stream: u32,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        block: Bytes,
        end_headers: bool,
    },
    /// A frame type this implementation does not know: ignored (RFC 9113 §4.1), except that
    /// it may not interrupt a header block.
    Unknown {
        stream: u32,
    },
}

/// The values one SETTINGS frame carried (absent ones stay as they were).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

/// A frame the peer should not have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The connection cannot go on: GOAWAY with this code.
    Connection(Reason),
    /// Only this stream is affected: RST_STREAM with this code. The frame was consumed.
    Stream { stream: u32, reason: Reason },
}

/// Decodes one frame from the front of `buf`. `Ok(None)`: more bytes are needed (the buffer is
/// untouched). `max_frame_size` is our SETTINGS_MAX_FRAME_SIZE: anything longer is refused with
/// FRAME_SIZE_ERROR before its payload is even waited for.
pub fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Frame>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let kind = head[3];
    let flags = head[4];
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_WINDOW;
    if len > max_frame_size {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let conn = |reason| Err(FrameError::Connection(reason));
    match kind {
        kind::DATA => {
            let payload = buf.split_to(len as usize).freeze();
            if stream == 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            let data = strip_padding(payload, flags)?;
            Ok(Some(Frame::Data {
                stream,
                data,
                end_stream: flags & flag::END_STREAM != 0,
                flow_len: len,
            }))
        }
        kind::HEADERS => {
            let payload = buf.split_to(len as usize).freeze();
            if stream == 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            let mut block = strip_padding(payload, flags)?;
            if flags & flag::PRIORITY != 0 {
                let Some(fields) = block.get(..5) else {
                    return conn(Reason::FRAME_SIZE_ERROR);
                };
                let dependency =
                    u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & MAX_WINDOW;
                block.advance(5);
                // RFC 9113 §5.3.1 allows a stream error here, but the header block would then
                // go undecoded and the compression state would be lost: end the connection.
                if dependency == stream {
                    return conn(Reason::PROTOCOL_ERROR);
                }
            }
            Ok(Some(Frame::Headers {
                stream,
                block,
                end_stream: flags & flag::END_STREAM != 0,
                end_headers: flags & flag::END_HEADERS != 0,
            }))
        }
        kind::PRIORITY => {
            let payload = take_small(buf, len);
            if stream == 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            if payload.len() != 5 {
                return Err(FrameError::Stream {
                    stream,
                    reason: Reason::FRAME_SIZE_ERROR,
                });
            }
            let dependency =
                u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & MAX_WINDOW;
            if dependency == stream {
                return Err(FrameError::Stream {
                    stream,
                    reason: Reason::PROTOCOL_ERROR,
                });
            }
            Ok(Some(Frame::Priority { stream }))
        }
        kind::RST_STREAM => {
            let payload = take_small(buf, len);
            if stream == 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            let Ok(code) = <[u8; 4]>::try_from(&payload[..]) else {
                return conn(Reason::FRAME_SIZE_ERROR);
            };
            Ok(Some(Frame::RstStream {
                stream,
                reason: Reason(u32::from_be_bytes(code)),
            }))
        }
        kind::SETTINGS => {
            let payload = take_small(buf, len);
            if stream != 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            if flags & flag::ACK != 0 {
                return if payload.is_empty() {
                    Ok(Some(Frame::SettingsAck))
                } else {
                    conn(Reason::FRAME_SIZE_ERROR)
                };
            }
            if !payload.len().is_multiple_of(6) {
                return conn(Reason::FRAME_SIZE_ERROR);
            }
            parse_settings(&payload).map(|s| Some(Frame::Settings(s)))
        }
        kind::PUSH_PROMISE => {
            buf.advance(len as usize);
            Ok(Some(Frame::PushPromise { stream }))
        }
        kind::PING => {
            let payload = take_small(buf, len);
            if stream != 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            let Ok(payload) = <[u8; 8]>::try_from(&payload[..]) else {
                return conn(Reason::FRAME_SIZE_ERROR);
            };
            Ok(Some(Frame::Ping {
                ack: flags & flag::ACK != 0,
                payload,
            }))
        }
        kind::GOAWAY => {
            let payload = take_small(buf, len);
            if stream != 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            let Some(fixed) = payload.get(..8) else {
                return conn(Reason::FRAME_SIZE_ERROR);
            };
            Ok(Some(Frame::GoAway {
                last_stream: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]])
                    & MAX_WINDOW,
                reason: Reason(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]])),
            }))
        }
        kind::WINDOW_UPDATE => {
            let payload = take_small(buf, len);
            let Ok(raw) = <[u8; 4]>::try_from(&payload[..]) else {
                return conn(Reason::FRAME_SIZE_ERROR);
            };
            let increment = u32::from_be_bytes(raw) & MAX_WINDOW;
            if increment == 0 {
                return if stream == 0 {
                    conn(Reason::PROTOCOL_ERROR)
                } else {
                    Err(FrameError::Stream {
                        stream,
                        reason: Reason::PROTOCOL_ERROR,
                    })
                };
            }
            Ok(Some(Frame::WindowUpdate { stream, increment }))
        }
        kind::CONTINUATION => {
            let block = buf.split_to(len as usize).freeze();
            if stream == 0 {
                return conn(Reason::PROTOCOL_ERROR);
            }
            Ok(Some(Frame::Continuation {
                stream,
                block,
                end_headers: flags & flag::END_HEADERS != 0,
            }))
        }
        _ => {
            buf.advance(len as usize);
            Ok(Some(Frame::Unknown { stream }))
        }
    }
}

/// Control frames are small and parsed in place: copying a few bytes is cheaper than splitting
/// the buffer (which would make it shared).
fn take_small(buf: &mut BytesMut, len: u32) -> smallbuf::Small {
    let small = smallbuf::Small::copy(&buf[..len as usize]);
    buf.advance(len as usize);
    small
}

mod smallbuf {
    /// Up to 64 bytes on the stack, longer payloads (a GOAWAY with debug data, a SETTINGS with
    /// many entries) on the heap.
    pub enum Small {
        Inline([u8; 64], usize),
        Heap(Vec<u8>),
    }

    impl Small {
        pub fn copy(bytes: &[u8]) -> Self {
            if bytes.len() <= 64 {
                let mut inline = [0u8; 64];
                inline[..bytes.len()].copy_from_slice(bytes);
                Small::Inline(inline, bytes.len())
            } else {
                Small::Heap(bytes.to_vec())
            }
        }
    }

    impl std::ops::Deref for Small {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self {
                Small::Inline(bytes, len) => &bytes[..*len],
                Small::Heap(bytes) => bytes,
            }
        }
    }
}

/// Removes the pad length byte and the padding of a PADDED frame.
fn strip_padding(mut payload: Bytes, flags: u8) -> Result<Bytes, FrameError> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR));
    };
    let pad = usize::from(pad);
    // The padding may not be as long as the payload it is in (RFC 9113 §6.1).
    if pad >= payload.len() {
        return Err(FrameError::Connection(Reason::PROTOCOL_ERROR));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

fn parse_settings(payload: &[u8]) -> Result<Settings, FrameError> {
    let mut settings = Settings::default();
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        match id {
            setting::HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
            setting::ENABLE_PUSH => match value {
                0 => settings.enable_push = Some(false),
                1 => settings.enable_push = Some(true),
                _ => return Err(FrameError::Connection(Reason::PROTOCOL_ERROR)),
            },
            setting::MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = Some(value),
            setting::INITIAL_WINDOW_SIZE => {
                if value > MAX_WINDOW {
                    return Err(FrameError::Connection(Reason::FLOW_CONTROL_ERROR));
                }
                settings.initial_window_size = Some(value);
            }
            setting::MAX_FRAME_SIZE => {
                if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                    return Err(FrameError::Connection(Reason::PROTOCOL_ERROR));
                }
                settings.max_frame_size = Some(value);
            }
            setting::MAX_HEADER_LIST_SIZE => settings.max_header_list_size = Some(value),
            _ => {} // unknown settings are ignored (RFC 9113 §6.5.2)
        }
    }
    Ok(settings)
}

/// Appends a frame header.
pub fn put_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    let stream = (stream & MAX_WINDOW).to_be_bytes();
    out.extend_from_slice(&[
        len[1], len[2], len[3], kind, flags, stream[0], stream[1], stream[2], stream[3],
    ]);
}

/// Appends a DATA frame. `data` must fit the peer's maximum frame size.
pub fn encode_data(out: &mut Vec<u8>, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_header(out, data.len(), kind::DATA, flags, stream);
    out.extend_from_slice(data);
}

/// Appends a SETTINGS frame with the given entries.
pub fn encode_settings(out: &mut Vec<u8>, entries: &[(u16, u32)]) {
    put_header(out, entries.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in entries {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn encode_settings_ack(out: &mut Vec<u8>) {
    put_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn encode_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_header(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

pub fn encode_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_header(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn encode_ping_ack(out: &mut Vec<u8>, payload: [u8; 8]) {
    put_header(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(&payload);
}

pub fn encode_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_header(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a HEADERS frame whose block `encode` writes straight into `out`, followed by
/// CONTINUATION frames when the block is larger than `max_frame_size` (rare: the block is
/// written first and split afterwards, so the common case copies nothing).
pub fn encode_headers(
    out: &mut Vec<u8>,
    stream: u32,
    end_stream: bool,
    max_frame_size: u32,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    put_header(out, 0, kind::HEADERS, 0, stream);
    encode(out);
    let block_len = out.len() - start - HEADER_LEN;
    let max = max_frame_size as usize;
    let end_stream = if end_stream { flag::END_STREAM } else { 0 };
    if block_len <= max {
        let len = (block_len as u32).to_be_bytes();
        out[start..start + 3].copy_from_slice(&len[1..]);
        out[start + 4] = end_stream | flag::END_HEADERS;
        return;
    }
    let block = out.split_off(start + HEADER_LEN);
    out.truncate(start);
    let mut chunks = block.chunks(max).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let end_headers = if last { flag::END_HEADERS } else { 0 };
        if first {
            put_header(
                out,
                chunk.len(),
                kind::HEADERS,
                end_stream | end_headers,
                stream,
            );
            first = false;
        } else {
            put_header(out, chunk.len(), kind::CONTINUATION, end_headers, stream);
        }
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> BytesMut {
        let mut out = Vec::new();
        put_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        BytesMut::from(&out[..])
    }

    fn one(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        decode(&mut BytesMut::from(buf), DEFAULT_MAX_FRAME_SIZE)
    }

    #[test]
    fn data_frames_round_trip_and_need_whole_payloads() {
        let mut out = Vec::new();
        encode_data(&mut out, 3, b"hello", true);
        for cut in 0..out.len() {
            let mut partial = BytesMut::from(&out[..cut]);
            assert_eq!(decode(&mut partial, DEFAULT_MAX_FRAME_SIZE), Ok(None));
            assert_eq!(partial.len(), cut, "a partial frame is left in place");
        }
        let mut buf = BytesMut::from(&out[..]);
        buf.extend_from_slice(b"rest");
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Data {
                stream: 3,
                data: Bytes::from_static(b"hello"),
                end_stream: true,
                flow_len: 5
            }))
        );
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn padding_is_removed_and_counted() {
        let buf = frame(kind::DATA, flag::PADDED, 1, b"\x03abcXYZ");
        assert_eq!(
            one(&buf),
            Ok(Some(Frame::Data {
                stream: 1,
                data: Bytes::from_static(b"abc"),
                end_stream: false,
                flow_len: 7
            }))
        );
        // Padding as long as the payload (the pad length byte included).
        let buf = frame(kind::DATA, flag::PADDED, 1, b"\x04abc");
        assert_eq!(
            one(&buf),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR))
        );
        let buf = frame(kind::DATA, flag::PADDED, 1, b"");
        assert_eq!(
            one(&buf),
            Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR))
        );
        // Padded HEADERS with priority fields.
        let buf = frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            5,
            b"\x02\x00\x00\x00\x01\x10\x82pp",
        );
        assert_eq!(
            one(&buf),
            Ok(Some(Frame::Headers {
                stream: 5,
                block: Bytes::from_static(b"\x82"),
                end_stream: false,
                end_headers: true
            }))
        );
    }

    #[test]
    fn stream_zero_and_sizes_are_checked() {
        let cases: &[(u8, u8, u32, &[u8], FrameError)] = &[
            (
                kind::DATA,
                0,
                0,
                b"x",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::HEADERS,
                0,
                0,
                b"",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                1,
                b"",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::SETTINGS,
                flag::ACK,
                0,
                b"\0\0\0\0\0\0",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::SETTINGS,
                0,
                0,
                b"\0\0\0",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::PING,
                0,
                0,
                b"1234567",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::PING,
                0,
                3,
                b"12345678",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::RST_STREAM,
                0,
                1,
                b"123",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::RST_STREAM,
                0,
                0,
                b"1234",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::WINDOW_UPDATE,
                0,
                0,
                b"\0\0\0\0",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
            (
                kind::WINDOW_UPDATE,
                0,
                7,
                b"\0\0\0\0",
                FrameError::Stream {
                    stream: 7,
                    reason: Reason::PROTOCOL_ERROR,
                },
            ),
            (
                kind::WINDOW_UPDATE,
                0,
                7,
                b"\0\0\0",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::PRIORITY,
                0,
                7,
                b"\0\0\0",
                FrameError::Stream {
                    stream: 7,
                    reason: Reason::FRAME_SIZE_ERROR,
                },
            ),
            (
                kind::PRIORITY,
                0,
                7,
                b"\0\0\0\x07\x10",
                FrameError::Stream {
                    stream: 7,
                    reason: Reason::PROTOCOL_ERROR,
                },
            ),
            (
                kind::GOAWAY,
                0,
                0,
                b"\0\0\0",
                FrameError::Connection(Reason::FRAME_SIZE_ERROR),
            ),
            (
                kind::CONTINUATION,
                0,
                0,
                b"",
                FrameError::Connection(Reason::PROTOCOL_ERROR),
            ),
        ];
        for (kind, flags, stream, payload, expected) in cases {
            let mut buf = frame(*kind, *flags, *stream, payload);
            buf.extend_from_slice(b"next");
            assert_eq!(
                decode(&mut buf, DEFAULT_MAX_FRAME_SIZE),
                Err(*expected),
                "type {kind} flags {flags} stream {stream}"
            );
            if let FrameError::Stream { .. } = expected {
                assert_eq!(&buf[..], b"next", "a stream error consumes the frame");
            }
        }
    }

    #[test]
    fn frames_above_the_limit_are_refused_before_their_payload() {
        let mut head = Vec::new();
        put_header(&mut head, 16_385, kind::DATA, 0, 1);
        assert_eq!(
            one(&head),
            Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR))
        );
    }

    #[test]
    fn settings_are_validated() {
        let entry = |id: u16, value: u32| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&value.to_be_bytes());
            frame(kind::SETTINGS, 0, 0, &p)
        };
        assert_eq!(
            one(&entry(setting::ENABLE_PUSH, 2)),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR))
        );
        assert_eq!(
            one(&entry(setting::INITIAL_WINDOW_SIZE, 1 << 31)),
            Err(FrameError::Connection(Reason::FLOW_CONTROL_ERROR))
        );
        assert_eq!(
            one(&entry(setting::MAX_FRAME_SIZE, 16_383)),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR))
        );
        assert_eq!(
            one(&entry(setting::MAX_FRAME_SIZE, 1 << 24)),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR))
        );
        assert_eq!(
            one(&entry(0x99, 7)),
            Ok(Some(Frame::Settings(Settings::default())))
        );
        let mut out = Vec::new();
        encode_settings(
            &mut out,
            &[
                (setting::INITIAL_WINDOW_SIZE, MAX_WINDOW),
                (setting::MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        assert_eq!(
            one(&out),
            Ok(Some(Frame::Settings(Settings {
                initial_window_size: Some(MAX_WINDOW),
                max_frame_size: Some(MAX_MAX_FRAME_SIZE),
                enable_push: Some(false),
                ..Settings::default()
            })))
        );
    }

    #[test]
    fn control_frames_round_trip() {
        let mut out = Vec::new();
        encode_ping_ack(&mut out, *b"12345678");
        encode_window_update(&mut out, 0, 1000);
        encode_rst_stream(&mut out, 9, Reason::CANCEL);
        encode_goaway(&mut out, 7, Reason::ENHANCE_YOUR_CALM, b"calm");
        encode_settings_ack(&mut out);
        let mut buf = BytesMut::from(&out[..]);
        let mut frames = Vec::new();
        while let Some(f) = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames,
            vec![
                Frame::Ping {
                    ack: true,
                    payload: *b"12345678"
                },
                Frame::WindowUpdate {
                    stream: 0,
                    increment: 1000
                },
                Frame::RstStream {
                    stream: 9,
                    reason: Reason::CANCEL
                },
                Frame::GoAway {
                    last_stream: 7,
                    reason: Reason::ENHANCE_YOUR_CALM
                },
                Frame::SettingsAck,
            ]
        );
        // A HEADERS frame depending on its own stream.
        let buf = frame(
            kind::HEADERS,
            flag::PRIORITY | flag::END_HEADERS,
            5,
            b"\x00\x00\x00\x05\x10\x82",
        );
        assert_eq!(
            one(&buf),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR))
        );
        // Unknown frame types are skipped whole.
        let mut buf = frame(0xfa, 0xff, 3, b"whatever");
        assert_eq!(
            decode(&mut buf, DEFAULT_MAX_FRAME_SIZE),
            Ok(Some(Frame::Unknown { stream: 3 }))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn large_header_blocks_continue_in_continuation_frames() {
        let mut out = Vec::new();
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        encode_headers(&mut out, 1, true, DEFAULT_MAX_FRAME_SIZE, |o| {
            o.extend_from_slice(&block)
        });
        let mut buf = BytesMut::from(&out[..]);
        let mut joined = Vec::new();
        let mut frames = 0;
        while let Some(f) = decode(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap() {
            frames += 1;
            match f {
                Frame::Headers {
                    block,
                    end_stream,
                    end_headers,
                    ..
                } => {
                    assert!(end_stream && !end_headers);
                    joined.extend_from_slice(&block);
                }
                Frame::Continuation {
                    block, end_headers, ..
                } => {
                    assert_eq!(end_headers, frames == 3);
                    joined.extend_from_slice(&block);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(frames, 3);
        assert_eq!(joined, block);
        // The common case: one frame, flags patched in place.
        let mut out = Vec::new();
        encode_headers(&mut out, 3, false, DEFAULT_MAX_FRAME_SIZE, |o| o.push(0x88));
        assert_eq!(
            out,
            [0, 0, 1, kind::HEADERS, flag::END_HEADERS, 0, 0, 0, 3, 0x88]
        );
    }
}
