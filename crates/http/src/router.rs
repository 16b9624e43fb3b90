//! Request routing: a pure function from request properties to a route.
//!
//! Routes are grouped by host specificity once per snapshot: exact hosts (a hash lookup), then
//! `*.suffix` wildcards from the longest suffix to the shortest, then routes without hosts. Within
//! a group, routes keep config order and the first whose path, method and headers match wins. A
//! request whose exact-host routes all fail to match falls through to the wildcard and catch-all
//! groups, so a catch-all route can serve as the default for every host.

use gatehouse_config::{HostMatch, PathMatch, Route};
use http::{HeaderMap, Method};
use std::collections::HashMap;

/// Route lookup table for one listener.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<usize>>,
    /// (".example.com", routes), longest suffix first.
    suffixes: Vec<(String, Vec<usize>)>,
    any_host: Vec<usize>,
    matchers: Vec<Matcher>,
}

/// The non-host conditions of one route, in lookup-friendly form.
#[derive(Debug)]
struct Matcher {
    path: Option<PathMatch>,
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, String)>,
    headers_present: Vec<http::HeaderName>,
}

impl Router {
    /// Builds the table for `listener` from all routes; indices returned by [`Router::find`]
    /// are indices into `routes`.
    pub fn new(routes: &[Route], listener: &str) -> Self {
        let mut router = Router::default();
        let mut suffixes: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            router.matchers.push(Matcher::new(route));
            if !route.listeners.is_empty() && !route.listeners.iter().any(|l| l == listener) {
                continue;
            }
            if route.hosts.is_empty() {
                router.any_host.push(index);
            }
            for host in &route.hosts {
                match host {
                    HostMatch::Exact(name) => {
                        router.exact.entry(name.clone()).or_default().push(index)
                    }
                    HostMatch::Suffix(suffix) => {
                        suffixes.entry(suffix.clone()).or_default().push(index)
                    }
                }
            }
        }
        router.suffixes = suffixes.into_iter().collect();
        router
            .suffixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        router
    }

    /// Finds the route for a request. `host` may carry a port and any case.
    pub fn find(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let host = normalize_host(host);
        let matches = |index: &&usize| {
            self.matchers
                .get(**index)
                .is_some_and(|m| m.matches(path, method, headers))
        };
        if let Some(found) = self
            .exact
            .get(host.as_ref())
            .and_then(|r| r.iter().find(matches))
        {
            return Some(*found);
        }
        for (suffix, routes) in &self.suffixes {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(found) = routes.iter().find(matches)
            {
                return Some(*found);
            }
        }
        self.any_host.iter().find(matches).copied()
    }
}

impl Matcher {
    fn new(route: &Route) -> Self {
        Self {
            path: route.path.clone(),
            // Validated as tokens already; an invalid one simply never matches.
            methods: route
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers: route
                .headers
                .iter()
                .filter_map(|(n, v)| {
                    Some((http::HeaderName::try_from(n.as_str()).ok()?, v.clone()))
                })
                .collect(),
            headers_present: route
                .headers_present
                .iter()
                .filter_map(|n| http::HeaderName::try_from(n.as_str()).ok())
                .collect(),
        }
    }

    fn matches(&self, path: &str, method: &Method, headers: &HeaderMap) -> bool {
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) => path == p,
            Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(name, value)| {
                headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.as_bytes() == value.as_bytes())
            })
            && self
                .headers_present
                .iter()
                .all(|name| headers.contains_key(name))
    }
}

