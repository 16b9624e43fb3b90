//! Validation of discovery settings: a cluster's `discovery` source, `[regions]` and the
//! registry's static instances.
//!
//! The name rules are public because the admin API checks registrations with the same ones
//! (a service or region name must also work as a DNS label for the coming service zone).

use super::protection::parse_prefix;
use super::{MAX_WEIGHT, Validator};
use crate::model::{
    Discovery, DnsDiscovery, DnsRecordType, Region, RegistrySettings, StaticInstance,
};
use crate::raw::{RawConfig, RawDiscovery, RawStaticInstance};
use crate::units::parse_duration;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
const MAX_TAGS: usize = 32;

/// A service name: one DNS label (lower-case letters, digits, '-'; 1 to 63 characters), so the
/// service DNS zone can serve it as `SERVICE.ZONE`.
pub fn service_name(name: &str) -> Result<(), String> {
    dns_label(name).map_err(|why| format!("service name {name:?} {why}"))
}

/// A region name: one DNS label, like a service name.
pub fn region_name(name: &str) -> Result<(), String> {
    dns_label(name).map_err(|why| format!("region name {name:?} {why}"))
}

/// An instance id: 1 to 128 characters of letters, digits and `-_.:`.
pub fn instance_id(id: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance id {id:?} must be 1 to 128 characters of letters, digits and -_.:"
        ))
    }
}

/// A tag: 1 to 64 visible ASCII characters (no spaces, no commas).
pub fn tag(tag: &str) -> Result<(), String> {
    let ok =
        (1..=64).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1 to 64 visible ASCII characters without commas"
        ))
    }
}

/// At most this many tags per instance.
pub fn tag_count(count: usize) -> Result<(), String> {
    if count <= MAX_TAGS {
        Ok(())
    } else {
        Err(format!("at most {MAX_TAGS} tags per instance"))
    }
}

/// A balancing weight, 1 to 10000 (the same range as endpoint weights).
pub fn weight(weight: i64) -> Result<u32, String> {
    u32::try_from(weight)
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(&i64::from(*w)))
        .ok_or_else(|| format!("weight must be between 1 and {MAX_WEIGHT}"))
}

/// A port an instance listens on, 1 to 65535.
pub fn port(port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is not between 1 and 65535"))
}

fn dns_label(name: &str) -> Result<(), &'static str> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 63 lower-case letters, digits and '-' (not first or last)")
    }
}

/// A DNS name to query: labels of letters, digits, '-' and '_' (SRV names such as
/// `_http._tcp.api.internal`), optionally absolute (trailing dot).
fn dns_name(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS name (dot-separated labels of letters, digits, '-' and '_', e.g. \"api.internal\")"
        ))
    }
}

