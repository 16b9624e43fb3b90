//! The TOML schema as written by users.
//!
//! Values that validation checks are `Spanned` so errors point at them. Durations, sizes,
//! addresses and policy names stay strings here and are parsed in [`crate::validate`], which
//! reports all bad values at once instead of stopping at the first (as serde would).

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<RawServer>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub clusters: Vec<Spanned<RawCluster>>,
    /// The HTTP cache's store, shared by every route with `[routes.cache]`.
    pub cache: Option<Spanned<RawCache>>,
    /// Region name -> CIDRs (for geo-aware service DNS).
    #[serde(default)]
    pub regions: Option<BTreeMap<Spanned<String>, Spanned<RawCidrs>>>,
    #[serde(default)]
    pub registry: Option<RawRegistry>,
    #[serde(default)]
    pub dns: Option<Spanned<RawDns>>,
}

/// `[dns]`: the authoritative DNS server inside `gatehouse run`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// "IP:PORT", UDP and TCP.
    pub listen: Spanned<String>,
    /// Zone files, relative to the config file's directory.
    #[serde(default)]
    pub zones: Vec<Spanned<String>>,
    pub services: Option<Spanned<RawDnsServices>>,
}

/// `[dns.services]`: the zone built from the registry and health state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsServices {
    /// The origin, e.g. "svc.gatehouse.".
    pub zone: Spanned<String>,
    pub ttl: Option<Spanned<String>>,
    /// "round_robin" (default) or "weighted".
    pub policy: Option<Spanned<String>>,
    #[serde(default)]
    pub overrides: Vec<Spanned<RawDnsOverride>>,
}

/// `[[dns.services.overrides]]`: one service's TTL or policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsOverride {
    pub service: Spanned<String>,
    pub ttl: Option<Spanned<String>>,
    pub policy: Option<Spanned<String>>,
}

/// A region's networks: `["10.1.0.0/16", ...]`.
pub type RawCidrs = Vec<Spanned<String>>;

/// `[registry]`: the embedded service registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// `[[registry.instances]]`: instances that come from config and never expire.
    #[serde(default)]
    pub instances: Vec<Spanned<RawStaticInstance>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticInstance {
    pub service: Spanned<String>,
    /// Defaults to "ADDRESS:PORT".
    pub id: Option<Spanned<String>>,
    /// An IP address (no port).
    pub address: Spanned<String>,
    pub port: Spanned<i64>,
    pub weight: Option<Spanned<i64>>,
    pub tags: Option<Vec<Spanned<String>>>,
    pub region: Option<Spanned<String>>,
}

/// `discovery = { registry = "payments" }` or
/// `discovery = { dns = "api.internal", type = "SRV", ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub registry: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    /// "A" (default), "AAAA" or "SRV".
    #[serde(rename = "type")]
    pub record_type: Option<Spanned<String>>,
    /// The endpoints' port for A/AAAA (SRV records carry their own).
    pub port: Option<Spanned<i64>>,
    pub min_ttl: Option<Spanned<String>>,
    pub max_ttl: Option<Spanned<String>>,
    /// "IP:PORT" of the DNS server to ask instead of /etc/resolv.conf's.
    pub nameserver: Option<Spanned<String>>,
}

/// `[cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_size: Option<Spanned<SizeValue>>,
}

/// `[routes.cache]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub enabled: Option<bool>,
    pub max_object_size: Option<Spanned<SizeValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub drain_timeout: Option<Spanned<String>>,
    /// A header name, or "" to disable deadline propagation.
    pub deadline_header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Spanned<String>,
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub listen: Spanned<String>,
    pub protocols: Option<Vec<Spanned<String>>>,
    pub max_header_bytes: Option<Spanned<SizeValue>>,
    pub max_body_bytes: Option<Spanned<SizeValue>>,
    pub max_connections: Option<Spanned<u64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub stall_timeout: Option<Spanned<String>>,
    // Protection: who may connect, whose X-Forwarded-For is believed, connections per client.
    pub acl: Option<Spanned<RawAcl>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub max_connections_per_ip: Option<Spanned<u64>>,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub https_redirect_port: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Spanned<Vec<Spanned<RawCertificate>>>,
    pub min_version: Option<Spanned<String>>,
    pub session_tickets: Option<Spanned<bool>>,
    pub client_auth: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTls {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub listeners: Option<Vec<Spanned<String>>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub path: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub headers: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub headers_present: Option<Vec<Spanned<String>>>,
    pub cluster: Spanned<String>,
    pub host_rewrite: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub read_timeout: Option<Spanned<String>>,
    pub hedge: Option<Spanned<RawHedge>>,
    pub client_cert_header: Option<Spanned<String>>,
    pub require_client_cert: Option<Spanned<bool>>,
    pub fault: Option<Spanned<RawFault>>,
    // Protection: who may use the route, how often, and the headers its responses carry.
    pub acl: Option<Spanned<RawAcl>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub security_headers: Option<Spanned<RawSecurityHeaders>>,
    pub cache: Option<Spanned<RawRouteCache>>,
    pub compression: Option<Spanned<RawCompression>>,
    pub forward_headers: Option<Vec<Spanned<String>>>,
}

