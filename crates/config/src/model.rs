//! The validated configuration model.
//!
//! Everything here has been checked: addresses parse, names resolve, durations are typed. The data
//! path builds its runtime snapshot from a [`Config`] without further validation. `Serialize` gives
//! the admin `/config` page its JSON.

use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
    /// `[regions]`: named sets of client networks, for geo-aware service DNS.
    pub regions: Vec<Region>,
    /// `[registry]`: static instances of the embedded service registry.
    pub registry: RegistrySettings,
    /// `[dns]`: the authoritative DNS server; None: no DNS server.
    pub dns: Option<DnsSettings>,
    pub cache: CacheSettings,
}

/// The HTTP cache's store (`[cache]`), shared by every route that caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheSettings {
    /// Bytes the store may hold (bodies, headers and a per-entry overhead).
    pub max_size: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_size: 256 << 20,
        }
    }
}

/// A route's use of the HTTP cache (`[routes.cache]`); see docs/cache.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouteCache {
    /// A response whose body is larger passes through uncached.
    pub max_object_size: u64,
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            max_object_size: 8 << 20,
        }
    }
}

impl Config {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// How long SIGTERM waits for in-flight requests before closing connections.
    #[serde(with = "millis")]
    pub drain_timeout: Duration,
    /// Request header carrying the client's remaining time budget (e.g. "1500ms"); it is
    /// forwarded upstream with what is left. None disables deadline propagation.
    pub deadline_header: Option<String>,
}

/// The admin listener (health, metrics, config).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token required for writes (and for any access when not on loopback).
    #[serde(skip_serializing)]
    pub token: Option<String>,
}

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Protocols {
    pub http1: bool,
    /// HTTP/2 with prior knowledge over cleartext.
    pub h2c: bool,
    /// HTTP/2 chosen by ALPN on a TLS listener.
    pub h2: bool,
}

