//! HPACK Huffman coding (RFC 7541 §5.2, code table in Appendix B).
//!
//! Clients Huffman-encode most literals, so decoding must be correct and reasonably fast: it
//! walks a nibble-at-a-time state machine (each state is an internal node of the code tree, each
//! step consumes 4 bits and emits at most one byte, because no code is shorter than 5 bits). The
//! machine is built once from the code table below instead of being pasted in as 4,000 magic
//! numbers, so the only data to trust is the RFC's table. The encoder exists for tests and the
//! fuzz targets: gatehouse sends its own literals without Huffman (see `encoder.rs`).

use super::HpackError;
use std::sync::LazyLock;

/// The code of each byte value, right-aligned (RFC 7541 Appendix B).
const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

/// The length in bits of each byte value's code.
const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// The end-of-string symbol: 30 one bits. Decoding it is an error; its prefix pads strings.
const EOS_CODE: u32 = 0x3fff_ffff;
const EOS_BITS: u8 = 30;

const EMIT: u8 = 1;
const FAIL: u8 = 2;

#[derive(Clone, Copy, Default)]
struct Step {
    next: u16,
    byte: u8,
    flags: u8,
}

struct Machine {
    steps: Vec<[Step; 16]>,
    /// A string may end in this state: at the root, or inside at most 7 bits of EOS's prefix
    /// (padding is the most significant bits of EOS, shorter than a byte).
    accepting: Vec<bool>,
}

static MACHINE: LazyLock<Machine> = LazyLock::new(build);

#[derive(Clone, Copy)]
enum Node {
    Inner(u16),
    Leaf(u16),
}

fn build() -> Machine {
    // The code tree: node 0 is the root; children[node][bit].
    let mut children: Vec<[Option<Node>; 2]> = vec![[None, None]];
    let codes = (0..256usize)
        .map(|b| (ENCODE_CODES[b], ENCODE_CODE_LENGTHS[b], b as u16))
        .chain(std::iter::once((EOS_CODE, EOS_BITS, 256u16)));
    for (code, bits, symbol) in codes {
        let mut node = 0usize;
        for i in (0..bits).rev() {
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                children[node][bit] = Some(Node::Leaf(symbol));
            } else {
                node = match children[node][bit] {
                    Some(Node::Inner(next)) => usize::from(next),
                    _ => {
                        children.push([None, None]);
                        let next = children.len() - 1;
                        children[node][bit] = Some(Node::Inner(next as u16));
                        next
                    }
                };
            }
        }
    }
    let mut accepting = vec![false; children.len()];
    let mut node = 0usize;
    for depth in 0..8 {
        accepting[node] = true;
        if depth == 7 {
            break;
        }
        match children[node][1] {
            Some(Node::Inner(next)) => node = usize::from(next),
            _ => break,
        }
    }
    let mut steps = vec![[Step::default(); 16]; children.len()];
    for (state, row) in steps.iter_mut().enumerate() {
        for (nibble, step) in row.iter_mut().enumerate() {
            let mut node = state;
            for i in (0..4).rev() {
                let bit = (nibble >> i) & 1;
                match children[node][bit] {
                    Some(Node::Inner(next)) => node = usize::from(next),
                    Some(Node::Leaf(256)) | None => {
                        step.flags = FAIL;
                        break;
                    }
                    Some(Node::Leaf(symbol)) => {
                        step.flags |= EMIT;
                        step.byte = symbol as u8;
                        node = 0;
                    }
                }
            }
            step.next = node as u16;
        }
    }
    Machine { steps, accepting }
}

/// Appends the decoded form of `src` to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let machine = &*MACHINE;
    let mut state = 0usize;
    out.reserve(src.len() * 8 / 5 + 1);
    for &byte in src {
        for nibble in [byte >> 4, byte & 0xf] {
            let step = machine
                .steps
                .get(state)
                .and_then(|row| row.get(usize::from(nibble)))
                .copied()
                .unwrap_or(Step {
                    next: 0,
                    byte: 0,
                    flags: FAIL,
                });
            if step.flags & FAIL != 0 {
                return Err(HpackError::Huffman);
            }
            if step.flags & EMIT != 0 {
                out.push(step.byte);
            }
            state = usize::from(step.next);
        }
    }
    if machine.accepting.get(state).copied().unwrap_or(false) {
        Ok(())
    } else {
        Err(HpackError::Huffman)
    }
}

/// Appends the Huffman encoding of `src` to `out`, padded with ones.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut bits: u64 = 0;
    let mut count = 0u32;
    for &byte in src {
        let len = u32::from(ENCODE_CODE_LENGTHS[usize::from(byte)]);
        bits = (bits << len) | u64::from(ENCODE_CODES[usize::from(byte)]);
        count += len;
        while count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    if count > 0 {
        out.push(((bits << (8 - count)) as u8) | (0xff >> count));
    }
}

/// The length of `src` once Huffman-encoded.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(ENCODE_CODE_LENGTHS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc_7541_appendix_c4_strings() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
                "https://www.example.com",
            ),
        ];
        for (encoded, text) in cases {
            let mut out = Vec::new();
            decode(&hex(encoded), &mut out).unwrap();
            assert_eq!(out, text.as_bytes());
            let mut again = Vec::new();
            encode(text.as_bytes(), &mut again);
            assert_eq!(again, hex(encoded), "{text}");
            assert_eq!(encoded_len(text.as_bytes()), again.len());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut encoded = Vec::new();
        encode(&all, &mut encoded);
        let mut out = Vec::new();
        decode(&encoded, &mut out).unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits): padding with zeros instead of ones.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HpackError::Huffman));
        // Eight or more bits of padding.
        assert_eq!(
            decode(&[0b0001_1111, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
        // A whole EOS symbol.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
        // Valid: 'a' padded with three ones.
        out.clear();
        decode(&[0b0001_1111], &mut out).unwrap();
        assert_eq!(out, b"a");
        out.clear();
        decode(&[], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
