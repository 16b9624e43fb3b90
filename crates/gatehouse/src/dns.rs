//! `gatehouse dns serve`: zone files served alone, in the foreground, until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Loads the zones (exit 2 naming file:line on a bad one), serves them, and prints one line
/// with the bound address (tests and scripts read it when the port was 0).
pub fn serve(zones: &[PathBuf], listen: SocketAddr, workers: Option<usize>) -> ExitCode {
    let set = match gatehouse_dns::load_zones(zones) {
        Ok(set) => set,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            eprintln!("nothing was started");
            return ExitCode::from(2);
        }
    };
    let count = set.len();
    // available_parallelism follows the CPU affinity mask, so `taskset -c 0` means one worker.
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let server = match gatehouse_dns::Server::start(set.shared(), listen, workers) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("gatehouse: cannot listen for DNS on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "dns listening on {} (udp+tcp, {count} zone(s), {workers} udp worker(s))",
        server.udp_addr
    );
    tracing::info!(addr = %server.udp_addr, zones = count, workers, "DNS server started");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("gatehouse: cannot start the signal handler: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    });
    server.stop();
    tracing::info!("DNS server stopped");
    ExitCode::SUCCESS
}
