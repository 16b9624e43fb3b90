//! Command-line interface.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// gatehouse: a load balancer and reverse proxy for HTTP/1.1 and HTTP/2.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a configuration. Reloads on SIGHUP and when the file changes; drains on SIGTERM.
    Run {
        /// The TOML config file (see docs/config.md and examples/).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Worker threads (default: one per core). 1 runs everything on one thread.
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Validate a configuration and print every error with file:line:column; exit 2 on errors.
    Check {
        /// The TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start a self-contained demo: the gateway (HTTP and HTTPS), three demo upstreams, a
    /// real-time upstream (WebSocket, server-sent events, a cacheable page), DNS for the demo
    /// services, and the admin API. Any address may take port 0 (a free port); the banner,
    /// printed once everything listens, names the ports bound.
    Demo {
        /// Worker threads (default: one per core).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
        /// Where the admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901", value_name = "ADDR")]
        admin: SocketAddr,
        /// Where the demo gateway serves HTTPS (h2 and HTTP/1.1, with a certificate from a
        /// development CA made for the demo).
        #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
        https: SocketAddr,
        /// Where the demo answers DNS (UDP and TCP): the service zone svc.gatehouse.
        #[arg(long, default_value = "127.0.0.1:8053", value_name = "ADDR")]
        dns: SocketAddr,
    },
    /// Certificates for trying HTTPS locally.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The authoritative DNS server.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Serve zone files authoritatively over UDP and TCP, in the foreground (docs/dns.md).
    Serve {
        /// An RFC 1035 zone file; repeat for more zones.
        #[arg(long, required = true, value_name = "FILE")]
        zone: Vec<PathBuf>,
        /// Address for UDP and TCP (port 0: one free port, printed on start).
        #[arg(long, default_value = "127.0.0.1:5353", value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// UDP worker threads, one SO_REUSEPORT socket each (default: one per core we may run on).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a local CA (kept and reused in the output directory) and a server certificate
    /// signed by it. Trust ca.pem in your client (curl --cacert) to try HTTPS.
    Dev {
        /// Names and addresses the certificate is for, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1,::1")]
        hosts: Vec<String>,
        /// Where ca.pem, ca.key, cert.pem and key.pem are written.
        #[arg(long, default_value = "gatehouse-dev-certs", value_name = "DIR")]
        out: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_a_config_and_workers() {
        let cli =
            Cli::try_parse_from(["gatehouse", "run", "-c", "gw.toml", "--workers", "1"]).unwrap();
        match cli.command {
            Command::Run { config, workers } => {
                assert_eq!(config, PathBuf::from("gw.toml"));
                assert_eq!(workers, Some(1));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn dns_serve_takes_repeated_zones() {
        let cli = Cli::try_parse_from([
            "gatehouse",
            "dns",
            "serve",
            "--zone",
            "a.zone",
            "--zone",
            "b.zone",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        match cli.command {
            Command::Dns {
                command:
                    DnsCommand::Serve {
                        zone,
                        listen,
                        workers,
                    },
            } => {
                assert_eq!(zone, [PathBuf::from("a.zone"), PathBuf::from("b.zone")]);
                assert_eq!(listen.port(), 0);
                assert_eq!(workers, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["gatehouse", "dns", "serve"]).is_err(),
            "--zone is required"
        );
    }

    #[test]
    fn cert_dev_takes_a_host_list() {
        let cli =
            Cli::try_parse_from(["gatehouse", "cert", "dev", "--hosts", "localhost,127.0.0.1"])
                .unwrap();
        match cli.command {
            Command::Cert {
                command: CertCommand::Dev { hosts, out },
            } => {
                assert_eq!(hosts, ["localhost", "127.0.0.1"]);
                assert_eq!(out, PathBuf::from("gatehouse-dev-certs"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
