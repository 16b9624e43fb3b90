//! Fault injection, set in the config file (`fault` on a route or cluster) or at runtime through
//! the admin API: added latency, aborts with a status, and blackholes (an unreachable upstream:
//! the request hangs until its deadline, then 504).
//!
//! Each route and cluster name has one slot, looked up once per snapshot, so a request pays
//! one atomic load per slot and nothing else while no fault is set. Slots outlive reloads: a
//! fault set on a route stays while the route keeps its name.

use arc_swap::ArcSwapOption;
use gatehouse_resilience::{BasisPoints, FaultConfig};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One fault setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Latency and aborts.
    pub config: FaultConfig,
    /// Share of requests that never get an answer before their deadline.
    pub blackhole_percent: BasisPoints,
}

/// What a fault does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<u16>,
    pub blackhole: bool,
}

impl Fault {
    pub fn decide(&self) -> Injected {
        let action = self.config.decide(fastrand::u64(..));
        Injected {
            delay: action.delay,
            abort: action.abort,
            blackhole: self.blackhole_percent.hit(fastrand::u64(..)),
        }
    }
}

pub type FaultSlot = Arc<ArcSwapOption<Fault>>;

/// A fault as the config file states it.
pub fn from_settings(settings: gatehouse_config::FaultSettings) -> Fault {
    Fault {
        config: FaultConfig {
            delay: settings.delay,
            delay_jitter: settings.delay_jitter,
            delay_percent: BasisPoints::from_percent(settings.delay_percent),
            abort_status: settings.abort_status,
            abort_percent: BasisPoints::from_percent(settings.abort_percent),
        },
        blackhole_percent: BasisPoints::from_percent(settings.blackhole_percent),
    }
}

/// Whether a fault targets a route or a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Route,
    Cluster,
}

/// Every fault slot by target and name.
#[derive(Default)]
pub struct Faults {
    slots: Mutex<BTreeMap<(Target, String), FaultSlot>>,
}

impl Faults {
    /// The slot of a route or cluster (created empty on first use).
    pub fn slot(&self, target: Target, name: &str) -> FaultSlot {
        Arc::clone(
            self.slots
                .lock()
                .entry((target, name.to_owned()))
                .or_default(),
        )
    }

    /// Applies the faults a config file sets, where they differ from `previous`'s: a reload that
    /// leaves a route's `fault` table as it was keeps whatever the admin API set since.
    pub fn apply_config(
        &self,
        config: &gatehouse_config::Config,
        previous: &gatehouse_config::Config,
    ) {
        for route in &config.routes {
            let before = previous
                .routes
                .iter()
                .find(|r| r.name == route.name)
                .and_then(|r| r.fault);
            if route.fault != before {
                self.set(Target::Route, &route.name, route.fault.map(from_settings));
            }
        }
        for cluster in &config.clusters {
            let before = previous.cluster(&cluster.name).and_then(|c| c.fault);
            if cluster.fault != before {
                self.set(
                    Target::Cluster,
                    &cluster.name,
                    cluster.fault.map(from_settings),
                );
            }
        }
    }

    /// Sets (Some) or clears (None) the fault of a route or cluster.
    pub fn set(&self, target: Target, name: &str, fault: Option<Fault>) {
        self.slot(target, name).store(fault.map(Arc::new));
    }

    /// Every fault currently set.
    pub fn active(&self) -> Vec<(Target, String, Arc<Fault>)> {
        self.slots
            .lock()
            .iter()
            .filter_map(|((target, name), slot)| {
                slot.load_full().map(|fault| (*target, name.clone(), fault))
            })
            .collect()
    }
}
