//! Choosing the endpoint for a try: the balancer's pick among endpoints in rotation that the
//! request has not tried, slow start for endpoints ramping up after recovery, each endpoint's
//! circuit breaker, and the affinity key hashing policies balance on.

use super::ForwardContext;
use crate::resilience::{BreakerScope, report_transition};
use crate::snapshot::ClusterRuntime;
use gatehouse_balance::{PickRequest, hash_key};
use gatehouse_config::HashOn;
use gatehouse_core::{ErrorKind, MonotonicClock, ProxyError};
use gatehouse_resilience::breaker::Permit;
use http::Request;
use http::header;
use std::cell::Cell;
use std::time::Duration;

/// Picks an endpoint whose circuit breaker (if any) admits the request; an endpoint whose
/// breaker refuses is skipped. With every candidate refused the answer is 503 Retry-After.
pub(super) fn pick_admitted(
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    ctx: &ForwardContext<'_>,
    tried: &Tried,
) -> Result<(usize, Option<Permit>), ProxyError> {
    let mut refused = Tried::default();
    let mut retry_after: Option<Duration> = None;
    // An endpoint ramping up after recovery that sat this request out, in case no other can
    // take it.
    let mut ramping: Option<usize> = None;
    // Each round refuses one more endpoint, so this ends; the bound covers indices past 64.
    for _ in 0..=cluster.endpoints.len() {
        let index = match pick(cluster, hash, ctx.clock, tried, &refused) {
            Ok(index) => {
                let ramp = cluster.endpoints[index]
                    .health
                    .ramp_permille(|| ctx.clock.now_nanos());
                if ramp < 1000 && fastrand::u32(..1000) >= ramp {
                    // Slow start: it takes only `ramp`‰ of what the balancer gives it.
                    ramping.get_or_insert(index);
                    refused.insert(index);
                    continue;
                }
                index
            }
            Err(_) if ramping.is_some() => ramping.take().unwrap_or_default(),
            Err(error) => {
                return Err(match retry_after {
                    Some(retry_after) => ProxyError::new(ErrorKind::CircuitOpen {
                        cluster: cluster.name.to_string(),
                        retry_after,
                    }),
                    None => error,
                });
            }
        };
        let endpoint = &cluster.endpoints[index];
        let Some(breaker) = &endpoint.breaker else {
            return Ok((index, None));
        };
        match breaker.try_acquire(ctx.started_nanos) {
            Ok(admission) => {
                if let Some(transition) = admission.transition {
                    report_transition(
                        transition,
                        BreakerScope {
                            cluster: &cluster.name,
                            endpoint: Some(&endpoint.label),
                            metrics: ctx.metrics,
                        },
                    );
                }
                return Ok((index, Some(admission.permit)));
            }
            Err(rejected) => {
                refused.insert(index);
                retry_after =
                    Some(retry_after.map_or(rejected.retry_after, |r| r.min(rejected.retry_after)));
            }
        }
    }
    Err(ProxyError::new(ErrorKind::CircuitOpen {
        cluster: cluster.name.to_string(),
        retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
    }))
}

/// Picks an endpoint in rotation and not `refused`, preferring ones this request has not tried.
fn pick(
    cluster: &ClusterRuntime,
    hash: Option<u64>,
    clock: &MonotonicClock,
    tried: &Tried,
    refused: &Tried,
) -> Result<usize, ProxyError> {
    // Read the clock once, and only if some endpoint's ejection needs it.
    let now = Cell::new(None);
    let now = || {
        let t = now.get().unwrap_or_else(|| clock.now_nanos());
        now.set(Some(t));
        t
    };
    let in_rotation = |i: usize| {
        !refused.contains(i)
            && cluster
                .endpoints
                .get(i)
                .is_some_and(|e| e.health.in_rotation(now))
    };
    let untried = |i: usize| !tried.contains(i) && in_rotation(i);
    let latency_aware = cluster.balancer.policy().weighs_latency();
    let now_nanos = if latency_aware { now() } else { 0 };
    cluster
        .balancer
        .pick(&PickRequest {
            hash,
            now_nanos,
            eligible: &untried,
        })
        .or_else(|| {
            // Every endpoint in rotation was tried: the retry goes to one of them again.
            (!tried.is_empty())
                .then(|| {
                    cluster.balancer.pick(&PickRequest {
                        hash,
                        now_nanos,
                        eligible: &in_rotation,
                    })
                })
                .flatten()
        })
        .filter(|&i| i < cluster.endpoints.len())
        .ok_or_else(|| {
            ProxyError::new(ErrorKind::NoHealthyEndpoint {
                cluster: cluster.name.to_string(),
            })
        })
}

/// Endpoints a request has tried (the first 64 indices; beyond that a retry may repeat one).
#[derive(Default)]
pub(super) struct Tried(u64);

impl Tried {
    pub(super) fn insert(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
    pub(super) fn contains(&self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }
    fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

/// Hash of the request's affinity key; None when the key is absent (the balancer then picks
/// at random among eligible endpoints).
pub(super) fn affinity_hash<B>(
    on: &HashOn,
    request: &Request<B>,
    client: std::net::IpAddr,
) -> Option<u64> {
    match on {
        HashOn::Header(name) => request
            .headers()
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        HashOn::Cookie(name) => cookie(request.headers(), name).map(|v| hash_key(v.as_bytes())),
        HashOn::ClientIp => Some(match client {
            std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
        HashOn::Path => Some(hash_key(request.uri().path().as_bytes())),
    }
}

fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = http::HeaderMap::new();
        h.insert(header::COOKIE, "a=1; session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "sess"), None);
    }
}
