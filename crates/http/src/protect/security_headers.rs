//! Security headers a route adds to its responses.
//!
//! Defaults (each can be changed, or left out with "", per route):
//!
//! | header | default | why |
//! |---|---|---|
//! | `Strict-Transport-Security` | `max-age=31536000; includeSubDomains` | browsers use HTTPS only for a year; sent on HTTPS responses only (RFC 6797 8.1: a browser ignores it over HTTP, and sending it there suggests a protection that is not in force) |
//! | `X-Content-Type-Options` | `nosniff` | no MIME sniffing of a response into script or style |
//! | `X-Frame-Options` | `DENY` | no framing (clickjacking); `SAMEORIGIN` is one setting away for apps that frame themselves |
//! | `Referrer-Policy` | `strict-origin-when-cross-origin` | full URLs stay on the site; other origins see the origin only, never over a downgrade |
//!
//! A header the upstream already set is left as it is (the application knows its pages better),
//! unless the route says `override = true`. Values are built once per snapshot; a response
//! pays one map lookup per header.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// A route's security headers, ready to insert.
#[derive(Debug, Clone, Default)]
pub struct SecurityHeaders {
    /// Added to every response.
    always: Vec<(HeaderName, HeaderValue)>,
    /// Added to responses on HTTPS connections only.
    hsts: Option<HeaderValue>,
    override_upstream: bool,
}

impl SecurityHeaders {
    pub fn build(config: &gatehouse_config::SecurityHeaders) -> Self {
        let always = [
            (
                header::X_CONTENT_TYPE_OPTIONS,
                &config.x_content_type_options,
            ),
            (header::X_FRAME_OPTIONS, &config.x_frame_options),
            (header::REFERRER_POLICY, &config.referrer_policy),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref().and_then(value_of)?)))
        .collect();
        Self {
            always,
            hsts: config
                .strict_transport_security
                .as_deref()
                .and_then(value_of),
            override_upstream: config.override_upstream,
        }
    }

    /// Whether this route adds no header at all.
    pub fn is_empty(&self) -> bool {
        self.always.is_empty() && self.hsts.is_none()
    }

    /// Adds the headers to a response; `https`: the client connection is HTTPS.
    pub fn apply(&self, headers: &mut HeaderMap, https: bool) {
        let hsts = self
            .hsts
            .as_ref()
            .filter(|_| https)
            .map(|v| (&header::STRICT_TRANSPORT_SECURITY, v));
        let pairs = self.always.iter().map(|(n, v)| (n, v)).chain(hsts);
        for (name, value) in pairs {
            if self.override_upstream {
                headers.insert(name, value.clone());
            } else if let header::Entry::Vacant(slot) = headers.entry(name) {
                slot.insert(value.clone());
            }
        }
    }
}

/// A configured value as a header value; the usual ones are static (cloning them per response
/// touches no reference count).
fn value_of(text: &str) -> Option<HeaderValue> {
    const STATIC: [&str; 6] = [
        "max-age=31536000; includeSubDomains",
        "nosniff",
        "DENY",
        "SAMEORIGIN",
        "strict-origin-when-cross-origin",
        "no-referrer",
    ];
    match STATIC.iter().find(|s| **s == text) {
        Some(s) => Some(HeaderValue::from_static(s)),
        // Validation checked the value; a failure here leaves the header out.
        None => HeaderValue::from_str(text).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::SecurityHeaders as Config;

    #[test]
    fn defaults_are_added_and_hsts_only_over_https() {
        let h = SecurityHeaders::build(&Config::default());
        let mut plain = HeaderMap::new();
        h.apply(&mut plain, false);
        assert_eq!(plain["x-content-type-options"], "nosniff");
        assert_eq!(plain["x-frame-options"], "DENY");
        assert_eq!(plain["referrer-policy"], "strict-origin-when-cross-origin");
        assert!(!plain.contains_key("strict-transport-security"));
        let mut secure = HeaderMap::new();
        h.apply(&mut secure, true);
        assert_eq!(
            secure["strict-transport-security"],
            "max-age=31536000; includeSubDomains"
        );
    }

    #[test]
    fn the_upstream_wins_unless_the_route_overrides() {
        let mut upstream = HeaderMap::new();
        upstream.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        SecurityHeaders::build(&Config::default()).apply(&mut upstream, false);
        assert_eq!(upstream["x-frame-options"], "SAMEORIGIN");
        let overriding = Config {
            override_upstream: true,
            ..Config::default()
        };
        SecurityHeaders::build(&overriding).apply(&mut upstream, false);
        assert_eq!(upstream["x-frame-options"], "DENY");
        assert_eq!(upstream.get_all("x-frame-options").iter().count(), 1);
    }

    #[test]
    fn headers_can_be_changed_or_left_out() {
        let config = Config {
            x_frame_options: Some("SAMEORIGIN".into()),
            referrer_policy: None,
            strict_transport_security: Some("max-age=60".into()),
            ..Config::default()
        };
        let h = SecurityHeaders::build(&config);
        let mut headers = HeaderMap::new();
        h.apply(&mut headers, true);
        assert_eq!(headers["x-frame-options"], "SAMEORIGIN");
        assert!(!headers.contains_key("referrer-policy"));
        assert_eq!(headers["strict-transport-security"], "max-age=60");
        assert!(SecurityHeaders::build(&Config::none()).is_empty());
    }
}
