//! Validation of a cluster: its endpoints (static or discovered), balancing policy and its
//! options, upstream protocol, pool and timeouts, health checks and resilience.

use super::{DEFAULT_RESPONSE_TIMEOUT, Validator, discovery, is_token_byte};
use crate::model::*;
use crate::raw::*;
use std::collections::HashSet;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(90);
const DEFAULT_MAX_IDLE: u32 = 256;
const DEFAULT_VNODES: u32 = 160;
const DEFAULT_MAGLEV_TABLE: u32 = 65_537;

impl Validator<'_> {
    pub(super) fn cluster(
        &mut self,
        spanned: &Spanned<RawCluster>,
        field: &str,
    ) -> Option<Cluster> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        let balance = match &raw.balance {
            None => BalancePolicy::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round_robin" => BalancePolicy::RoundRobin,
                "weighted_round_robin" => BalancePolicy::WeightedRoundRobin,
                "least_request" => BalancePolicy::LeastRequest,
                "p2c" => BalancePolicy::P2c,
                "ring_hash" => BalancePolicy::RingHash {
                    vnodes: raw.vnodes.as_ref().map_or(DEFAULT_VNODES, |v| *v.get_ref()),
                },
                "maglev" => BalancePolicy::Maglev {
                    table_size: raw
                        .maglev_table_size
                        .as_ref()
                        .map_or(DEFAULT_MAGLEV_TABLE, |v| *v.get_ref()),
                },
                "random" => BalancePolicy::Random,
                other => {
                    self.error(
                        b,
                        &format!("{field}.balance"),
                        format!(
                            "unknown policy {other:?}; use round_robin, weighted_round_robin, least_request, p2c, ring_hash, maglev or random"
                        ),
                    );
                    BalancePolicy::RoundRobin
                }
            },
        };
        if let Some(v) = &raw.vnodes {
            if !matches!(balance, BalancePolicy::RingHash { .. }) {
                self.error(
                    v,
                    &format!("{field}.vnodes"),
                    "vnodes only applies to balance = \"ring_hash\"",
                );
            } else if !(1..=10_000).contains(v.get_ref()) {
                self.error(
                    v,
                    &format!("{field}.vnodes"),
                    "vnodes must be between 1 and 10000",
                );
            }
        }
        if let Some(v) = &raw.maglev_table_size {
            if !matches!(balance, BalancePolicy::Maglev { .. }) {
                self.error(
                    v,
                    &format!("{field}.maglev_table_size"),
                    "maglev_table_size only applies to balance = \"maglev\"",
                );
            } else if !(7..=5_000_011).contains(v.get_ref()) {
                self.error(
                    v,
                    &format!("{field}.maglev_table_size"),
                    "maglev_table_size must be between 7 and 5000011 (a prime such as 65537)",
                );
            }
        }
        let hash_on = match &raw.hash_on {
            None if balance.uses_hash() => Some(HashOn::ClientIp),
            None => None,
            Some(h) if !balance.uses_hash() => {
                self.error(
                    h,
                    &format!("{field}.hash_on"),
                    "hash_on only applies to balance = \"ring_hash\" or \"maglev\"",
                );
                None
            }
            Some(h) => match parse_hash_on(h.get_ref()) {
                Ok(v) => Some(v),
                Err(message) => {
                    self.error(h, &format!("{field}.hash_on"), message);
                    None
                }
            },
        };
        let protocol = match &raw.protocol {
            None => UpstreamProtocol::Http1,
            Some(p) => match p.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2" | "h2c" => UpstreamProtocol::H2,
                other => {
                    self.error(
                        p,
                        &format!("{field}.protocol"),
                        format!("unknown upstream protocol {other:?}; use \"http1\" or \"h2\""),
                    );
                    UpstreamProtocol::Http1
                }
            },
        };
        let connect_timeout = self.duration_or(
            raw.connect_timeout.as_ref(),
            &format!("{field}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
        );
        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            &format!("{field}.timeout"),
            DEFAULT_RESPONSE_TIMEOUT,
        );
        let idle_timeout = self.duration_or(
            raw.idle_timeout.as_ref(),
            &format!("{field}.idle_timeout"),
            DEFAULT_UPSTREAM_IDLE,
        );
        for (d, f, v) in [
            (connect_timeout, "connect_timeout", &raw.connect_timeout),
            (timeout, "timeout", &raw.timeout),
        ] {
            if d.is_zero()
                && let Some(v) = v
            {
                self.error(
                    v,
                    &format!("{field}.{f}"),
                    "a timeout of 0 would fail every request",
                );
            }
        }

        let (endpoints, discovery) = self.endpoint_source(spanned, field);

        let try_timeout = raw
            .try_timeout
            .as_ref()
            .map(|t| self.positive_duration(Some(t), &format!("{field}.try_timeout"), timeout));
        let health_check = raw
            .health_check
            .as_ref()
            .map(|h| self.health_check(h, &format!("{field}.health_check")));
        let outlier = self.outlier(raw.outlier.as_ref(), &format!("{field}.outlier"));
        let retry = self.retry(raw.retry.as_ref(), &format!("{field}.retry"));
        let breaker = raw
            .breaker
            .as_ref()
            .map(|b| self.breaker(b, &format!("{field}.breaker")));

        let adaptive_timeout = raw
            .adaptive_timeout
            .as_ref()
            .map(|a| self.adaptive_timeout(a, &format!("{field}.adaptive_timeout")));
        if let (Some(_), Some(t)) = (&adaptive_timeout, &raw.try_timeout) {
            self.error(
                t,
                &format!("{field}.try_timeout"),
                "set either try_timeout or [clusters.adaptive_timeout], not both",
            );
        }
        let tls = raw
            .tls
            .as_ref()
            .and_then(|t| self.cluster_tls(t, &format!("{field}.tls")));
        let fault = raw
            .fault
            .as_ref()
            .map(|f| self.fault(f, &format!("{field}.fault")));
        Some(Cluster {
            fault,
            tls,
            adaptive_timeout,
            breaker,
            try_timeout,
            health_check,
            outlier,
            retry,
            name,
            balance,
            hash_on,
            protocol,
            connect_timeout,
            timeout,
            idle_timeout,
            max_idle_per_endpoint: raw
                .max_idle_per_endpoint
                .as_ref()
                .map_or(DEFAULT_MAX_IDLE, |v| *v.get_ref()),
            endpoints,
            discovery,
        })
    }

    /// A cluster's endpoints: a fixed list, or a discovery source (exactly one of the two).
    pub(super) fn endpoint_source(
        &mut self,
        spanned: &Spanned<RawCluster>,
        field: &str,
    ) -> (Vec<EndpointConfig>, Option<Discovery>) {
        let raw = spanned.get_ref();
        let list = match (&raw.endpoints, &raw.discovery) {
            (Some(list), None) => list,
            (None, Some(discovery)) => {
                return (
                    Vec::new(),
                    self.discovery(discovery, &format!("{field}.discovery")),
                );
            }
            (Some(list), Some(_)) => {
                self.error(
                    list,
                    &format!("{field}.endpoints"),
                    "set either endpoints or discovery, not both",
                );
                return (Vec::new(), None);
            }
            (None, None) => {
                self.error(
                    spanned,
                    &format!("{field}.endpoints"),
                    "a cluster needs endpoints = [\"IP:PORT\", ...] or discovery = { registry = \"SERVICE\" }",
                );
                return (Vec::new(), None);
            }
        };
        if list.get_ref().is_empty() {
            self.error(
                list,
                &format!("{field}.endpoints"),
                "a cluster needs at least one endpoint",
            );
        }
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        for (i, spanned) in list.get_ref().iter().enumerate() {
            let e_field = format!("{field}.endpoints[{i}]");
            let e = spanned.get_ref();
            let weight = match e.weight.map(discovery::weight) {
                None => 1,
                Some(Ok(w)) => w,
                Some(Err(message)) => {
                    self.error(spanned, &format!("{e_field}.weight"), message);
                    1
                }
            };
            let address = Spanned::new(spanned.span(), e.address.clone());
            if let Some(address) = self.socket_addr(&address, &format!("{e_field}.address")) {
                if !seen.insert(address) {
                    self.error(
                        spanned,
                        &format!("{e_field}.address"),
                        format!("endpoint {address} is listed twice; raise its weight instead"),
                    );
                }
                endpoints.push(EndpointConfig { address, weight });
            }
        }
        (endpoints, None)
    }
}

/// `header:NAME`, `cookie:NAME`, `client_ip` or `path`.
fn parse_hash_on(text: &str) -> Result<HashOn, String> {
    let hint = "use \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"path\"";
    match text.split_once(':') {
        Some(("header", name)) if !name.is_empty() && name.bytes().all(is_token_byte) => {
            Ok(HashOn::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if !name.is_empty() && name.bytes().all(is_token_byte) => {
            Ok(HashOn::Cookie(name.to_owned()))
        }
        None if text == "client_ip" => Ok(HashOn::ClientIp),
        None if text == "path" => Ok(HashOn::Path),
        _ => Err(format!("{text:?} is not a hash key; {hint}")),
    }
}
