//! Serving a configuration: start, reload, drain.

use crate::discovery::DiscoveryRuntime;
use crate::dns_service::DnsRuntime;
use anyhow::Context;
use gatehouse_config::Config;
use gatehouse_http::Gateway;
use gatehouse_observe::{Metrics, ReloadLabels};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How often the config file is checked for changes (see [`file_stamp`]).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A running gateway plus its admin API.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub discovery: DiscoveryRuntime,
    /// The DNS server of `[dns]`, if the config has one when gatehouse starts.
    pub dns: Option<DnsRuntime>,
    /// Where the admin API listens (the bound address: port 0 in the config is resolved).
    pub admin: Option<std::net::SocketAddr>,
    /// The started config's drain timeout (a reload may change it while serving).
    drain_timeout: Duration,
    admin_stop: CancellationToken,
}

/// Starts the gateway and admin API for `config` and prints where they listen (one line each, on
/// stdout: scripts and tests read them).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let drain_timeout = config.server.drain_timeout;
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(metrics);
    // Latency ejection compares endpoints periodically (consecutive failures eject at once).
    tokio::spawn(Arc::clone(&gateway).sweep_outliers(std::time::Duration::from_secs(1)));
    tokio::spawn(Arc::clone(&gateway).watch_certificates());
    tokio::spawn(Arc::clone(&gateway).run_hedge_timers());
    let admin = config.admin.clone();
    let discovery = DiscoveryRuntime::start(&gateway);
    let applied = config.clone();
    gateway.apply(config).await.context("cannot start")?;
    discovery.apply(&applied);
    let dns = DnsRuntime::start(&applied, discovery.directory.clone())?;
    for (name, addr) in gateway.bound_addresses() {
        println!("gatehouse: listener {name} on http://{addr}");
    }
    let admin_stop = CancellationToken::new();
    let mut admin_addr = None;
    if let Some(admin) = admin {
        let listener = gatehouse_admin::bind(admin.listen)
            .with_context(|| format!("cannot bind the admin API on {}", admin.listen))?;
        let addr = listener.local_addr()?;
        println!("gatehouse: admin on http://{addr}");
        admin_addr = Some(addr);
        let gateway = Arc::clone(&gateway);
        let directory = discovery.directory.clone();
        let stop = admin_stop.clone();
        tokio::spawn(async move {
            if let Err(err) =
                gatehouse_admin::serve(listener, gateway, directory, admin.token, stop).await
            {
                tracing::error!(error = %err, "admin API stopped");
            }
        });
    }
    Ok(Running {
        gateway,
        discovery,
        dns,
        admin: admin_addr,
        drain_timeout,
        admin_stop,
    })
}

/// The config file being served and the version of it that was loaded.
pub struct Watched {
    pub path: PathBuf,
    /// Taken *before* the file was read, so a change made while starting is still noticed.
    pub loaded: Option<FileStamp>,
}

/// Starts `config` and serves until SIGTERM or ctrl-c, reloading the watched file on SIGHUP and
/// when it changes.
pub async fn serve(config: Config, watched: Option<Watched>) -> anyhow::Result<()> {
    serve_started(start(config).await?, watched).await
}

/// Serves what [`start`] started until SIGTERM or ctrl-c (see [`serve`]), then drains for up to
/// the drain timeout of the config last applied.
pub async fn serve_started(running: Running, watched: Option<Watched>) -> anyhow::Result<()> {
    let mut drain_timeout = running.drain_timeout;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let (path, mut last_seen) = match watched {
        Some(w) => (Some(w.path), w.loaded),
        None => (None, None),
    };
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hangup.recv() => {
                if let Some(path) = &path {
                    tracing::info!("SIGHUP: reloading {}", path.display());
                    if let Some(d) = reload(&running, path).await {
                        drain_timeout = d;
                    }
                    last_seen = file_stamp(path);
                }
            }
            _ = watch.tick() => {
                if let Some(path) = &path {
                    let stamp = file_stamp(path);
                    if stamp.is_some() && stamp != last_seen {
                        last_seen = stamp;
                        tracing::info!("{} changed: reloading", path.display());
                        if let Some(d) = reload(&running, path).await {
                            drain_timeout = d;
                        }
                    }
                }
            }
        }
    }
    tracing::info!(
        "draining: no new connections, waiting up to {} ms for open requests",
        drain_timeout.as_millis()
    );
    running.admin_stop.cancel();
    running.discovery.stop();
    if let Some(dns) = &running.dns {
        dns.stop();
    }
    if running.gateway.shutdown(drain_timeout).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
    Ok(())
}

/// Reloads the config file; a bad file is refused and the running config keeps serving.
/// Returns the new drain timeout when the reload applied.
async fn reload(running: &Running, path: &Path) -> Option<Duration> {
    let gateway = &running.gateway;
    let record = |result: &'static str| {
        gateway
            .metrics()
            .reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    };
    let config = match gatehouse_config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            tracing::error!("config reload refused, the previous config keeps serving:\n{errors}");
            record("rejected");
            return None;
        }
    };
    let drain_timeout = config.server.drain_timeout;
    let admin_before = gateway.snapshot().config.admin.as_ref().map(|a| a.listen);
    if config.admin.as_ref().map(|a| a.listen) != admin_before {
        tracing::warn!("admin.listen changed: the admin API moves only on restart");
    }
    // Zone files are read before anything is applied: a bad one refuses the whole reload.
    let prepared = match running.dns.as_ref().map(|d| d.prepare(&config)).transpose() {
        Ok(p) => p,
        Err(err) => {
            tracing::error!("config reload refused, the previous config keeps serving: {err:#}");
            record("rejected");
            return None;
        }
    };
    let applied = config.clone();
    match gateway.apply(config).await {
        Ok(generation) => {
            running.discovery.apply(&applied);
            match (&running.dns, prepared) {
                (Some(dns), Some(prepared)) => dns.apply(&applied, prepared),
                _ if applied.dns.is_some() => {
                    tracing::warn!("[dns] was added: the DNS server starts only on restart");
                }
                _ => {}
            }
            tracing::info!(generation, "config reloaded");
            record("applied");
            Some(drain_timeout)
        }
        Err(err) => {
            tracing::error!("config reload refused, the previous config keeps serving: {err}");
            record("rejected");
            None
        }
    }
}

/// What identifies a version of the file: its length and a hash of its bytes. Modification
/// times are not enough: the kernel stamps files with a coarse clock (a few ms), so two quick
/// saves of equal length could look the same. Reading a config file twice a second is cheap.
pub type FileStamp = (usize, u64);

pub fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::hash::{Hash, Hasher};
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some((bytes.len(), hasher.finish()))
}
