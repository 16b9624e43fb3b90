//! Strict HTTP/1.1 request framing, checked before hyper sees a byte.
//!
//! A request is smuggled when two parsers disagree about where it ends. hyper follows RFC 9112's
//! permissive options (it quietly drops `Content-Length` when `Transfer-Encoding` is present and
//! accepts repeated identical `Content-Length`), which is safe for hyper but lets ambiguous
//! requests through a proxy. [`RequestGuard`] tracks message framing on the client's byte stream
//! and refuses, with 400 and a closed connection, anything a downstream parser could read
//! differently:
//!
//! - `Content-Length` together with `Transfer-Encoding`, repeated or non-numeric `Content-Length`
//! - `Transfer-Encoding` other than exactly `chunked` (501 for unknown codings), or in HTTP/1.0
//! - obs-fold, whitespace before a colon, bare CR or LF, NUL or other controls (httparse, strict mode)
//! - missing or repeated `Host` in HTTP/1.1
//! - invalid chunk sizes, chunk lines not ended by CRLF, oversized trailers
//!
//! It is pure: it takes the bytes received so far and says how many of them may be passed on. The
//! I/O wrapper in [`crate::guarded_io`] applies it to a socket. Requests are held back only while
//! their head is incomplete; bodies stream through as they arrive.

use crate::chunked::ChunkedDecoder;

/// The HTTP/2 connection preface; a connection that starts with it is not HTTP/1 and is passed on.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header lines per request; more is refused with 431.
const MAX_HEADERS: usize = 128;

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

/// The outcome of one [`RequestGuard::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Leading bytes that may be passed on.
    pub released: usize,
    /// Set when the request after the released bytes was refused.
    pub rejection: Option<Rejection>,
}

/// Framing state of the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (more of) a request head.
    Head,
    /// Inside a Content-Length body; this many bytes remain.
    FixedBody(u64),
    /// Inside a chunked body.
    Chunked(ChunkedDecoder),
    /// Not HTTP/1 (HTTP/2 preface seen): everything passes.
    Passthrough,
    /// A rejection happened; nothing more passes.
    Failed(Rejection),
}

/// Validates HTTP/1 request framing on one connection.
#[derive(Debug)]
pub struct RequestGuard {
    state: State,
    max_head: usize,
    /// Bytes of the pending head already searched for its end (avoids rescanning on slow clients).
    head_scanned: usize,
    /// Whether the pending head has a byte other than CR/LF yet: blank lines before a request
    /// line are skipped (RFC 9112 2.2), so CRLFCRLF only ends a head after its request line.
    head_has_content: bool,
    failed_mid_body: bool,
    /// True until the first byte decided between HTTP/1 and the HTTP/2 preface.
    at_start: bool,
}

impl RequestGuard {
    pub fn new(max_head_bytes: usize) -> Self {
        Self {
            state: State::Head,
            max_head: max_head_bytes,
            head_scanned: 0,
            head_has_content: false,
            failed_mid_body: false,
            at_start: true,
        }
    }

    /// `pending` holds the received bytes not released yet: it must start where the previous
    /// call's release ended. Says how many leading bytes may be passed to the HTTP parser, and
    /// whether a request after them was refused (requests before a refused one still pass).
    pub fn scan(&mut self, pending: &[u8]) -> Scan {
        let mut offset = 0;
        let rejection = self.advance(pending, &mut offset).err();
        Scan {
            released: offset,
            rejection,
        }
    }