/// A TLS listener's settings (see docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerTls {
    /// Served by SNI; the first is the default. Paths are resolved against the config file's
    /// directory.
    pub certificates: Vec<CertificatePaths>,
    /// TLS 1.3 only (else 1.2 and 1.3).
    pub tls13_only: bool,
    pub session_tickets: bool,
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CertificatePaths {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Client certificates on a TLS listener (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ClientAuth {
    Off,
    /// Verified against `ca` when sent; clients without one still connect.
    Optional {
        ca: std::path::PathBuf,
    },
    /// Handshakes without a certificate chaining to `ca` fail.
    Required {
        ca: std::path::PathBuf,
    },
}

/// TLS to a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterTls {
    /// A CA bundle to trust instead of the system roots.
    pub ca: Option<std::path::PathBuf>,
    /// The name checked against the upstream's certificate (and sent as SNI); None: the
    /// endpoint's host.
    pub server_name: Option<String>,
    /// A client certificate for upstreams that ask for one.
    pub client_certificate: Option<CertificatePaths>,
}

/// Per-listener protection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest request head (request line plus headers) accepted; larger gets 431.
    pub max_header_bytes: u64,
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: u64,
    /// Connections accepted at once on this listener; more wait in the kernel backlog.
    pub max_connections: u64,
    /// A client must send a complete request head within this time (slow-loris guard). It also
    /// bounds how long an idle HTTP/1.1 keep-alive connection waits for its next request.
    #[serde(with = "millis")]
    pub header_read_timeout: Duration,
    /// The longest a client may stall mid-exchange: send none of the request body being
    /// waited for, or take none of the response waiting for it (a full socket buffer, or an
    /// HTTP/2 window it does not open). Past it the connection closes, so a slow client cannot
    /// hold an upstream connection: nginx's `client_body_timeout` and `send_timeout`,
    /// HAProxy's `timeout client`.
    #[serde(with = "millis")]
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 1 << 30,
            max_connections: 100_000,
            header_read_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    pub protocols: Protocols,
    pub limits: Limits,
    pub protection: ListenerProtection,
    /// None: cleartext.
    pub tls: Option<ListenerTls>,
    /// On a cleartext listener: answer every request with 308 to https on this port.
    pub https_redirect_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum HostMatch {
    /// The whole host, lower-case, without port or trailing dot.
    Exact(String),
    /// `*.example.com`, stored as ".example.com": matches any name ending with it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub name: String,
    /// Listeners this route serves; empty means all.
    pub listeners: Vec<String>,
    /// Empty means any host.
    pub hosts: Vec<HostMatch>,
    pub path: Option<PathMatch>,
    /// Upper-case method names; empty means any method.
    pub methods: Vec<String>,
    /// (lower-case name, exact value) pairs that must all be present.
    pub headers: Vec<(String, String)>,
    /// Lower-case header names that must be present with any value.
    pub headers_present: Vec<String>,
    pub cluster: String,
    /// Replace the Host header sent upstream; None preserves the client's Host.
    pub host_rewrite: Option<String>,
    /// Overrides the cluster's response timeout for this route.
    #[serde(with = "opt_millis")]
    pub timeout: Option<Duration>,
    /// Longest silence allowed while a response body streams from the upstream (server-sent
    /// events, long polls, downloads), and on an upgraded connection (WebSocket) the longest
    /// time with no byte in either direction.
    #[serde(with = "millis")]
    pub read_timeout: Duration,
    /// Hedged requests (GET/HEAD/OPTIONS without a body); None: off.
    pub hedge: Option<Hedge>,
    /// Request header carrying the verified client certificate's subject upstream; a client's
    /// own header of that name is always removed.
    pub client_cert_header: Option<String>,
    /// 403 unless the connection presented a verified client certificate.
    pub require_client_cert: bool,
    /// Fault injection from the config file (the admin API can change it at runtime).
    pub fault: Option<FaultSettings>,
    pub protection: RouteProtection,
    /// The shared HTTP cache; None: responses are not cached.
    pub cache: Option<RouteCache>,
    /// Response compression; None: responses pass as the upstream sent them.
    pub compression: Option<Compression>,
    /// The fields this hop adds to requests it forwards.
    pub forward_headers: ForwardHeaders,
}

/// The fields a route adds to the requests it forwards (docs/config.md, `forward_headers`): each
/// one gatehouse adds replaces or extends the client's own; one it does not add passes as the
/// client sent it. All by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardHeaders {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_forwarded_host: bool,
    pub via: bool,
    pub x_request_id: bool,
}

impl ForwardHeaders {
    pub const ALL: Self = Self {
        x_forwarded_for: true,
        x_forwarded_proto: true,
        x_forwarded_host: true,
        via: true,
        x_request_id: true,
    };
    pub const NONE: Self = Self {
        x_forwarded_for: false,
        x_forwarded_proto: false,
        x_forwarded_host: false,
        via: false,
        x_request_id: false,
    };
    /// The field names as the config spells them, in the order they are sent.
    pub const NAMES: [&'static str; 5] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
    ];

    /// Whether each of [`Self::NAMES`] is added, in that order.
    pub fn as_array(self) -> [bool; 5] {
        [
            self.x_forwarded_for,
            self.x_forwarded_proto,
            self.x_forwarded_host,
            self.via,
            self.x_request_id,
        ]
    }

    /// Adds the field named `name` (one of [`Self::NAMES`], any case); false if it is not one.
    pub fn enable(&mut self, name: &str) -> bool {
        let flag = match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => &mut self.x_forwarded_for,
            "x-forwarded-proto" => &mut self.x_forwarded_proto,
            "x-forwarded-host" => &mut self.x_forwarded_host,
            "via" => &mut self.via,
            "x-request-id" => &mut self.x_request_id,
            _ => return false,
        };
        *flag = true;
        true
    }
}

impl Route {
    /// `read_timeout` when the config sets none: long enough for server-sent events and long
    /// polls that send a keep-alive comment every few seconds or minutes; a route with quieter
    /// streams sets its own.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
}

