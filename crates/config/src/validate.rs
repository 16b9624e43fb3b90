//! Raw schema -> validated [`Config`], collecting every error with its position.

use crate::error::{ConfigError, ConfigErrors};
use crate::model::*;
use crate::raw::*;
use crate::units::{parse_duration, parse_size};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

mod cache;
mod compression;
pub mod discovery;
mod dns;
mod protection;
mod resilience;
mod tls;

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(90);
const DEFAULT_MAX_IDLE: u32 = 256;
const DEFAULT_VNODES: u32 = 160;
const DEFAULT_MAGLEV_TABLE: u32 = 65_537;
const MAX_WEIGHT: i64 = 10_000;
const MAX_HEADER_BYTES: u64 = 1 << 20;
const DEFAULT_DEADLINE_HEADER: &str = "x-gatehouse-timeout";

/// Validates a parsed raw config. Returns every error found.
pub fn validate(raw: &RawConfig, source: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        source,
        origin,
        errors: Vec::new(),
        cache: CacheSettings::default(),
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

struct Validator<'a> {
    source: &'a str,
    origin: &'a str,
    errors: Vec<ConfigError>,
    /// The validated `[cache]`, which routes' cache settings are checked against.
    cache: CacheSettings,
}

impl Validator<'_> {
    fn error<T>(&mut self, value: &Spanned<T>, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::at(
            self.origin,
            self.source,
            value.span(),
            field,
            message.into(),
        ));
    }

    fn error_whole_file(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::at(
            self.origin,
            self.source,
            0..0,
            field,
            message.into(),
        ));
    }

    fn config(&mut self, raw: &RawConfig) -> Config {
        let server = Server {
            drain_timeout: self.duration_or(
                raw.server.as_ref().and_then(|s| s.drain_timeout.as_ref()),
                "server.drain_timeout",
                DEFAULT_DRAIN_TIMEOUT,
            ),
            deadline_header: self
                .deadline_header(raw.server.as_ref().and_then(|s| s.deadline_header.as_ref())),
        };
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        self.cache = self.cache(raw.cache.as_ref());
        let listeners: Vec<Listener> = raw
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| self.listener(l, &format!("listeners[{i}]")))
            .collect();
        if raw.listeners.is_empty() {
            self.error_whole_file(
                "listeners",
                "no listeners: add at least one [[listeners]] table with name and listen",
            );
        }
        self.unique_names(
            raw.listeners.iter().map(|l| &l.get_ref().name),
            "listeners",
            "listener",
        );
        self.unique_addresses(&listeners, &raw.listeners);

        let clusters: Vec<Cluster> = raw
            .clusters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| self.cluster(c, &format!("clusters[{i}]")))
            .collect();
        self.unique_names(
            raw.clusters.iter().map(|c| &c.get_ref().name),
            "clusters",
            "cluster",
        );

        let listener_names: HashSet<&str> = raw
            .listeners
            .iter()
            .map(|l| l.get_ref().name.get_ref().as_str())
            .collect();
        let cluster_names: HashSet<&str> = raw
            .clusters
            .iter()
            .map(|c| c.get_ref().name.get_ref().as_str())
            .collect();
        let routes: Vec<Route> = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(r.get_ref(), i, &listener_names, &cluster_names))
            .collect();
        let route_names: Vec<&Spanned<String>> = raw
            .routes
            .iter()
            .filter_map(|r| r.get_ref().name.as_ref())
            .collect();
        self.unique_names(route_names.into_iter(), "routes", "route");
        let regions = self.regions(raw);
        let registry = self.registry(raw, &regions);
        let dns = raw.dns.as_ref().and_then(|d| self.dns(d));

        Config {
            server,
            admin,
            listeners,
            routes,
            clusters,
            cache: self.cache,
            regions,
            registry,
            dns,
        }
    }

    fn unique_names<'n>(
        &mut self,
        names: impl Iterator<Item = &'n Spanned<String>>,
        table: &str,
        what: &str,
    ) {
        let mut seen = HashSet::new();
        for (i, name) in names.enumerate() {
            if !seen.insert(name.get_ref().clone()) {
                self.error(
                    name,
                    &format!("{table}[{i}].name"),
                    format!(
                        "duplicate {what} name {:?}; names must be unique",
                        name.get_ref()
                    ),
                );
            }
        }
    }

    fn unique_addresses(&mut self, listeners: &[Listener], raw: &[Spanned<RawListener>]) {
        let mut seen = HashSet::new();
        for (listener, raw) in listeners.iter().zip(raw) {
            // Port 0 asks the OS for a fresh port each time, so it never collides.
            if listener.listen.port() != 0 && !seen.insert(listener.listen) {
                self.error(
                    &raw.get_ref().listen,
                    "listeners.listen",
                    format!(
                        "listener {:?} uses address {} which another listener already uses",
                        listener.name, listener.listen
                    ),
                );
            }
        }
    }

    fn socket_addr(&mut self, value: &Spanned<String>, field: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    value,
                    field,
                    format!(
                        "{:?} is not an IP:PORT address (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"); host names are not resolved here",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn duration_or(
        &mut self,
        value: Option<&Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(message) => {
                    self.error(v, field, message);
                    default
                }
            },
        }
    }

    fn size_or(&mut self, value: Option<&Spanned<SizeValue>>, field: &str, default: u64) -> u64 {
        let Some(v) = value else { return default };
        let parsed = match v.get_ref() {
            SizeValue::Bytes(n) => {
                u64::try_from(*n).map_err(|_| "a size cannot be negative".to_owned())
            }
            SizeValue::Text(t) => parse_size(t),
        };
        match parsed {
            Ok(0) => {
                self.error(v, field, "a size limit of 0 would refuse everything");
                default
            }
            Ok(n) => n,
            Err(message) => {
                self.error(v, field, message);
                default
            }
        }
    }

    /// The default name is documented in docs/resilience.md; "" turns propagation off.
    fn deadline_header(&mut self, raw: Option<&Spanned<String>>) -> Option<String> {
        let Some(spanned) = raw else {
            return Some(DEFAULT_DEADLINE_HEADER.to_owned());
        };
        let name = spanned.get_ref();
        if name.is_empty() {
            return None;
        }
        if !name.bytes().all(is_token_byte) {
            self.error(
                spanned,
                "server.deadline_header",
                format!("{name:?} is not a valid header name"),
            );
        }
        Some(name.to_ascii_lowercase())
    }

    fn admin(&mut self, raw: &RawAdmin) -> Option<Admin> {
        let listen = self.socket_addr(&raw.listen, "admin.listen")?;
        let token = raw.token.as_ref().map(|t| t.get_ref().clone());
        if let Some(t) = &raw.token
            && t.get_ref().len() < 16
        {
            self.error(
                t,
                "admin.token",
                "the admin token must be at least 16 characters",
            );
        }
        if !listen.ip().is_loopback() && token.is_none() {
            self.error(
                &raw.listen,
                "admin.listen",
                format!(
                    "the admin API on non-loopback address {listen} needs a token: set admin.token, or listen on 127.0.0.1"
                ),
            );
        }
        Some(Admin { listen, token })
    }

    fn listener(&mut self, spanned: &Spanned<RawListener>, field: &str) -> Option<Listener> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            self.error(
                &raw.name,
                &format!("{field}.name"),
                "a listener name cannot be empty",
            );
        }
        let listen = self.socket_addr(&raw.listen, &format!("{field}.listen"));
        let tls = raw
            .tls
            .as_ref()
            .map(|t| self.listener_tls(t, &format!("{field}.tls")));
        let protocols = self.protocols(spanned, raw, tls.is_some(), field);
        let https_redirect_port = raw.https_redirect_port.as_ref().and_then(|port| {
            if tls.is_some() {
                self.error(
                    port,
                    &format!("{field}.https_redirect_port"),
                    "this listener already serves TLS; https_redirect_port belongs on a cleartext listener",
                );
                None
            } else if *port.get_ref() == 0 {
                self.error(port, &format!("{field}.https_redirect_port"), "port 0 cannot be redirected to");
                None
            } else {
                Some(*port.get_ref())
            }
        });
        let defaults = Limits::default();
        if let Some(t) = &raw.header_read_timeout
            && parse_duration(t.get_ref()) == Ok(Duration::ZERO)
        {
            self.error(
                t,
                &format!("{field}.header_read_timeout"),
                "a timeout of 0 would close every connection",
            );
        }

        let max_connections = match &raw.max_connections {
            Some(v) if *v.get_ref() == 0 => {
                self.error(v, &format!("{field}.max_connections"), "must be at least 1");
                defaults.max_connections
            }
            Some(v) => *v.get_ref(),
            None => defaults.max_connections,
        };
        let limits = Limits {
            max_header_bytes: self.size_or(
                raw.max_header_bytes.as_ref(),
                &format!("{field}.max_header_bytes"),
                defaults.max_header_bytes,
            ),
            max_body_bytes: self.size_or(
                raw.max_body_bytes.as_ref(),
                &format!("{field}.max_body_bytes"),
                defaults.max_body_bytes,
            ),
            max_connections,
            header_read_timeout: self.duration_or(
                raw.header_read_timeout.as_ref(),
                &format!("{field}.header_read_timeout"),
                defaults.header_read_timeout,
            ),
            stall_timeout: self.positive_duration(
                raw.stall_timeout.as_ref(),
                &format!("{field}.stall_timeout"),
                defaults.stall_timeout,
            ),
        };
        if let Some(v) = &raw.max_header_bytes
            && limits.max_header_bytes > MAX_HEADER_BYTES
        {
            self.error(
                v,
                &format!("{field}.max_header_bytes"),
                format!(
                    "at most {MAX_HEADER_BYTES} bytes (1 MiB): each connection may buffer this much"
                ),
            );
        }
        let protection = self.listener_protection(raw, field);
        Some(Listener {
            name,
            listen: listen?,
            protocols,
            limits,
            protection,
            tls: tls.flatten(),
            https_redirect_port,
        })
    }

    fn route(
        &mut self,
        raw: &RawRoute,
        index: usize,
        listener_names: &HashSet<&str>,
        cluster_names: &HashSet<&str>,
    ) -> Option<Route> {
        let field = format!("routes[{index}]");
        let name = raw
            .name
            .as_ref()
            .map_or_else(|| format!("route{index}"), |n| n.get_ref().clone());

        let cluster = raw.cluster.get_ref().clone();
        if !cluster_names.contains(cluster.as_str()) {
            let known: Vec<&str> = {
                let mut k: Vec<&str> = cluster_names.iter().copied().collect();
                k.sort_unstable();
                k
            };
            self.error(
                &raw.cluster,
                &format!("{field}.cluster"),
                format!("no cluster named {cluster:?}; defined clusters: {known:?}"),
            );
        }

        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.iter().flatten().enumerate() {
            if listener_names.contains(l.get_ref().as_str()) {
                listeners.push(l.get_ref().clone());
            } else {
                self.error(
                    l,
                    &format!("{field}.listeners[{i}]"),
                    format!("no listener named {:?}", l.get_ref()),
                );
            }
        }

        let mut hosts = Vec::new();
        for (i, h) in raw.hosts.iter().flatten().enumerate() {
            match parse_host_match(h.get_ref()) {
                Ok(m) => hosts.push(m),
                Err(message) => self.error(h, &format!("{field}.hosts[{i}]"), message),
            }
        }

        let path = match (&raw.path, &raw.path_prefix) {
            (Some(p), Some(_)) => {
                self.error(
                    p,
                    &format!("{field}.path"),
                    "set either path (exact) or path_prefix, not both",
                );
                None
            }
            (Some(p), None) => self.path(p, &format!("{field}.path")).map(PathMatch::Exact),
            (None, Some(p)) => self
                .path(p, &format!("{field}.path_prefix"))
                .map(PathMatch::Prefix),
            (None, None) => None,
        };

        let mut methods = Vec::new();
        for (i, m) in raw.methods.iter().flatten().enumerate() {
            let method = m.get_ref();
            if !method.is_empty() && method.bytes().all(is_token_byte) {
                methods.push(method.to_ascii_uppercase());
            } else {
                self.error(
                    m,
                    &format!("{field}.methods[{i}]"),
                    format!("{method:?} is not an HTTP method name"),
                );
            }
        }

        let mut headers = Vec::new();
        for (name, value) in raw.headers.iter().flatten() {
            let header_field = format!("{field}.headers.{}", name.get_ref());
            if self.header_name(name, &header_field) {
                headers.push((name.get_ref().to_ascii_lowercase(), value.get_ref().clone()));
            }
        }
        let mut headers_present = Vec::new();
        for (i, name) in raw.headers_present.iter().flatten().enumerate() {
            if self.header_name(name, &format!("{field}.headers_present[{i}]")) {
                headers_present.push(name.get_ref().to_ascii_lowercase());
            }
        }

        let host_rewrite = raw.host_rewrite.as_ref().and_then(|h| {
            let host = h.get_ref();
            if !host.is_empty() && http_host_chars(host) {
                Some(host.clone())
            } else {
                self.error(
                    h,
                    &format!("{field}.host_rewrite"),
                    format!("{host:?} is not a valid Host value"),
                );
                None
            }
        });
        let timeout = raw.timeout.as_ref().map(|t| {
            let d = self.duration_or(
                Some(t),
                &format!("{field}.timeout"),
                DEFAULT_RESPONSE_TIMEOUT,
            );
            if d.is_zero() {
                self.error(
                    t,
                    &format!("{field}.timeout"),
                    "a timeout of 0 would fail every request",
                );
            }
            d
        });
        let read_timeout = self.duration_or(
            raw.read_timeout.as_ref(),
            &format!("{field}.read_timeout"),
            Route::DEFAULT_READ_TIMEOUT,
        );
        if let Some(t) = &raw.read_timeout
            && read_timeout.is_zero()
        {
            self.error(
                t,
                &format!("{field}.read_timeout"),
                "a read timeout of 0 would cut every streamed response",
            );
        }

        let hedge = raw
            .hedge
            .as_ref()
            .map(|h| self.hedge(h, &format!("{field}.hedge")));
        let protection = self.route_protection(raw, &field);
        let store = self.cache;
        let cache = self.route_cache(raw.cache.as_ref(), &field, &store);
        let compression = raw
            .compression
            .as_ref()
            .and_then(|c| self.compression(c, &format!("{field}.compression")));
        let forward_headers = match &raw.forward_headers {
            None => ForwardHeaders::ALL,
            Some(names) => {
                let mut enabled = ForwardHeaders::NONE;
                for (i, name) in names.iter().enumerate() {
                    let before = enabled;
                    if !enabled.enable(name.get_ref()) {
                        self.error(
                            name,
                            &format!("{field}.forward_headers[{i}]"),
                            format!(
                                "{:?} is not a field gatehouse adds (one of: {})",
                                name.get_ref(),
                                ForwardHeaders::NAMES.join(", ")
                            ),
                        );
                    } else if enabled == before {
                        self.error(
                            name,
                            &format!("{field}.forward_headers[{i}]"),
                            format!("{:?} is listed twice", name.get_ref()),
                        );
                    }
                }
                enabled
            }
        };
        let client_cert_header = raw.client_cert_header.as_ref().and_then(|h| {
            self.header_name(h, &format!("{field}.client_cert_header"))
                .then(|| h.get_ref().to_ascii_lowercase())
        });
        Some(Route {
            cache,
            name,
            listeners,
            hosts,
            path,
            methods,
            headers,
            headers_present,
            cluster,
            host_rewrite,
            timeout,
            read_timeout,
            hedge,
            protection,
            compression,
            forward_headers,
            client_cert_header,
            require_client_cert: raw
                .require_client_cert
                .as_ref()
                .is_some_and(|r| *r.get_ref()),
            fault: raw
                .fault
                .as_ref()
                .map(|f| self.fault(f, &format!("{field}.fault"))),
        })
    }

    fn path(&mut self, value: &Spanned<String>, field: &str) -> Option<String> {
        let p = value.get_ref();
        if p.starts_with('/') && !p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            Some(p.clone())
        } else {
            self.error(
                value,
                field,
                format!("{p:?} is not a path; paths start with '/' and contain no spaces"),
            );
            None
        }
    }

    fn header_name(&mut self, name: &Spanned<String>, field: &str) -> bool {
        let n = name.get_ref();
        let ok = !n.is_empty() && n.bytes().all(is_token_byte);
        if !ok {
            self.error(name, field, format!("{n:?} is not a valid header name"));
        }
        ok
    }

    fn cluster(&mut self, spanned: &Spanned<RawCluster>, field: &str) -> Option<Cluster> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
        if name.is_empty() {
            self.error(
                &raw.name,
                &format!("{field}.name"),
                "a cluster name cannot be empty",
            );
        }
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
    fn endpoint_source(
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

/// `example.com` (exact) or `*.example.com` (any subdomain); case-insensitive, no port.
fn parse_host_match(host: &str) -> Result<HostMatch, String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(format!(
            "{host:?} is not a host name; use \"example.com\" or \"*.example.com\" (no port, '*' only as the first label)"
        ));
    }
    Ok(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
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

/// RFC 9110 token characters (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn http_host_chars(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::{ConfigErrors, parse};

    const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:9901"

[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
name = "api"
hosts = ["api.example.com", "*.example.org"]
path_prefix = "/api"
methods = ["get", "POST"]
headers = { "X-Canary" = "1" }
cluster = "api"

[[clusters]]
name = "api"
balance = "ring_hash"
hash_on = "header:X-User"
endpoints = ["127.0.0.1:9101", { address = "127.0.0.1:9102", weight = 3 }]
"#;

    fn errors(src: &str) -> ConfigErrors {
        parse(src, "test.toml").unwrap_err()
    }

    #[test]
    fn parses_a_full_config() {
        let c = parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.listeners[0].listen.port(), 8080);
        let r = &c.routes[0];
        assert_eq!(r.methods, ["GET", "POST"]);
        assert_eq!(r.headers, [("x-canary".to_owned(), "1".to_owned())]);
        assert_eq!(r.hosts[1], crate::HostMatch::Suffix(".example.org".into()));
        let cl = &c.clusters[0];
        assert_eq!(cl.endpoints[1].weight, 3);
        assert_eq!(cl.hash_on, Some(crate::HashOn::Header("x-user".into())));
        assert_eq!(cl.balance, crate::BalancePolicy::RingHash { vnodes: 160 });
        // The JSON view used by the admin API serializes.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["clusters"][0]["balance"]["policy"], "ring_hash");
    }

    #[test]
    fn reports_every_error_with_line_column_and_field() {
        let src = r#"
[[listeners]]
name = "public"
listen = "localhost:80"

[[routes]]
cluster = "nope"
path = "no-slash"

[[clusters]]
name = "api"
balance = "fastest"
connect_timeout = "5"
endpoints = [{ address = "127.0.0.1:1", weight = 0 }]
"#;
        let errs = errors(src);
        let text = errs.to_string();
        assert_eq!(errs.0.len(), 6, "{text}");
        assert!(
            text.contains(
                "test.toml:4:10: listeners[0].listen: \"localhost:80\" is not an IP:PORT"
            ),
            "{text}"
        );
        assert!(
            text.contains("test.toml:7:11: routes[0].cluster: no cluster named \"nope\""),
            "{text}"
        );
        assert!(text.contains("routes[0].path"), "{text}");
        assert!(
            text.contains("test.toml:12:11: clusters[0].balance: unknown policy \"fastest\""),
            "{text}"
        );
        assert!(
            text.contains("clusters[0].connect_timeout: \"5\" has no unit"),
            "{text}"
        );
        assert!(
            text.contains("clusters[0].endpoints[0].weight: weight must be between 1"),
            "{text}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_positions() {
        let errs = errors("[[listeners]]\nname = 5\nlisten = \"127.0.0.1:1\"\n");
        assert_eq!(errs.0[0].position.map(|p| p.0), Some(2), "{errs}");
        let errs = errors("[[listeners]\n");
        assert!(errs.0[0].position.is_some());
        let errs = errors("[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nport = 2\n");
        assert!(errs.to_string().contains("unknown field `port`"), "{errs}");
    }

    #[test]
    fn duplicates_and_unsafe_admin_are_refused() {
        let src = r#"
[admin]
listen = "0.0.0.0:9901"
[[listeners]]
name = "a"
listen = "127.0.0.1:8080"
[[listeners]]
name = "a"
listen = "127.0.0.1:8080"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1", "127.0.0.1:1"]
[[clusters]]
name = "c"
endpoints = []
"#;
        let text = errors(src).to_string();
        assert!(text.contains("needs a token"), "{text}");
        assert!(text.contains("duplicate listener name \"a\""), "{text}");
        assert!(text.contains("already uses"), "{text}");
        assert!(text.contains("listed twice"), "{text}");
        assert!(text.contains("duplicate cluster name"), "{text}");
        assert!(text.contains("at least one endpoint"), "{text}");
    }

    #[test]
    fn hash_options_only_with_hash_policies() {
        let src = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[clusters]]
name = "c"
hash_on = "path"
vnodes = 10
endpoints = ["127.0.0.1:1"]
[[clusters]]
name = "d"
balance = "maglev"
hash_on = "body"
endpoints = ["127.0.0.1:1"]
"#;
        let text = errors(src).to_string();
        assert!(text.contains("hash_on only applies"), "{text}");
        assert!(text.contains("vnodes only applies"), "{text}");
        assert!(text.contains("\"body\" is not a hash key"), "{text}");
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = crate::parse(&text, &path.display().to_string()) {
                    panic!("{e}");
                }
                checked += 1;
            }
        }
        assert!(
            checked >= 3,
            "only {checked} examples found in {}",
            dir.display()
        );
    }

    #[test]
    fn forward_headers_name_the_fields_added() {
        let route = |list: &str| {
            format!(
                "[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n{list}\n\
                 [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n"
            )
        };
        let parsed =
            |list: &str| crate::parse(&route(list), "t.toml").unwrap().routes[0].forward_headers;
        assert_eq!(parsed(""), crate::ForwardHeaders::ALL);
        assert_eq!(parsed("forward_headers = []"), crate::ForwardHeaders::NONE);
        let some = parsed(r#"forward_headers = ["X-Forwarded-For", "via"]"#);
        assert_eq!(
            some.as_array(),
            [true, false, false, true, false],
            "in the order of ForwardHeaders::NAMES"
        );
        let text = errors(&route(
            r#"forward_headers = ["via", "x-forwarded-port", "VIA"]"#,
        ))
        .to_string();
        assert!(
            text.contains(
                "routes[0].forward_headers[1]: \"x-forwarded-port\" is not a field gatehouse adds"
            ),
            "{text}"
        );
        assert!(
            text.contains("routes[0].forward_headers[2]: \"VIA\" is listed twice"),
            "{text}"
        );
    }

    #[test]
    fn compression_and_read_timeouts_are_checked() {
        let src = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[routes]]
cluster = "c"
read_timeout = "0s"
[routes.compression]
algorithms = ["gzip", "deflate"]
content_types = ["text/html", "html"]
min_size = "0B"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
        let text = errors(src).to_string();
        assert!(
            text.contains("routes[0].read_timeout: a read timeout of 0"),
            "{text}"
        );
        assert!(text.contains("unknown algorithm \"deflate\""), "{text}");
        assert!(text.contains("\"html\" is not a media type"), "{text}");
        assert!(text.contains("routes[0].compression.min_size"), "{text}");

        let ok = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[routes]]
