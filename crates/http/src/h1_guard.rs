//! Strict HTTP/1.1 request heads: where a head ends, and whether it is acceptable.
//!
//! A request is smuggled when two parsers disagree about where it ends. Permissive servers
//! (hyper among them) follow RFC 9112's lenient options, quietly dropping `Content-Length` when
//! `Transfer-Encoding` is present or accepting repeated `Content-Length`; safe for them, but a
//! proxy must refuse such requests, with 400 and a closed connection, before forwarding anything:
//!
//! - `Content-Length` together with `Transfer-Encoding`, repeated or non-numeric `Content-Length`
//! - `Transfer-Encoding` other than exactly `chunked` (501 for unknown codings), or in HTTP/1.0
//! - obs-fold, whitespace before a colon, bare CR or LF, NUL or other controls (httparse, strict mode)
//! - missing or repeated `Host` in HTTP/1.1
//! - heads over the size limit or with more than 128 fields (431)
//!
//! [`HeadScanner`] finds the end of a head in a growing buffer; [`parse_request_head`] parses it
//! once into request parts plus its body [`Framing`]. Chunked bodies are checked as they are read
//! by [`crate::chunked`]. [`crate::h1_server`] applies all three to each connection.

use crate::name_cache::NameCache;
use bytes::Bytes;

/// Header lines per request; more is refused with 431.
const MAX_HEADERS: usize = 128;
/// Header fields the proxy adds to a forwarded request.
const ADDED_BY_PROXY: usize = 6;

/// Why a request was refused: the status to answer and a reason for the body and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

impl Rejection {
    const fn bad(reason: &'static str) -> Self {
        Self {
            status: 400,
            reason,
        }
    }
}

/// Finds where a request head ends in a growing buffer, strictly: bare CR or LF is refused,
/// blank lines before the request line are skipped (RFC 9112 2.2), and a head longer than the
/// limit gets 431. Resumable: bytes already searched are not searched again.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    max_head: usize,
    /// Bytes of the pending head already searched (avoids rescanning on slow clients).
    scanned: usize,
    /// Whether the pending head has a byte other than CR/LF yet: CRLFCRLF only ends a head after
    /// its request line.
    has_content: bool,
}

impl HeadScanner {
    pub fn new(max_head_bytes: usize) -> Self {
        Self {
            max_head: max_head_bytes,
            scanned: 0,
            has_content: false,
        }
    }

    /// The head's length once `buf` (which starts at the head) holds all of it. Between calls
    /// `buf` only grows: the bytes of the last call, then more.
    pub fn find_end(&mut self, buf: &[u8]) -> Result<Option<usize>, Rejection> {
        let too_large = Rejection {
            status: 431,
            reason: "request head too large",
        };
        match self.scan_for_end(buf)? {
            Some(end) if end > self.max_head => Err(too_large),
            Some(end) => Ok(Some(end)),
            None if buf.len() > self.max_head => Err(too_large),
            None => Ok(None),
        }
    }

