//! `[dns]` inside `gatehouse run`: the DNS server, its zone files, and the service zone kept in
//! step with the registry and the gateway's health state.
//!
//! The zone set is rebuilt (and swapped into the running server through `SharedZones`, the
//! sockets untouched) when membership changes (the registry's watch fires), when health
//! changes (the directory's view is polled every [`HEALTH_POLL`] and compared; health has no
//! notification of its own), and on every reload (zone files are re-read). Queries never
//! wait for a rebuild: they read whatever set is stored.

use anyhow::Context;
use gatehouse_config::{Config, DnsAnswerPolicy, DnsSettings};
use gatehouse_discovery::{ServiceDirectory, ServiceView};
use gatehouse_dns::{
    Authority, Endpoint, Policy, ServiceOverride, ServiceRecords, ServiceSnapshot, ServiceZone,
    ServiceZoneSettings, SharedZones, ZoneSet,
};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often health is compared: a failed health check or ejection reaches DNS within this
/// (plus the answer TTL at the client). Comparing a view of a few hundred instances costs
/// microseconds.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// The running DNS server and what it was built from.
pub struct DnsRuntime {
    server: Mutex<Option<gatehouse_dns::Server>>,
    zones: SharedZones,
    state: Arc<Mutex<State>>,
    directory: ServiceDirectory,
    stop: CancellationToken,
}

/// What the current zone set came from.
struct State {
    /// The `[dns]` it was built for.
    settings: DnsSettings,
    files: Vec<Arc<dyn Authority>>,
    service: Option<ServiceZoneSettings>,
    last: Option<ServiceSnapshot>,
    serial: u32,
}

/// Zone files read and compiled for a config, before the config is applied (so a bad zone
/// file refuses the whole reload).
pub struct Prepared {
    files: Option<Vec<Arc<dyn Authority>>>,
}

impl DnsRuntime {
    /// Loads the zones of `config.dns` (None without `[dns]`), binds UDP and TCP, prints
    /// `gatehouse: dns on udp+tcp ADDR` and starts following the registry.
    pub fn start(config: &Config, directory: ServiceDirectory) -> anyhow::Result<Option<Self>> {
        let Some(settings) = config.dns.clone() else {
            return Ok(None);
        };
        let files = load_files(&settings)?;
        let service = service_settings(config);
        let mut state = State {
            settings: settings.clone(),
            files,
            service,
            last: None,
            serial: 0,
        };
        let set = state.build(&directory.view()).map_err(anyhow::Error::msg)?;
        let zones = set.shared();
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(4);
        let server = gatehouse_dns::Server::start(Arc::clone(&zones), settings.listen, workers)
            .with_context(|| format!("cannot listen for DNS on {}", settings.listen))?;
        println!("gatehouse: dns on udp+tcp {}", server.udp_addr);
        let runtime = DnsRuntime {
            server: Mutex::new(Some(server)),
            zones,
            state: Arc::new(Mutex::new(state)),
            directory,
            stop: CancellationToken::new(),
        };
        tokio::spawn(follow(
            runtime.directory.clone(),
            Arc::clone(&runtime.state),
            Arc::clone(&runtime.zones),
            runtime.stop.clone(),
        ));
        Ok(Some(runtime))
    }

    /// Reads the zone files of `config` (every reload re-reads them, so SIGHUP after editing
    /// a zone file serves the edit).
    pub fn prepare(&self, config: &Config) -> anyhow::Result<Prepared> {
        let files = config.dns.as_ref().map(load_files).transpose()?;
        Ok(Prepared { files })
    }

    /// Takes a reloaded config's `[dns]` and `[regions]` and the zone files read for it:
    /// rebuilds and swaps the zone set. The
    /// listener stays where it is (a changed `dns.listen` or a removed `[dns]` needs a
    /// restart, and says so).
    pub fn apply(&self, config: &Config, prepared: Prepared) {
        let Some(new) = &config.dns else {
            tracing::warn!("[dns] was removed: the DNS server keeps serving until restart");
            return;
        };
        let mut state = self.state.lock();
        if new.listen != state.settings.listen {
            tracing::warn!(
                old = %state.settings.listen,
                new = %new.listen,
                "dns.listen changed: the DNS server moves only on restart"
            );
        }
        if let Some(files) = prepared.files {
            state.files = files;
        }
        state.settings = new.clone();
        state.service = service_settings(config);
        state.last = None;
        match state.build(&self.directory.view()) {
            Ok(set) => {
                self.zones.store(Arc::new(set));
                tracing::info!("DNS zones reloaded");
            }
            Err(err) => {
                tracing::error!("DNS zones not reloaded, the previous ones keep serving: {err}")
            }
        }
    }

