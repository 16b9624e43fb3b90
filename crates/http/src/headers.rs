//! Proxy header semantics (RFC 9110 section 7.6): what a proxy removes, adds and keeps.

use gatehouse_config::ForwardHeaders;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
pub static SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");

/// What one pass over a request's field names found: name comparisons only, no hashing. Most
/// requests carry none of these, and the hashed lookups that handle them are then skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Present {
    /// `Connection`, or a field hop-by-hop by its name (see [`is_hop_by_hop`]).
    pub hop_by_hop: bool,
    pub te: bool,
    pub expect: bool,
    pub forwarded_for: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
    pub via: bool,
    pub request_id: bool,
}

/// Looks over the field names once (see [`Present`]).
pub fn scan(headers: &HeaderMap) -> Present {
    let mut found = Present::default();
    for name in headers.keys() {
        found.te |= name == header::TE;
        found.expect |= name == header::EXPECT;
        found.via |= name == header::VIA;
        found.hop_by_hop |= name == header::CONNECTION || is_hop_by_hop(name);
        found.forwarded_for |= name == X_FORWARDED_FOR;
        found.forwarded_proto |= name == X_FORWARDED_PROTO;
        found.forwarded_host |= name == X_FORWARDED_HOST;
        found.request_id |= name == X_REQUEST_ID;
    }
    found
}

/// Removes hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`, `TE`,
/// `Transfer-Encoding`, `Upgrade` and all `Proxy-*` headers. `Trailer` stays: it is end-to-end
/// (RFC 9110 6.6.2) and hyper's HTTP/1 encoder only sends the trailers it lists. Returns whether the
/// client asked for trailers (`TE: trailers`), which the caller re-adds upstream: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let present = scan(headers);
    strip_found_hop_by_hop(headers, &present)
}

/// [`strip_hop_by_hop`] after a [`scan`]: nothing to do (and no lookup) unless it found some.
/// It allocates nothing: removals are by name, and the values of `Connection` are moved out of
/// the map rather than copied.
pub fn strip_found_hop_by_hop(headers: &mut HeaderMap, present: &Present) -> bool {
    if !present.hop_by_hop {
        return false;
    }
    let wants_trailers = present.te
        && headers.get_all(header::TE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    // Names listed in Connection are hop-by-hop too.
    if let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        let (_, mut lines) = entry.remove_entry_mult();
        let first = lines.next();
        // Almost always one line; only further lines need a list (Vec::new does not allocate).
        let more: Vec<HeaderValue> = lines.collect();
        for value in first.iter().chain(&more) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                // The usual tokens name no header; skip the lookup.
                if !token.is_empty()
                    && !token.eq_ignore_ascii_case(b"close")
                    && !token.eq_ignore_ascii_case(b"keep-alive")
                    && let Ok(name) = std::str::from_utf8(token)
                {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &KEEP_ALIVE,
    ] {
        headers.remove(name);
    }
    // Proxy-* names are rare: look for one only while there is one.
    while let Some(name) = headers
        .keys()
        .find(|name| name.as_str().starts_with("proxy-"))
        .cloned()
    {
        headers.remove(name);
    }
    wants_trailers
}

/// Whether `name` is a hop-by-hop field by its name alone: TE, Transfer-Encoding, Upgrade,
/// Keep-Alive and every Proxy-* (Connection, and the fields Connection lists, aside).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name.as_str().starts_with("proxy-")
}

/// The fields this hop adds to a request on its way upstream: X-Forwarded-For (the client
/// appended to any chain it came with), X-Forwarded-Proto, X-Forwarded-Host (the host the
/// client asked for, before any rewrite), Via (RFC 9110 7.6.3) and X-Request-Id.
///
/// They are kept beside the client's fields rather than inserted among them: an HTTP/1.1
/// upstream's head is written from both ([`crate::h1_client::encode_head`]), which saves a
/// hashed map insert per field on every request; an HTTP/2 upstream's map gets them inserted
/// ([`ProxyFields::insert_into`]). The client's own values of these fields are taken out of
/// its map ([`ProxyFields::take`]), so no field is sent twice.
#[derive(Debug, Default, Clone)]
pub struct ProxyFields([Option<HeaderValue>; 5]);

/// The names of [`ProxyFields`]' values, in order.
static PROXY_FIELD_NAMES: [&HeaderName; 5] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &header::VIA,
    &X_REQUEST_ID,
];

