//! Response compression (zstd, brotli, gzip) for routes that ask for it.
//!
//! The coding follows the client's `Accept-Encoding` q-values, ties going to the route's order
//! of preference. Only responses that gain are compressed: a success status, a listed media
//! type (never `text/event-stream`: an event must not wait in a compressor), at least
//! `min_size` when the length is known, and not already encoded, ranged or marked
//! `no-transform`. Every response that could have been compressed says `Vary: Accept-Encoding`,
//! so a cache keeps the variants apart; a strong ETag becomes weak, since the bytes differ.
//!
//! The body is compressed as it streams: input is fed to the encoder frame by frame, output
//! goes out once a buffer's worth is ready, and whenever the upstream has nothing more ready
//! the encoder is flushed, so a slowly streamed page is never held back in the compressor.

use crate::body::{BoxError, ProxyBody};
use bytes::Bytes;
use gatehouse_config::{Compression, ContentCoding};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Output is handed on once this much is ready (or when the input pauses or ends).
const OUTPUT_CHUNK: usize = 16 * 1024;
/// Levels that favour speed, as dynamic content wants: close to the best ratio for text at a
/// fraction of the CPU of the maximum levels.
const GZIP_LEVEL: u32 = 5;
const BROTLI_QUALITY: u32 = 4;
const BROTLI_WINDOW: u32 = 22;
const ZSTD_LEVEL: i32 = 3;