    /// Where the server answers (UDP and TCP share it); None once stopped.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.server.lock().as_ref().map(|s| s.udp_addr)
    }

    pub fn stop(&self) {
        self.stop.cancel();
        if let Some(server) = self.server.lock().take() {
            server.stop();
        }
    }
}

impl State {
    /// The zone files plus a service zone for `view`; remembers the snapshot.
    fn build(&mut self, view: &ServiceView) -> Result<ZoneSet, String> {
        let mut zones = self.files.clone();
        if let Some(settings) = &self.service {
            let snapshot = snapshot(view);
            self.serial = self.serial.wrapping_add(1);
            let zone = ServiceZone::build(settings, &snapshot, self.serial)?;
            zones.push(Arc::new(zone));
            self.last = Some(snapshot);
        }
        ZoneSet::new(zones)
    }
}

/// Rebuilds the service zone whenever membership or health changes, until `stop`.
async fn follow(
    directory: ServiceDirectory,
    state: Arc<Mutex<State>>,
    zones: SharedZones,
    stop: CancellationToken,
) {
    let mut membership = directory.subscribe();
    let mut poll = tokio::time::interval(HEALTH_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = membership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = poll.tick() => {}
        }
        let view = directory.view();
        let mut state = state.lock();
        if state.service.is_none() || state.last.as_ref() == Some(&snapshot(&view)) {
            continue;
        }
        match state.build(&view) {
            Ok(set) => {
                zones.store(Arc::new(set));
                tracing::debug!(serial = state.serial, "service zone rebuilt");
            }
            Err(err) => tracing::error!("service zone not rebuilt: {err}"),
        }
    }
}

fn load_files(settings: &DnsSettings) -> anyhow::Result<Vec<Arc<dyn Authority>>> {
    settings
        .zones
        .iter()
        .map(|path| {
            gatehouse_dns::load_zone(path)
                .map(|z| Arc::new(z) as Arc<dyn Authority>)
                .map_err(|e| anyhow::anyhow!("dns.zones: {e}"))
        })
        .collect()
}

/// The service zone's settings from `[dns.services]` and `[regions]`; None without the table.
fn service_settings(config: &Config) -> Option<ServiceZoneSettings> {
    let dns = config.dns.as_ref()?;
    let services = dns.services.as_ref()?;
    let policy = |p: DnsAnswerPolicy| match p {
        DnsAnswerPolicy::RoundRobin => Policy::RoundRobin,
        DnsAnswerPolicy::Weighted => Policy::Weighted,
    };
    let listen_ip = dns.listen.ip();
    Some(ServiceZoneSettings {
        origin: services.zone.clone(),
        ttl: services.ttl.as_secs() as u32,
        policy: policy(services.policy),
        overrides: services
            .overrides
            .iter()
            .map(|o| ServiceOverride {
                service: o.service.clone(),
                ttl: o.ttl.map(|t| t.as_secs() as u32),
                policy: o.policy.map(policy),
            })
            .collect(),
        regions: config
            .regions
            .iter()
            .map(|r| {
                let nets = r
                    .cidrs
                    .iter()
                    .map(|n| (n.network(), n.prefix_len()))
                    .collect();
                (r.name.clone(), nets)
            })
            .collect(),
        // ns.ZONE gets the listener's address only when it is one a client could use.
        nameserver_addrs: if listen_ip.is_unspecified() {
            Vec::new()
        } else {
            vec![listen_ip]
        },
    })
}

/// The directory's view as the plain data the DNS crate builds from.
fn snapshot(view: &ServiceView) -> ServiceSnapshot {
    ServiceSnapshot {
        services: view
            .services
            .iter()
            .map(|s| ServiceRecords {
                name: s.name.clone(),
                instances: s
                    .instances
                    .iter()
                    .map(|i| Endpoint {
                        id: i.instance.id.clone(),
                        addr: i.instance.address,
                        port: i.instance.port,
                        weight: i.instance.weight,
                        region: i.instance.region.clone(),
                        healthy: i.healthy,
                    })
                    .collect(),
            })
            .collect(),
    }
}
