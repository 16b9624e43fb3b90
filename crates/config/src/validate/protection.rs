//! Validation of protection settings: CIDR access lists and trusted proxies, connections per
//! client, rate limits and security headers.
//!
//! Defaults and their reasons are in docs/security.md.

use super::{Validator, is_token_byte};
use crate::model::{
    AccessList, ListenerProtection, RateLimit, RateLimitKey, RouteProtection, SecurityHeaders,
};
use crate::raw::{RawAcl, RawListener, RawRateLimit, RawRoute, RawSecurityHeaders};
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_MAX_KEYS: u64 = 100_000;
const MAX_KEYS_LIMIT: u64 = 10_000_000;
const MAX_BURST: u64 = 10_000_000;

impl Validator<'_> {
    pub(super) fn listener_protection(
        &mut self,
        raw: &RawListener,
        field: &str,
    ) -> ListenerProtection {
        let acl = raw
            .acl
            .as_ref()
            .and_then(|a| self.acl(a, &format!("{field}.acl")));
        let trusted_proxies = raw.trusted_proxies.as_ref().map_or_else(Vec::new, |list| {
            self.prefixes(list, &format!("{field}.trusted_proxies"))
        });
        let max_connections_per_ip = raw.max_connections_per_ip.as_ref().and_then(|v| {
            if *v.get_ref() == 0 {
                self.error(
                    v,
                    &format!("{field}.max_connections_per_ip"),
                    "must be at least 1; leave it out for no per-client limit",
                );
                None
            } else {
                Some(*v.get_ref())
            }
        });
        ListenerProtection {
            acl,
            trusted_proxies,
            max_connections_per_ip,
        }
    }

    pub(super) fn route_protection(&mut self, raw: &RawRoute, field: &str) -> RouteProtection {
        RouteProtection {
            acl: raw
                .acl
                .as_ref()
                .and_then(|a| self.acl(a, &format!("{field}.acl"))),
            rate_limit: raw
                .rate_limit
                .as_ref()
                .and_then(|r| self.rate_limit(r, &format!("{field}.rate_limit"))),
            security_headers: raw
                .security_headers
                .as_ref()
                .map_or_else(SecurityHeaders::default, |s| {
                    self.security_headers(s, &format!("{field}.security_headers"))
                }),
        }
    }

    fn acl(&mut self, spanned: &Spanned<RawAcl>, field: &str) -> Option<AccessList> {
        let raw = spanned.get_ref();
        let allow = raw
            .allow
            .as_ref()
            .map_or_else(Vec::new, |l| self.prefixes(l, &format!("{field}.allow")));
        let deny = raw
            .deny
            .as_ref()
            .map_or_else(Vec::new, |l| self.prefixes(l, &format!("{field}.deny")));
        let empty = |l: &Option<Vec<Spanned<String>>>| l.as_ref().is_none_or(Vec::is_empty);
        if empty(&raw.allow) && empty(&raw.deny) {
            self.error(
                spanned,
                field,
                "the access list is empty, so it would allow everyone; add allow or deny prefixes or remove it",
            );
            return None;
        }
        for (i, prefix) in raw.deny.iter().flatten().enumerate() {
            if let Ok(net) = parse_prefix(prefix.get_ref())
                && allow.contains(&net)
            {
                self.error(
                    prefix,
                    &format!("{field}.deny[{i}]"),
                    format!("{net} is in both allow and deny; keep it in one list"),
                );
            }
        }
        Some(AccessList { allow, deny })
    }

    /// A list of CIDR prefixes (or single addresses), each checked, duplicates refused.
    fn prefixes(&mut self, list: &[Spanned<String>], field: &str) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Vec::with_capacity(list.len());
        for (i, spanned) in list.iter().enumerate() {
            match parse_prefix(spanned.get_ref()) {
                Ok(net) if out.contains(&net) => self.error(
                    spanned,
                    &format!("{field}[{i}]"),
                    format!("{net} is listed twice"),
                ),
                Ok(net) => out.push(net),
                Err(message) => self.error(spanned, &format!("{field}[{i}]"), message),
            }
        }
        out
    }

    fn rate_limit(&mut self, spanned: &Spanned<RawRateLimit>, field: &str) -> Option<RateLimit> {
        let raw = spanned.get_ref();
        let rate = parse_rate(raw.rate.get_ref());
        if let Err(message) = &rate {
            self.error(&raw.rate, &format!("{field}.rate"), message.clone());
        }
        let key = match &raw.key {
            None => RateLimitKey::ClientIp,
            Some(k) => match parse_key(k.get_ref()) {
                Ok(key) => key,
                Err(message) => {
                    self.error(k, &format!("{field}.key"), message);
                    RateLimitKey::ClientIp
                }
            },
        };
        let burst = match &raw.burst {
            Some(b) if !(1..=MAX_BURST).contains(b.get_ref()) => {
                self.error(
                    b,
                    &format!("{field}.burst"),
                    format!("must be between 1 and {MAX_BURST}"),
                );
                None
            }
            Some(b) => Some(*b.get_ref()),
            None => None,
        };
        let max_keys = match &raw.max_keys {
            Some(m) if !(1..=MAX_KEYS_LIMIT).contains(m.get_ref()) => {
                self.error(
                    m,
                    &format!("{field}.max_keys"),
                    format!("must be between 1 and {MAX_KEYS_LIMIT}"),
                );
                DEFAULT_MAX_KEYS
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_KEYS,
        };
        let (count, period) = rate.ok()?;
        Some(RateLimit {
            count,
            period,
            // A whole period's worth at once by default, as governor's quotas do: a client
            // that is told "100 per second" may send them in one go.
            burst: burst.unwrap_or_else(|| count.min(MAX_BURST)),
            key,
            headers: raw.headers.unwrap_or(true),
            max_keys,
        })
    }

    fn security_headers(
        &mut self,
        spanned: &Spanned<RawSecurityHeaders>,
        field: &str,
    ) -> SecurityHeaders {
        let raw = spanned.get_ref();
        let defaults = SecurityHeaders::default();
        let fields = [
            (&raw.strict_transport_security, "strict_transport_security"),
            (&raw.x_content_type_options, "x_content_type_options"),
            (&raw.x_frame_options, "x_frame_options"),
            (&raw.referrer_policy, "referrer_policy"),
        ];
        if raw.enabled == Some(false) {
            for (value, name) in fields {
                if let Some(v) = value {
                    self.error(
                        v,
                        &format!("{field}.{name}"),
                        "has no effect with enabled = false; remove it, or remove enabled = false",
                    );
                }
            }
            return SecurityHeaders::none();
        }
        let mut value = |raw: &Option<Spanned<String>>, name: &str, default: Option<String>| {
            let Some(v) = raw else { return default };
            let text = v.get_ref().trim();
            if text.is_empty() {
                return None;
            }
            if !text
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                self.error(
                    v,
                    &format!("{field}.{name}"),
                    "not a valid header value: use printable ASCII (or \"\" to leave the header out)",
                );
                return default;
            }
            Some(text.to_owned())
        };
        SecurityHeaders {
            strict_transport_security: value(
                &raw.strict_transport_security,
                "strict_transport_security",
                defaults.strict_transport_security,
            ),
            x_content_type_options: value(
                &raw.x_content_type_options,
                "x_content_type_options",
                defaults.x_content_type_options,
            ),
            x_frame_options: value(
                &raw.x_frame_options,
                "x_frame_options",
                defaults.x_frame_options,
            ),
            referrer_policy: value(
                &raw.referrer_policy,
                "referrer_policy",
                defaults.referrer_policy,
            ),
            override_upstream: raw.override_upstream.unwrap_or(false),
        }
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`, `::1`) meaning just it.
/// Host bits must be zero: `10.1.0.0/8` is more likely a typo for `/16` than a way to write
/// `10.0.0.0/8`, and an access list is the wrong place to guess.
pub(crate) fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().map_err(|_| {
        format!(
            "{text:?} is not a CIDR prefix or IP address; write e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\""
        )
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has bits set after the prefix length; write {} for the network, or {}/{} for one address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// `N/s`, `N/min`, `N/h`, `N/day` (also the long and one-letter forms): N requests per period.
pub(crate) fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let hint =
        "write requests per period, e.g. \"100/s\", \"6000/min\", \"1000/h\" or \"10000/day\"";
    let Some((count, unit)) = text.split_once('/') else {
        return Err(format!("{text:?} is not a rate; {hint}"));
    };
    let count: u64 = count
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {:?} is not a whole number; {hint}", count.trim()))?;
    if count == 0 {
        return Err(format!(
            "{text:?} would refuse every request; remove the rate_limit section to turn limiting off"
        ));
    }
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => {
            return Err(format!(
                "{text:?}: unknown period {other:?}; use s, min, h or day"
            ));
        }
    };
    // At most one request per nanosecond can be told apart.
    if u128::from(count) > period.as_nanos() {
        return Err(format!("{text:?} is too high a rate to enforce"));
    }
    Ok((count, period))
}

/// `client_ip`, `route` or `header:NAME`.
fn parse_key(text: &str) -> Result<RateLimitKey, String> {
    match text.split_once(':') {
        Some(("header", name)) if !name.is_empty() && name.bytes().all(is_token_byte) => {
            Ok(RateLimitKey::Header(name.to_ascii_lowercase()))
        }
        None if text == "client_ip" => Ok(RateLimitKey::ClientIp),
        None if text == "route" => Ok(RateLimitKey::Route),
        _ => Err(format!(
            "{text:?} is not a rate limit key; use \"client_ip\", \"route\" or \"header:NAME\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateLimitKey;

    const BASE: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ncluster = \"c\"\n";

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_no_acl_no_limit_and_the_standard_headers() {
        let config = crate::parse(BASE, "t.toml").unwrap();
        let l = &config.listeners[0].protection;
        assert_eq!(l, &ListenerProtection::default());
        let r = &config.routes[0].protection;
        assert!(r.acl.is_none() && r.rate_limit.is_none());
        assert_eq!(r.security_headers, SecurityHeaders::default());
        assert_eq!(r.security_headers.x_frame_options.as_deref(), Some("DENY"));
    }

    #[test]
    fn protection_sections_parse() {
        let text = BASE.replace(
            "[[clusters]]",
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_connections_per_ip = 20\n[listeners.acl]\ndeny = [\"192.0.2.0/24\"]\n[[clusters]]",
        ) + r#"[routes.acl]
allow = ["10.0.0.0/8", "2001:db8::/32"]
deny = ["10.1.0.0/16"]
[routes.rate_limit]
rate = "6000/min"
burst = 50
key = "header:X-Api-Key"
headers = false
[routes.security_headers]
x_frame_options = "SAMEORIGIN"
referrer_policy = ""
override = true
"#;
        let config = crate::parse(&text, "t.toml").unwrap();
        let l = &config.listeners[0].protection;
        assert_eq!(l.trusted_proxies, [net("10.0.0.0/8"), net("::1/128")]);
        assert_eq!(l.max_connections_per_ip, Some(20));
        assert_eq!(l.acl.as_ref().unwrap().deny, [net("192.0.2.0/24")]);
        let r = &config.routes[0].protection;
        let acl = r.acl.as_ref().unwrap();
        assert_eq!(acl.allow.len(), 2);
        assert_eq!(acl.deny, [net("10.1.0.0/16")]);
        let limit = r.rate_limit.as_ref().unwrap();
        assert_eq!(
            (limit.count, limit.period, limit.burst),
            (6000, Duration::from_secs(60), 50)
        );
        assert_eq!(limit.key, RateLimitKey::Header("x-api-key".into()));
        assert!(!limit.headers);
        let h = &r.security_headers;
        assert_eq!(h.x_frame_options.as_deref(), Some("SAMEORIGIN"));
        assert_eq!(h.referrer_policy, None);
        assert_eq!(h.x_content_type_options.as_deref(), Some("nosniff"));
        assert!(h.override_upstream);
        // The admin view shows prefixes as text.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json["listeners"][0]["protection"]["trusted_proxies"][0],
            "10.0.0.0/8"
        );
    }

    #[test]
    fn a_rate_limit_bursts_a_whole_period_by_default() {
        let text = format!("{BASE}[routes.rate_limit]\nrate = \"100/s\"\n");
        let config = crate::parse(&text, "t.toml").unwrap();
        let limit = config.routes[0].protection.rate_limit.clone().unwrap();
        assert_eq!((limit.count, limit.burst), (100, 100));
        assert_eq!(limit.key, RateLimitKey::ClientIp);
        assert!(limit.headers);
        assert_eq!(limit.max_keys, DEFAULT_MAX_KEYS);
    }

    #[test]
    fn disabled_security_headers_send_none() {
        let text = format!("{BASE}[routes.security_headers]\nenabled = false\n");
        let config = crate::parse(&text, "t.toml").unwrap();
        assert_eq!(
            config.routes[0].protection.security_headers,
            SecurityHeaders::none()
        );
    }

    #[test]
    fn every_bad_protection_value_is_reported_with_its_field() {
        let text = BASE.replace(
            "[[clusters]]",
            "trusted_proxies = [\"10.0.0.0/33\"]\nmax_connections_per_ip = 0\n[listeners.acl]\n[[clusters]]",
        ) + r#"[routes.acl]
allow = ["10.1.0.0/8", "10.0.0.0/8", "example.com", "192.0.2.0/24"]
deny = ["192.0.2.0/24"]
[routes.rate_limit]
rate = "0/s"
burst = 0
key = "cookie:session"
max_keys = 0
[routes.security_headers]
x_frame_options = "DENY\u0001"
"#;
        let errors = crate::parse(&text, "t.toml").unwrap_err();
        let text = errors.to_string();
        for (field, message) in [
            ("listeners[0].trusted_proxies[0]", "not a CIDR prefix"),
            ("listeners[0].max_connections_per_ip", "at least 1"),
            ("listeners[0].acl", "the access list is empty"),
            ("routes[0].acl.allow[0]", "write 10.0.0.0/8 for the network"),
            (
                "routes[0].acl.allow[2]",
                "\"example.com\" is not a CIDR prefix",
            ),
            ("routes[0].acl.deny[0]", "in both allow and deny"),
            ("routes[0].rate_limit.rate", "would refuse every request"),
            ("routes[0].rate_limit.burst", "between 1 and"),
            (
                "routes[0].rate_limit.key",
                "use \"client_ip\", \"route\" or \"header:NAME\"",
            ),
            ("routes[0].rate_limit.max_keys", "between 1 and"),
            (
                "routes[0].security_headers.x_frame_options",
                "printable ASCII",
            ),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.contains(&format!("{field}: ")) && l.contains(message)),
                "{field}: {message:?} missing in:\n{text}"
            );
        }
        // Every error points at a line and column.
        assert!(errors.0.iter().all(|e| e.position.is_some()), "{text}");
        assert_eq!(errors.0.len(), 11, "{text}");
    }

    #[test]
    fn conflicting_security_header_settings_are_refused() {
        let text = format!(
            "{BASE}[routes.security_headers]\nenabled = false\nx_frame_options = \"DENY\"\n"
        );
        let text = crate::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            text.contains("routes[0].security_headers.x_frame_options: has no effect"),
            "{text}"
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("10.0.0.0/8"), Ok(net("10.0.0.0/8")));
        assert_eq!(parse_prefix(" 192.0.2.7 "), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_prefix("::1"), Ok(net("::1/128")));
        assert_eq!(parse_prefix("2001:db8::/32"), Ok(net("2001:db8::/32")));
        assert!(
            parse_prefix("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.1/32")
        );
        assert!(parse_prefix("10.0.0.0/").is_err());
        assert!(parse_prefix("/8").is_err());
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("::/129").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s"), Ok((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("6000/min"), Ok((6000, Duration::from_secs(60))));
        assert_eq!(parse_rate(" 5 / hour "), Ok((5, Duration::from_secs(3600))));
        assert_eq!(parse_rate("1/day"), Ok((1, Duration::from_secs(86_400))));
        assert!(
            parse_rate("0/s")
                .unwrap_err()
                .contains("refuse every request")
        );
        assert!(parse_rate("100").unwrap_err().contains("not a rate"));
        assert!(
            parse_rate("100/fortnight")
                .unwrap_err()
                .contains("unknown period")
        );
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("99999999999999999999/s").is_err());
        assert!(parse_rate("2000000000/s").unwrap_err().contains("too high"));
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("client_ip"), Ok(RateLimitKey::ClientIp));
        assert_eq!(parse_key("route"), Ok(RateLimitKey::Route));
        assert_eq!(
            parse_key("header:X-Key"),
            Ok(RateLimitKey::Header("x-key".into()))
        );
        assert!(parse_key("header:").is_err());
        assert!(parse_key("header:a b").is_err());
        assert!(parse_key("ip").is_err());
    }
}
