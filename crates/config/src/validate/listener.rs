//! Validation of a listener: its address, protocols, limits and timeouts, TLS and protection.

use super::Validator;
use crate::model::*;
use crate::raw::*;
use crate::units::parse_duration;
use std::time::Duration;
use toml::Spanned;

const MAX_HEADER_BYTES: u64 = 1 << 20;

impl Validator<'_> {
    pub(super) fn listener(
        &mut self,
        spanned: &Spanned<RawListener>,
        field: &str,
    ) -> Option<Listener> {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().clone();
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
}
