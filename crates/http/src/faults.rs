//! Fault injection, set in the config file (`fault` on a route or cluster) or at runtime through
//! the admin API: added latency, aborts with a status, and blackholes (an unreachable upstream:
//! the request hangs until its deadline, then 504).
//!
//! Each route and cluster name has one slot, looked up once per snapshot, so a request pays
//! one atomic load per slot and nothing else while no fault is set. Slots outlive
//! reloads: a fault set on a route stays while the route keeps its name.

use arc_swap::ArcSwapOption;
use gatehouse_resilience::{BasisPoints, FaultConfig};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The fault of one route or cluster. A flag sits beside the pointer: "is there one?", asked by
/// every request, is then one atomic load (arc-swap's borrowed load costs tens of
/// nanoseconds).
#[derive(Default)]
pub struct FaultCell {
    fault: ArcSwapOption<Fault>,
    set: AtomicBool,
    /// Serialises setters, so the flag always ends up telling whether a fault is stored.
    writing: Mutex<()>,
}

impl FaultCell {
    /// The fault, if one is set.
    pub fn get(&self) -> Option<Arc<Fault>> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.fault.load_full()
    }

    fn store(&self, fault: Option<Arc<Fault>>) {
        let _writing = self.writing.lock();
        let set = fault.is_some();
        // The fault before the flag: whoever sees the flag finds the fault.
        self.fault.store(fault);
        self.set.store(set, Ordering::Release);
    }
}

pub type FaultSlot = Arc<FaultCell>;

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
                slot.get().map(|fault| (*target, name.clone(), fault))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abort_all() -> Fault {
        Fault {
            config: FaultConfig {
                abort_status: 503,
                abort_percent: BasisPoints::from_percent(100.0),
                ..FaultConfig::default()
            },
            blackhole_percent: BasisPoints::from_percent(0.0),
        }
    }

    #[test]
    fn a_slot_gives_what_was_set_until_it_is_cleared() {
        let faults = Faults::default();
        let slot = faults.slot(Target::Route, "r");
        assert!(slot.get().is_none());
        faults.set(Target::Route, "r", Some(abort_all()));
        // The slot handed out before the fault was set sees it: slots are shared, not copied.
        assert_eq!(slot.get().as_deref(), Some(&abort_all()));
        assert_eq!(faults.active().len(), 1);
        faults.set(Target::Route, "r", None);
        assert!(slot.get().is_none());
        assert!(faults.active().is_empty());
    }
}
