//! HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), decoded incrementally and strictly.
//!
//! One state machine serves both directions: the request framing guard walks client bodies with
//! it (to find where the next request starts), and the upstream client decodes response bodies
//! with it. Strict means: hex sizes of at most 16 digits, every line ended by CRLF, chunk data
//! followed by CRLF, bounded extensions and trailers, no obs-fold or control characters.

use std::ops::Range;

/// A chunk size has at most 16 hex digits (u64).
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;
/// Chunk extensions and trailer lines are bounded so a peer cannot stream an endless line.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Incremental decoder state; cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: Chunk,
}

/// The outcome of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used (framing and data).
    pub consumed: usize,
    /// Chunk data within the consumed bytes (empty when none was reached).
    pub data: Range<usize>,
    /// The last chunk and the trailers have been read.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size { digits: u8, value: u64 },
    /// Inside a chunk extension (after ';'), `len` bytes so far.
    Extension { value: u64, len: usize },
    /// CR seen after the size line; expecting LF.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart { total: usize },
    /// Inside a trailer line.
    TrailerLine { total: usize },
    /// CR seen at the end of a trailer line.
    TrailerLf { total: usize },
    /// CR of the final empty line seen; expecting LF.
    FinalLf,
    /// The body has ended.
    Done,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: Chunk::Size {
                digits: 0,
                value: 0,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Consumes framing bytes from `input` until it reaches chunk data, the end of the body or
    /// the end of `input`. When it reaches data, the returned span covers as much of the chunk
    /// as `input` holds and ends the consumed range; call again with the bytes after it.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, &'static str> {
        let rest = input;
        let mut chunk = self.state;
        let mut i = 0;
        while i < rest.len() {
            let b = rest[i];
            chunk = match chunk {
                Chunk::Done => {
                    // Nothing after the end belongs to this body.
                    self.state = Chunk::Done;
                    return Ok(Decoded {
                        consumed: i,
                        data: 0..0,
                        done: true,
                    });
                }
                Chunk::Size { digits, value } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits == MAX_CHUNK_SIZE_DIGITS {
                            return Err("chunk size too large");
                        }
                        let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                        Chunk::Size {
                            digits: digits + 1,
                            value: (value << 4) | digit,
                        }
                    }
                    b';' if digits > 0 => Chunk::Extension { value, len: 0 },
                    b'\r' if digits > 0 => Chunk::SizeLf { value },
                    _ => return Err("invalid chunk size"),
                },
                Chunk::Extension { value, len } => match b {
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => return Err("bare LF in chunk extension"),
                    0..=0x08 | 0x0a..=0x1f | 0x7f => {
                        return Err("control character in chunk extension");
                    }
                    _ if len >= MAX_CHUNK_LINE => {
                        return Err("chunk extension too long");
                    }
                    _ => Chunk::Extension {
                        value,
                        len: len + 1,
                    },
                },
                Chunk::SizeLf { value } => match b {
                    b'\n' if value == 0 => Chunk::TrailerStart { total: 0 },
                    b'\n' => Chunk::Data(value),
                    _ => return Err("chunk size line not ended by CRLF"),
                },
                Chunk::Data(remaining) => {
                    let take = remaining.min((rest.len() - i) as u64);
                    self.state = if take == remaining {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(remaining - take)
                    };
                    let end = i + take as usize;
                    return Ok(Decoded {
                        consumed: end,
                        data: i..end,
                        done: false,
                    });
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size {
                    digits: 0,
                    value: 0,
                },
                Chunk::DataCr | Chunk::DataLf => {
                    return Err("chunk data not followed by CRLF");
                }
                Chunk::TrailerStart { total } => match b {
                    b'\r' => Chunk::FinalLf,
                    b'\n' => return Err("bare LF in trailers"),
                    b' ' | b'\t' => return Err("obs-fold in trailers"),
                    _ => Chunk::TrailerLine { total: total + 1 },
                },
                Chunk::TrailerLine { total } => match b {
                    _ if total >= MAX_TRAILER_BYTES => {
                        return Err("trailers too large");
                    }
                    b'\r' => Chunk::TrailerLf { total: total + 1 },
                    b'\n' => return Err("bare LF in trailers"),
                    0..=0x08 | 0x0a..=0x1f | 0x7f => {
                        return Err("control character in trailers");
                    }
                    _ => Chunk::TrailerLine { total: total + 1 },
                },
                Chunk::TrailerLf { total } => match b {
                    b'\n' => Chunk::TrailerStart { total: total + 1 },
                    _ => return Err("bare CR in trailers"),
                },
                Chunk::FinalLf => match b {
                    b'\n' => {
                        self.state = Chunk::Done;
                        return Ok(Decoded {
                            consumed: i + 1,
                            data: 0..0,
                            done: true,
                        });
                    }
                    _ => return Err("bare CR after trailers"),
                },
            };
            i += 1;
        }
        self.state = chunk;
        Ok(Decoded {
            consumed: i,
            data: 0..0,
            done: false,
        })
    }
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input` (fed in pieces of `step` bytes); returns the data and whether done.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut decoder = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let d = decoder.decode(&pending)?;
                data.extend_from_slice(&pending[d.data.clone()]);
                pending.drain(..d.consumed);
                if d.done {
                    return Ok((data, true));
                }
                if pending.is_empty() || d.consumed == 0 {
                    break;
                }
            }
        }
        Ok((data, decoder.is_done()))
    }

    #[test]
    fn decodes_data_across_any_split() {
        let body = b"5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            assert_eq!(
                decode_all(body, step),
                Ok((b"hello, world".to_vec(), true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn refuses_malformed_framing() {
        for (body, reason) in [
            (&b"x\r\n"[..], "invalid chunk size"),
            (b"11111111111111111\r\n", "chunk size too large"),
            (b"5\rx", "chunk size line not ended by CRLF"),
            (b"5\r\nhelloX", "chunk data not followed by CRLF"),
            (b"0\r\nX: 1\n", "bare LF in trailers"),
            (b"0\r\n x\r\n", "obs-fold in trailers"),
        ] {
            assert_eq!(decode_all(body, body.len()), Err(reason), "{body:?}");
        }
    }
}
