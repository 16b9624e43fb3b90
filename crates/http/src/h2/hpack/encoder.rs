//! Encoding response header blocks, cheaply.
//!
//! Choices, each for CPU per response rather than bytes on the wire:
//!
//! - **No Huffman.** Huffman coding shrinks a value by about a fifth but walks a bit-level
//!   table per byte on every response; behind a proxy the link is rarely the bottleneck, and the
//!   values that repeat (the bulk of a response head) are sent as one-byte indices anyway.
//! - **Static table first**, for names (`content-type` → index 31) and for whole fields where
//!   it has them (`:status 200` → one byte).
//! - **A small dynamic table** for values that repeat across responses on a connection
//!   (`server: nginx`, `content-type: application/json`, `vary`): sent once as a literal with
//!   incremental indexing, afterwards as a one-byte index. Lookups use precomputed hashes, no
//!   allocation.
//! - **Values that look unique are not indexed** (`x-request-id`, `etag`, trace ids): adding
//!   them would only evict useful entries. `date` and `content-length` change often but not
//!   always: they are indexed only when the same value is sent twice in a row. Credentials
//!   (`set-cookie`, `authorization`, ...) are sent as never-indexed literals (RFC 7541 §7.1.3),
//!   so no intermediary may compress them either.

use super::table::static_name_index;
use crate::h2::{IntMap, field_hash};
use bytes::Bytes;
use std::collections::VecDeque;

/// The largest dynamic table we keep, whatever the client allows: a few dozen entries are
/// enough for the values that repeat, and a small table keeps lookups cheap.
const OUR_MAX_TABLE: usize = 4096;

/// A response header encoder with its dynamic table.
#[derive(Debug)]
pub struct Encoder {
    /// Newest last. Mirrors the table the client's decoder keeps.
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The client's SETTINGS_HEADER_TABLE_SIZE.
    peer_max: usize,
    /// A size update must open the next block (after the client changed its limit).
    pending_update: bool,
    /// Entries ever inserted: entry `n` (0-based) has HPACK index 62 + (inserted - 1 - n).
    inserted: u64,
    /// Hash of (name, value) → insertion number; hash of name → newest insertion with it.
    by_field: IntMap<u64, u64>,
    by_name: IntMap<u64, u64>,
    /// The last `date` and `content-length` sent without indexing.
    last_repeatable: [Option<Bytes>; 2],
}

#[derive(Debug)]
struct Entry {
    name: Bytes,
    value: Bytes,
    field_hash: u64,
    name_hash: u64,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Index,
    NoIndex,
    Never,
    /// Index only a value sent twice in a row (slot in `last_repeatable`).
    IfRepeated(usize),
}

