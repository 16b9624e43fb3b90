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
    /// Start a self-contained demo: the gateway, three demo upstreams and the admin API.
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
}
