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
mod cluster;
mod compression;
pub mod discovery;
mod dns;
mod listener;
mod protection;
mod resilience;
mod route;
mod tls;

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_WEIGHT: i64 = 10_000;
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
        self.names(
            raw.listeners.iter().map(|l| &l.get_ref().name).enumerate(),
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
        self.names(
            raw.clusters.iter().map(|c| &c.get_ref().name).enumerate(),
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
        // Route names are optional; the index is the route's own, named or not.
        let route_names: Vec<(usize, &Spanned<String>)> = raw
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.get_ref().name.as_ref()?)))
            .collect();
        for &(i, name) in &route_names {
            // An unnamed route is called `route{index}`: an explicit name may not take that.
            let taken = name
                .get_ref()
                .strip_prefix("route")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n != i && name.get_ref() == &format!("route{n}"))
                .filter(|&n| {
                    raw.routes
                        .get(n)
                        .is_some_and(|r| r.get_ref().name.is_none())
                });
            if let Some(n) = taken {
                self.error(
                    name,
                    &format!("routes[{i}].name"),
                    format!(
                        "{:?} is the name routes[{n}] gets by default (it has none); name that route or choose another",
                        name.get_ref()
                    ),
                );
            }
        }
        self.names(route_names.into_iter(), "routes", "route");
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

    /// Each `what` name in `table` (given with its index there) is non-empty and unique.
    fn names<'n>(
        &mut self,
        names: impl Iterator<Item = (usize, &'n Spanned<String>)>,
        table: &str,
        what: &str,
    ) {
        let mut seen = HashSet::new();
        for (i, name) in names {
            let field = format!("{table}[{i}].name");
            if name.get_ref().is_empty() {
                self.error(name, &field, format!("a {what} name cannot be empty"));
            } else if !seen.insert(name.get_ref().as_str()) {
                self.error(
                    name,
                    &field,
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
}

/// RFC 9110 token characters (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
    fn names_are_non_empty_and_unique_and_errors_name_the_right_table_entry() {
        let src = r#"
[[listeners]]
name = ""
listen = "127.0.0.1:8080"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
[[routes]]
cluster = "c"
[[routes]]
name = "r"
cluster = "c"
[[routes]]
name = "r"
cluster = "c"
[[routes]]
name = ""
cluster = "c"
[[routes]]
name = "route0"
cluster = "c"
"#;
        let text = errors(src).to_string();
        assert!(
            text.contains("listeners[0].name: a listener name cannot be empty"),
            "{text}"
        );
        // The first route has no name: the duplicate is routes[2], not the second named one.
        assert!(
            text.contains("routes[2].name: duplicate route name \"r\""),
            "{text}"
        );
        assert!(
            text.contains("routes[3].name: a route name cannot be empty"),
            "{text}"
        );
        // routes[0] has no name, so it is called route0: routes[4] may not take that name.
        assert!(
            text.contains("routes[4].name: \"route0\" is the name routes[0] gets by default"),
            "{text}"
        );
        assert_eq!(errors(src).0.len(), 4, "{text}");

        // A default name is free when its route has a name of its own, or is that route.
        let fine = r#"
[[listeners]]
name = "l"
listen = "127.0.0.1:8080"
[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
[[routes]]
name = "a"
cluster = "c"
[[routes]]
name = "route0"
cluster = "c"
[[routes]]
name = "route2"
cluster = "c"
"#;
        let names: Vec<_> = parse(fine, "test.toml")
            .unwrap()
            .routes
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "route0", "route2"]);
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
