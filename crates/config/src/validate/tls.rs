//! Validation of TLS settings: listener certificates and client authentication, cluster
//! (upstream) TLS, and which protocols a listener may offer with or without TLS.
//!
//! Only the shape is checked here (this crate reads no file but the config): that the
//! certificates exist, parse, match their keys and are in date is checked when the config
//! is built into a snapshot, with errors naming the file.

use std::path::{Path, PathBuf};

use super::Validator;
use crate::model::{CertificatePaths, ClientAuth, ClusterTls, ListenerTls, Protocols};
use crate::raw::{RawClusterTls, RawListener, RawListenerTls};
use toml::Spanned;

impl Validator<'_> {
    /// The protocols a listener offers: `http1` and `h2c` in cleartext, `http1` and `h2`
    /// (by ALPN) with TLS. Default: both of the pair.
    pub(super) fn protocols(
        &mut self,
        spanned: &Spanned<RawListener>,
        raw: &RawListener,
        tls: bool,
        field: &str,
    ) -> Protocols {
        let (second, wrong, hint) = if tls {
            (
                "h2",
                "h2c",
                "h2c is HTTP/2 in cleartext; a TLS listener offers \"h2\" by ALPN",
            )
        } else {
            (
                "h2c",
                "h2",
                "\"h2\" needs TLS; a cleartext listener speaks HTTP/2 as \"h2c\"",
            )
        };
        let Some(list) = &raw.protocols else {
            return Protocols {
                http1: true,
                h2c: !tls,
                h2: tls,
            };
        };
        let mut p = Protocols {
            http1: false,
            h2c: false,
            h2: false,
        };
        for (i, proto) in list.iter().enumerate() {
            let name = proto.get_ref().as_str();
            match name {
                "http1" => p.http1 = true,
                "h2c" if !tls => p.h2c = true,
                "h2" if tls => p.h2 = true,
                _ if name == wrong => self.error(proto, &format!("{field}.protocols[{i}]"), hint),
                other => self.error(
                    proto,
                    &format!("{field}.protocols[{i}]"),
                    format!("unknown protocol {other:?}; use \"http1\" and/or \"{second}\""),
                ),
            }
        }
        if list.is_empty() {
            self.error(
                spanned,
                &format!("{field}.protocols"),
                format!("protocols is empty; use [\"http1\", \"{second}\"] or leave it out"),
            );
        }
        p
    }

    pub(super) fn listener_tls(
        &mut self,
        spanned: &Spanned<RawListenerTls>,
        field: &str,
    ) -> Option<ListenerTls> {
        let raw = spanned.get_ref();
        if raw.certificates.get_ref().is_empty() {
            self.error(
                &raw.certificates,
                &format!("{field}.certificates"),
                "a TLS listener needs at least one certificate: [{ cert = \"site.pem\", key = \"site.key\" }]",
            );
        }
        let certificates: Vec<CertificatePaths> = raw
            .certificates
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let f = format!("{field}.certificates[{i}]");
                let cert = self.file_path(&c.get_ref().cert, &format!("{f}.cert"));
                let key = self.file_path(&c.get_ref().key, &format!("{f}.key"));
                Some(CertificatePaths {
                    cert: cert?,
                    key: key?,
                })
            })
            .collect();
        let tls13_only = match &raw.min_version {
            None => false,
            Some(v) => match v.get_ref().as_str() {
                "1.2" => false,
                "1.3" => true,
                other => {
                    self.error(
                        v,
                        &format!("{field}.min_version"),
                        format!("unsupported TLS version {other:?}; use \"1.2\" or \"1.3\" (older versions are insecure)"),
                    );
                    false
                }
            },
        };
        let ca = raw
            .client_ca
            .as_ref()
            .and_then(|ca| self.file_path(ca, &format!("{field}.client_ca")));
        let mode = raw
            .client_auth
            .as_ref()
            .map_or("off", |m| m.get_ref().as_str());
        let client_auth = match (mode, ca) {
            ("off", None) => ClientAuth::Off,
            ("optional", Some(ca)) => ClientAuth::Optional { ca },
            ("required", Some(ca)) => ClientAuth::Required { ca },
            ("off", Some(_)) => {
                if let Some(ca) = &raw.client_ca {
                    self.error(
                        ca,
                        &format!("{field}.client_ca"),
                        "client_ca is set but client_auth is off; set client_auth = \"optional\" or \"required\"",
                    );
                }
                ClientAuth::Off
            }
            ("optional" | "required", None) => {
                if raw.client_ca.is_none() {
                    self.error(
                        spanned,
                        &format!("{field}.client_ca"),
                        format!("client_auth = \"{mode}\" needs client_ca, the CA bundle client certificates must chain to"),
                    );
                }
                ClientAuth::Off
            }
            (other, _) => {
                if let Some(m) = &raw.client_auth {
                    self.error(
                        m,
                        &format!("{field}.client_auth"),
                        format!("unknown client_auth {other:?}; use \"off\", \"optional\" or \"required\""),
                    );
                }
                ClientAuth::Off
            }
        };
        Some(ListenerTls {
            certificates,
            tls13_only,
            session_tickets: raw.session_tickets.as_ref().is_none_or(|t| *t.get_ref()),
            client_auth,
        })
    }

    pub(super) fn cluster_tls(
        &mut self,
        spanned: &Spanned<RawClusterTls>,
        field: &str,
    ) -> Option<ClusterTls> {
        let raw = spanned.get_ref();
        let ca = raw
            .ca
            .as_ref()
            .and_then(|ca| self.file_path(ca, &format!("{field}.ca")));
        let server_name = raw.server_name.as_ref().and_then(|name| {
            let n = name.get_ref();
            let valid = !n.is_empty()
                && n.len() <= 253
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                self.error(
                    name,
                    &format!("{field}.server_name"),
                    format!("{n:?} is not a DNS name"),
                );
            }
            valid.then(|| n.to_ascii_lowercase())
        });
        let client_certificate = match (&raw.cert, &raw.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.file_path(cert, &format!("{field}.cert"));
                let key = self.file_path(key, &format!("{field}.key"));
                Some(CertificatePaths {
                    cert: cert?,
                    key: key?,
                })
            }
            (Some(only), None) | (None, Some(only)) => {
                self.error(only, field, "a client certificate needs both cert and key");
                None
            }
        };
        Some(ClusterTls {
            ca,
            server_name,
            client_certificate,
        })
    }

    /// A file path from the config, relative to the config file's directory.
    pub(super) fn file_path(&mut self, value: &Spanned<String>, field: &str) -> Option<PathBuf> {
        let path = value.get_ref();
        if path.is_empty() {
            self.error(value, field, "the path is empty");
            return None;
        }
        let path = Path::new(path);
        Some(if path.is_absolute() {
            path.to_owned()
        } else {
            Path::new(self.origin)
                .parent()
                .unwrap_or(Path::new(""))
                .join(path)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ClientAuth;
    use crate::parse;
    use std::path::Path;

    const TLS: &str = r#"
[[listeners]]
name = "secure"
listen = "127.0.0.1:8443"
[listeners.tls]
certificates = [{ cert = "certs/site.pem", key = "/abs/site.key" }]
min_version = "1.3"
client_auth = "optional"
client_ca = "clients.pem"

[[listeners]]
name = "plain"
listen = "127.0.0.1:8080"
https_redirect_port = 8443

[[routes]]
cluster = "api"
client_cert_header = "X-Client-Subject"
require_client_cert = true

[[clusters]]
name = "api"
endpoints = ["127.0.0.1:9101"]
[clusters.tls]
server_name = "API.internal"
ca = "internal-ca.pem"
"#;

    #[test]
    fn tls_listener_cluster_and_route_settings() {
        let config = parse(TLS, "/etc/gatehouse/gatehouse.toml").unwrap();
        let secure = &config.listeners[0];
        let tls = secure.tls.as_ref().unwrap();
        assert_eq!(
            tls.certificates[0].cert,
            Path::new("/etc/gatehouse/certs/site.pem"),
            "relative to the config file"
        );
        assert_eq!(tls.certificates[0].key, Path::new("/abs/site.key"));
        assert!(tls.tls13_only && tls.session_tickets);
        assert_eq!(
            tls.client_auth,
            ClientAuth::Optional {
                ca: "/etc/gatehouse/clients.pem".into()
            }
        );
        assert!(secure.protocols.http1 && secure.protocols.h2 && !secure.protocols.h2c);
        let plain = &config.listeners[1];
        assert_eq!(plain.https_redirect_port, Some(8443));
        assert!(plain.protocols.h2c && !plain.protocols.h2);
        let route = &config.routes[0];
        assert_eq!(
            route.client_cert_header.as_deref(),
            Some("x-client-subject")
        );
        assert!(route.require_client_cert);
        let upstream = config.clusters[0].tls.as_ref().unwrap();
        assert_eq!(upstream.server_name.as_deref(), Some("api.internal"));
        assert_eq!(
            upstream.ca.as_deref(),
            Some(Path::new("/etc/gatehouse/internal-ca.pem"))
        );
    }

    #[test]
    fn tls_mistakes_are_named() {
        let src = r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:8443"
protocols = ["http1", "h2c"]
https_redirect_port = 443
[listeners.tls]
certificates = []
min_version = "1.0"
client_auth = "required"

[[listeners]]
name = "b"
listen = "127.0.0.1:8080"
protocols = ["h2"]

[[routes]]
cluster = "c"

[[clusters]]
name = "c"
endpoints = ["127.0.0.1:1"]
[clusters.tls]
cert = "only-cert.pem"
server_name = "bad name"
"#;
        let text = parse(src, "t.toml").unwrap_err().to_string();
        for expected in [
            "listeners[0].protocols[1]",
            "h2c is HTTP/2 in cleartext",
            "listeners[0].https_redirect_port",
            "listeners[0].tls.certificates",
            "listeners[0].tls.min_version",
            "listeners[0].tls.client_ca",
            "listeners[1].protocols[0]",
            "\"h2\" needs TLS",
            "needs both cert and key",
            "clusters[0].tls.server_name",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