/// What [`ProxyFields::take`] needs to know about the client and this hop.
pub struct Hop<'a> {
    /// The client's address, formatted once per connection.
    pub client: &'a HeaderValue,
    pub proto: &'static str,
    pub original_host: Option<HeaderValue>,
    /// The protocol version the request came in with (for Via).
    pub received: Version,
    pub request_id: &'a HeaderValue,
}

impl ProxyFields {
    /// Builds the fields of this hop that `added` names and removes the client's own values of
    /// them from `headers` (looked up only where `present` saw them). A field not added stays as
    /// the client sent it, and so does a client's X-Forwarded-Host when this hop has no host to
    /// name.
    pub fn take(
        headers: &mut HeaderMap,
        present: &Present,
        hop: Hop<'_>,
        added: ForwardHeaders,
    ) -> Self {
        let mut chain = |found: bool, name: &HeaderName, ours: &str| {
            let existing = found.then(|| joined(headers, name)).flatten();
            if found {
                headers.remove(name);
            }
            existing.and_then(|existing| HeaderValue::from_str(&format!("{existing}, {ours}")).ok())
        };
        let forwarded_for = added.x_forwarded_for.then(|| {
            chain(
                present.forwarded_for,
                &X_FORWARDED_FOR,
                hop.client.to_str().unwrap_or(""),
            )
            .unwrap_or_else(|| hop.client.clone())
        });
        let via = added.via.then(|| {
            chain(present.via, &header::VIA, via_hop(hop.received))
                .unwrap_or_else(|| via_value(hop.received))
        });
        if present.forwarded_proto && added.x_forwarded_proto {
            headers.remove(&X_FORWARDED_PROTO);
        }
        let forwarded_host = hop.original_host.filter(|_| added.x_forwarded_host);
        if present.forwarded_host && forwarded_host.is_some() {
            headers.remove(&X_FORWARDED_HOST);
        }
        if present.request_id && added.x_request_id {
            headers.remove(&X_REQUEST_ID);
        }
        Self([
            forwarded_for,
            added.x_forwarded_proto.then(|| proto_value(hop.proto)),
            forwarded_host,
            via,
            added.x_request_id.then(|| hop.request_id.clone()),
        ])
    }

    /// The fields, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        PROXY_FIELD_NAMES
            .iter()
            .zip(&self.0)
            .filter_map(|(name, value)| Some((*name, value.as_ref()?)))
    }

    /// Puts the fields into `headers` (for an upstream whose client takes a map).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The length a message's Content-Length declares, when it has one that reads as a number.
/// (The HTTP/1.1 parsers have already refused a message whose lengths disagree.)
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An address as a header value (for X-Forwarded-For).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// Appends this hop to `Via` (RFC 9110 7.6.3), e.g. "1.1 gatehouse".
pub fn add_via(headers: &mut HeaderMap, received: Version) {
    let hop = via_hop(received);
    match joined(headers, &header::VIA) {
        Some(existing) => {
            if let Ok(value) = HeaderValue::from_str(&format!("{existing}, {hop}")) {
                headers.insert(header::VIA, value);
            }
        }
        None => {
            headers.insert(header::VIA, via_value(received));
        }
    }
}

/// This hop as Via entries ("1.1 gatehouse"), by the version the message came in with.
const VIA_HOPS: [&str; 5] = [
    "0.9 gatehouse",
    "1.0 gatehouse",
    "1.1 gatehouse",
    "2 gatehouse",
    "3 gatehouse",
];
/// The same as values, made at compile time: `HeaderValue::from_static` called at run time
/// checks every byte again, on every request.
static VIA_VALUES: [HeaderValue; 5] = [
    HeaderValue::from_static(VIA_HOPS[0]),
    HeaderValue::from_static(VIA_HOPS[1]),
    HeaderValue::from_static(VIA_HOPS[2]),
    HeaderValue::from_static(VIA_HOPS[3]),
    HeaderValue::from_static(VIA_HOPS[4]),
];
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

fn via_index(received: Version) -> usize {
    match received {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 2,
    }
}

fn via_hop(received: Version) -> &'static str {
    VIA_HOPS[via_index(received)]
}

fn via_value(received: Version) -> HeaderValue {
    VIA_VALUES[via_index(received)].clone()
}

/// A connection's scheme as an X-Forwarded-Proto value.
fn proto_value(proto: &'static str) -> HeaderValue {
    match proto {
        "http" => HTTP.clone(),
        "https" => HTTPS.clone(),
        other => HeaderValue::from_static(other),
    }
}