fn policy(name: &[u8]) -> Policy {
    match name {
        b"set-cookie" | b"authorization" | b"proxy-authorization" | b"cookie" => Policy::Never,
        b"x-request-id" | b"etag" | b"last-modified" | b"expires" | b"age" | b"content-range"
        | b"location" | b"traceparent" | b"tracestate" | b"x-amzn-trace-id" | b"x-trace-id"
        | b"x-correlation-id" | b"request-id" | b"x-b3-traceid" | b"x-b3-spanid"
        | b"content-md5" | b"digest" => Policy::NoIndex,
        b"date" => Policy::IfRepeated(0),
        b"content-length" => Policy::IfRepeated(1),
        _ => Policy::Index,
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: OUR_MAX_TABLE,
            // RFC 7541: the peer's table is 4096 bytes until its SETTINGS say otherwise.
            peer_max: 4096,
            pending_update: false,
            inserted: 0,
            by_field: IntMap::default(),
            by_name: IntMap::default(),
            last_repeatable: [None, None],
        }
    }

    /// The client's SETTINGS_HEADER_TABLE_SIZE changed: our table follows it (never above our
    /// own maximum) and the next block says so.
    pub fn set_peer_table_size(&mut self, size: u32) {
        self.peer_max = size as usize;
        let new_max = self.peer_max.min(OUR_MAX_TABLE);
        if new_max != self.max_size {
            self.max_size = new_max;
            self.evict_to(new_max);
            self.pending_update = true;
        }
    }

    /// Starts a header block (emits a pending dynamic table size update).
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        if self.pending_update {
            self.pending_update = false;
            integer(out, self.max_size, 5, 0x20);
        }
    }

    /// The `:status` field.
    pub fn status(&mut self, status: u16, out: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.push(0x80 | index);
        } else {
            let mut digits = itoa::Buffer::new();
            self.field(b":status", digits.format(status).as_bytes(), out);
        }
    }

    /// One header field. `name` must be lowercase (as `http::HeaderName` keeps it).
    pub fn field(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let name_hash = field_hash(0, name);
        let field_hash = field_hash(name_hash, value);
        if let Some(index) = self.find_field(field_hash, name, value) {
            integer(out, index, 7, 0x80);
            return;
        }
        let mut policy = policy(name);
        if let Policy::IfRepeated(slot) = policy {
            let repeated = self.last_repeatable[slot]
                .as_ref()
                .is_some_and(|last| last[..] == *value);
            policy = if repeated {
                self.last_repeatable[slot] = None;
                Policy::Index
            } else {
                self.last_repeatable[slot] = Some(Bytes::copy_from_slice(value));
                Policy::NoIndex
            };
        }
        let size = name.len() + value.len() + 32;
        if policy == Policy::Index && size > self.max_size / 4 {
            policy = Policy::NoIndex;
        }
        let name_index = match static_name_index(name) {
            0 => self.find_name(name_hash, name).unwrap_or(0),
            index => index,
        };
        let (prefix, pattern) = match policy {
            Policy::Index => (6, 0x40),
            Policy::Never => (4, 0x10),
            Policy::NoIndex | Policy::IfRepeated(_) => (4, 0x00),
        };
        integer(out, name_index, prefix, pattern);
        if name_index == 0 {
            string(out, name);
        }
        string(out, value);
        if policy == Policy::Index {
            self.insert(name, value, name_hash, field_hash);
        }
    }

    fn index_of(&self, insertion: u64) -> Option<usize> {
        let oldest = self.inserted - self.entries.len() as u64;
        if insertion < oldest || insertion >= self.inserted {
            return None;
        }
        Some(62 + (self.inserted - 1 - insertion) as usize)
    }

    fn entry(&self, insertion: u64) -> Option<&Entry> {
        let oldest = self.inserted - self.entries.len() as u64;
        self.entries.get(insertion.checked_sub(oldest)? as usize)
    }

    fn find_field(&self, hash: u64, name: &[u8], value: &[u8]) -> Option<usize> {
        let insertion = *self.by_field.get(&hash)?;
        let entry = self.entry(insertion)?;
        if entry.name[..] == *name && entry.value[..] == *value {
            self.index_of(insertion)
        } else {
            None
        }
    }

    fn find_name(&self, hash: u64, name: &[u8]) -> Option<usize> {
        let insertion = *self.by_name.get(&hash)?;
        let entry = self.entry(insertion)?;
        if entry.name[..] == *name {
            self.index_of(insertion)
        } else {
            None
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8], name_hash: u64, field_hash: u64) {
        let entry = Entry {
            name: Bytes::copy_from_slice(name),
            value: Bytes::copy_from_slice(value),
            field_hash,
            name_hash,
        };
        let size = entry.size();
        self.evict_to(self.max_size.saturating_sub(size));
        if size > self.max_size {
            return; // the client's decoder empties its table and adds nothing; so do we
        }
        self.size += size;
        self.by_field.insert(field_hash, self.inserted);
        self.by_name.insert(name_hash, self.inserted);
        self.entries.push_back(entry);
        self.inserted += 1;
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let oldest = self.inserted - self.entries.len() as u64;
            let Some(entry) = self.entries.pop_front() else {
                self.size = 0;
                break;
            };
            self.size -= entry.size();
            if self.by_field.get(&entry.field_hash) == Some(&oldest) {
                self.by_field.remove(&entry.field_hash);
            }
            if self.by_name.get(&entry.name_hash) == Some(&oldest) {
                self.by_name.remove(&entry.name_hash);
            }
        }
    }
}

