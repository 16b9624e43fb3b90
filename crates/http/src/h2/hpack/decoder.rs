//! Decoding request header blocks (RFC 7541 §3, §5, §6).
//!
//! A block is decoded whole, after its CONTINUATION frames are joined, because every field in it
//! may change the dynamic table the next block refers to: even a request that is refused (too
//! large, malformed) must be decoded to the end, or the connection's compression state would be
//! lost. Hence the header list size limit does not stop decoding: fields past the limit are
//! dropped and [`Decoded::over_limit`] tells the caller to answer 431. Everything that makes the
//! block itself unreadable (truncation, overflowing integers, bad indices, bad Huffman, a size
//! update in the wrong place or above our SETTINGS_HEADER_TABLE_SIZE) is an [`HpackError`].
//!
//! Literal values that are not Huffman-coded are sliced out of the block without copying; a
//! value that enters the dynamic table is copied, so that the table never pins a whole read
//! buffer in memory.

use super::table::DynamicTable;
use super::{Field, HpackError, Name, huffman};
use bytes::Bytes;

/// The largest integer accepted: far above any table size, index or string length that can
/// occur in a block we accept, and far below overflow.
const MAX_INTEGER: u64 = u32::MAX as u64;

/// A decoder and the dynamic table its peer's encoder fills.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// Our SETTINGS_HEADER_TABLE_SIZE: size updates may not go above it.
    limit: usize,
}

/// What decoding one block found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The header list size (RFC 9113 §6.5.2) of the whole block.
    pub list_size: usize,
    /// The list was larger than allowed: fields past the limit were not emitted.
    pub over_limit: bool,
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `limit` bytes (our
    /// SETTINGS_HEADER_TABLE_SIZE).
    pub fn new(limit: usize) -> Self {
        Self {
            table: DynamicTable::new(limit),
            limit,
        }
    }

    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Decodes `block`, passing each field to `emit` until the header list grows past
    /// `max_list_size`.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_list_size: usize,
        mut emit: impl FnMut(Field),
    ) -> Result<Decoded, HpackError> {
        let mut cursor = Cursor { block, pos: 0 };
        let mut list_size = 0usize;
        let mut over_limit = false;
        let mut at_start = true;
        while let Some(first) = cursor.peek() {
            let field = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = cursor.integer(7)?;
                self.table.get(index).cloned().ok_or(HpackError::BadIndex)?
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing (§6.2.1).
                let field = self.literal(&mut cursor, 6)?;
                self.table.insert(Field {
                    name: field.name.clone(),
                    value: Bytes::copy_from_slice(&field.value),
                });
                field
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only at the start of a block.
                if !at_start {
                    return Err(HpackError::BadSizeUpdate);
                }
                let size = cursor.integer(5)?;
                if size > self.limit {
                    return Err(HpackError::BadSizeUpdate);
                }
                self.table.set_max_size(size);
                continue;
            } else {
                // Literal without indexing (0000) or never indexed (0001) (§6.2.2, §6.2.3).
                self.literal(&mut cursor, 4)?
            };
            at_start = false;
            list_size = list_size.saturating_add(field.size());
            if list_size > max_list_size {
                over_limit = true;
            }
            if !over_limit {
                emit(field);
            }
        }
        Ok(Decoded {
            list_size,
            over_limit,
        })
    }

    /// A literal field whose name is an index (with the given prefix) or a string.
    fn literal(&self, cursor: &mut Cursor<'_>, prefix: u8) -> Result<Field, HpackError> {
        let index = cursor.integer(prefix)?;
        let name = if index == 0 {
            let raw = cursor.string()?;
            Name::parse(&raw)
        } else {
            self.table
                .get(index)
                .ok_or(HpackError::BadIndex)?
                .name
                .clone()
        };
        let value = cursor.string()?;
        Ok(Field { name, value })
    }
}

