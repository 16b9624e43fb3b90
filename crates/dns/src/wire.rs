//! Response encoding: a writer over a reusable buffer that compresses owner names against the
//! names already in the message (RFC 1035 4.1.4), with a fixed-size table so encoding never
//! allocates once the buffer has grown.
//!
//! Record data is stored pre-encoded and uncompressed (so it can be copied anywhere); only
//! owner names are compressed, which covers most of the savings: every answer owner becomes a
//! two-byte pointer to the question.

use crate::query::HEADER_LEN;

/// How many label positions the compression table remembers.
const TABLE: usize = 64;

/// Encodes one response into `buf`.
pub struct Writer<'b> {
    pub buf: &'b mut Vec<u8>,
    /// Offsets of label starts already written (pointer targets).
    table: [u16; TABLE],
    used: usize,
}

impl<'b> Writer<'b> {
    /// Starts a response: clears `buf`, writes a header with the given id and flags (counts
    /// zero) and the question exactly as given (`qname` in wire form, the client's case).
    pub fn new(
        buf: &'b mut Vec<u8>,
        id: u16,
        flags: u16,
        qname: &[u8],
        qtype: u16,
        qclass: u16,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&flags.to_be_bytes());
        buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut w = Writer {
            buf,
            table: [0; TABLE],
            used: 0,
        };
        w.remember(HEADER_LEN, qname);
        w.buf.extend_from_slice(qname);
        w.buf.extend_from_slice(&qtype.to_be_bytes());
        w.buf.extend_from_slice(&qclass.to_be_bytes());
        w
    }

    /// Writes `name` (uncompressed wire form) compressed against the names already written.
    pub fn name(&mut self, name: &[u8]) {
        let mut at = 0;
        while name.get(at).is_some_and(|&l| l != 0) {
            if let Some(target) = self.find(&name[at..]) {
                self.remember(self.buf.len(), &name[..at]);
                self.buf.extend_from_slice(&name[..at]);
                self.buf.extend_from_slice(&(0xc000 | target).to_be_bytes());
                return;
            }
            at += 1 + name[at] as usize;
        }
        self.remember(self.buf.len(), name);
        self.buf.extend_from_slice(name);
    }

    /// Appends raw bytes (a pre-encoded type/class/TTL/RDATA tail).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Adds `n` to the count at header offset `at` (6 answer, 8 authority, 10 additional).
    pub fn add_count(&mut self, at: usize, n: u16) {
        add_count(self.buf, at, n);
    }

    /// Records the label starts of `name` written at `offset` (only the leading labels of a
    /// name that ends in a pointer are passed in).
    fn remember(&mut self, offset: usize, name: &[u8]) {
        let mut at = 0;
        while self.used < TABLE && name.get(at).is_some_and(|&l| l != 0) {
            // Pointers reach 14 bits of offset; past that a name just stays uncompressed.
            if offset + at < 0x3fff {
                self.table[self.used] = (offset + at) as u16;
                self.used += 1;
            }
            at += 1 + name[at] as usize;
        }
    }

    /// A remembered position whose name equals `suffix`, ignoring ASCII case.
    fn find(&self, suffix: &[u8]) -> Option<u16> {
        self.table[..self.used]
            .iter()
            .copied()
            .find(|&off| equals_at(self.buf, off as usize, suffix))
    }
}

/// Adds `n` to the big-endian count at `at` in a message.
pub fn add_count(buf: &mut [u8], at: usize, n: u16) {
    let v = u16::from_be_bytes([buf[at], buf[at + 1]]).wrapping_add(n);
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Whether the (possibly compressed) name at `off` in `msg` equals `name`, ignoring ASCII case.
fn equals_at(msg: &[u8], mut off: usize, name: &[u8]) -> bool {
    let mut at = 0;
    // Bounded: every step consumes a label of `name` or follows a pointer backwards.
    for _ in 0..256 {
        let Some(&len) = msg.get(off) else {
            return false;
        };
        if len & 0xc0 == 0xc0 {
            let Some(&lo) = msg.get(off + 1) else {
                return false;
            };
            let target = (((len & 0x3f) as usize) << 8) | lo as usize;
            if target >= off {
                return false;
            }
            off = target;
            continue;
        }
        let len = len as usize;
        if name.get(at) != Some(&(len as u8)) {
            return false;
        }
        if len == 0 {
            return true;
        }
        let (Some(a), Some(b)) = (
            msg.get(off + 1..off + 1 + len),
            name.get(at + 1..at + 1 + len),
        ) else {
            return false;
        };
        if !a.eq_ignore_ascii_case(b) {
            return false;
        }
        off += 1 + len;
        at += 1 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_point_at_the_question_and_shared_suffixes() {
        let mut buf = Vec::new();
        let q = b"\x03WWW\x07example\x04test\x00";
        let mut w = Writer::new(&mut buf, 7, 0x8400, q, 1, 1);
        w.name(b"\x03www\x07example\x04test\x00");
        assert_eq!(&w.buf[w.buf.len() - 2..], &[0xc0, 12]);
        w.name(b"\x04mail\x07example\x04test\x00");
        // "mail" then a pointer to "example.test" inside the question (offset 12 + 4).
        assert_eq!(&w.buf[w.buf.len() - 7..], b"\x04mail\xc0\x10");
        w.name(b"\x04MAIL\x07example\x04test\x00");
        assert_eq!(&w.buf[w.buf.len() - 2..], &[0xc0, 36]);
        w.name(b"\x03org\x00");
        assert_eq!(&w.buf[w.buf.len() - 5..], b"\x03org\x00");
    }
}
