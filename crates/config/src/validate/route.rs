//! Validation of a route: what it matches (host, path, method, headers), where it sends, and
//! what it does on the way (rewrites, timeouts, cache, compression, protection).

use super::{DEFAULT_RESPONSE_TIMEOUT, Validator, is_token_byte};
use crate::model::*;
use crate::raw::*;
use std::collections::HashSet;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn route(
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

    pub(super) fn path(&mut self, value: &Spanned<String>, field: &str) -> Option<String> {
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

    pub(super) fn header_name(&mut self, name: &Spanned<String>, field: &str) -> bool {
        let n = name.get_ref();
        let ok = !n.is_empty() && n.bytes().all(is_token_byte);
        if !ok {
            self.error(name, field, format!("{n:?} is not a valid header name"));
        }
        ok
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

fn http_host_chars(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}
