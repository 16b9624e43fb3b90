//! Fault injection, set at runtime through the admin API: added latency, aborts with a status,
//! and blackholes (an unreachable upstream: the request hangs until its deadline, then 504).
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