cluster = "c"
[routes.compression]
algorithms = ["br", "gzip"]
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
        let config = crate::parse(ok, "ok.toml").unwrap();
        let compression = config.routes[0].compression.as_ref().unwrap();
        assert_eq!(
            compression.algorithms,
            [
                crate::model::ContentCoding::Brotli,
                crate::model::ContentCoding::Gzip
            ]
        );
        assert_eq!(compression.min_size, 512);
        assert!(compression.content_types.iter().any(|t| t == "text/*"));
        assert_eq!(
            config.routes[0].read_timeout,
            std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn zero_timeouts_and_huge_heads_are_refused() {
        let src = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
header_read_timeout = "0s"
stall_timeout = "0s"
max_header_bytes = "2MiB"
[[routes]]
cluster = "c"
timeout = "0ms"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
        let text = errors(src).to_string();
        assert!(
            text.contains("header_read_timeout: a timeout of 0"),
            "{text}"
        );
        assert!(
            text.contains("stall_timeout: must be longer than 0"),
            "{text}"
        );
        assert!(text.contains("max_header_bytes: at most"), "{text}");
        assert!(text.contains("routes[0].timeout: a timeout of 0"), "{text}");
    }

    #[test]
    fn empty_file_needs_a_listener() {
        let text = errors("").to_string();
        assert!(text.contains("no listeners"), "{text}");
    }

    #[test]
    fn cache_settings_are_checked_against_the_store() {
        let src = r#"
[cache]
max_size = "1MiB"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[routes]]
cluster = "c"
[routes.cache]
max_object_size = "2MiB"
[[routes]]
cluster = "c"
[routes.cache]
max_object_size = "lots"
[[routes]]
cluster = "c"
[routes.cache]
enabled = true
max_object_size = 0
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#;
        let text = errors(src).to_string();
        assert!(
            text.contains("test.toml:10:19: routes[0].cache.max_object_size: max_object_size (2097152 bytes) is larger than the whole cache"),
            "{text}"
        );
        assert!(
            text.contains("routes[1].cache.max_object_size: \"lots\" is not a size"),
            "{text}"
        );
        assert!(
            text.contains("routes[2].cache.max_object_size: a size limit of 0"),
            "{text}"
        );
        let bad_store = errors(
            "[cache]\nmax_size = -1\n[[listeners]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n",
        )
        .to_string();
        assert!(
            bad_store.contains("cache.max_size: a size cannot be negative"),
            "{bad_store}"
        );
        let unknown = errors("[cache]\nmax_sise = 1\n").to_string();
        assert!(unknown.contains("max_sise"), "{unknown}");
    }

    #[test]
    fn cache_defaults_and_opt_out() {
        let config = parse(
            r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[routes]]
cluster = "c"
[routes.cache]
[[routes]]
cluster = "c"
[routes.cache]
enabled = false
max_object_size = "1KiB"
[[routes]]
cluster = "c"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.cache.max_size, 256 << 20);
        assert_eq!(
            config.routes[0].cache.map(|c| c.max_object_size),
            Some(8 << 20)
        );
        assert_eq!(config.routes[1].cache, None);
        assert_eq!(config.routes[2].cache, None);
    }
}
