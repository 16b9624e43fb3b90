//! `[dns]`: the listen address, zone files and the service zone's settings.
//!
//! Zone files are only named here (paths resolved against the config file); the binary reads
//! and compiles them, so their errors name file:line of the zone file itself.

use super::Validator;
use super::discovery::service_name;
use crate::model::{DnsAnswerPolicy, DnsSettings, ServiceZoneConfig, ServiceZoneOverride};
use crate::raw::{RawDns, RawDnsServices};
use crate::units::parse_duration;
use std::collections::HashSet;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// A day: service answers change with health, so longer TTLs would defeat the zone.
const MAX_TTL: Duration = Duration::from_secs(86_400);

impl Validator<'_> {
    pub(super) fn dns(&mut self, raw: &Spanned<RawDns>) -> Option<DnsSettings> {
        let raw = raw.get_ref();
        let listen = self.socket_addr(&raw.listen, "dns.listen");
        let zones: Vec<_> = raw
            .zones
            .iter()
            .enumerate()
            .filter_map(|(i, z)| self.file_path(z, &format!("dns.zones[{i}]")))
            .collect();
        let services = raw.services.as_ref().and_then(|s| self.dns_services(s));
        if raw.zones.is_empty() && raw.services.is_none() {
            self.error(
                &raw.listen,
                "dns",
                "nothing to serve: add zones = [\"FILE.zone\"] or a [dns.services] table",
            );
        }
        Some(DnsSettings {
            listen: listen?,
            zones,
            services,
        })
    }

    fn dns_services(&mut self, spanned: &Spanned<RawDnsServices>) -> Option<ServiceZoneConfig> {
        let raw = spanned.get_ref();
        let zone = match zone_origin(raw.zone.get_ref()) {
            Ok(z) => Some(z),
            Err(message) => {
                self.error(&raw.zone, "dns.services.zone", message);
                None
            }
        };
        let ttl = self
            .dns_ttl(raw.ttl.as_ref(), "dns.services.ttl")
            .unwrap_or(DEFAULT_TTL);
        let policy = self
            .dns_policy(raw.policy.as_ref(), "dns.services.policy")
            .unwrap_or(DnsAnswerPolicy::RoundRobin);
        let mut seen = HashSet::new();
        let mut overrides = Vec::new();
        for (i, o) in raw.overrides.iter().enumerate() {
            let field = format!("dns.services.overrides[{i}]");
            let o = o.get_ref();
            let name = o.service.get_ref();
            if let Err(message) = service_name(name) {
                self.error(&o.service, &format!("{field}.service"), message);
            } else if !seen.insert(name.clone()) {
                self.error(
                    &o.service,
                    &format!("{field}.service"),
                    format!("service {name:?} already has an override; merge them into one"),
                );
            }
            overrides.push(ServiceZoneOverride {
                service: name.clone(),
                ttl: self.dns_ttl(o.ttl.as_ref(), &format!("{field}.ttl")),
                policy: self.dns_policy(o.policy.as_ref(), &format!("{field}.policy")),
            });
        }
        Some(ServiceZoneConfig {
            zone: zone?,
            ttl,
            policy,
            overrides,
        })
    }

    fn dns_ttl(&mut self, value: Option<&Spanned<String>>, field: &str) -> Option<Duration> {
        let value = value?;
        match parse_duration(value.get_ref()) {
            Err(message) => self.error(value, field, message),
            Ok(d) if d > MAX_TTL => self.error(value, field, "a DNS TTL is at most 1 day"),
            Ok(d) if d.subsec_nanos() != 0 => self.error(
                value,
                field,
                "DNS TTLs are whole seconds (e.g. \"1s\", \"30s\"; \"0s\" for no caching)",
            ),
            Ok(d) => return Some(d),
        }
        None
    }

    fn dns_policy(
        &mut self,
        value: Option<&Spanned<String>>,
        field: &str,
    ) -> Option<DnsAnswerPolicy> {
        let value = value?;
        match value.get_ref().as_str() {
            "round_robin" => Some(DnsAnswerPolicy::RoundRobin),
            "weighted" => Some(DnsAnswerPolicy::Weighted),
            other => {
                self.error(
                    value,
                    field,
                    format!("unknown policy {other:?}; use \"round_robin\" or \"weighted\""),
                );
                None
            }
        }
    }
}

