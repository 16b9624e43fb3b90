//! DNS-based discovery: a cluster's endpoints are the answers to an A, AAAA or SRV query.
//!
//! [`DnsResolver::resolve`] asks once and turns the answer into endpoints and a TTL;
//! [`refresh_after`] says when to ask again (the TTL, clamped to the cluster's floor and
//! ceiling). The loop that keeps the last good answer when a query fails is in
//! [`crate::sources`].
//!
//! SRV (RFC 2782): only the lowest priority whose targets resolve is used (the others are
//! backups); each record's weight becomes the endpoint's balancing weight.

use gatehouse_config::{DnsDiscovery, DnsRecordType, EndpointConfig};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One query's wait for an answer; a failed resolution is retried at the cluster's
/// `min_ttl`, so a short timeout with one attempt keeps a dead server from stalling updates.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest weight an endpoint may have (SRV weights go to 65535).
const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
    #[error("DNS query for {name} {record_type} failed: {message}")]
    Query {
        name: String,
        record_type: &'static str,
        message: String,
    },
    #[error("DNS answer for {name} {record_type} has no usable addresses")]
    Empty {
        name: String,
        record_type: &'static str,
    },
}

/// What one resolution found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Ordered by address.
    pub endpoints: Vec<EndpointConfig>,
    /// The smallest TTL among the records used.
    pub ttl: Duration,
}

/// When to resolve again after an answer with `ttl`.
pub fn refresh_after(ttl: Duration, min_ttl: Duration, max_ttl: Duration) -> Duration {
    ttl.clamp(min_ttl, max_ttl.max(min_ttl))
}

/// A resolver for one cluster's source.
pub struct DnsResolver {
    inner: TokioResolver,
}