/// `[routes.compression]`: compress responses for clients that accept it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub enabled: Option<bool>,
    pub algorithms: Option<Vec<Spanned<String>>>,
    pub min_size: Option<Spanned<SizeValue>>,
    pub content_types: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub delay: Option<Spanned<String>>,
    pub delay_jitter: Option<Spanned<String>>,
    pub delay_percent: Option<Spanned<f64>>,
    pub abort_status: Option<Spanned<u16>>,
    pub abort_percent: Option<Spanned<f64>>,
    pub blackhole_percent: Option<Spanned<f64>>,
}

/// CIDR allow/deny lists (`[listeners.acl]`, `[routes.acl]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcl {
    pub allow: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
}

/// `[routes.rate_limit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// "100/s", "6000/min".
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<u64>>,
    /// "client_ip", "route" or "header:NAME".
    pub key: Option<Spanned<String>>,
    pub headers: Option<bool>,
    pub max_keys: Option<Spanned<u64>>,
}

/// `[routes.security_headers]`: each header's value, or "" to leave it out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityHeaders {
    pub enabled: Option<bool>,
    #[serde(rename = "override")]
    pub override_upstream: Option<bool>,
    pub strict_transport_security: Option<Spanned<String>>,
    pub x_content_type_options: Option<Spanned<String>>,
    pub x_frame_options: Option<Spanned<String>>,
    pub referrer_policy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    pub quantile: Option<Spanned<u32>>,
    pub min_delay: Option<Spanned<String>>,
    pub max_delay: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Spanned<String>,
    pub balance: Option<Spanned<String>>,
    pub hash_on: Option<Spanned<String>>,
    pub vnodes: Option<Spanned<u32>>,
    pub maglev_table_size: Option<Spanned<u32>>,
    pub protocol: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_idle_per_endpoint: Option<Spanned<u32>>,
    /// Either `endpoints` or `discovery`.
    pub endpoints: Option<Spanned<Vec<Spanned<RawEndpoint>>>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
    pub try_timeout: Option<Spanned<String>>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<Spanned<RawOutlier>>,
    pub retry: Option<Spanned<RawRetry>>,
    pub breaker: Option<Spanned<RawBreaker>>,
    pub adaptive_timeout: Option<Spanned<RawAdaptiveTimeout>>,
    pub tls: Option<Spanned<RawClusterTls>>,
    pub fault: Option<Spanned<RawFault>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptiveTimeout {
    pub quantile: Option<Spanned<u32>>,
    pub factor: Option<Spanned<f64>>,
    pub floor: Option<Spanned<String>>,
    pub min: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<Spanned<u32>>,
    pub failure_percent: Option<Spanned<u32>>,
    pub min_requests: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
    pub open: Option<Spanned<String>>,
    pub open_max: Option<Spanned<String>>,
    pub half_open_probes: Option<Spanned<u32>>,
    pub half_open_successes: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// "http" (default) or "tcp".
    pub kind: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    /// "200-399" or "200".
    pub expect_status: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub slow_start: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_5xx: Option<Spanned<u32>>,
    pub consecutive_gateway_failures: Option<Spanned<u32>>,
    pub base_ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejection_percent: Option<Spanned<u32>>,
    pub latency_factor: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub on_status: Option<Vec<Spanned<u16>>>,
    pub backoff_base: Option<Spanned<String>>,
    pub backoff_max: Option<Spanned<String>>,
    pub budget_percent: Option<Spanned<u32>>,
    pub budget_min_per_second: Option<Spanned<u32>>,
    pub max_replay_body: Option<Spanned<SizeValue>>,
}

/// An endpoint: `"10.0.0.1:80"` or `{ address = "10.0.0.1:80", weight = 3 }`.
///
/// Errors about it point at the whole element (the surrounding `Spanned`): serde's untagged
/// enums would lose the inner spans.
#[derive(Debug)]
pub struct RawEndpoint {
    pub address: String,
    pub weight: Option<i64>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"IP:PORT\" or { address = \"IP:PORT\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint {
                    address: v.to_owned(),
                    weight: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawEndpoint, A::Error> {
                let mut address = None;
                let mut weight = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => address = Some(map.next_value::<String>()?),
                        "weight" => weight = Some(map.next_value::<i64>()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(
                                other,
                                &["address", "weight"],
                            ));
                        }
                    }
                }
                let address = address.ok_or_else(|| serde::de::Error::missing_field("address"))?;
                Ok(RawEndpoint { address, weight })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A byte size written as an integer or as a string with a unit ("64KiB").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size in bytes or a string such as \"64KiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                i64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