struct Cursor<'a> {
    block: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.block.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, HpackError> {
        let byte = self.peek().ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// An integer with an N-bit prefix (§5.1).
    fn integer(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let mut value = u64::from(self.next()? & mask);
        if value < u64::from(mask) {
            return Ok(value as usize);
        }
        let mut shift = 0u32;
        loop {
            let byte = self.next()?;
            value += u64::from(byte & 0x7f) << shift;
            if value > MAX_INTEGER {
                return Err(HpackError::IntegerOverflow);
            }
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(HpackError::IntegerOverflow);
            }
        }
        usize::try_from(value).map_err(|_| HpackError::IntegerOverflow)
    }

    /// A string literal (§5.2), Huffman-coded or not.
    fn string(&mut self) -> Result<Bytes, HpackError> {
        let huffman = self.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self.pos.checked_add(len).ok_or(HpackError::Truncated)?;
        let raw = self.block.get(self.pos..end).ok_or(HpackError::Truncated)?;
        let value = if huffman {
            let mut out = Vec::new();
            huffman::decode(raw, &mut out)?;
            Bytes::from(out)
        } else {
            self.block.slice(self.pos..end)
        };
        self.pos = end;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn decode(decoder: &mut Decoder, block: &str) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        decoder
            .decode(&hex(block), usize::MAX, |f| {
                fields.push((
                    String::from_utf8(f.name.as_bytes().to_vec()).unwrap(),
                    String::from_utf8(f.value.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        fields
    }

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rfc_7541_c1_integers() {
        let block = Bytes::from_static(&[0x1f, 0x9a, 0x0a]);
        let mut cursor = Cursor {
            block: &block,
            pos: 0,
        };
        assert_eq!(cursor.integer(5), Ok(1337));
        // Overflow: more continuation bytes than any u32 needs.
        let block = Bytes::from_static(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        let mut cursor = Cursor {
            block: &block,
            pos: 0,
        };
        assert_eq!(cursor.integer(5), Err(HpackError::IntegerOverflow));
        let block = Bytes::from_static(&[0x1f, 0xff]);
        let mut cursor = Cursor {
            block: &block,
            pos: 0,
        };
        assert_eq!(cursor.integer(5), Err(HpackError::Truncated));
    }

    #[test]
    fn rfc_7541_c2_field_representations() {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(
                &mut d,
                "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"
            ),
            list(&[("custom-key", "custom-header")])
        );
        assert_eq!(d.table().size(), 55);
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, "040c 2f73 616d 706c 652f 7061 7468"),
            list(&[(":path", "/sample/path")])
        );
        assert_eq!(d.table().len(), 0);
        assert_eq!(
            decode(&mut d, "1008 7061 7373 776f 7264 0673 6563 7265 74"),
            list(&[("password", "secret")])
        );
        assert_eq!(d.table().len(), 0);
        assert_eq!(decode(&mut d, "82"), list(&[(":method", "GET")]));
    }

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode(&mut d, blocks[0]),
            list(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table().size(), 57);
        assert_eq!(
            decode(&mut d, blocks[1]),
            list(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table().size(), 110);
        assert_eq!(
            decode(&mut d, blocks[2]),
            list(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table().size(), 164);
        assert_eq!(d.table().get(62).unwrap().name.as_bytes(), b"custom-key");
    }

    #[test]
    fn rfc_7541_c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        let location = "https://www.example.com";
        assert_eq!(
            decode(&mut d, blocks[0]),
            list(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", location)
            ])
        );
        assert_eq!(d.table().size(), 222);
        assert_eq!(
            decode(&mut d, blocks[1]),
            list(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date1),
                ("location", location)
            ])
        );
        assert_eq!(d.table().size(), 222);
        assert_eq!(
            decode(&mut d, blocks[2]),
            list(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", date2),
                ("location", location),
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                )
            ])
        );
        assert_eq!(d.table().size(), 215);
        assert_eq!(d.table().len(), 3);
    }

    #[test]
    fn rfc_7541_c5_responses_without_huffman() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
             3d31",
        ]);
    }

    #[test]
    fn rfc_7541_c6_responses_with_huffman() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn size_updates_only_at_the_start_and_within_the_limit() {
        let mut d = Decoder::new(4096);
        // Two updates at the start are fine, then a field.
        assert_eq!(decode(&mut d, "20 3fe1 1f 82"), list(&[(":method", "GET")]));
        assert_eq!(d.table().max_size(), 4096);
        // After a field: refused.
        let err = d.decode(&hex("82 20"), usize::MAX, |_| {});
        assert_eq!(err, Err(HpackError::BadSizeUpdate));
        // Above our limit: refused.
        let mut d = Decoder::new(4096);
        let err = d.decode(&hex("3fe2 1f"), usize::MAX, |_| {});
        assert_eq!(err, Err(HpackError::BadSizeUpdate));
    }

    #[test]
    fn bad_blocks_are_errors() {
        for (block, error) in [
            ("80", HpackError::BadIndex),
            ("be", HpackError::BadIndex),
            ("7f00", HpackError::BadIndex),
            ("400a 6375", HpackError::Truncated),
            ("0085 ffff ffff ff", HpackError::Huffman),
            ("41", HpackError::Truncated),
        ] {
            let mut d = Decoder::new(4096);
            assert_eq!(
                d.decode(&hex(block), usize::MAX, |_| {}),
                Err(error),
                "{block}"
            );
        }
    }

    #[test]
    fn list_size_limit_keeps_decoding() {
        let mut d = Decoder::new(4096);
        let mut emitted = 0;
        // :method GET (42), then a literal with indexing custom-key: custom-header (55).
        let block = hex("82 400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let decoded = d.decode(&block, 50, |_| emitted += 1).unwrap();
        assert_eq!(emitted, 1);
        assert_eq!(
            decoded,
            Decoded {
                list_size: 97,
                over_limit: true
            }
        );
        // The table still learned the field that was not emitted.
        assert_eq!(d.table().size(), 55);
    }

    #[test]
    fn names_are_classified() {
        assert_eq!(Name::parse(b":path"), Name::Path);
        assert!(matches!(Name::parse(b":nope"), Name::UnknownPseudo(_)));
        assert!(matches!(Name::parse(b"Content-Type"), Name::Invalid(_)));
        assert!(matches!(Name::parse(b"a b"), Name::Invalid(_)));
        assert!(matches!(Name::parse(b""), Name::Invalid(_)));
        assert_eq!(
            Name::parse(b"content-type"),
            Name::Header(http::header::CONTENT_TYPE)
        );
    }
}