/// Response compression for a route (docs/config.md, "Compression").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compression {
    /// In the server's order of preference, for clients that accept several equally.
    pub algorithms: Vec<ContentCoding>,
    /// Bodies known to be smaller are sent as they are.
    pub min_size: u64,
    /// Media types compressed (`text/*` covers a whole type), lower-case, without parameters.
    pub content_types: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentCoding {
    Zstd,
    #[serde(rename = "br")]
    Brotli,
    Gzip,
}

impl ContentCoding {
    /// The token in Accept-Encoding and Content-Encoding.
    pub fn token(self) -> &'static str {
        match self {
            ContentCoding::Zstd => "zstd",
            ContentCoding::Brotli => "br",
            ContentCoding::Gzip => "gzip",
        }
    }
}

/// Injected faults: delays, aborts, blackholes (see docs/resilience.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaultSettings {
    #[serde(with = "millis")]
    pub delay: Duration,
    #[serde(with = "millis")]
    pub delay_jitter: Duration,
    /// 0 to 100.
    pub delay_percent: f64,
    pub abort_status: u16,
    pub abort_percent: f64,
    /// Requests that get no answer before their deadline (a partition), 0 to 100.
    pub blackhole_percent: f64,
}

/// A second try, to another endpoint, when the first is slower than the route usually is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hedge {
    /// The route's recent latency quantile (percent) after which the second try goes out.
    pub quantile: u32,
    /// The hedge never goes out sooner than this...
    #[serde(with = "millis")]
    pub min_delay: Duration,
    /// ...nor later than this (also the delay until enough samples exist).
    #[serde(with = "millis")]
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge: one multiplexed connection per endpoint.
    H2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum BalancePolicy {
    RoundRobin,
    WeightedRoundRobin,
    LeastRequest,
    P2c,
    RingHash { vnodes: u32 },
    Maglev { table_size: u32 },
    Random,
}

impl BalancePolicy {
    pub fn uses_hash(&self) -> bool {
        matches!(self, Self::RingHash { .. } | Self::Maglev { .. })
    }
}

/// The request property a hash policy keys on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum HashOn {
    /// A request header (lower-case name).
    Header(String),
    /// A cookie by name.
    Cookie(String),
    ClientIp,
    Path,
}

/// A cluster's endpoint source other than a fixed list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Discovery {
    /// The instances of a service in the embedded registry.
    Registry { service: String },
    /// The answers to a DNS query, re-resolved as their TTL says.
    Dns(DnsDiscovery),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DnsDiscovery {
    /// The name queried, as written (a trailing dot makes it absolute).
    pub name: String,
    pub record_type: DnsRecordType,
    /// The endpoints' port for A/AAAA answers; None for SRV (each record has its port).
    pub port: Option<u16>,
    /// Re-resolve no sooner than this, even when the answer's TTL is shorter...
    #[serde(with = "millis")]
    pub min_ttl: Duration,
    /// ...and no later than this, even when it is longer.
    #[serde(with = "millis")]
    pub max_ttl: Duration,
    /// The DNS server to ask; None: the system's (/etc/resolv.conf).
    pub nameserver: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DnsRecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "SRV")]
    Srv,
}

/// A region: client networks that geo-aware DNS answers from the region's own instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    pub name: String,
    pub cidrs: Vec<ipnet::IpNet>,
}

/// `[dns]`: static zone files and the service zone, served on one address (UDP and TCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSettings {
    pub listen: SocketAddr,
    /// Zone files, resolved against the config file's directory.
    pub zones: Vec<std::path::PathBuf>,
    pub services: Option<ServiceZoneConfig>,
}

/// `[dns.services]`: the zone answering from the registry and the gateway's health state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceZoneConfig {
    /// The origin, lowercase, with the trailing dot ("svc.gatehouse.").
    pub zone: String,
    /// TTL of answers (whole seconds).
    #[serde(with = "millis")]
    pub ttl: Duration,
    pub policy: DnsAnswerPolicy,
    pub overrides: Vec<ServiceZoneOverride>,
}

