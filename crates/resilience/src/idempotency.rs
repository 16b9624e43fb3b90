//! Idempotency keys: a client that retries a non-idempotent request (a POST that timed out)
//! with the same `Idempotency-Key` gets the first attempt's response replayed instead of the
//! operation running twice.
//!
//! Per request with a key, the idempotency layer calls [`IdempotencyStore::begin`]:
//! - [`Begin::Started`]: first time: forward the request, then [`IdempotencyStore::complete`]
//!   with the upstream's response, or [`IdempotencyStore::abandon`] when no response was
//!   produced (gateway error), so the client's retry can run the request again.
//! - [`Begin::InFlight`]: the first attempt is still running: answer 409 Conflict.
//! - [`Begin::Replay`]: answer the stored response.
//! - [`Begin::Mismatch`]: the key was used for a different request (method, target or body
//!   differ): answer 422 Unprocessable Content.
//!
//! Keys are scoped ([`IdempotencyKey`]) by route and client identity, so two clients (or two
//! APIs) that happen to pick the same key never see each other's responses. The request is
//! identified by a [`Fingerprint`] of method, target and body, computed while the body streams
//! ([`Fingerprinter`]).
//!
//! [`InMemoryStore`] serves one instance; fleet mode will add a Redis store behind the same
//! object-safe trait (its methods are synchronous and take `&self`; tickets carry a key and an
//! opaque token, which a Redis `SET NX` holds as its value).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use parking_lot::Mutex;

use crate::time::saturating_nanos;

/// The request header carrying the key (IETF draft "The Idempotency-Key HTTP Header Field").
pub const HEADER: &str = "idempotency-key";

/// Longest key accepted, in bytes (Stripe's limit; a UUID is 36).
pub const MAX_KEY_LEN: usize = 255;

/// Bookkeeping bytes charged per entry on top of its key and response (map nodes, indices),
/// so that many tiny entries still count against `max_bytes`.
const ENTRY_OVERHEAD: usize = 128;

/// Bytes charged per stored header on top of its name and value (HPACK's 32-byte estimate).
const HEADER_OVERHEAD: usize = 32;

/// A key as scoped by route and client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    route: Arc<str>,
    client: Arc<str>,
    key: Arc<str>,
}

/// An `Idempotency-Key` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The header is present but empty.
    #[error("the Idempotency-Key header is empty; send a unique value such as a UUID")]
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    #[error("the Idempotency-Key header is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside visible ASCII.
    #[error(
        "the Idempotency-Key header contains byte 0x{byte:02x} at offset {offset}; use visible ASCII only"
    )]
    InvalidByte {
        /// The offending byte.
        byte: u8,
        /// Its position.
        offset: usize,
    },
}

impl IdempotencyKey {
    /// Scopes the header value `key` (visible ASCII, 1..=255 bytes) to a route and a client
    /// identity (an authenticated subject, or the client address when there is none).
    pub fn new(
        route: impl Into<Arc<str>>,
        client: impl Into<Arc<str>>,
        key: &[u8],
    ) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: key.len() });
        }
        if let Some(offset) = key.iter().position(|b| !b.is_ascii_graphic()) {
            let byte = key.get(offset).copied().unwrap_or(0);
            return Err(KeyError::InvalidByte { byte, offset });
        }
        // Visible ASCII was just checked, so this is valid UTF-8.
        let key = String::from_utf8_lossy(key);
        Ok(Self {
            route: route.into(),
            client: client.into(),
            key: key.into(),
        })
    }

    /// The route the key is scoped to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The client identity the key is scoped to.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The key as the client sent it.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> usize {
        self.route.len() + self.client.len() + self.key.len()
    }
}

/// Identity of a request's content: method, target and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

