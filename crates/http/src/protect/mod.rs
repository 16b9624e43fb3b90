//! Protection: who may connect, who may use a route and how often, and the headers every answer
//! of a route carries. Semantics and defaults are explained in docs/security.md.
//!
//! ```text
//! accept      -> connections::admit: listener ACL on the peer, connections per peer address
//!                (refused: closed at once, counted in `rejected`)
//! request     -> client::real_client: the peer, or the client a trusted proxy names in
//!                X-Forwarded-For; used for everything below and for hashing, logs, keys
//!   routed    -> RouteProtection::admit: route ACL (403), then the rate limit (429)
//!   response  <- RouteProtection::finish: security headers, RateLimit headers
//! ```
//!
//! - [`client`]: the real client address from trusted proxies' `X-Forwarded-For`.
//! - [`connections`]: admission at accept and the per-address connection count.
//! - [`rate_limit`]: a route's limiter, its key, its headers; limiters kept across reloads.
//! - [`security_headers`]: HSTS, nosniff, frame options, referrer policy.
//!
//! Everything is built once per snapshot. A route with no ACL and no rate limit pays two
//! `None` checks and no clock read; its security headers are prebuilt values inserted when the
//! upstream did not set them.

pub mod client;
pub mod connections;
pub mod rate_limit;
pub mod security_headers;

use crate::protect::rate_limit::{RateLimiterStore, RouteRateLimit};
use crate::protect::security_headers::SecurityHeaders;
use gatehouse_core::{ErrorKind, ProxyError};
use gatehouse_net::{AccessList, CidrTable};
use gatehouse_observe::Metrics;
use gatehouse_resilience::RateDecision;
use http::HeaderMap;
use std::net::IpAddr;

/// A listener's protection, built once per snapshot.
#[derive(Debug, Default)]
pub struct ListenerProtection {
    /// Checked against the peer at accept.
    pub acl: Option<AccessList>,
    /// Peers whose X-Forwarded-For is believed; None when there are none.
    pub trusted_proxies: Option<CidrTable<()>>,
    pub max_connections_per_ip: Option<u32>,
}

impl ListenerProtection {
    pub fn build(config: &gatehouse_config::ListenerProtection) -> Self {
        Self {
            acl: config.acl.as_ref().map(access_list),
            trusted_proxies: (!config.trusted_proxies.is_empty())
                .then(|| config.trusted_proxies.iter().map(|p| (*p, ())).collect()),
            max_connections_per_ip: config
                .max_connections_per_ip
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }

    /// The request's real client when it differs from the peer (a trusted proxy named it);
    /// None: the peer is the client.
    pub fn real_client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let trusted = self.trusted_proxies.as_ref()?;
        let real = client::real_client(peer, headers, trusted);
        (real != peer).then_some(real)
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies
            .as_ref()
            .is_some_and(|t| t.contains(ip))
    }
}

/// A route's protection, built once per snapshot.
#[derive(Default)]
pub struct RouteProtection {
    /// Checked against the real client address; denied: 403.
    pub acl: Option<AccessList>,
    pub rate_limit: Option<RouteRateLimit>,
    pub headers: SecurityHeaders,
}

/// What admission decided about a request.
pub struct Admission {
    /// The rate limit's decision, when the route has one (for the response's headers).
    pub quota: Option<RateDecision>,
    /// Why the request is refused (403, 429); None: go ahead.
    pub refused: Option<ProxyError>,
}

impl RouteProtection {
    pub fn build(
        route: &str,
        config: &gatehouse_config::RouteProtection,
        limiters: &RateLimiterStore,
        metrics: &Metrics,
    ) -> Self {
        Self {
            acl: config.acl.as_ref().map(access_list),
            rate_limit: config
                .rate_limit
                .as_ref()
                .map(|l| RouteRateLimit::build(route, l, limiters, metrics)),
            headers: SecurityHeaders::build(&config.security_headers),
        }
    }

    /// Route ACL, then rate limit. `now_nanos` is asked only when the route has a limit; a
    /// client the ACL refuses uses none of its quota.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        now_nanos: impl FnOnce() -> u64,
    ) -> Admission {
        if let Some(acl) = &self.acl
            && !acl.allows(client)
        {
            return Admission {
                quota: None,
                refused: Some(ProxyError::new(ErrorKind::AccessDenied { client })),
            };
        }
        let Some(limit) = &self.rate_limit else {
            return Admission {
                quota: None,
                refused: None,
            };
        };
        let decision = limit.check(headers, client, now_nanos());
        Admission {
            quota: Some(decision),
            refused: (!decision.allowed).then(|| {
                ProxyError::new(ErrorKind::RateLimited {
                    retry_after: decision.retry_after,
                })
            }),
        }
    }

    /// Adds the route's response headers: security headers and, with a rate limit, its state.
    pub fn finish(&self, headers: &mut HeaderMap, https: bool, quota: Option<&RateDecision>) {
        self.headers.apply(headers, https);
        if let (Some(limit), Some(decision)) = (&self.rate_limit, quota) {
            limit.annotate(headers, decision);
        }
    }
}

fn access_list(config: &gatehouse_config::AccessList) -> AccessList {
    AccessList::new(config.allow.iter().copied(), config.deny.iter().copied())
}