    /// Finds the end of the head (after CRLFCRLF), refusing bare CR or LF on the way.
    fn scan_for_end(&mut self, rest: &[u8]) -> Result<Option<usize>, Rejection> {
        // Empty lines before a request line are allowed (RFC 9112 2.2) and part of the head.
        // Jumps from one CR or LF to the next (memchr's vector search): the bytes between are
        // content, and need no look.
        debug_assert!(
            self.scanned <= rest.len(),
            "the buffer shrank between calls"
        );
        let mut i = self.scanned.min(rest.len());
        while let Some(skipped) = memchr::memchr2(b'\r', b'\n', &rest[i..]) {
            self.has_content |= skipped > 0;
            i += skipped;
            if rest[i] == b'\n' {
                return Err(Rejection::bad("bare LF in request head"));
            }
            let Some(&next) = rest.get(i + 1) else {
                self.scanned = i; // the CR is looked at again with the byte after it
                return Ok(None);
            };
            if next != b'\n' {
                return Err(Rejection::bad("bare CR in request head"));
            }
            let line_start = i >= 2 && rest[i - 2] == b'\r' && rest[i - 1] == b'\n';
            if line_start && self.has_content {
                self.scanned = 0;
                self.has_content = false;
                return Ok(Some(i + 2));
            }
            i += 2;
        }
        self.has_content |= i < rest.len();
        self.scanned = rest.len();
        Ok(None)
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Parses a complete head strictly into request parts and its body framing (for a server that
/// owns the connection: one parse, the same rules as the guard).
/// `names` is the connection's (see [`NameCache`]).
pub fn parse_request_head(
    head: Bytes,
    names: &mut NameCache,
) -> Result<(http::request::Parts, Framing), Rejection> {
    // Left uninitialized: httparse writes the fields it finds, and a 128-field array zeroed per
    // request would cost more than the parse of a usual head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    parse_strict(&mut request, &head, &mut headers)?;
    let framing = validate(&request)?;
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = http::Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|_| Rejection::bad("invalid method or token"))?;
    // The target and the values are slices of `head`, not copies (hyper does the same): no
    // allocation per field. Whoever keeps one for long (a cache) should copy it, or it pins
    // the connection's read buffer.
    parts.uri = match request.path {
        Some(path) => http::Uri::from_maybe_shared(head.slice_ref(path.as_bytes()))
            .map_err(|_| Rejection::bad("invalid request target"))?,
        None => http::Uri::from_static("/"),
    };
    parts.version = if request.version == Some(0) {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    // Room for what the proxy adds (X-Forwarded-*, Via, X-Request-Id, TE) without regrowing.
    parts.headers = crate::header_maps::take(request.headers.len() + ADDED_BY_PROXY);
    for (index, header) in request.headers.iter().enumerate() {
        let name = names
            .name(index, header.name.as_bytes())
            .map_err(|_| Rejection::bad("invalid header name (whitespace before colon?)"))?;
        // SAFETY: httparse accepted the value, with the default config (`parse_strict`).
        let value = unsafe { value_parsed_by_httparse(head.slice_ref(header.value)) };
        parts.headers.append(name, value);
    }
    Ok((parts, framing))
}

/// A header value httparse accepted, as a [`http::HeaderValue`] without checking its bytes a
/// second time (that check is about a fifth of what making the value costs). Debug builds
/// check them anyway (`from_maybe_shared_unchecked` does).
///
/// # Safety
///
/// `value` must be a field value httparse accepted with obs-fold refused (its default
/// `ParserConfig`, as both parsers here use: `allow_obsolete_multiline_headers_in_responses`
/// would let CRLF into values). httparse then takes a value only if every byte is HTAB,
/// 0x20-0x7E or 0x80-0xFF (its `HEADER_VALUE_MAP`, and the SIMD and word-wise scanners that
/// hand over to it), a subset of what `HeaderValue` may hold (HTAB, or 0x20 and above except
/// DEL): CR, LF, NUL and the other controls never get in, so the value cannot split a head.
/// The contract is about that, not memory.
pub(crate) unsafe fn value_parsed_by_httparse(value: Bytes) -> http::HeaderValue {
    // SAFETY: the caller vouches for the bytes (above).
    unsafe { http::HeaderValue::from_maybe_shared_unchecked(value) }
}

fn parse_strict<'h, 'b>(
    request: &mut httparse::Request<'h, 'b>,
    head: &'b [u8],
    headers: &'h mut [std::mem::MaybeUninit<httparse::Header<'b>>],
) -> Result<(), Rejection> {
    match request.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Rejection::bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection {
                status: 431,
                reason: "too many header fields",
            });
        }
        Err(err) => return Err(Rejection::bad(parse_error_reason(err))),
    }
    Ok(())
}