impl Validator<'_> {
    pub(super) fn discovery(
        &mut self,
        spanned: &Spanned<RawDiscovery>,
        field: &str,
    ) -> Option<Discovery> {
        let raw = spanned.get_ref();
        match (&raw.registry, &raw.dns) {
            (Some(service), None) => {
                // The DNS-only keys make no sense with a registry source: say so rather than
                // silently ignoring them.
                let dns_only = [
                    ("type", raw.record_type.as_ref().map(Spanned::span)),
                    ("port", raw.port.as_ref().map(Spanned::span)),
                    ("min_ttl", raw.min_ttl.as_ref().map(Spanned::span)),
                    ("max_ttl", raw.max_ttl.as_ref().map(Spanned::span)),
                    ("nameserver", raw.nameserver.as_ref().map(Spanned::span)),
                ];
                for (key, span) in dns_only {
                    if let Some(span) = span {
                        self.error(
                            &Spanned::new(span, ()),
                            &format!("{field}.{key}"),
                            format!("{key} only applies to dns discovery, not registry"),
                        );
                    }
                }
                match service_name(service.get_ref()) {
                    Ok(()) => Some(Discovery::Registry {
                        service: service.get_ref().clone(),
                    }),
                    Err(message) => {
                        self.error(service, &format!("{field}.registry"), message);
                        None
                    }
                }
            }
            (None, Some(name)) => self.dns_discovery(raw, name, field),
            (Some(_), Some(_)) => {
                self.error(
                    spanned,
                    field,
                    "choose one source: registry = \"SERVICE\" or dns = \"NAME\", not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    spanned,
                    field,
                    "name a source: discovery = { registry = \"SERVICE\" } or { dns = \"NAME\", port = 80 }",
                );
                None
            }
        }
    }

    fn dns_discovery(
        &mut self,
        raw: &RawDiscovery,
        name: &Spanned<String>,
        field: &str,
    ) -> Option<Discovery> {
        let mut ok = true;
        if let Err(message) = dns_name(name.get_ref()) {
            self.error(name, &format!("{field}.dns"), message);
            ok = false;
        }
        let record_type = match raw.record_type.as_ref() {
            None => DnsRecordType::A,
            Some(t) => match t.get_ref().to_ascii_uppercase().as_str() {
                "A" => DnsRecordType::A,
                "AAAA" => DnsRecordType::Aaaa,
                "SRV" => DnsRecordType::Srv,
                other => {
                    self.error(
                        t,
                        &format!("{field}.type"),
                        format!("unknown record type {other:?}; use \"A\", \"AAAA\" or \"SRV\""),
                    );
                    ok = false;
                    DnsRecordType::A
                }
            },
        };
        let port = match (&raw.port, record_type) {
            (Some(p), DnsRecordType::Srv) => {
                self.error(
                    p,
                    &format!("{field}.port"),
                    "SRV records carry their own ports; leave port out",
                );
                ok = false;
                None
            }
            (Some(p), _) => match port(*p.get_ref()) {
                Ok(port) => Some(port),
                Err(message) => {
                    self.error(p, &format!("{field}.port"), message);
                    ok = false;
                    None
                }
            },
            (None, DnsRecordType::Srv) => None,
            (None, _) => {
                self.error(
                    name,
                    &format!("{field}.port"),
                    "A and AAAA answers carry no port: set port (e.g. port = 8080)",
                );
                ok = false;
                None
            }
        };
        let min_ttl = self.duration_or(
            raw.min_ttl.as_ref(),
            &format!("{field}.min_ttl"),
            DEFAULT_MIN_TTL,
        );
        let max_ttl = self.duration_or(
            raw.max_ttl.as_ref(),
            &format!("{field}.max_ttl"),
            DEFAULT_MAX_TTL,
        );
        if let Some(t) = &raw.min_ttl
            && parse_duration(t.get_ref()) == Ok(Duration::ZERO)
        {
            self.error(
                t,
                &format!("{field}.min_ttl"),
                "min_ttl of 0 would query the DNS server in a busy loop; use at least 1s",
            );
            ok = false;
        }
        if min_ttl > max_ttl {
            let at = raw
                .max_ttl
                .as_ref()
                .or(raw.min_ttl.as_ref())
                .unwrap_or(name);
            self.error(
                at,
                &format!("{field}.max_ttl"),
                format!(
                    "max_ttl ({} ms) is below min_ttl ({} ms)",
                    max_ttl.as_millis(),
                    min_ttl.as_millis()
                ),
            );
            ok = false;
        }
        let nameserver = match &raw.nameserver {
            None => None,
            Some(ns) => match self.socket_addr(ns, &format!("{field}.nameserver")) {
                Some(addr) => Some(addr),
                None => {
                    ok = false;
                    None
                }
            },
        };
        ok.then(|| {
            Discovery::Dns(DnsDiscovery {
                name: name.get_ref().clone(),
                record_type,
                port,
                min_ttl,
                max_ttl,
                nameserver,
            })
        })
    }

    pub(super) fn regions(&mut self, raw: &RawConfig) -> Vec<Region> {
        let Some(table) = &raw.regions else {
            return Vec::new();
        };
        let mut regions = Vec::new();
        // Which region claimed each prefix first: one network in two regions would make the
        // geo answer depend on table order.
        let mut owner: HashMap<ipnet::IpNet, String> = HashMap::new();
        for (name, cidrs) in table {
            let field = format!("regions.{}", name.get_ref());
            if let Err(message) = region_name(name.get_ref()) {
                self.error(name, &field, message);
            }
            if cidrs.get_ref().is_empty() {
                self.error(
                    cidrs,
                    &field,
                    "a region needs at least one CIDR (e.g. [\"10.1.0.0/16\"])",
                );
            }
            let mut parsed = Vec::new();
            for (i, cidr) in cidrs.get_ref().iter().enumerate() {
                let at = format!("{field}[{i}]");
                match parse_prefix(cidr.get_ref()) {
                    Err(message) => self.error(cidr, &at, message),
                    Ok(net) => match owner.get(&net) {
                        Some(other) if other == name.get_ref() => {
                            self.error(cidr, &at, format!("{net} is listed twice"));
                        }
                        Some(other) => {
                            self.error(cidr, &at, format!("{net} is already in region {other:?}"));
                        }
                        None => {
                            owner.insert(net, name.get_ref().clone());
                            parsed.push(net);
                        }
                    },
                }
            }
            regions.push(Region {
                name: name.get_ref().clone(),
                cidrs: parsed,
            });
        }
        regions
    }

    pub(super) fn registry(&mut self, raw: &RawConfig, regions: &[Region]) -> RegistrySettings {
        let Some(registry) = &raw.registry else {
            return RegistrySettings::default();
        };
        let region_names: HashSet<&str> = regions.iter().map(|r| r.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        for (i, spanned) in registry.instances.iter().enumerate() {
            let field = format!("registry.instances[{i}]");
            if let Some(instance) = self.static_instance(spanned.get_ref(), &field, &region_names) {
                if !seen.insert((instance.service.clone(), instance.id.clone())) {
                    self.error(
                        spanned,
                        &format!("{field}.id"),
                        format!(
                            "service {:?} already has an instance {:?}; ids must be unique per service",
                            instance.service, instance.id
                        ),
                    );
                    continue;
                }
                instances.push(instance);
            }
        }
        RegistrySettings { instances }
    }

    fn static_instance(
        &mut self,
        raw: &RawStaticInstance,
        field: &str,
        regions: &HashSet<&str>,
    ) -> Option<StaticInstance> {
        let mut ok = true;
        let mut check = |v: &mut Self, value: &Spanned<String>, key: &str, result| {
            if let Err(message) = result {
                v.error(value, &format!("{field}.{key}"), message);
                ok = false;
            }
        };
        check(
            self,
            &raw.service,
            "service",
            service_name(raw.service.get_ref()),
        );
        if let Some(id) = &raw.id {
            check(self, id, "id", instance_id(id.get_ref()));
        }
        let address = match raw.address.get_ref().parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    &raw.address,
                    &format!("{field}.address"),
                    format!(
                        "{:?} is not an IP address (the port goes in port = N)",
                        raw.address.get_ref()
                    ),
                );
                None
            }
        };
        let port = port(*raw.port.get_ref())
            .map_err(|message| self.error(&raw.port, &format!("{field}.port"), message))
            .ok();
        let weight = match &raw.weight {
            None => Some(1),
            Some(w) => weight(*w.get_ref())
                .map_err(|message| self.error(w, &format!("{field}.weight"), message))
                .ok(),
        };
        let tags: Vec<String> = raw
            .tags
            .iter()
            .flatten()
            .map(|t| t.get_ref().clone())
            .collect();
        for (i, t) in raw.tags.iter().flatten().enumerate() {
            if let Err(message) = tag(t.get_ref()) {
                self.error(t, &format!("{field}.tags[{i}]"), message);
                ok = false;
            }
        }
        if let (Err(message), Some(first)) = (
            tag_count(tags.len()),
            raw.tags.as_ref().and_then(|t| t.first()),
        ) {
            self.error(first, &format!("{field}.tags"), message);
            ok = false;
        }
        if let Some(region) = &raw.region
            && !regions.contains(region.get_ref().as_str())
        {
            self.error(
                region,
                &format!("{field}.region"),
                format!(
                    "unknown region {:?}; define it under [regions] (e.g. {} = [\"10.1.0.0/16\"])",
                    region.get_ref(),
                    region.get_ref()
                ),
            );
            ok = false;
        }
        let (address, port, weight) = (address?, port?, weight?);
        ok.then(|| StaticInstance {
            service: raw.service.get_ref().clone(),
            id: raw.id.as_ref().map_or_else(
                || std::net::SocketAddr::new(address, port).to_string(),
                |id| id.get_ref().clone(),
            ),
            address,
            port,
            weight,
            tags,
            region: raw.region.as_ref().map(|r| r.get_ref().clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Discovery, DnsRecordType, parse};
    use std::time::Duration;

    const HEAD: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n";

    fn with(rest: &str) -> Result<crate::Config, String> {
        parse(&format!("{HEAD}{rest}"), "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_takes_its_endpoints_from_the_registry_or_dns() {
        let c = with(
            r#"
[[clusters]]
name = "pay"
discovery = { registry = "payments" }
[[clusters]]
name = "api"
discovery = { dns = "_http._tcp.api.internal.", type = "srv", min_ttl = "2s", max_ttl = "1m", nameserver = "127.0.0.1:5353" }
[[clusters]]
name = "web"
discovery = { dns = "web.internal", port = 8080 }
"#,
        )
        .unwrap();
        assert_eq!(
            c.clusters[0].discovery,
            Some(Discovery::Registry {
                service: "payments".into()
            })
        );
        assert!(c.clusters[0].endpoints.is_empty());
        let Some(Discovery::Dns(api)) = &c.clusters[1].discovery else {
            panic!("dns")
        };
        assert_eq!(api.record_type, DnsRecordType::Srv);
        assert_eq!(
            (api.min_ttl, api.max_ttl),
            (Duration::from_secs(2), Duration::from_secs(60))
        );
        assert_eq!(api.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
        let Some(Discovery::Dns(web)) = &c.clusters[2].discovery else {
            panic!("dns")
        };
        assert_eq!((web.record_type, web.port), (DnsRecordType::A, Some(8080)));
        assert_eq!(
            (web.min_ttl, web.max_ttl),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert_eq!(web.nameserver, None);
    }

    #[test]
    fn bad_discovery_settings_are_named() {
        let text = with(
            r#"
[[clusters]]
name = "a"
endpoints = ["127.0.0.1:1"]
discovery = { registry = "x" }
[[clusters]]
name = "b"
[[clusters]]
name = "c"
discovery = { registry = "Pay_ments", port = 80 }
[[clusters]]
name = "d"
discovery = { dns = "api internal", type = "MX", min_ttl = "0s" }
[[clusters]]
name = "e"
discovery = { dns = "api.internal" }
[[clusters]]
name = "f"
discovery = { dns = "_x._tcp.api", type = "SRV", port = 80, min_ttl = "10s", max_ttl = "1s", nameserver = "localhost:53" }
[[clusters]]
name = "g"
discovery = { registry = "a", dns = "b" }
"#,
        )
        .unwrap_err();
        for expected in [
            "clusters[0].endpoints: set either endpoints or discovery, not both",
            "clusters[1].endpoints: a cluster needs endpoints",
            "clusters[2].discovery.port: port only applies to dns discovery",
            "clusters[2].discovery.registry: service name \"Pay_ments\" must be",
            "clusters[3].discovery.dns: \"api internal\" is not a DNS name",
            "clusters[3].discovery.type: unknown record type \"MX\"",
            "clusters[3].discovery.min_ttl: min_ttl of 0",
            "clusters[4].discovery.port: A and AAAA answers carry no port",
            "clusters[5].discovery.port: SRV records carry their own ports",
            "clusters[5].discovery.max_ttl: max_ttl (1000 ms) is below min_ttl (10000 ms)",
            "clusters[5].discovery.nameserver: \"localhost:53\" is not an IP:PORT",
            "clusters[6].discovery: choose one source",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Positions point at the value.
        assert!(
            text.contains("t.toml:13:26: clusters[2].discovery.registry"),
            "{text}"
        );
    }

    #[test]
    fn regions_and_static_instances() {
        let c = with(
            r#"
[regions]
eu = ["10.1.0.0/16", "2001:db8:1::/48"]
us = ["10.2.0.0/16"]

[[registry.instances]]
service = "payments"
address = "10.1.0.5"
port = 8080
weight = 2
tags = ["v2", "canary"]
region = "eu"

[[registry.instances]]
service = "payments"
id = "pay-us-1"
address = "10.2.0.5"
port = 8080
"#,
        )
        .unwrap();
        assert_eq!(c.regions.len(), 2);
        assert_eq!(c.regions[0].name, "eu");
        assert_eq!(c.regions[0].cidrs[1].to_string(), "2001:db8:1::/48");
        let first = &c.registry.instances[0];
        assert_eq!(first.id, "10.1.0.5:8080");
        assert_eq!((first.weight, first.region.as_deref()), (2, Some("eu")));
        assert_eq!(first.tags, ["v2", "canary"]);
        assert_eq!(c.registry.instances[1].id, "pay-us-1");
        assert_eq!(c.registry.instances[1].weight, 1);
    }

    #[test]
    fn bad_regions_and_instances_are_named() {
        let text = with(
            r#"
[regions]
eu = ["10.1.0.0/16", "10.1.0.1/16"]
us = ["10.1.0.0/16"]
EU = []

[[registry.instances]]
service = "payments"
address = "10.1.0.5:80"
port = 0
weight = 0
tags = ["has space"]
region = "mars"

[[registry.instances]]
service = "payments"
id = "a"
address = "10.1.0.5"
port = 80
[[registry.instances]]
service = "payments"
id = "a"
address = "10.1.0.6"
port = 80
"#,
        )
        .unwrap_err();
        for expected in [
            "regions.eu[1]: ",
            "regions.us[0]: 10.1.0.0/16 is already in region \"eu\"",
            "regions.EU: region name \"EU\" must be",
            "regions.EU: a region needs at least one CIDR",
            "registry.instances[0].address: \"10.1.0.5:80\" is not an IP address",
            "registry.instances[0].port: port 0 is not between 1 and 65535",
            "registry.instances[0].weight: weight must be between 1 and 10000",
            "registry.instances[0].tags[0]: tag \"has space\"",
            "registry.instances[0].region: unknown region \"mars\"",
            "registry.instances[2].id: service \"payments\" already has an instance \"a\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn the_discovery_example_is_valid() {
        let text = include_str!("../../../../examples/discovery.toml");
        let c = parse(text, "examples/discovery.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.clusters.iter().all(|c| c.discovery.is_some()));
        assert_eq!(c.registry.instances.len(), 2);
    }

    #[test]
    fn names() {
        use super::*;
        assert!(service_name("payments-v2").is_ok());
        for bad in ["", "-x", "x-", "Pay", "a.b", &"a".repeat(64)] {
            assert!(service_name(bad).is_err(), "{bad:?}");
        }
        assert!(instance_id("10.0.0.1:80").is_ok());
        assert!(instance_id("a/b").is_err());
        assert!(tag("v2=canary").is_ok());
        assert!(tag("a,b").is_err());
        assert_eq!(weight(10_000), Ok(10_000));
        assert!(weight(10_001).is_err());
        assert_eq!(port(65_535), Ok(65_535));
        assert!(port(65_536).is_err());
        assert!(dns_name("_http._tcp.api.internal.").is_ok());
        assert!(dns_name("a..b").is_err());
        assert!(dns_name(".").is_err());
    }
}