impl DnsResolver {
    /// Asks `nameserver` (UDP, TCP for truncated answers) or, when None, the servers in
    /// /etc/resolv.conf.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Self, ResolveError> {
        let mut builder = match nameserver {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| {
                ResolveError::Setup(format!("cannot read the system resolver config: {e}"))
            })?,
        };
        let options = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 1;
        let inner = builder
            .build()
            .map_err(|e| ResolveError::Setup(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Resolves `source` once. The resolver's cache is bypassed: the refresh schedule is
    /// ours ([`refresh_after`]), and a cached answer would hide changes until it expired.
    pub async fn resolve(&self, source: &DnsDiscovery) -> Result<Answer, ResolveError> {
        self.inner.clear_cache();
        let record_type = match source.record_type {
            DnsRecordType::A => RecordType::A,
            DnsRecordType::Aaaa => RecordType::AAAA,
            DnsRecordType::Srv => RecordType::SRV,
        };
        let type_name = type_name(source.record_type);
        let query_error = |e: &dyn std::fmt::Display| ResolveError::Query {
            name: source.name.clone(),
            record_type: type_name,
            message: e.to_string(),
        };
        let name: Name = source.name.parse().map_err(|e| query_error(&e))?;
        let lookup = self
            .inner
            .lookup(name, record_type)
            .await
            .map_err(|e| query_error(&e))?;
        let answers = lookup.answers();
        let mut ttl = u32::MAX;
        let mut weights: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        match source.record_type {
            DnsRecordType::A | DnsRecordType::Aaaa => {
                let port = source.port.unwrap_or(0);
                for record in answers {
                    let ip = match &record.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    ttl = ttl.min(record.ttl);
                    weights.insert(SocketAddr::new(ip, port), 1);
                }
            }
            DnsRecordType::Srv => {
                let mut by_priority: BTreeMap<u16, Vec<(Name, u16, u32)>> = BTreeMap::new();
                for record in answers {
                    if let RData::SRV(srv) = &record.data {
                        ttl = ttl.min(record.ttl);
                        // A target of "." says the service is not offered there.
                        if !srv.target.is_root() {
                            by_priority.entry(srv.priority).or_default().push((
                                srv.target.clone(),
                                srv.port,
                                u32::from(srv.weight).clamp(1, MAX_WEIGHT),
                            ));
                        }
                    }
                }
                for targets in by_priority.values() {
                    for (target, port, weight) in targets {
                        for ip in self.target_addresses(target, lookup.additionals()).await {
                            let entry = weights.entry(SocketAddr::new(ip, *port)).or_insert(0);
                            *entry = (*entry).max(*weight);
                        }
                    }
                    if !weights.is_empty() {
                        break;
                    }
                }
            }
        }
        if weights.is_empty() {
            return Err(ResolveError::Empty {
                name: source.name.clone(),
                record_type: type_name,
            });
        }
        Ok(Answer {
            endpoints: weights
                .into_iter()
                .map(|(address, weight)| EndpointConfig { address, weight })
                .collect(),
            ttl: Duration::from_secs(u64::from(ttl)),
        })
    }

    /// An SRV target's addresses: from the answer's additional section when the server sent
    /// them, else by asking. A target that does not resolve is skipped.
    async fn target_addresses(
        &self,
        target: &Name,
        additionals: &[hickory_resolver::proto::rr::Record],
    ) -> Vec<IpAddr> {
        let glued: Vec<IpAddr> = additionals
            .iter()
            .filter(|r| r.name == *target)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if !glued.is_empty() {
            return glued;
        }
        match self.inner.lookup_ip(target.clone()).await {
            Ok(found) => found.iter().collect(),
            Err(err) => {
                tracing::warn!(target = %target, error = %err, "SRV target does not resolve; skipped");
                Vec::new()
            }
        }
    }
}

fn type_name(record_type: DnsRecordType) -> &'static str {
    match record_type {
        DnsRecordType::A => "A",
        DnsRecordType::Aaaa => "AAAA",
        DnsRecordType::Srv => "SRV",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_test_support::{SrvRecord, TestDns};

    #[test]
    fn refreshes_follow_the_ttl_within_floor_and_ceiling() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(30), s(1), s(300)), s(30));
        assert_eq!(refresh_after(s(0), s(1), s(300)), s(1));
        assert_eq!(refresh_after(s(86_400), s(1), s(300)), s(300));
    }

    fn source(name: &str, record_type: DnsRecordType, dns: &TestDns) -> DnsDiscovery {
        DnsDiscovery {
            name: name.into(),
            record_type,
            port: (record_type != DnsRecordType::Srv).then_some(8080),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            nameserver: Some(dns.addr),
        }
    }

    fn endpoints(list: &[(&str, u32)]) -> Vec<EndpointConfig> {
        list.iter()
            .map(|(a, w)| EndpointConfig {
                address: a.parse().unwrap(),
                weight: *w,
            })
            .collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn srv_answers_use_the_lowest_priority_that_resolves() {
        let dns = TestDns::start().await;
        dns.set_ttl(7);
        let srv = |priority, weight, port, target: &str| SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        };
        dns.set_srv(
            "_web._tcp.test.",
            &[
                srv(10, 5, 81, "u1.test."),
                srv(10, 0, 82, "u2.test."),
                srv(20, 1, 83, "u3.test."),
            ],
        );
        dns.set_addresses("u1.test.", &[ip("127.0.0.1")]);
        dns.set_addresses("u2.test.", &[ip("127.0.0.2")]);
        dns.set_addresses("u3.test.", &[ip("127.0.0.3")]);
        let resolver = DnsResolver::new(Some(dns.addr)).unwrap();
        let source = source("_web._tcp.test.", DnsRecordType::Srv, &dns);
        let answer = resolver.resolve(&source).await.unwrap();
        // Weight 0 still gets a (minimal) share.
        assert_eq!(
            answer.endpoints,
            endpoints(&[("127.0.0.1:81", 5), ("127.0.0.2:82", 1)])
        );
        assert_eq!(answer.ttl, Duration::from_secs(7));
        // The first priority's targets stop resolving: the backups take over.
        dns.set_addresses("u1.test.", &[]);
        dns.set_addresses("u2.test.", &[]);
        let answer = resolver.resolve(&source).await.unwrap();
        assert_eq!(answer.endpoints, endpoints(&[("127.0.0.3:83", 1)]));
    }

    #[tokio::test]
    async fn address_answers_and_failures() {
        let dns = TestDns::start().await;
        dns.set_addresses("web.test.", &[ip("127.0.0.2"), ip("127.0.0.1"), ip("::1")]);
        let resolver = DnsResolver::new(Some(dns.addr)).unwrap();
        let a = resolver
            .resolve(&source("web.test.", DnsRecordType::A, &dns))
            .await
            .unwrap();
        assert_eq!(
            a.endpoints,
            endpoints(&[("127.0.0.1:8080", 1), ("127.0.0.2:8080", 1)])
        );
        let aaaa = resolver
            .resolve(&source("web.test.", DnsRecordType::Aaaa, &dns))
            .await
            .unwrap();
        assert_eq!(aaaa.endpoints, endpoints(&[("[::1]:8080", 1)]));
        // Changes are seen at once: the resolver's cache is not in the way.
        dns.set_addresses("web.test.", &[ip("127.0.0.3")]);
        let a = resolver
            .resolve(&source("web.test.", DnsRecordType::A, &dns))
            .await
            .unwrap();
        assert_eq!(a.endpoints, endpoints(&[("127.0.0.3:8080", 1)]));
        let missing = resolver
            .resolve(&source("nope.test.", DnsRecordType::A, &dns))
            .await;
        assert!(
            matches!(missing, Err(ResolveError::Query { .. })),
            "{missing:?}"
        );
        dns.set_silent(true);
        let silent = resolver
            .resolve(&source("web.test.", DnsRecordType::A, &dns))
            .await;
        assert!(
            matches!(silent, Err(ResolveError::Query { .. })),
            "{silent:?}"
        );
    }
}