/// Computes a [`Fingerprint`] incrementally, so the body is hashed as it streams through.
///
/// FNV-1a 64 over length-prefixed method and target, then the body, then the body length,
/// finished with murmur3's `fmix64`. The prefixes and the trailing length keep different
/// splits of the same bytes apart ("GET" "/ab" vs "GE" "T/ab"). The algorithm is fixed (no
/// per-process keys), so several gatehouse instances sharing a store agree on fingerprints.
/// It is not cryptographic, and need not be: a fingerprint is only ever compared with the one
/// stored under the same client's own key, so a collision could only replay a client's own
/// earlier response to itself.
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    hash: u64,
    body_len: u64,
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fingerprinter {
    /// Starts a fingerprint of a request with `method` and `target` (path and query).
    pub fn new(method: &Method, target: &str) -> Self {
        let mut fingerprinter = Self {
            hash: FNV_OFFSET_BASIS,
            body_len: 0,
        };
        for part in [method.as_str().as_bytes(), target.as_bytes()] {
            fingerprinter.mix(&(part.len() as u64).to_le_bytes());
            fingerprinter.mix(part);
        }
        fingerprinter
    }

    /// Adds the next chunk of the request body.
    pub fn update(&mut self, chunk: &[u8]) {
        self.mix(chunk);
        self.body_len = self.body_len.saturating_add(chunk.len() as u64);
    }

    /// The fingerprint of everything added.
    pub fn finish(mut self) -> Fingerprint {
        let body_len = self.body_len;
        self.mix(&body_len.to_le_bytes());
        Fingerprint(fmix64(self.hash))
    }

    fn mix(&mut self, bytes: &[u8]) {
        self.hash = bytes.iter().fold(self.hash, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
    }
}

/// The fingerprint of a request whose body is all at hand.
pub fn fingerprint(method: &Method, target: &str, body: &[u8]) -> Fingerprint {
    let mut fingerprinter = Fingerprinter::new(method, target);
    fingerprinter.update(body);
    fingerprinter.finish()
}

/// murmur3's 64-bit finalizer: spreads FNV's weakly mixed high bits.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order (hop-by-hop headers already removed by the caller).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The whole body.
    pub body: Bytes,
    /// Trailer fields after the body (gRPC's `grpc-status`, for one); empty when none came.
    pub trailers: Vec<(HeaderName, HeaderValue)>,
}

impl StoredResponse {
    /// Bytes charged against a store's `max_bytes` for this response.
    pub fn size(&self) -> usize {
        self.headers
            .iter()
            .chain(&self.trailers)
            .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
            .fold(self.body.len(), usize::saturating_add)
    }
}

/// Ownership of a key between [`IdempotencyStore::begin`] and `complete`/`abandon`.
#[must_use = "a ticket must be completed or abandoned, or the key stays locked until the lock timeout"]
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    key: IdempotencyKey,
    token: u64,
}

impl Ticket {
    /// A ticket for `key` with a store-specific `token` (for store implementations).
    pub fn new(key: IdempotencyKey, token: u64) -> Self {
        Self { key, token }
    }

    /// The key this ticket holds.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// The store's token: tells this holder apart from later holders of the same key.
    pub fn token(&self) -> u64 {
        self.token
    }
}

/// Outcome of [`IdempotencyStore::begin`] (see the module docs for the answer to each).
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First use of the key: run the request, then complete or abandon the ticket.
    Started(Ticket),
    /// Another request with this key and fingerprint is running.
    InFlight,
    /// The request already ran: this is its response.
    Replay(Arc<StoredResponse>),
    /// The key is in use for a request with a different fingerprint.
    Mismatch,
}

/// Why a response was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    /// The ticket no longer holds its key: the in-flight lock expired or the entry was evicted
    /// (and possibly taken by a later request).
    #[error(
        "the idempotency key {0:?} is no longer held by this request (lock expired or evicted)"
    )]
    Stale(String),
    /// The response is bigger than the whole store; the key was released.
    #[error("response of {size} bytes exceeds the idempotency store's {limit} bytes; not stored")]
    TooLarge {
        /// Charged size of the response with its key.
        size: usize,
        /// The store's byte limit.
        limit: usize,
    },
}