/// The framing rules every request head must pass.
fn validate(request: &httparse::Request<'_, '_>) -> Result<Framing, Rejection> {
    let http11 = request.version == Some(1);
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(Rejection::bad("repeated Content-Length"));
            }
            content_length = Some(parse_content_length(header.value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding {
                return Err(Rejection::bad("repeated Transfer-Encoding"));
            }
            transfer_encoding = true;
            let value = trim_ows(header.value);
            if !value.eq_ignore_ascii_case(b"chunked") {
                let names_chunked = value
                    .split(|&b| b == b',')
                    .any(|coding| trim_ows(coding).eq_ignore_ascii_case(b"chunked"));
                return Err(if names_chunked {
                    Rejection::bad("Transfer-Encoding must be exactly \"chunked\"")
                } else {
                    Rejection {
                        status: 501,
                        reason: "unsupported Transfer-Encoding",
                    }
                });
            }
        }
    }
    if http11 && hosts != 1 {
        return Err(Rejection::bad(if hosts == 0 {
            "HTTP/1.1 request without Host"
        } else {
            "repeated Host"
        }));
    }
    if hosts > 1 {
        return Err(Rejection::bad("repeated Host"));
    }
    match (content_length, transfer_encoding) {
        (Some(_), true) => Err(Rejection::bad(
            "Content-Length together with Transfer-Encoding",
        )),
        (None, true) if !http11 => Err(Rejection::bad("Transfer-Encoding in HTTP/1.0")),
        (None, true) => Ok(Framing::Chunked),
        (Some(n), false) => Ok(Framing::Length(n)),
        (None, false) => Ok(Framing::None),
    }
}

