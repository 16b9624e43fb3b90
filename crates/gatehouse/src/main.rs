//! The gatehouse binary: command line, wiring and signals.
//!
//! - [`cli`]: the subcommands (`run`, `check`, `demo`) and their flags;
//! - [`serve`]: starts the gateway and admin API for a config, reloads it on SIGHUP or when the
//!   file changes, drains on SIGTERM/ctrl-c;
//! - [`discovery`]: connects the service registry and DNS discovery to the gateway;
//! - [`demo`]: built-in upstreams and a config that shows gatehouse with nothing installed;
//! - [`cert`]: `gatehouse cert dev`, a local CA and certificate for trying HTTPS;
//! - [`dns`]: `gatehouse dns serve`, zone files served authoritatively in the foreground.
//!
//! Logic belongs in the library crates; this crate only connects them.

mod cert;
mod cli;
mod demo;
mod demo_realtime;
mod discovery;
mod dns;
mod dns_service;
mod serve;

use clap::Parser;
use std::process::ExitCode;

// A proxy allocates small, short-lived objects on every request; mimalloc serves them from
// per-thread free lists, measurably cheaper than glibc malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    if let Err(err) = gatehouse_net::raise_open_file_limit() {
        tracing::warn!(error = %err, "cannot raise the open file limit; connections beyond it will fail");
    }
    match cli.command {
        cli::Command::Check { config } => match gatehouse_config::load(&config) {
            Ok(c) => {
                // The config is well formed; its certificates must also load and be in date.
                if let Err(err) = gatehouse_http::tls_edge::check(&c) {
                    eprintln!("{}: {err}", config.display());
                    eprintln!("1 error; nothing was started");
                    return ExitCode::from(2);
                }
                println!(
                    "{}: OK ({} listeners, {} routes, {} clusters)",
                    config.display(),
                    c.listeners.len(),
                    c.routes.len(),
                    c.clusters.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} error(s); nothing was started", errors.0.len());
                ExitCode::from(2)
            }
        },
        cli::Command::Run { config, workers } => {
            let loaded = serve::file_stamp(&config);
            let initial = match gatehouse_config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let watched = serve::Watched {
                path: config,
                loaded,
            };
            run_async(workers, serve::serve(initial, Some(watched)))
        }
        cli::Command::Demo {
            workers,
            listen,
            admin,
            https,
            dns,
        } => run_async(workers, demo::run(listen, admin, https, dns)),
        cli::Command::Cert {
            command: cli::CertCommand::Dev { hosts, out },
        } => match cert::dev(&hosts, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("gatehouse: {err:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Dns {
            command:
                cli::DnsCommand::Serve {
                    zone,
                    listen,
                    workers,
                },
        } => dns::serve(&zone, listen, workers),
    }
}

/// Runs `main` on a runtime with `workers` threads (a single-threaded runtime for 1: no
/// cross-thread wakeups at all, the fair comparison with single-worker nginx and HAProxy).
fn run_async(
    workers: Option<usize>,
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gatehouse: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
}