/// The coding to use for a client that sent `accept` (an `Accept-Encoding` value), among the
/// route's `offered` codings (in preference order); None when the client accepts none of them.
/// Without the header nothing is compressed (RFC 9110 12.5.3 allows any coding, but clients
/// that send none usually cannot decode any).
pub fn choose(accept: &[u8], offered: &[ContentCoding]) -> Option<ContentCoding> {
    let mut best: Option<(ContentCoding, u16)> = None;
    for &coding in offered {
        let q = quality(accept, coding.token());
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    best.map(|(coding, _)| coding)
}

/// The q-value (0..=1000) the client gives `token`: its own entry, else `*`'s, else 0.
fn quality(accept: &[u8], token: &str) -> u16 {
    let mut star = None;
    for item in accept.split(|&b| b == b',') {
        let mut params = item.split(|&b| b == b';');
        let name = params.next().unwrap_or_default().trim_ascii();
        let q = params
            .filter_map(|p| {
                let p = p.trim_ascii();
                let value = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="))?;
                parse_qvalue(value)
            })
            .next_back()
            .unwrap_or(1000);
        let matches = name.eq_ignore_ascii_case(token.as_bytes())
            || (token == "gzip" && name.eq_ignore_ascii_case(b"x-gzip"));
        if matches {
            return q;
        }
        if name == b"*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// A qvalue ("0", "0.5", "1.000") in thousandths; None when malformed.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Compresses `response` for a client that sent `accept`, when the route's `settings` and the
/// response allow it (see the module docs). `is_head`: the response to a HEAD has no body but
/// says what a GET would get.
pub fn apply(
    mut response: Response<ProxyBody>,
    accept: Option<&HeaderValue>,
    settings: &Compression,
    is_head: bool,
) -> Response<ProxyBody> {
    if !worth_compressing(&response, settings, is_head) {
        return response;
    }
    add_vary(response.headers_mut());
    let Some(coding) = accept.and_then(|a| choose(a.as_bytes(), &settings.algorithms)) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    weaken_etag(headers);
    if is_head {
        return response;
    }
    // The bytes change: the upstream's may not be spliced past the encoder.
    crate::splice::strip(response.extensions_mut());
    response.map(|body| CompressBody::new(body, coding).boxed())
}

fn worth_compressing(
    response: &Response<ProxyBody>,
    settings: &Compression,
    is_head: bool,
) -> bool {
    let status = response.status();
    if !(status == StatusCode::OK
        || status == StatusCode::CREATED
        || status == StatusCode::ACCEPTED
        || status == StatusCode::NON_AUTHORITATIVE_INFORMATION)
    {
        return false;
    }
    let headers = response.headers();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded || headers.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    });
    if no_transform {
        return false;
    }
    // A HEAD answer has no body; its Content-Length says what a GET would get.
    let length = if is_head {
        crate::headers::content_length(headers)
    } else {
        response.body().size_hint().exact()
    };
    if length.is_some_and(|n| n < settings.min_size) {
        return false;
    }
    let Some(media_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
    else {
        return false;
    };
    !media_type.eq_ignore_ascii_case("text/event-stream")
        && listed(media_type, &settings.content_types)
}

/// Whether `media_type` (any case) is in `list` (lower-case entries like "text/html" or
/// "text/*"). Compared in place: no lower-cased copy per response.
fn listed(media_type: &str, list: &[String]) -> bool {
    let main = media_type.split('/').next().unwrap_or("");
    list.iter().any(|entry| {
        entry.eq_ignore_ascii_case(media_type)
            || entry
                .strip_suffix("/*")
                .is_some_and(|entry_main| entry_main.eq_ignore_ascii_case(main))
    })
}

fn add_vary(headers: &mut HeaderMap) {
    let covered = headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !covered {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// A strong validator names exact bytes; the compressed bytes are others (RFC 9110 8.8.1).
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    if let Ok(weak) = HeaderValue::from_bytes(&weak) {
        headers.insert(header::ETAG, weak);
    }
}

/// A streaming encoder writing into a buffer we drain.
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(coding: ContentCoding) -> io::Result<Self> {
        Ok(match coding {
            ContentCoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            ContentCoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                OUTPUT_CHUNK,
                BROTLI_QUALITY,
                BROTLI_WINDOW,
            ))),
            ContentCoding::Zstd => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?)
            }
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Pushes out everything written so far as complete, decodable output.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// Ends the stream; returns the last output.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// A body compressed as it streams.
pub struct CompressBody {
    inner: ProxyBody,
    /// None once the stream is finished.
    encoder: Option<Encoder>,
    /// Input went in since the last flush.
    unflushed: bool,
    /// Set by the constructor when the encoder could not be made.
    failed: Option<io::Error>,
}

impl CompressBody {
    pub fn new(inner: ProxyBody, coding: ContentCoding) -> Self {
        let (encoder, failed) = match Encoder::new(coding) {
            Ok(encoder) => (Some(encoder), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            inner,
            encoder,
            unflushed: false,
            failed,
        }
    }

    fn take_output(&mut self) -> Option<Bytes> {
        let out = self.encoder.as_mut()?.output();
        (!out.is_empty()).then(|| Bytes::from(std::mem::take(out)))
    }
}

fn compression_error(e: io::Error) -> BoxError {
    Box::new(crate::body::BodyError::upstream(format!(
        "compressing the response failed: {e}"
    )))
}

impl Body for CompressBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(compression_error(e))));
        }
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are dropped: their checksums would not match
                    };
                    if let Err(e) = encoder.write_all(&data) {
                        return Poll::Ready(Some(Err(compression_error(e))));
                    }
                    this.unflushed = true;
                    if encoder.output().len() >= OUTPUT_CHUNK
                        && let Some(out) = this.take_output()
                    {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let Some(encoder) = this.encoder.take() else {
                        return Poll::Ready(None);
                    };
                    return match encoder.finish() {
                        Ok(last) if last.is_empty() => Poll::Ready(None),
                        Ok(last) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(last))))),
                        Err(e) => Poll::Ready(Some(Err(compression_error(e)))),
                    };
                }
                Poll::Pending => {
                    // The upstream paused: what came so far goes out now.
                    if std::mem::take(&mut this.unflushed) {
                        if let Err(e) = encoder.flush() {
                            return Poll::Ready(Some(Err(compression_error(e))));
                        }
                        if let Some(out) = this.take_output() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const ALL: &[ContentCoding] = &[
        ContentCoding::Zstd,
        ContentCoding::Brotli,
        ContentCoding::Gzip,
    ];

    #[test]
    fn the_client_q_values_decide_and_ties_go_to_the_route_order() {
        assert_eq!(
            choose(b"gzip, deflate, br", ALL),
            Some(ContentCoding::Brotli)
        );
        assert_eq!(choose(b"gzip, br, zstd", ALL), Some(ContentCoding::Zstd));
        assert_eq!(
            choose(b"gzip;q=1.0, br;q=0.5", ALL),
            Some(ContentCoding::Gzip)
        );
        assert_eq!(
            choose(b"zstd;q=0, br;q=0.1", ALL),
            Some(ContentCoding::Brotli)
        );
        assert_eq!(choose(b"*", ALL), Some(ContentCoding::Zstd));
        assert_eq!(choose(b"*;q=0.5, gzip", ALL), Some(ContentCoding::Gzip));
        assert_eq!(choose(b"x-gzip", ALL), Some(ContentCoding::Gzip));
        assert_eq!(choose(b"GZIP;Q=0.8", ALL), Some(ContentCoding::Gzip));
        assert_eq!(choose(b"identity", ALL), None);
        assert_eq!(choose(b"*;q=0", ALL), None);
        assert_eq!(choose(b"gzip;q=0", ALL), None);
        assert_eq!(choose(b"", ALL), None);
        // A malformed q counts as absent (q=1), not as a refusal.
        assert_eq!(
            choose(b"gzip;q=2", &[ContentCoding::Gzip]),
            Some(ContentCoding::Gzip)
        );
        assert_eq!(choose(b"br", &[ContentCoding::Gzip]), None);
    }

    fn settings() -> Compression {
        Compression {
            algorithms: ALL.to_vec(),
            min_size: 100,
            content_types: vec!["text/*".into(), "application/json".into()],
        }
    }

    fn response(content_type: &str, body: &'static [u8]) -> Response<ProxyBody> {
        let mut r = Response::new(crate::body::full(Bytes::from_static(body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        r
    }

    const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog; the quick brown fox jumps over the lazy dog";

    async fn collect(response: Response<ProxyBody>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn each_coding_round_trips_with_the_right_headers() {
        for (accept, coding) in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd")] {
            let r = apply(
                response("Text/HTML; charset=utf-8", TEXT),
                Some(&HeaderValue::from_static(accept)),
                &settings(),
                false,
            );
            assert_eq!(r.headers()[header::CONTENT_ENCODING], coding);
            assert_eq!(r.headers()[header::VARY], "accept-encoding");
            assert_eq!(r.headers()[header::ETAG], "W/\"v1\"");
            assert!(!r.headers().contains_key(header::CONTENT_LENGTH));
            let compressed = collect(r).await;
            let mut plain = Vec::new();
            match coding {
                "gzip" => {
                    flate2::read::GzDecoder::new(&compressed[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                "br" => {
                    brotli::Decompressor::new(&compressed[..], 4096)
                        .read_to_end(&mut plain)
                        .unwrap();
                }
                _ => plain = zstd::stream::decode_all(&compressed[..]).unwrap(),
            }
            assert_eq!(plain, TEXT, "{coding}");
        }
    }

    #[tokio::test]
    async fn what_must_not_be_compressed_is_left_alone() {
        let gzip = HeaderValue::from_static("gzip");
        let untouched =
            |r: &Response<ProxyBody>| !r.headers().contains_key(header::CONTENT_ENCODING);
        // Too small, not listed, an event stream: untouched.
        let small = apply(
            response("text/plain", b"tiny"),
            Some(&gzip),
            &settings(),
            false,
        );
        assert!(untouched(&small) && !small.headers().contains_key(header::VARY));
        let image = apply(response("image/png", TEXT), Some(&gzip), &settings(), false);
        assert!(untouched(&image));
        let events = apply(
            response("text/event-stream", TEXT),
            Some(&gzip),
            &settings(),
            false,
        );
        assert!(untouched(&events));
        // Already encoded, a range, no-transform, an error status.
        for (name, value) in [
            (header::CONTENT_ENCODING, "br"),
            (header::CONTENT_RANGE, "bytes 0-9/100"),
            (header::CACHE_CONTROL, "public, no-transform"),
        ] {
            let mut r = response("text/plain", TEXT);
            r.headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
            let r = apply(r, Some(&gzip), &settings(), false);
            assert_ne!(
                r.headers()
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.as_bytes()),
                Some(&b"gzip"[..]),
                "{name}"
            );
        }
        let mut error = response("text/plain", TEXT);
        *error.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(untouched(&apply(error, Some(&gzip), &settings(), false)));
        // A client that accepts nothing we offer gets the plain body, but the Vary that says
        // another client could get another.
        let plain = apply(response("text/plain", TEXT), None, &settings(), false);
        assert!(untouched(&plain));
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        assert_eq!(plain.headers()[header::ETAG], "\"v1\"");
        assert_eq!(collect(plain).await, TEXT);
    }

    #[tokio::test]
    async fn output_is_flushed_whenever_the_upstream_pauses() {
        // A body whose second part comes only when the test says so.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|data| (Ok::<_, BoxError>(Frame::data(data)), rx))
        });
        let body = http_body_util::StreamBody::new(stream).boxed();
        let mut body = CompressBody::new(body, ContentCoding::Gzip);
        tx.send(Bytes::from_static(TEXT)).await.unwrap();
        // The first part comes out decodable before the second is even sent.
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("flushed at the pause")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        decoder.write_all(&first).unwrap();
        decoder.flush().unwrap();
        assert_eq!(decoder.get_ref().as_slice(), TEXT);
        drop(tx);
        let mut rest = first.to_vec();
        while let Some(frame) = body.frame().await {
            rest.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&rest[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, TEXT);
    }
}