/// Where keys and their responses live. Object-safe, so the layer can hold
/// `Arc<dyn IdempotencyStore>`.
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request with `fingerprint` at `now`, or reports why not.
    fn begin(&self, key: &IdempotencyKey, fingerprint: Fingerprint, now_nanos: u64) -> Begin;

    /// Stores the response of a started request for replay; expiry counts from `now`.
    fn complete(
        &self,
        ticket: Ticket,
        response: StoredResponse,
        now_nanos: u64,
    ) -> Result<(), CompleteError>;

    /// Releases a started request's key without a response, so a retry can run it again.
    fn abandon(&self, ticket: Ticket);
}

/// Limits of an [`InMemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most keys held (0 reads as 1).
    pub max_entries: usize,
    /// Most bytes held: keys, responses and bookkeeping.
    pub max_bytes: usize,
    /// How long a completed response is replayed.
    pub ttl: Duration,
    /// How long a started request holds its key without completing; after that the key is
    /// free again, so a crashed or lost request cannot wedge it forever.
    pub lock_timeout: Duration,
}

impl Default for StoreLimits {
    /// 10 000 keys, 64 MiB, replay for 24 hours (Stripe's window), 60 s lock.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(24 * 60 * 60),
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Bounded in-process [`IdempotencyStore`].
///
/// Entries expire after `lock_timeout` (in flight) or `ttl` (completed). When a new entry or a
/// completed response does not fit in `max_entries` / `max_bytes`, the oldest entries (by the
/// time their request began) are evicted first, in flight or not: the bounds are hard memory
/// caps, and losing an old key only weakens deduplication for that key.
#[derive(Debug)]
pub struct InMemoryStore {
    limits: StoreLimits,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<IdempotencyKey, Entry>,
    /// Keys by the sequence number of their `begin`: oldest first, for eviction.
    by_age: BTreeMap<u64, IdempotencyKey>,
    /// Keys by (expiry, sequence): soonest first, for expiry.
    by_expiry: BTreeMap<(u64, u64), IdempotencyKey>,
    bytes: usize,
    next_seq: u64,
    /// Latest time seen; earlier times read as this one.
    latest_nanos: u64,
}

#[derive(Debug)]
struct Entry {
    /// Sequence number of its `begin`; doubles as the ticket token.
    seq: u64,
    fingerprint: Fingerprint,
    expires_at: u64,
    size: usize,
    state: EntryState,
}

#[derive(Debug)]
enum EntryState {
    InFlight,
    Done(Arc<StoredResponse>),
}

impl InMemoryStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Keys held (in flight or completed, expired ones possibly included until the next call
    /// that takes a time).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the keys held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl IdempotencyStore for InMemoryStore {
    fn begin(&self, key: &IdempotencyKey, fingerprint: Fingerprint, now_nanos: u64) -> Begin {
        let mut inner = self.inner.lock();
        let now = inner.observe(now_nanos);
        inner.expire(now);
        if let Some(entry) = inner.entries.get(key) {
            if entry.fingerprint != fingerprint {
                return Begin::Mismatch;
            }
            return match &entry.state {
                EntryState::InFlight => Begin::InFlight,
                EntryState::Done(response) => Begin::Replay(Arc::clone(response)),
            };
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry = Entry {
            seq,
            fingerprint,
            expires_at: now.saturating_add(saturating_nanos(self.limits.lock_timeout)),
            size: key.size() + ENTRY_OVERHEAD,
            state: EntryState::InFlight,
        };
        inner.insert(key.clone(), entry);
        // Never evicts the new entry itself, so an in-flight key is always held; with absurdly
        // small limits that one entry may exceed max_bytes until it completes or expires.
        inner.evict_to_fit(&self.limits, seq);
        Begin::Started(Ticket::new(key.clone(), seq))
    }

    fn complete(
        &self,
        ticket: Ticket,
        response: StoredResponse,
        now_nanos: u64,
    ) -> Result<(), CompleteError> {
        let mut inner = self.inner.lock();
        let now = inner.observe(now_nanos);
        inner.expire(now);
        let fingerprint = match inner.entries.get(&ticket.key) {
            Some(entry)
                if entry.seq == ticket.token && matches!(entry.state, EntryState::InFlight) =>
            {
                entry.fingerprint
            }
            _ => return Err(CompleteError::Stale(ticket.key.key().to_string())),
        };
        let size = ticket
            .key
            .size()
            .saturating_add(ENTRY_OVERHEAD)
            .saturating_add(response.size());
        if size > self.limits.max_bytes {
            inner.remove(&ticket.key);
            return Err(CompleteError::TooLarge {
                size,
                limit: self.limits.max_bytes,
            });
        }
        let expires_at = now.saturating_add(saturating_nanos(self.limits.ttl));
        inner.remove(&ticket.key);
        inner.insert(
            ticket.key,
            Entry {
                seq: ticket.token,
                fingerprint,
                expires_at,
                size,
                state: EntryState::Done(Arc::new(response)),
            },
        );
        inner.evict_to_fit(&self.limits, ticket.token);
        Ok(())
    }

    fn abandon(&self, ticket: Ticket) {
        let mut inner = self.inner.lock();
        let held = inner.entries.get(&ticket.key).is_some_and(|entry| {
            entry.seq == ticket.token && matches!(entry.state, EntryState::InFlight)
        });
        if held {
            inner.remove(&ticket.key);
        }
    }
}

impl Inner {
    fn observe(&mut self, now_nanos: u64) -> u64 {
        self.latest_nanos = self.latest_nanos.max(now_nanos);
        self.latest_nanos
    }

    fn insert(&mut self, key: IdempotencyKey, entry: Entry) {
        self.by_age.insert(entry.seq, key.clone());
        self.by_expiry
            .insert((entry.expires_at, entry.seq), key.clone());
        self.bytes = self.bytes.saturating_add(entry.size);
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &IdempotencyKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.by_age.remove(&entry.seq);
        self.by_expiry.remove(&(entry.expires_at, entry.seq));
        self.bytes = self.bytes.saturating_sub(entry.size);
        Some(entry)
    }

    /// Drops every entry whose time is up at `now`.
    fn expire(&mut self, now: u64) {
        while let Some((&(expires_at, _), key)) = self.by_expiry.first_key_value() {
            if expires_at > now {
                break;
            }
            let key = key.clone();
            self.remove(&key);
        }
    }

    /// Evicts oldest entries other than `keep` until the limits hold (or only `keep` is left).
    fn evict_to_fit(&mut self, limits: &StoreLimits, keep: u64) {
        let max_entries = limits.max_entries.max(1);
        while self.entries.len() > max_entries || self.bytes > limits.max_bytes {
            let oldest = self
                .by_age
                .iter()
                .find(|(seq, _)| **seq != keep)
                .map(|(_, key)| key.clone());
            match oldest {
                Some(key) => {
                    self.remove(&key);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn key(name: &str) -> IdempotencyKey {
        IdempotencyKey::new("payments", "client-a", name.as_bytes()).unwrap()
    }

    fn limits() -> StoreLimits {
        StoreLimits {
            max_entries: 100,
            max_bytes: 1024 * 1024,
            ttl: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(30),
        }
    }

    fn response(body: &str) -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::copy_from_slice(body.as_bytes()),
            trailers: Vec::new(),
        }
    }

    fn fp(body: &str) -> Fingerprint {
        fingerprint(&Method::POST, "/charges", body.as_bytes())
    }

    fn started(begin: Begin) -> Ticket {
        match begin {
            Begin::Started(ticket) => ticket,
            other => panic!("expected Started, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(IdempotencyKey::new("r", "c", b""), Err(KeyError::Empty));
        let long = vec![b'a'; MAX_KEY_LEN + 1];
        assert_eq!(
            IdempotencyKey::new("r", "c", &long),
            Err(KeyError::TooLong { len: 256 })
        );
        assert!(IdempotencyKey::new("r", "c", &long[..MAX_KEY_LEN]).is_ok());
        for (bad, offset) in [
            (&b"a b"[..], 1),
            (b"ab\x7f", 2),
            (b"\xc3\xa9", 0),
            (b"\0", 0),
        ] {
            match IdempotencyKey::new("r", "c", bad) {
                Err(KeyError::InvalidByte { offset: at, .. }) => assert_eq!(at, offset),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let message = IdempotencyKey::new("r", "c", b"a b")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("0x20") && message.contains("visible ASCII"),
            "{message}"
        );
        let key = IdempotencyKey::new("r", "c", b"5f1c-AB_~").unwrap();
        assert_eq!(
            (key.route(), key.client(), key.key()),
            ("r", "c", "5f1c-AB_~")
        );
    }

    #[test]
    fn fnv_core_matches_the_reference_vectors() {
        let mut f = Fingerprinter {
            hash: FNV_OFFSET_BASIS,
            body_len: 0,
        };
        f.mix(b"a");
        assert_eq!(f.hash, 0xaf63_dc4c_8601_ec8c);
        let mut f = Fingerprinter {
            hash: FNV_OFFSET_BASIS,
            body_len: 0,
        };
        f.mix(b"foobar");
        assert_eq!(f.hash, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fingerprints_are_stable_across_releases() {
        // Pinned (and cross-checked with an independent implementation of the spec): instances
        // of different versions share a store in fleet mode, so changing the algorithm would
        // turn every in-window retry into a Mismatch.
        assert_eq!(
            fingerprint(&Method::POST, "/charges?x=1", b"{\"amount\":100}"),
            Fingerprint(0xd733_cbce_173f_4d1d)
        );
    }

    #[test]
    fn streaming_matches_one_shot_and_parts_are_delimited() {
        let body = b"{\"amount\":100,\"currency\":\"eur\"}";
        let mut streamed = Fingerprinter::new(&Method::POST, "/charges");
        for chunk in body.chunks(3) {
            streamed.update(chunk);
        }
        streamed.update(b"");
        assert_eq!(
            streamed.finish(),
            fingerprint(&Method::POST, "/charges", body)
        );

        let base = fingerprint(&Method::POST, "/charges", b"x");
        assert_ne!(base, fingerprint(&Method::PUT, "/charges", b"x"));
        assert_ne!(base, fingerprint(&Method::POST, "/charges/", b"x"));
        assert_ne!(base, fingerprint(&Method::POST, "/charges", b"y"));
        assert_ne!(base, fingerprint(&Method::POST, "/charges", b"x\0"));
        // Moving bytes between method and target, or target and body, changes it.
        let ge = Method::from_bytes(b"GE").unwrap();
        assert_ne!(
            fingerprint(&Method::GET, "/ab", b""),
            fingerprint(&ge, "T/ab", b"")
        );
        assert_ne!(
            fingerprint(&Method::POST, "/a", b"b"),
            fingerprint(&Method::POST, "/ab", b"")
        );
    }

    #[test]
    fn first_use_starts_then_in_flight_then_replay() {
        let store = InMemoryStore::new(limits());
        let ticket = started(store.begin(&key("k1"), fp("a"), 0));
        assert_eq!(store.begin(&key("k1"), fp("a"), SEC), Begin::InFlight);
        assert_eq!(store.begin(&key("k1"), fp("b"), SEC), Begin::Mismatch);
        assert_eq!(
            store.complete(ticket, response("{\"id\":1}"), 2 * SEC),
            Ok(())
        );
        match store.begin(&key("k1"), fp("a"), 3 * SEC) {
            Begin::Replay(stored) => assert_eq!(*stored, response("{\"id\":1}")),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.begin(&key("k1"), fp("b"), 3 * SEC), Begin::Mismatch);
    }

    #[test]
    fn keys_are_scoped_by_route_and_client() {
        let store = InMemoryStore::new(limits());
        let a = IdempotencyKey::new("payments", "alice", b"same").unwrap();
        let b = IdempotencyKey::new("payments", "bob", b"same").unwrap();
        let c = IdempotencyKey::new("orders", "alice", b"same").unwrap();
        let _a = started(store.begin(&a, fp("x"), 0));
        let _b = started(store.begin(&b, fp("y"), 0));
        let _c = started(store.begin(&c, fp("z"), 0));
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn abandon_frees_the_key_for_a_retry() {
        let store = InMemoryStore::new(limits());
        let first = started(store.begin(&key("k"), fp("a"), 0));
        let token = first.token();
        store.abandon(first);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
        let second = started(store.begin(&key("k"), fp("a"), SEC));
        assert_ne!(second.token(), token);
        // A stale ticket's abandon does not release the new holder's key.
        store.abandon(Ticket::new(key("k"), token));
        assert_eq!(store.begin(&key("k"), fp("a"), SEC), Begin::InFlight);
        assert_eq!(store.complete(second, response("ok"), SEC), Ok(()));
        // Abandoning after completion does not drop the stored response either.
        store.abandon(Ticket::new(key("k"), token));
        assert!(matches!(
            store.begin(&key("k"), fp("a"), SEC),
            Begin::Replay(_)
        ));
    }

    #[test]
    fn a_lost_request_releases_its_key_after_the_lock_timeout() {
        let store = InMemoryStore::new(limits());
        let lost = started(store.begin(&key("k"), fp("a"), 0));
        assert_eq!(
            store.begin(&key("k"), fp("a"), 30 * SEC - 1),
            Begin::InFlight
        );
        let retry = started(store.begin(&key("k"), fp("a"), 30 * SEC));
        // The lost request finishing late must not overwrite the retry's claim.
        assert!(matches!(
            store.complete(lost, response("late"), 31 * SEC),
            Err(CompleteError::Stale(_))
        ));
        assert_eq!(store.complete(retry, response("retry"), 31 * SEC), Ok(()));
        match store.begin(&key("k"), fp("a"), 32 * SEC) {
            Begin::Replay(stored) => assert_eq!(stored.body, "retry"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completed_responses_expire_after_the_ttl() {
        let store = InMemoryStore::new(limits());
        let ticket = started(store.begin(&key("k"), fp("a"), 0));
        store.complete(ticket, response("ok"), 10 * SEC).unwrap();
        assert!(matches!(
            store.begin(&key("k"), fp("a"), 3609 * SEC),
            Begin::Replay(_)
        ));
        let _again = started(store.begin(&key("k"), fp("a"), 3610 * SEC));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn the_entry_limit_evicts_the_oldest_first() {
        let store = InMemoryStore::new(StoreLimits {
            max_entries: 3,
            ..limits()
        });
        for (i, name) in ["k0", "k1", "k2"].into_iter().enumerate() {
            let ticket = started(store.begin(&key(name), fp("a"), i as u64));
            store.complete(ticket, response("ok"), i as u64).unwrap();
        }
        let _k3 = started(store.begin(&key("k3"), fp("a"), 10));
        assert_eq!(store.len(), 3);
        // k0 was the oldest: gone, so it starts afresh (evicting k1 in turn).
        let _k0 = started(store.begin(&key("k0"), fp("a"), 11));
        assert!(matches!(
            store.begin(&key("k2"), fp("a"), 12),
            Begin::Replay(_)
        ));
        assert!(matches!(
            store.begin(&key("k1"), fp("a"), 12),
            Begin::Started(_)
        ));
    }

    #[test]
    fn the_byte_limit_evicts_old_entries_and_refuses_oversized_responses() {
        let body = &"x".repeat(1000);
        let entry_size = key("k0").size() + ENTRY_OVERHEAD + response(body).size();
        let store = InMemoryStore::new(StoreLimits {
            max_bytes: entry_size * 2,
            ..limits()
        });
        for (i, name) in ["k0", "k1"].into_iter().enumerate() {
            let ticket = started(store.begin(&key(name), fp("a"), i as u64));
            store.complete(ticket, response(body), i as u64).unwrap();
        }
        assert_eq!(store.bytes(), entry_size * 2);
        // A third response does not fit next to both: the oldest (k0) goes.
        let ticket = started(store.begin(&key("k2"), fp("a"), 5));
        store.complete(ticket, response(body), 5).unwrap();
        assert!(store.bytes() <= entry_size * 2);
        assert!(matches!(
            store.begin(&key("k1"), fp("a"), 6),
            Begin::Replay(_)
        ));
        assert!(matches!(
            store.begin(&key("k2"), fp("a"), 6),
            Begin::Replay(_)
        ));
        let k0 = started(store.begin(&key("k0"), fp("a"), 6));
        store.abandon(k0);

        // A response bigger than the whole store is refused and its key released.
        let huge = &"y".repeat(entry_size * 2);
        let ticket = started(store.begin(&key("big"), fp("a"), 7));
        assert!(matches!(
            store.complete(ticket, response(huge), 7),
            Err(CompleteError::TooLarge { .. })
        ));
        let _retry = started(store.begin(&key("big"), fp("a"), 8));
    }

    #[test]
    fn accounting_returns_to_zero() {
        let store = InMemoryStore::new(StoreLimits {
            ttl: Duration::from_secs(1),
            ..limits()
        });
        for i in 0..50u64 {
            let ticket = started(store.begin(&key(&format!("k{i}")), fp("a"), i));
            if i % 2 == 0 {
                store.complete(ticket, response("ok"), i).unwrap();
            } else {
                store.abandon(ticket);
            }
        }
        assert_eq!(store.len(), 25);
        // Everything has expired by now; the next call sweeps it all.
        let last = started(store.begin(&key("last"), fp("a"), 100 * SEC));
        store.abandon(last);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn zero_limits_do_not_panic() {
        let store = InMemoryStore::new(StoreLimits {
            max_entries: 0,
            max_bytes: 0,
            ttl: Duration::ZERO,
            lock_timeout: Duration::ZERO,
        });
        let ticket = started(store.begin(&key("k"), fp("a"), 0));
        // The lock expired the moment it was taken.
        assert!(matches!(
            store.complete(ticket, response("ok"), 0),
            Err(CompleteError::Stale(_))
        ));
        let huge = InMemoryStore::new(StoreLimits {
            ttl: Duration::MAX,
            lock_timeout: Duration::MAX,
            ..limits()
        });
        let late = u64::MAX - 10;
        let ticket = started(huge.begin(&key("k"), fp("a"), late));
        huge.complete(ticket, response("ok"), late).unwrap();
        assert!(matches!(
            huge.begin(&key("k"), fp("a"), late),
            Begin::Replay(_)
        ));
    }

    #[test]
    fn time_going_backwards_neither_expires_nor_revives() {
        let store = InMemoryStore::new(limits());
        let _held = started(store.begin(&key("k"), fp("a"), 100 * SEC));
        // An earlier clock reading is taken as 100 s: the lock still holds...
        assert_eq!(store.begin(&key("k"), fp("a"), 0), Begin::InFlight);
        // ...and a lock taken "at 0" lasts from 100 s.
        let _other = started(store.begin(&key("j"), fp("a"), 0));
        assert_eq!(store.begin(&key("j"), fp("a"), 129 * SEC), Begin::InFlight);
    }

    #[test]
    fn exactly_one_concurrent_begin_wins() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(InMemoryStore::new(limits()));
        let winners = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    if let Begin::Started(ticket) = store.begin(&key("race"), fp("a"), SEC) {
                        winners.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        store.complete(ticket, response("ok"), SEC).unwrap();
                    }
                });
            }
        });
        assert_eq!(winners.into_inner(), 1);
    }

    #[test]
    fn errors_explain_themselves() {
        let stale = CompleteError::Stale("k".into()).to_string();
        assert!(stale.contains("lock expired"), "{stale}");
        let large = CompleteError::TooLarge { size: 10, limit: 5 }.to_string();
        assert!(
            large.contains("10 bytes") && large.contains("5 bytes"),
            "{large}"
        );
    }
}
