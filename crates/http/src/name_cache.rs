//! Header names remembered per HTTP/1.1 connection.
//!
//! A connection's peer sends the same field names in the same order, head after head: an
//! upstream's `Server`, `Date`, `Content-Type`...; a client's `Host`, `User-Agent`,
//! `Accept`... `HeaderName::from_bytes` lowercases and classifies every name it is given (about
//! 120 instructions each); comparing a name's raw bytes with the bytes of the name at the same
//! position in the connection's previous head costs a fraction of that. The cache gives exactly
//! what `from_bytes` would: a hit needs the very same bytes, case included.

use http::HeaderName;
use http::header::InvalidHeaderName;

/// Positions remembered: heads with more fields parse the rest every time.
const MAX_NAMES: usize = 32;
/// Bytes of raw names remembered, so a connection's cache stays small whatever it is sent.
const MAX_RAW_BYTES: usize = 1024;

/// The field names of a connection's previous head, by position. One pointer wide, so the
/// connections that carry one stay cheap to move; nothing is allocated until a name is learnt.
#[derive(Debug, Default)]
pub struct NameCache(Option<Box<Learnt>>);

#[derive(Debug, Default)]
struct Learnt {
    /// The raw names, one after another.
    raw: Vec<u8>,
    /// Each remembered name and where its raw bytes lie in `raw`.
    names: Vec<Remembered>,
}

#[derive(Debug)]
struct Remembered {
    start: usize,
    end: usize,
    name: HeaderName,
}

impl NameCache {
    pub const fn new() -> Self {
        Self(None)
    }

    /// The name whose raw bytes are `raw`, the `index`th field of a head (fields are asked for
    /// in order, from 0). Remembers it for the next head when it differs from the last one.
    #[inline]
    pub fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        if let Some(learnt) = &self.0
            && let Some(remembered) = learnt.names.get(index)
            && learnt.raw.get(remembered.start..remembered.end) == Some(raw)
        {
            return Ok(remembered.name.clone());
        }
        self.learn(index, raw)
    }

    /// Parses `raw` and remembers it at position `index`, in place of what was remembered from
    /// there on (the positions after it are learnt again from this head).
    #[inline(never)]
    fn learn(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        let name = HeaderName::from_bytes(raw)?;
        let learnt = self.0.get_or_insert_default();
        if index > learnt.names.len() {
            return Ok(name); // asked out of order: nothing to extend
        }
        learnt.names.truncate(index);
        let start = learnt.names.last().map_or(0, |r| r.end);
        learnt.raw.truncate(start);
        if index < MAX_NAMES && start + raw.len() <= MAX_RAW_BYTES {
            // Exact growth: a connection holds only the bytes of its names.
            learnt.raw.reserve_exact(raw.len());
            learnt.raw.extend_from_slice(raw);
            learnt.names.push(Remembered {
                start,
                end: learnt.raw.len(),
                name: name.clone(),
            });
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cache: &mut NameCache, raw: &[&str]) -> Vec<HeaderName> {
        raw.iter()
            .enumerate()
            .map(|(i, r)| cache.name(i, r.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn gives_what_from_bytes_gives_whatever_came_before() {
        let heads: &[&[&str]] = &[
            &["Server", "Date", "Content-Type", "X-Custom"],
            &["Server", "Date", "Content-Type", "X-Custom"],
            &["server", "Date", "X-Custom"],
            &["Server", "Date"],
            &["Server", "Date", "Content-Type", "X-Custom", "X-More"],
            &["X-Custom", "Server"],
            &[],
            &["SERVER", "DATE", "content-type"],
        ];
        let mut cache = NameCache::new();
        for _ in 0..2 {
            for head in heads {
                let expected: Vec<HeaderName> = head
                    .iter()
                    .map(|r| HeaderName::from_bytes(r.as_bytes()).unwrap())
                    .collect();
                assert_eq!(names(&mut cache, head), expected, "{head:?}");
            }
        }
        // A prefix of a remembered name, or one it is a prefix of, is not a hit.
        names(&mut cache, &["Content-Type"]);
        assert_eq!(cache.name(0, b"Content-Typ").unwrap(), "content-typ");
        names(&mut cache, &["Content"]);
        assert_eq!(cache.name(0, b"Content-Type").unwrap(), "content-type");
    }

    #[test]
    fn a_name_seen_at_the_same_place_is_not_parsed_again() {
        let mut cache = NameCache::new();
        let first = names(&mut cache, &["X-Custom", "Server"]);
        let again = names(&mut cache, &["X-Custom", "Server"]);
        // A custom name is a buffer of its own: the same buffer means the remembered one.
        assert_eq!(first[0].as_str().as_ptr(), again[0].as_str().as_ptr());
        let parsed = HeaderName::from_bytes(b"X-Custom").unwrap();
        assert_ne!(parsed.as_str().as_ptr(), again[0].as_str().as_ptr());
        // Elsewhere in the head, or spelt differently, it is parsed.
        let moved = names(&mut cache, &["Server", "X-Custom"]);
        assert_ne!(moved[1].as_str().as_ptr(), first[0].as_str().as_ptr());
        let respelt = names(&mut cache, &["x-custom"]);
        assert_ne!(respelt[0].as_str().as_ptr(), first[0].as_str().as_ptr());
    }

    #[test]
    fn invalid_names_are_refused_and_not_remembered() {
        let mut cache = NameCache::new();
        names(&mut cache, &["Host", "Accept"]);
        assert!(cache.name(1, b"Bad Name").is_err());
        assert!(cache.name(1, b"").is_err());
        assert_eq!(cache.name(1, b"Accept").unwrap(), "accept");
    }

    #[test]
    fn is_one_pointer_wide() {
        // Connections carrying it move by value through the pool and the exchange futures.
        assert_eq!(size_of::<NameCache>(), size_of::<usize>());
    }

    #[test]
    fn stays_small_whatever_it_is_sent() {
        let mut cache = NameCache::new();
        let long = "x".repeat(600);
        let raw: Vec<String> = (0..100).map(|i| format!("{long}{i}")).collect();
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        let first = names(&mut cache, &raw);
        assert_eq!(names(&mut cache, &raw), first);
        let learnt = cache.0.as_ref().unwrap();
        assert!(learnt.raw.capacity() <= MAX_RAW_BYTES);
        assert!(learnt.names.len() <= MAX_NAMES);
        let many: Vec<String> = (0..100).map(|i| format!("x-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let first = names(&mut cache, &many);
        assert_eq!(names(&mut cache, &many), first);
        assert_eq!(cache.0.as_ref().unwrap().names.len(), MAX_NAMES);
    }
}