    /// Walks `pending` from `offset_out`, which it leaves at the end of the last byte that may
    /// be released.
    fn advance(&mut self, pending: &[u8], offset_out: &mut usize) -> Result<(), Rejection> {
        let mut offset = *offset_out;
        while offset < pending.len() {
            let rest = &pending[offset..];
            match self.state {
                State::Failed(rejection) => return Err(rejection),
                State::Passthrough => {
                    *offset_out = pending.len();
                    return Ok(());
                }
                State::Head => {
                    if self.at_start {
                        if rest.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(rest) {
                            return Ok(()); // could still be the HTTP/2 preface
                        }
                        self.at_start = false;
                        if rest.starts_with(H2_PREFACE) {
                            self.state = State::Passthrough;
                            continue;
                        }
                    }
                    match self.head(rest) {
                        Ok(Some(len)) => offset += len,
                        Ok(None) => return Ok(()),
                        Err(rejection) => return Err(self.fail(rejection)),
                    }
                }
                State::FixedBody(remaining) => {
                    let take = remaining.min(rest.len() as u64);
                    offset += take as usize;
                    self.state = if take == remaining {
                        State::Head
                    } else {
                        State::FixedBody(remaining - take)
                    };
                }
                State::Chunked(mut decoder) => {
                    // Walk the body's framing (data is not needed here, only where it ends).
                    let mut used = 0;
                    loop {
                        match decoder.decode(&rest[used..]) {
                            Ok(step) => {
                                used += step.consumed;
                                if step.done {
                                    self.state = State::Head;
                                    break;
                                }
                                if used == rest.len() {
                                    self.state = State::Chunked(decoder);
                                    break;
                                }
                            }
                            Err(reason) => return Err(self.fail(Rejection::bad(reason))),
                        }
                    }
                    offset += used;
                }
            }
            *offset_out = offset;
        }
        Ok(())
    }

    fn fail(&mut self, rejection: Rejection) -> Rejection {
        self.failed_mid_body = matches!(self.state, State::Chunked(_));
        self.state = State::Failed(rejection);
        rejection
    }

    /// Whether the connection is between requests or inside an incomplete head: the time a
    /// client may spend here is bounded by the listener's header_read_timeout.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Whether the refusal happened inside a request body: that request already reached the
    /// HTTP layer, which answers it itself (its body ends in an error), so no second response.
    pub fn failed_mid_body(&self) -> bool {
        self.failed_mid_body
    }

    /// Looks for a complete head at the start of `rest`. Returns its length once complete and
    /// valid (and sets the body state), None while incomplete.
    fn head(&mut self, rest: &[u8]) -> Result<Option<usize>, Rejection> {
        let Some(end) = self.find_head_end(rest)? else {
            if rest.len() > self.max_head {
                return Err(Rejection {
                    status: 431,
                    reason: "request head too large",
                });
            }
            return Ok(None);
        };
        if end > self.max_head {
            return Err(Rejection {
                status: 431,
                reason: "request head too large",
            });
        }
        self.head_scanned = 0;
        let framing = check_head(&rest[..end])?;
        self.state = match framing {
            Framing::None | Framing::Length(0) => State::Head,
            Framing::Length(n) => State::FixedBody(n),
            Framing::Chunked => State::Chunked(ChunkedDecoder::new()),
        };
        Ok(Some(end))
    }