/// One service's TTL or answer order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceZoneOverride {
    pub service: String,
    #[serde(with = "opt_millis")]
    pub ttl: Option<Duration>,
    pub policy: Option<DnsAnswerPolicy>,
}

/// How a service's DNS answers order their records from one response to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsAnswerPolicy {
    /// Each response starts one record further along.
    RoundRobin,
    /// An instance comes first in a share of responses proportional to its weight.
    Weighted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistrySettings {
    /// Instances from the config file; they never expire and the admin API cannot change them.
    pub instances: Vec<StaticInstance>,
}

/// One `[[registry.instances]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticInstance {
    pub service: String,
    pub id: String,
    pub address: std::net::IpAddr,
    pub port: u16,
    pub weight: u32,
    pub tags: Vec<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointConfig {
    pub address: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub balance: BalancePolicy,
    /// Only for hash policies.
    pub hash_on: Option<HashOn>,
    pub protocol: UpstreamProtocol,
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Time allowed for the response head after the request was sent (504 after it).
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Idle pooled upstream connections are closed after this.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: u32,
    /// The endpoints as configured; for a cluster with `discovery`, the ones discovered so far
    /// (the gateway fills them in: see `gatehouse_http::gateway`).
    pub endpoints: Vec<EndpointConfig>,
    /// Where the endpoints come from when they are not listed; None: `endpoints` as written.
    pub discovery: Option<Discovery>,
    /// Time allowed for one try's response head; None: the request's whole timeout.
    #[serde(with = "opt_millis")]
    pub try_timeout: Option<Duration>,
    /// Active health checks; None: every endpoint counts as healthy.
    pub health_check: Option<HealthCheck>,
    /// Passive outlier detection; None: disabled.
    pub outlier: Option<Outlier>,
    pub retry: RetrySettings,
    /// Circuit breakers for the cluster and each of its endpoints; None: none.
    pub breaker: Option<BreakerSettings>,
    /// A per-try timeout learned from the cluster's latency; None: `try_timeout` as set.
    pub adaptive_timeout: Option<AdaptiveTimeout>,
    /// None: cleartext to the endpoints.
    pub tls: Option<ClusterTls>,
    /// Fault injection from the config file (the admin API can change it at runtime).
    pub fault: Option<FaultSettings>,
}

/// Per-try timeout = clamp(recent quantile × factor + floor, min, max).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdaptiveTimeout {
    /// Percent, e.g. 99.
    pub quantile: u32,
    /// Tenths: 30 means × 3.0.
    pub factor_tenths: u32,
    #[serde(with = "millis")]
    pub floor: Duration,
    #[serde(with = "millis")]
    pub min: Duration,
    #[serde(with = "millis")]
    pub max: Duration,
}

/// When a circuit breaker opens, and how it closes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerSettings {
    /// Failures in a row that open it; 0 = rule off.
    pub consecutive_failures: u32,
    /// Failure share over the window that opens it, in percent; 0 = rule off.
    pub failure_percent: u32,
    /// Requests the window must hold before the share counts.
    pub min_requests: u32,
    #[serde(with = "millis")]
    pub window: Duration,
    /// How long it stays open the first time (doubling, up to `open_max`, while probes fail).
    #[serde(with = "millis")]
    pub open: Duration,
    #[serde(with = "millis")]
    pub open_max: Duration,
    /// Requests let through at once while half-open.
    pub half_open_probes: u32,
    /// Probe successes that close it.
    pub half_open_successes: u32,
}

/// How an endpoint is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthProbe {
    /// The endpoint accepts a TCP connection.
    Tcp,
    /// An HTTP/1.1 GET of `path` answers with a status in `expect` (inclusive range).
    Http {
        path: String,
        host: Option<String>,
        expect: (u16, u16),
    },
}

/// Active health checking of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    #[serde(with = "millis")]
    pub interval: Duration,
    /// Each interval is moved by up to this much either way, so checks do not align.
    #[serde(with = "millis")]
    pub jitter: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub fall: u32,
    /// A recovered endpoint's share of traffic ramps up over this window.
    #[serde(with = "millis")]
    pub slow_start: Duration,
}

