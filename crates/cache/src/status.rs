//! Naming what the cache did: the `Cache-Status` response header (RFC 9211) and the metric's
//! `result` label.

use http::header::{HeaderName, HeaderValue};

pub static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The metric label of a cached route's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache, fresh.
    Hit,
    /// Forwarded: nothing usable was stored.
    Miss,
    /// Forwarded with the stored validators; the origin answered 304 and the stored body was
    /// served.
    Revalidated,
    /// Served stale: while revalidating in the background, or because the origin failed.
    Stale,
    /// Not a cacheable request (method, or the client said no-store).
    Bypass,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Revalidated,
        Outcome::Stale,
        Outcome::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Revalidated => "revalidated",
            Outcome::Stale => "stale",
            Outcome::Bypass => "bypass",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `Cache-Status` values for hits, written without formatting.
pub static HIT: HeaderValue = HeaderValue::from_static("gatehouse; hit");
pub static HIT_COALESCED: HeaderValue =
    HeaderValue::from_static("gatehouse; hit; detail=coalesced");
pub static HIT_STALE_WHILE_REVALIDATE: HeaderValue =
    HeaderValue::from_static("gatehouse; hit; detail=stale-while-revalidate");

/// A `Cache-Status` value for a request that went forward (RFC 9211 2.2): `fwd` says why
/// (`miss`, `vary-miss`, `stale`, `request`, `method`, `bypass`), `fwd-status` what the origin
/// answered, `stored` whether that answer is being stored.
pub fn forwarded(
    fwd: &str,
    fwd_status: Option<u16>,
    stored: bool,
    detail: Option<&str>,
) -> HeaderValue {
    let mut text = String::with_capacity(64);
    text.push_str("gatehouse; fwd=");
    text.push_str(fwd);
    if let Some(status) = fwd_status {
        text.push_str("; fwd-status=");
        text.push_str(itoa::Buffer::new().format(status));
    }
    if stored {
        text.push_str("; stored");
    }
    if let Some(detail) = detail {
        text.push_str("; detail=");
        text.push_str(detail);
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("gatehouse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_values() {
        assert_eq!(
            forwarded("stale", Some(304), false, None),
            "gatehouse; fwd=stale; fwd-status=304"
        );
        assert_eq!(
            forwarded("miss", Some(200), true, None),
            "gatehouse; fwd=miss; fwd-status=200; stored"
        );
        assert_eq!(
            forwarded("stale", Some(503), false, Some("stale-if-error")),
            "gatehouse; fwd=stale; fwd-status=503; detail=stale-if-error"
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