    /// Finds the end of the head (after CRLFCRLF), refusing bare CR or LF on the way.
    fn find_head_end(&mut self, rest: &[u8]) -> Result<Option<usize>, Rejection> {
        // Empty lines before a request line are allowed (RFC 9112 2.2) and part of the head.
        let mut i = self.head_scanned;
        while i < rest.len() {
            match rest[i] {
                b'\r' => {
                    let Some(&next) = rest.get(i + 1) else {
                        break; // need the next byte
                    };
                    if next != b'\n' {
                        return Err(Rejection::bad("bare CR in request head"));
                    }
                    let line_start = i >= 2 && rest[i - 2] == b'\r' && rest[i - 1] == b'\n';
                    if line_start && self.head_has_content {
                        self.head_scanned = 0;
                        self.head_has_content = false;
                        return Ok(Some(i + 2));
                    }
                    i += 2;
                }
                b'\n' => return Err(Rejection::bad("bare LF in request head")),
                _ => {
                    self.head_has_content = true;
                    i += 1;
                }
            }
        }
        self.head_scanned = i;
        Ok(None)
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Parses a complete head strictly and decides its body framing.
fn check_head(head: &[u8]) -> Result<Framing, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
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

    /// The old-style view used by these tests: all released, or the rejection.
    fn check(g: &mut RequestGuard, input: &[u8]) -> Result<usize, Rejection> {
        let scan = g.scan(input);
        match scan.rejection {
            Some(r) => Err(r),
            None => Ok(scan.released),
        }
    }

    fn scan_all(input: &[u8]) -> Result<usize, Rejection> {
        check(&mut RequestGuard::new(8192), input)
    }

    fn rejected(input: &str) -> Rejection {
        scan_all(input.as_bytes()).expect_err(input)
    }

    #[test]
    fn simple_requests_pass_whole() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(req), Ok(req.len()));
    }

    #[test]
    fn a_partial_head_is_held_back() {
        let mut g = RequestGuard::new(8192);
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..full.len() {
            let mut g2 = RequestGuard::new(8192);
            assert_eq!(check(&mut g2, &full[..cut]), Ok(0), "cut at {cut}");
            assert_eq!(check(&mut g2, full), Ok(full.len()));
        }
        assert_eq!(check(&mut g, full), Ok(full.len()));
    }

    #[test]
    fn fixed_bodies_stream_and_the_next_head_is_checked() {
        let mut g = RequestGuard::new(8192);
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(check(&mut g, head), Ok(head.len()));
        assert_eq!(check(&mut g, b"01234"), Ok(5));
        // The rest of the body plus a smuggled-looking second request with both framings.
        let next = b"56789GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            check(&mut g, next).unwrap_err().reason,
            "Content-Length together with Transfer-Encoding"
        );
    }

    #[test]
    fn chunked_bodies_are_followed_exactly() {
        let req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(req), Ok(req.len()));
        // Byte by byte gives the same result.
        let mut g = RequestGuard::new(8192);
        let mut released = 0;
        for end in 1..=req.len() {
            released += check(&mut g, &req[released..end]).unwrap();
        }
        assert_eq!(released, req.len());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
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
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
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
            let r = rejected(input);
            assert_eq!((r.status, r.reason), (400, reason), "{input:?}");
        }
        assert_eq!(
            rejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").status,
            501
        );
    }

    #[test]
    fn bad_chunks_are_refused() {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, reason) in [
            ("x\r\n", "invalid chunk size"),
            ("-1\r\n", "invalid chunk size"),
            (" 5\r\n", "invalid chunk size"),
            ("11111111111111111\r\n", "chunk size too large"),
            ("5\n", "invalid chunk size"),
            ("5\rx", "chunk size line not ended by CRLF"),
            ("5\r\nhelloX", "chunk data not followed by CRLF"),
            ("0\r\nX: 1\n", "bare LF in trailers"),
            ("0\r\n x\r\n", "obs-fold in trailers"),
        ] {
            let r = rejected(&format!("{head}{body}"));
            assert_eq!(r.reason, reason, "{body:?}");
        }
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut g = RequestGuard::new(64);
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(check(&mut g, long.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn the_h2_preface_passes_through() {
        let mut g = RequestGuard::new(8192);
        assert_eq!(check(&mut g, b"PRI * HT"), Ok(0));
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
        assert_eq!(check(&mut g, preface), Ok(preface.len()));
        assert_eq!(check(&mut g, b"\x00anything"), Ok(9));
        // An HTTP/1 request starting with P is not mistaken for the preface.
        let post = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(post), Ok(post.len()));
    }

    #[test]
    fn after_a_rejection_nothing_passes() {
        let mut g = RequestGuard::new(8192);
        assert!(check(&mut g, b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(check(&mut g, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
    }

    #[test]
    fn many_blank_lines_cost_linear_time_and_hit_the_head_limit() {
        // 32 Ki empty lines: each CRLF is looked at once (a quadratic rescan would take minutes).
        let blank = "\r\n".repeat(32 * 1024);
        assert_eq!(
            check(&mut RequestGuard::new(1 << 20), blank.as_bytes()),
            Ok(0)
        );
        assert_eq!(
            check(&mut RequestGuard::new(1024), blank.as_bytes())
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn blank_lines_before_a_request_are_allowed() {
        let req = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(req), Ok(req.len()));
    }
}

#[cfg(test)]
mod partial_release {
    use super::*;

    #[test]
    fn requests_before_a_refused_one_are_released() {
        let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut input = good.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        let scan = RequestGuard::new(8192).scan(&input);
        assert_eq!(scan.released, good.len());
        assert_eq!(scan.rejection.map(|r| r.reason), Some("repeated Host"));
    }
}