/// Content-Length is 1*DIGIT: no sign, no spaces inside, no comma lists.
fn parse_content_length(value: &[u8]) -> Result<u64, Rejection> {
    let value = trim_ows(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::bad("invalid Content-Length"));
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(Rejection::bad("invalid Content-Length"))
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn parse_error_reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid header name (whitespace before colon?)",
        httparse::Error::HeaderValue => "invalid header value (control character or obs-fold?)",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or token",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "unsupported HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `head` with a fresh name cache and with one that has seen the earlier heads of
    /// the test: both must give the same answer.
    fn parse(head: Bytes) -> Result<(http::request::Parts, Framing), Rejection> {
        thread_local! {
            static WARM: std::cell::RefCell<NameCache> = const { std::cell::RefCell::new(NameCache::new()) };
        }
        let fresh = parse_request_head(head.clone(), &mut NameCache::new());
        let warm = WARM.with(|cache| parse_request_head(head, &mut cache.borrow_mut()));
        match (&fresh, &warm) {
            (Ok((a, framing_a)), Ok((b, framing_b))) => {
                assert_eq!(
                    (&a.method, &a.uri, a.version),
                    (&b.method, &b.uri, b.version)
                );
                assert_eq!(a.headers, b.headers);
                assert_eq!(framing_a, framing_b);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("a warm name cache changed the outcome: {fresh:?} / {warm:?}"),
        }
        fresh
    }

    /// Scans `input` fed in pieces of `step` bytes; returns the head length or the refusal.
    fn scan_in_pieces(input: &[u8], step: usize, max: usize) -> Result<Option<usize>, Rejection> {
        let mut scanner = HeadScanner::new(max);
        let mut end = 0;
        loop {
            end = (end + step).min(input.len());
            if let Some(len) = scanner.find_end(&input[..end])? {
                return Ok(Some(len));
            }
            if end == input.len() {
                return Ok(None);
            }
        }
    }

    fn refused(input: &str) -> Rejection {
        let head = match HeadScanner::new(8192).find_end(input.as_bytes()) {
            Err(r) => return r,
            Ok(Some(len)) => Bytes::copy_from_slice(&input.as_bytes()[..len]),
            Ok(None) => panic!("incomplete: {input:?}"),
        };
        parse(head).expect_err(input)
    }

    #[test]
    fn heads_end_at_the_first_empty_line_however_they_arrive() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for step in 1..=req.len() {
            assert_eq!(
                scan_in_pieces(req, step, 8192),
                Ok(Some(req.len() - 4)),
                "step {step}"
            );
        }
        assert_eq!(
            scan_in_pieces(b"GET / HTTP/1.1\r\nHost: a\r\n", 3, 8192),
            Ok(None)
        );
        // A bare CR or LF is refused wherever the pieces split, a CR at a piece's end included.
        for (head, reason) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"[..],
                "bare CR in request head",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n",
                "bare LF in request head",
            ),
            (b"\r\n\rGET / HTTP/1.1\r\n\r\n", "bare CR in request head"),
        ] {
            for step in 1..=head.len() {
                let refusal = scan_in_pieces(head, step, 8192).unwrap_err();
                assert_eq!(refusal.reason, reason, "step {step}");
            }
        }
    }

    #[test]
    fn blank_lines_before_a_request_are_skipped_in_linear_time() {
        let req = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(HeadScanner::new(8192).find_end(req), Ok(Some(req.len())));
        let (parts, _) = parse(Bytes::from_static(req)).unwrap();
        assert_eq!(parts.uri, "/");
        // 32 Ki empty lines: each CRLF looked at once (a quadratic rescan would take minutes).
        let blank = "\r\n".repeat(32 * 1024);
        assert_eq!(
            HeadScanner::new(1 << 20).find_end(blank.as_bytes()),
            Ok(None)
        );
        assert_eq!(
            HeadScanner::new(1024)
                .find_end(blank.as_bytes())
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn oversized_heads_get_431() {
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(
            HeadScanner::new(64)
                .find_end(long.as_bytes())
                .unwrap_err()
                .status,
            431
        );
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(parse(Bytes::from(head)).unwrap_err().status, 431);
    }

    #[test]
    fn valid_heads_parse_once_with_their_framing() {
        let (parts, framing) = parse(Bytes::from_static(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri, "/a?b=1");
        assert_eq!(parts.version, http::Version::HTTP_11);
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(framing, Framing::Length(5));
        let (_, framing) = parse(Bytes::from_static(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(framing, Framing::Chunked);
        let (parts, framing) = parse(Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n")).unwrap();
        assert_eq!(
            (parts.version, framing),
            (http::Version::HTTP_10, Framing::None)
        );
    }

    /// [`value_parsed_by_httparse`] trusts httparse's check: every byte, in values short
    /// enough for its scalar loop and long enough for its word-wise and AVX2 scanners, is
    /// either refused or kept exactly as sent, and only the bytes a `HeaderValue` may hold
    /// are kept.
    #[test]
    fn header_values_keep_exactly_the_bytes_a_header_value_allows() {
        for padding in [1, 12, 40] {
            let side = "v".repeat(padding);
            for byte in 0..=255u8 {
                let mut head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-V: {side}").into_bytes();
                head.push(byte);
                head.extend_from_slice(format!("{side}\r\n\r\n").as_bytes());
                // What a HeaderValue may hold, asked of http itself: httparse must keep to it.
                let allowed = http::HeaderValue::from_bytes(&[byte]).is_ok();
                match parse(Bytes::from(head)) {
                    Ok((parts, _)) => {
                        assert!(allowed, "byte {byte:#04x} was let through");
                        let value = parts.headers.get("x-v").unwrap().as_bytes();
                        assert_eq!(value.len(), 2 * padding + 1, "byte {byte:#04x}");
                        assert_eq!(value[padding], byte);
                    }
                    Err(_) => assert!(!allowed, "byte {byte:#04x} was refused"),
                }
            }
        }
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Content-Length together with Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                "Content-Length together with Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                "repeated Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "Transfer-Encoding must be exactly \"chunked\"",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "repeated Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding in HTTP/1.0",
            ),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 request without Host"),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "repeated Host",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
                "invalid header name (whitespace before colon?)",
            ),
            (
                "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                "invalid header name (whitespace before colon?)",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
                "invalid header value (control character or obs-fold?)",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
                "bare CR in request head",
            ),
            ("GET / HTTP/1.1\nHost: a\n\n", "bare LF in request head"),
        ];
        for (input, reason) in cases {
            let r = refused(input);
            assert_eq!((r.status, r.reason), (400, reason), "{input:?}");
        }
        assert_eq!(
            refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").status,
            501
        );
    }
}