/// All field lines of a list-valued header joined with ", " (a client may send several lines);
/// None when absent or empty.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The request's id: the client's `X-Request-Id` when it sent a sane one, else a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 200
    {
        return v.clone();
    }
    new_request_id()
}

/// A WebSocket handshake key: 16 random bytes in base64 (RFC 6455 §4.1).
pub fn websocket_key() -> HeaderValue {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bits = fastrand::u128(..);
    let bytes = bits.to_be_bytes();
    let mut key = [0u8; 24];
    for (chunk, out) in bytes.chunks(3).zip(key.chunks_mut(4)) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = if i <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]
            } else {
                b'='
            };
        }
    }
    HeaderValue::from_bytes(&key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// 128 random bits as 32 hex digits. The value is shared, not copied, by the request and the
/// response that both carry it.
pub fn new_request_id() -> HeaderValue {
    let id = hex_digits(fastrand::u128(..));
    // SAFETY: lowercase hex digits are a valid header value; the unchecked constructor only
    // skips checking that (its contract says nothing about memory).
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from_owner(id)) }
}

/// `bits` as 32 lowercase hex digits, most significant first. This runs for most requests, so
/// it works on all digits at once rather than one at a time (a fifth of the instructions).
fn hex_digits(bits: u128) -> [u8; 32] {
    const fn repeat(byte: u8) -> u128 {
        u128::from_ne_bytes([byte; 16])
    }
    /// Each of `x`'s 16 digits in its own byte, the most significant digit in the highest
    /// byte: halves, quarters, eighths and then nibbles move apart, one shift each.
    fn spread(x: u64) -> u128 {
        let mut v = u128::from(x);
        v = (v | (v << 32)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF;
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF;
        (v | (v << 4)) & repeat(0x0F)
    }
    let mut out = [0u8; 32];
    for (half, x) in out
        .chunks_exact_mut(16)
        .zip([(bits >> 64) as u64, bits as u64])
    {
        let digits = spread(x);
        // 1 in each byte whose digit is 10 or more (adding 6 carries it into bit 4); no byte
        // overflows into the next, so the lanes stay apart.
        let letters = ((digits + repeat(6)) >> 4) & repeat(1);
        // '0' for every digit, and 'a' - '0' - 10 more for the letters.
        let ascii = digits + repeat(b'0') + letters * 39;
        half.copy_from_slice(&ascii.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_bits_in_lowercase_hex() {
        let mut cases = vec![
            0,
            u128::MAX,
            1,
            1 << 127,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ];
        cases.extend((0..128).map(|i| 1u128 << i));
        cases.extend((0..16u128).map(|d| d * 0x1111_1111_1111_1111_1111_1111_1111_1111));
        let mut rng = fastrand::Rng::with_seed(7);
        cases.extend((0..10_000).map(|_| rng.u128(..)));
        for bits in cases {
            assert_eq!(
                hex_digits(bits),
                format!("{bits:032x}").as_bytes(),
                "{bits:#x}"
            );
        }
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.to_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_named_by_connection() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("proxy-foo", "1"),
            ("x-keep", "yes"),
        ]);
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        let mut h = map(&[("te", "gzip")]);
        assert!(!strip_hop_by_hop(&mut h));
    }

    fn take_fields(h: &mut HeaderMap, client: &str, host: Option<&str>) -> HeaderMap {
        take_some_fields(h, client, host, ForwardHeaders::ALL)
    }

    fn take_some_fields(
        h: &mut HeaderMap,
        client: &str,
        host: Option<&str>,
        added: ForwardHeaders,
    ) -> HeaderMap {
        let present = scan(h);
        let fields = ProxyFields::take(
            h,
            &present,
            Hop {
                client: &ip_value(client.parse().unwrap()),
                proto: "http",
                original_host: host.map(|h| h.parse().unwrap()),
                received: Version::HTTP_11,
                request_id: &HeaderValue::from_static("id-1"),
            },
            added,
        );
        let mut sent = h.clone();
        fields.insert_into(&mut sent);
        assert_eq!(
            sent.len(),
            h.len() + fields.iter().count(),
            "a field would be sent twice: {h:?} {fields:?}"
        );
        sent
    }

    #[test]
    fn forwarded_headers_append_to_the_chain() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "forged"),
            ("via", "1.0 fred"),
        ]);
        let sent = take_fields(&mut h, "10.0.0.1", Some("a.com"));
        assert_eq!(sent["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(sent["x-forwarded-proto"], "http");
        assert_eq!(sent["x-forwarded-host"], "a.com");
        assert_eq!(sent["via"], "1.0 fred, 1.1 gatehouse");
        assert_eq!(sent["x-request-id"], "id-1");
        let sent = take_fields(&mut HeaderMap::new(), "::1", None);
        assert_eq!(sent["x-forwarded-for"], "::1");
        assert_eq!(sent["via"], "1.1 gatehouse");
        assert!(!sent.contains_key("x-forwarded-host"));
    }

    #[test]
    fn the_config_names_the_fields_in_the_order_they_are_kept() {
        let names: Vec<&str> = PROXY_FIELD_NAMES.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ForwardHeaders::NAMES);
    }

    #[test]
    fn fields_not_added_pass_as_the_client_sent_them() {
        let client = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "client.example"),
            ("x-request-id", "theirs"),
            ("via", "1.0 fred"),
        ];
        let sent = take_some_fields(
            &mut map(&client),
            "10.0.0.1",
            Some("a.com"),
            ForwardHeaders::NONE,
        );
        assert_eq!(sent, map(&client), "nothing added, nothing removed");
        let sent = take_some_fields(
            &mut HeaderMap::new(),
            "10.0.0.1",
            Some("a.com"),
            ForwardHeaders::NONE,
        );
        assert!(sent.is_empty(), "{sent:?}");
        // Each field on its own: that one is ours, the others are the client's.
        for (i, name) in ForwardHeaders::NAMES.iter().enumerate() {
            let mut added = ForwardHeaders::NONE;
            assert!(added.enable(&name.to_ascii_uppercase()));
            let sent = take_some_fields(&mut map(&client), "10.0.0.1", Some("a.com"), added);
            for (other, theirs) in client {
                let ours = other == *name;
                assert_eq!(sent.get_all(other).iter().count(), 1, "{name}: {other}");
                assert_eq!(
                    sent[other] == theirs,
                    !ours,
                    "{name}: {other} = {:?}",
                    sent[other]
                );
            }
            assert_eq!(added.as_array().iter().filter(|on| **on).count(), 1, "{i}");
        }
        let mut added = ForwardHeaders::NONE;
        assert!(!added.enable("x-forwarded-port"));
        assert_eq!(added, ForwardHeaders::NONE);
    }

    #[test]
    fn every_forwarded_for_line_is_kept() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-host", "kept.example"),
        ]);
        let sent = take_fields(&mut h, "10.0.0.1", None);
        assert_eq!(
            sent["x-forwarded-for"],
            "203.0.113.1, 198.51.100.2, 10.0.0.1"
        );
        assert_eq!(sent.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(sent["x-forwarded-host"], "kept.example");
    }

    #[test]
    fn trailer_is_end_to_end() {
        let mut h = map(&[("trailer", "x-checksum")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["trailer"], "x-checksum");
    }

    #[test]
    fn via_appends_a_hop() {
        let mut h = map(&[("via", "1.0 fred")]);
        add_via(&mut h, Version::HTTP_11);
        assert_eq!(h["via"], "1.0 fred, 1.1 gatehouse");
        let mut h = HeaderMap::new();
        add_via(&mut h, Version::HTTP_2);
        assert_eq!(h["via"], "2 gatehouse");
        // The values made at compile time say what the text says, for every version.
        for (version, text) in [
            (Version::HTTP_09, "0.9 gatehouse"),
            (Version::HTTP_10, "1.0 gatehouse"),
            (Version::HTTP_11, "1.1 gatehouse"),
            (Version::HTTP_2, "2 gatehouse"),
            (Version::HTTP_3, "3 gatehouse"),
        ] {
            assert_eq!(
                (via_hop(version), via_value(version)),
                (text, text.parse().unwrap())
            );
        }
        assert_eq!(proto_value("https"), "https");
        assert_eq!(proto_value("http"), "http");
    }

    #[test]
    fn websocket_keys_are_16_random_bytes_in_base64() {
        let (a, b) = (websocket_key(), websocket_key());
        assert_ne!(a, b);
        for key in [a, b] {
            let text = key.to_str().unwrap();
            assert_eq!(text.len(), 24, "{text}");
            assert!(text.ends_with("==") && !text[..22].contains('='), "{text}");
            assert!(
                text[..22]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
            );
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let h = map(&[("x-request-id", "abc")]);
        assert_eq!(request_id(&h), "abc");
        let a = request_id(&HeaderMap::new());
        let b = request_id(&HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