/// Lower-case host without port or trailing dot; borrows when already normal.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port -> v6 in brackets kept as written by clients: "[::1]"
        match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
            _ => host,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(hosts: &[HostMatch], path: Option<PathMatch>, cluster: &str) -> Route {
        Route {
            name: cluster.to_owned(),
            listeners: vec![],
            hosts: hosts.to_vec(),
            path,
            methods: vec![],
            headers: vec![],
            headers_present: vec![],
            cluster: cluster.to_owned(),
            host_rewrite: None,
            forward_headers: gatehouse_config::ForwardHeaders::ALL,
            timeout: None,
            read_timeout: Route::DEFAULT_READ_TIMEOUT,
            hedge: None,
            client_cert_header: None,
            require_client_cert: false,
            fault: None,
            protection: Default::default(),
            cache: None,
            compression: None,
        }
    }

    fn find(router: &Router, host: &str, path: &str) -> Option<usize> {
        router.find(host, path, &Method::GET, &HeaderMap::new())
    }

    #[test]
    fn specificity_exact_then_longest_suffix_then_any() {
        let routes = vec![
            route(&[], None, "default"),
            route(&[HostMatch::Suffix(".example.com".into())], None, "wild"),
            route(
                &[HostMatch::Suffix(".api.example.com".into())],
                None,
                "wild-api",
            ),
            route(&[HostMatch::Exact("www.example.com".into())], None, "www"),
        ];
        let r = Router::new(&routes, "l");
        assert_eq!(find(&r, "www.example.com", "/"), Some(3));
        assert_eq!(find(&r, "WWW.Example.COM:8080", "/"), Some(3));
        assert_eq!(find(&r, "www.example.com.", "/"), Some(3));
        assert_eq!(find(&r, "v1.api.example.com", "/"), Some(2));
        assert_eq!(find(&r, "shop.example.com", "/"), Some(1));
        assert_eq!(find(&r, "example.com", "/"), Some(0));
        assert_eq!(find(&r, "other.org", "/"), Some(0));
    }

    #[test]
    fn path_exact_and_prefix_in_config_order() {
        let routes = vec![
            route(&[], Some(PathMatch::Exact("/health".into())), "health"),
            route(&[], Some(PathMatch::Prefix("/api/".into())), "api"),
        ];
        let r = Router::new(&routes, "l");
        assert_eq!(find(&r, "a", "/health"), Some(0));
        assert_eq!(find(&r, "a", "/health/x"), None);
        assert_eq!(find(&r, "a", "/api/users"), Some(1));
        assert_eq!(find(&r, "a", "/apix"), None);
    }

    #[test]
    fn falls_through_from_exact_host_to_catch_all() {
        let routes = vec![
            route(
                &[HostMatch::Exact("a.com".into())],
                Some(PathMatch::Prefix("/x".into())),
                "ax",
            ),
            route(&[], None, "default"),
        ];
        let r = Router::new(&routes, "l");
        assert_eq!(find(&r, "a.com", "/x/1"), Some(0));
        assert_eq!(find(&r, "a.com", "/y"), Some(1));
    }

    #[test]
    fn methods_and_headers() {
        let mut canary = route(&[], None, "canary");
        canary.headers = vec![("x-canary".into(), "1".into())];
        canary.methods = vec!["POST".into()];
        let mut debug = route(&[], None, "debug");
        debug.headers_present = vec!["x-debug".into()];
        let routes = vec![canary, debug, route(&[], None, "main")];
        let r = Router::new(&routes, "l");
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "1".parse().unwrap());
        assert_eq!(r.find("h", "/", &Method::POST, &headers), Some(0));
        assert_eq!(r.find("h", "/", &Method::GET, &headers), Some(2));
        headers.insert("x-debug", "".parse().unwrap());
        assert_eq!(r.find("h", "/", &Method::GET, &headers), Some(1));
    }

    #[test]
    fn routes_bound_to_other_listeners_are_invisible() {
        let mut admin_only = route(&[], None, "internal");
        admin_only.listeners = vec!["internal".into()];
        let routes = vec![admin_only];
        assert_eq!(find(&Router::new(&routes, "public"), "h", "/"), None);
        assert_eq!(find(&Router::new(&routes, "internal"), "h", "/"), Some(0));
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("Example.COM:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(normalize_host("a.b."), "a.b");
        assert_eq!(normalize_host(""), "");
    }
}