/// Passive outlier detection (ejection on consecutive failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// 0 disables the rule.
    pub consecutive_5xx: u32,
    /// 0 disables the rule.
    pub consecutive_gateway_failures: u32,
    #[serde(with = "millis")]
    pub base_ejection: Duration,
    #[serde(with = "millis")]
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
    /// Eject an endpoint whose p99 is above this many times its peers' median (tenths:
    /// 30 = × 3.0); None: latency ejection off.
    pub latency_factor_tenths: Option<u32>,
}

/// When and how often a failed try is sent again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetrySettings {
    /// Tries in total, the first included; 1 disables retries.
    pub attempts: u32,
    /// Upstream statuses that count as a failed try (idempotent requests only).
    pub on_status: Vec<u16>,
    #[serde(with = "millis")]
    pub backoff_base: Duration,
    #[serde(with = "millis")]
    pub backoff_max: Duration,
    /// Retries may add at most this share of the cluster's recent requests, in percent...
    pub budget_percent: u32,
    /// ...plus this many per second, so a quiet cluster can still retry.
    pub budget_min_per_second: u32,
    /// Request bodies up to this size are kept for a retry; larger ones are not retried.
    pub max_replay_body: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_status: vec![502, 503, 504],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            budget_min_per_second: 10,
            max_replay_body: 64 * 1024,
        }
    }
}

// ---- Protection: ACLs, trusted proxies, per-client limits, rate limits, security headers.
// What each default is and why: docs/security.md.

/// A CIDR allow/deny list: the most specific matching prefix decides; an address no prefix
/// matches is denied when `allow` is not empty, allowed otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessList {
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
}

/// A listener's protection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListenerProtection {
    /// Checked against the TCP peer right after accept; a denied peer's connection is closed.
    pub acl: Option<AccessList>,
    /// Peers whose X-Forwarded-For is believed (the client is the right-most untrusted entry).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open connections one peer address may hold; more are closed at once. None: no limit.
    pub max_connections_per_ip: Option<u64>,
}

/// A route's protection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteProtection {
    /// Checked against the client's real address; a denied client gets 403.
    pub acl: Option<AccessList>,
    pub rate_limit: Option<RateLimit>,
    pub security_headers: SecurityHeaders,
}

/// A GCRA rate limit: `count` requests per `period`, `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RateLimit {
    pub count: u64,
    #[serde(with = "millis")]
    pub period: Duration,
    pub burst: u64,
    pub key: RateLimitKey,
    /// RateLimit-Policy / RateLimit headers on admitted responses too (429s always have them).
    pub headers: bool,
    /// Most keys tracked at once (memory bound).
    pub max_keys: u64,
}

/// What a rate limit counts per.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The client's real address (after trusted proxies).
    ClientIp,
    /// A request header's value (lower-case name); requests without it count per client IP.
    Header(String),
    /// The route as a whole.
    Route,
}

/// Response headers a route adds; None leaves a header out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityHeaders {
    /// Sent only on responses to HTTPS connections.
    pub strict_transport_security: Option<String>,
    pub x_content_type_options: Option<String>,
    pub x_frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    /// Replace a value the upstream set (default: the upstream's value wins).
    pub override_upstream: bool,
}

impl SecurityHeaders {
    /// Every header left out.
    pub fn none() -> Self {
        Self {
            strict_transport_security: None,
            x_content_type_options: None,
            x_frame_options: None,
            referrer_policy: None,
            override_upstream: false,
        }
    }
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            strict_transport_security: Some("max-age=31536000; includeSubDomains".to_owned()),
            x_content_type_options: Some("nosniff".to_owned()),
            x_frame_options: Some("DENY".to_owned()),
            referrer_policy: Some("strict-origin-when-cross-origin".to_owned()),
            override_upstream: false,
        }
    }
}

mod millis {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

mod opt_millis {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u128(d.as_millis()),
            None => s.serialize_none(),
        }
    }
}