/// An integer with an N-bit prefix, the other bits of the first byte set to `pattern`.
fn integer(out: &mut Vec<u8>, value: usize, prefix: u8, pattern: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal without Huffman coding.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    integer(out, bytes.len(), 7, 0);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::super::{Decoder, Field};
    use super::*;

    fn round_trip(encoder: &mut Encoder, decoder: &mut Decoder, fields: &[(&str, &str)]) -> usize {
        let mut out = Vec::new();
        encoder.begin_block(&mut out);
        for (name, value) in fields {
            if *name == ":status" {
                encoder.status(value.parse().unwrap(), &mut out);
            } else {
                encoder.field(name.as_bytes(), value.as_bytes(), &mut out);
            }
        }
        let mut decoded: Vec<Field> = Vec::new();
        decoder
            .decode(&Bytes::from(out.clone()), usize::MAX, |f| decoded.push(f))
            .unwrap();
        let got: Vec<(String, String)> = decoded
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.as_bytes().to_vec()).unwrap(),
                    String::from_utf8(f.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        out.len()
    }

    #[test]
    fn repeated_responses_shrink_to_indices() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let head = [
            (":status", "200"),
            ("server", "nginx"),
            ("content-type", "application/json"),
            ("content-length", "42"),
            ("date", "Sat, 28 Nov 2026 00:00:00 GMT"),
            ("x-request-id", "abc"),
        ];
        let first = round_trip(&mut e, &mut d, &head);
        let second = round_trip(&mut e, &mut d, &head);
        let third = round_trip(&mut e, &mut d, &head);
        assert!(second < first, "{second} < {first}");
        // :status, server, content-type, content-length, date: one byte each; the request id
        // stays a literal with its name (1 + 1 + 12 + 1 + 3 bytes).
        assert_eq!(third, 5 + 18);
        let other_id = round_trip(
            &mut e,
            &mut d,
            &[
                (":status", "404"),
                ("x-request-id", "def"),
                ("x-custom", "1"),
            ],
        );
        assert!(other_id > 3);
    }

    #[test]
    fn credentials_are_never_indexed() {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.field(b"set-cookie", b"a=b", &mut out);
        assert_eq!(out[0], 0x10 | 15); // never indexed, name index 55 (15 + 40 in the tail)
        assert!(e.entries.is_empty());
        let mut d = Decoder::new(4096);
        round_trip(
            &mut e,
            &mut d,
            &[("set-cookie", "a=b"), ("authorization", "x")],
        );
        assert!(e.entries.is_empty());
    }

    #[test]
    fn table_follows_the_clients_limit_and_evicts() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        for i in 0..500 {
            let value = format!("value-{i}");
            round_trip(
                &mut e,
                &mut d,
                &[("x-custom", &value), ("x-custom", "same")],
            );
            assert!(e.size <= e.max_size);
            assert_eq!(e.size, d.table().size(), "mirrors the decoder");
        }
        e.set_peer_table_size(0);
        round_trip(&mut e, &mut d, &[("server", "nginx"), ("server", "nginx")]);
        assert_eq!(d.table().size(), 0);
        assert!(e.entries.is_empty());
        e.set_peer_table_size(100_000);
        round_trip(&mut e, &mut d, &[("server", "nginx"), ("server", "nginx")]);
        assert_eq!(d.table().max_size(), OUR_MAX_TABLE);
    }

    #[test]
    fn large_values_and_unusual_statuses() {
        let mut e = Encoder::new();
        let mut d = Decoder::new(4096);
        let big = "x".repeat(5000);
        round_trip(&mut e, &mut d, &[(":status", "418"), ("x-big", &big)]);
        assert!(e.entries.len() <= 1);
        round_trip(&mut e, &mut d, &[(":status", "418"), ("x-big", &big)]);
    }
}
