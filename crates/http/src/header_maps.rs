//! Header maps recycled per thread.
//!
//! A `HeaderMap` with room for fields is two allocations (its index and its entries), and a
//! proxied HTTP/1.1 request makes two maps (the request's and the upstream response's). Parsing
//! takes a cleared map from this thread's spares instead; the request's map comes back when its
//! tries are over, the response's once its head is written. Only small maps are kept, and only
//! a few: a spare holds its capacity, not its fields.

use http::HeaderMap;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Spare maps kept per thread.
const MAX_SPARE: usize = 64;
/// A map with room for more fields than this is dropped rather than kept.
const MAX_KEPT_CAPACITY: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields.
pub fn take(capacity: usize) -> HeaderMap {
    // `try_with`: a thread-local being torn down has no spares (and must not panic).
    match SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
    {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Keeps `map`'s room for a later [`take`] on this thread (its fields are dropped now).
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    map.clear();
    // Called from `Drop`, possibly while the thread's locals are being torn down: then the map
    // is simply dropped.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(map);
        }
    });
}

/// Request parts whose header map is given back (see [`give`]) when they are dropped.
pub struct GiveBackOnDrop(pub http::request::Parts);

impl Deref for GiveBackOnDrop {
    type Target = http::request::Parts;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for GiveBackOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for GiveBackOnDrop {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0.headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        // This test's thread starts with no spares.
        let mut map = take(8);
        let room = map.capacity();
        assert!(room >= 8);
        map.insert("x-a", HeaderValue::from_static("1"));
        give(map);
        let again = take(2);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room, "the same map, with its room");
        let mut big = HeaderMap::with_capacity(MAX_KEPT_CAPACITY * 2);
        big.insert("x-b", HeaderValue::from_static("2"));
        give(big);
        assert!(
            take(0).capacity() < MAX_KEPT_CAPACITY,
            "large maps are not kept"
        );
    }

    #[test]
    fn parts_give_their_map_back_when_dropped() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers = take(4);
        parts.headers.insert("x-c", HeaderValue::from_static("3"));
        let room = parts.headers.capacity();
        drop(GiveBackOnDrop(parts));
        assert_eq!(take(0).capacity(), room);
    }
}