/// A zone origin: host-name labels (letters, digits, '-'), lowercased, with a trailing dot.
/// Kept short enough that `_SERVICE._tcp.ZONE` and `INSTANCE.SERVICE.ZONE` fit in 255 bytes.
fn zone_origin(text: &str) -> Result<String, String> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 120
        && trimmed.split('.').all(|l| {
            (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(format!("{}.", trimmed.to_ascii_lowercase()))
    } else {
        Err(format!(
            "{text:?} is not a zone name: dot-separated labels of letters, digits and '-', at most 120 characters (e.g. \"svc.gatehouse.\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::{DnsAnswerPolicy, parse};
    use std::time::Duration;

    const HEAD: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n";

    fn with(rest: &str) -> Result<crate::Config, String> {
        parse(&format!("{HEAD}{rest}"), "/etc/gh/t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn dns_section_with_zones_and_service_zone() {
        let c = with(
            r#"
[dns]
listen = "127.0.0.1:8053"
zones = ["example.zone", "/abs/other.zone"]
[dns.services]
zone = "Svc.Gatehouse"
ttl = "10s"
[[dns.services.overrides]]
service = "payments"
ttl = "1s"
policy = "weighted"
"#,
        )
        .unwrap();
        let dns = c.dns.unwrap();
        assert_eq!(dns.listen.to_string(), "127.0.0.1:8053");
        assert_eq!(dns.zones[0].to_str(), Some("/etc/gh/example.zone"));
        assert_eq!(dns.zones[1].to_str(), Some("/abs/other.zone"));
        let s = dns.services.unwrap();
        assert_eq!(s.zone, "svc.gatehouse.");
        assert_eq!(s.ttl, Duration::from_secs(10));
        assert_eq!(s.policy, DnsAnswerPolicy::RoundRobin);
        assert_eq!(s.overrides[0].ttl, Some(Duration::from_secs(1)));
        assert_eq!(s.overrides[0].policy, Some(DnsAnswerPolicy::Weighted));
        let c = with("[dns]\nlisten = \"127.0.0.1:0\"\n[dns.services]\nzone = \"svc.\"\n").unwrap();
        assert_eq!(c.dns.unwrap().services.unwrap().ttl, Duration::from_secs(5));
        assert!(with("").unwrap().dns.is_none());
    }

    #[test]
    fn bad_dns_values_are_all_named_with_positions() {
        let err = with(
            r#"
[dns]
listen = "localhost:53"
[dns.services]
zone = "bad_zone..x"
ttl = "1500ms"
policy = "random"
[[dns.services.overrides]]
service = "Pay"
ttl = "48h"
[[dns.services.overrides]]
service = "ok"
[[dns.services.overrides]]
service = "ok"
"#,
        )
        .unwrap_err();
        for needle in [
            "dns.listen",
            "dns.services.zone",
            "whole seconds",
            "unknown policy \"random\"",
            "dns.services.overrides[0].service",
            "at most 1 day",
            "already has an override",
        ] {
            assert!(err.contains(needle), "{needle} missing from:\n{err}");
        }
        assert!(err.contains("t.toml:6:10: dns.listen"), "{err}");
        let err = with("[dns]\nlisten = \"127.0.0.1:53\"\n").unwrap_err();
        assert!(err.contains("nothing to serve"), "{err}");
        let err = with("[dns]\nlisten = \"127.0.0.1:53\"\nzone = \"x\"\n").unwrap_err();
        assert!(err.contains("zone"), "{err}");
    }
}
