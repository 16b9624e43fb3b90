//! The static table (RFC 7541 Appendix A) and the decoder's dynamic table (§2.3, §4).

use super::{Field, Name};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::LazyLock;

/// RFC 7541 Appendix A, index 1 first.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table as decoded fields, built once.
static STATIC_FIELDS: LazyLock<Vec<Field>> = LazyLock::new(|| {
    STATIC
        .iter()
        .map(|(name, value)| Field {
            name: Name::parse(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
        })
        .collect()
});

/// The dynamic table a decoder keeps: newest entry first, bounded by `max_size` bytes as RFC
/// 7541 §4.1 counts them.
#[derive(Debug)]
pub struct DynamicTable {
    entries: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub fn new(max_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The field at HPACK index `index` (1-61 static, 62 and up dynamic, newest first).
    pub fn get(&self, index: usize) -> Option<&Field> {
        match index {
            0 => None,
            1..=61 => STATIC_FIELDS.get(index - 1),
            _ => self.entries.get(index - 62),
        }
    }

    /// Adds a field, evicting the oldest entries to make room. A field larger than the whole
    /// table empties it and is not added (RFC 7541 §4.4).
    pub fn insert(&mut self, field: Field) {
        let size = field.size();
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front(field);
        }
    }

    /// Applies a dynamic table size update.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(old) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= old.size();
        }
    }
}

/// The static index of a name, for the encoder (0: not in the static table).
pub fn static_name_index(name: &[u8]) -> usize {
    static BY_NAME: LazyLock<std::collections::HashMap<&'static [u8], usize>> =
        LazyLock::new(|| {
            let mut map = std::collections::HashMap::new();
            for (i, (name, _)) in STATIC.iter().enumerate().rev() {
                map.insert(name.as_bytes(), i + 1);
            }
            map
        });
    BY_NAME.get(name).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: Name::parse(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    #[test]
    fn static_entries_and_name_lookup() {
        let table = DynamicTable::new(4096);
        assert_eq!(table.get(2).unwrap().name, Name::Method);
        assert_eq!(table.get(61).unwrap().name.as_bytes(), b"www-authenticate");
        assert!(table.get(0).is_none() && table.get(62).is_none());
        assert_eq!(static_name_index(b":status"), 8);
        assert_eq!(static_name_index(b"content-type"), 31);
        assert_eq!(static_name_index(b"x-nope"), 0);
    }

    #[test]
    fn eviction_follows_sizes() {
        let mut table = DynamicTable::new(100);
        table.insert(field("aaaa", "1111")); // 40
        table.insert(field("bbbb", "2222")); // 80
        assert_eq!((table.len(), table.size()), (2, 80));
        table.insert(field("cccc", "3333")); // evicts aaaa
        assert_eq!(table.get(62).unwrap().name.as_bytes(), b"cccc");
        assert_eq!(table.get(63).unwrap().name.as_bytes(), b"bbbb");
        assert!(table.get(64).is_none());
        table.insert(field("x", &"y".repeat(100))); // too large: empties the table
        assert_eq!((table.len(), table.size()), (0, 0));
        table.insert(field("dddd", "4444"));
        table.set_max_size(10);
        assert_eq!((table.len(), table.size()), (0, 0));
    }
}
