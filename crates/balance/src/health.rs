//! Active health-check state of one endpoint: rise/fall hysteresis, slow start and check timing.
//!
//! The checker (in gatehouse-discovery, later) owns the timers and the probes; this module only
//! decides. A probe result goes in through [`HealthState::record`], which flips the state only
//! after `rise` passes in a row (to healthy) or `fall` failures in a row (to unhealthy), as in
//! HAProxy, so one lost probe does not drop an endpoint and one lucky probe does not restore
//! it.
//!
//! Slow start: an endpoint that just recovered has cold caches and connection pools, and
//! giving it its full share at once can knock it straight over again. For `slow_start` after
//! a recovery, [`HealthState::weight_permille`] ramps linearly from
//! `slow_start_min_permille` (10% by default) to 1000; the balancer scales the endpoint's
//! weight by it.
//!
//! Initial state: [`Health::Healthy`] by default. Static endpoints come from a config the
//! operator wrote, and starting them unhealthy would refuse all traffic for `rise × interval`
//! after every start (nginx and HAProxy also start servers up). Endpoints that discovery adds
//! at runtime may start [`Health::Unhealthy`] (no traffic until `rise` passes), or healthy
//! with [`HealthState::begin_slow_start`] to ease them in.

use std::time::Duration;

use crate::time::saturating_nanos;

/// Shortest check interval: a zero interval would make the checker spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Full weight, in permille.
const FULL_PERMILLE: u32 = 1000;

/// Health-check settings of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive passes that make an unhealthy endpoint healthy (0 reads as 1).
    pub rise: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy (0 reads as 1).
    pub fall: u32,
    /// Time between checks (at least 1 ms).
    pub interval: Duration,
    /// Each check is scheduled `interval ± jitter` (uniformly), so a fleet of proxies does not
    /// probe an endpoint in lockstep. Capped at half the interval.
    pub jitter: Duration,
    /// Length of the weight ramp after a recovery; zero disables slow start.
    pub slow_start: Duration,
    /// Weight at the start of the ramp, in permille of the full weight (capped at 1000).
    pub slow_start_min_permille: u32,
    /// State before the first check.
    pub initial: Health,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            interval: Duration::from_secs(5),
            jitter: Duration::from_millis(500),
            slow_start: Duration::from_secs(30),
            slow_start_min_permille: 100,
            initial: Health::Healthy,
        }
    }
}

/// Health of an endpoint as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// May receive traffic.
    Healthy,
    /// Excluded from picks until `rise` checks pass.
    Unhealthy,
}

/// Health-check state of one endpoint (see the module docs).
#[derive(Debug, Clone)]
pub struct HealthState {
    config: HealthConfig,
    health: Health,
    /// Passes in a row (reset by a failure).
    passes: u32,
    /// Failures in a row (reset by a pass).
    failures: u32,
    /// Start of the current slow-start ramp, if one is running.
    ramp_start: Option<u64>,
    /// Latest time seen; earlier times read as this one.
    latest_nanos: u64,
}

impl HealthState {
    /// State before any check, per `config.initial`.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            health: config.initial,
            passes: 0,
            failures: 0,
            ramp_start: None,
            latest_nanos: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Replaces the configuration (a reload) keeping the current health and counters.
    pub fn set_config(&mut self, config: HealthConfig) {
        self.config = config;
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        self.health == Health::Healthy
    }

    /// Records one check result; returns the new health when it changed. A recovery starts
    /// slow start (when configured).
    pub fn record(&mut self, now_nanos: u64, passed: bool) -> Option<Health> {
        let now = self.observe(now_nanos);
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            if self.health == Health::Unhealthy && self.passes >= self.config.rise.max(1) {
                self.health = Health::Healthy;
                self.begin_slow_start(now);
                return Some(Health::Healthy);
            }
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.health == Health::Healthy && self.failures >= self.config.fall.max(1) {
                self.health = Health::Unhealthy;
                self.ramp_start = None;
                return Some(Health::Unhealthy);
            }
        }
        None
    }

    /// Starts a slow-start ramp at `now` (done by [`Self::record`] on recovery; call it for a
    /// healthy endpoint that was just added). A no-op when slow start is disabled.
    pub fn begin_slow_start(&mut self, now_nanos: u64) {
        let now = self.observe(now_nanos);
        if !self.config.slow_start.is_zero() {
            self.ramp_start = Some(now);
        }
    }

    /// Share of its configured weight the endpoint should get at `now`, in permille: 0 while
    /// unhealthy, ramping linearly from `slow_start_min_permille` to 1000 during slow start,
    /// 1000 otherwise.
    pub fn weight_permille(&self, now_nanos: u64) -> u32 {
        if self.health == Health::Unhealthy {
            return 0;
        }
        let Some(start) = self.ramp_start else {
            return FULL_PERMILLE;
        };
        let ramp = saturating_nanos(self.config.slow_start);
        let elapsed = now_nanos.max(self.latest_nanos).saturating_sub(start);
        if ramp == 0 || elapsed >= ramp {
            return FULL_PERMILLE;
        }
        let min = self.config.slow_start_min_permille.min(FULL_PERMILLE);
        let gained = u128::from(FULL_PERMILLE - min) * u128::from(elapsed) / u128::from(ramp);
        // gained < FULL_PERMILLE - min because elapsed < ramp, so it fits in u32.
        min + u32::try_from(gained).unwrap_or(FULL_PERMILLE - min)
    }

    /// [`Self::weight_permille`] as a factor in 0.0..=1.0.
    pub fn weight_factor(&self, now_nanos: u64) -> f64 {
        f64::from(self.weight_permille(now_nanos)) / f64::from(FULL_PERMILLE)
    }

    /// `weight` scaled by [`Self::weight_permille`], at least 1 while healthy (a balancer
    /// treats 0 as 1 anyway) and 0 while unhealthy.
    pub fn scale_weight(&self, weight: u32, now_nanos: u64) -> u32 {
        if self.health == Health::Unhealthy {
            return 0;
        }
        let permille = self.weight_permille(now_nanos);
        let scaled = u64::from(weight) * u64::from(permille) / u64::from(FULL_PERMILLE);
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    /// When the next check is due, given the time of this one and a uniformly random `random`:
    /// `now + interval + offset`, with the offset uniform in `-jitter..=+jitter`.
    pub fn next_check_at(&self, now_nanos: u64, random: u64) -> u64 {
        let now = now_nanos.max(self.latest_nanos);
        let interval = saturating_nanos(self.config.interval.max(MIN_INTERVAL));
        let jitter = saturating_nanos(self.config.jitter).min(interval / 2);
        // Uniform in 0..=2*jitter by multiply-shift (no modulo bias worth speaking of).
        let span = u128::from(jitter) * 2 + 1;
        let offset = ((u128::from(random) * span) >> 64) as u64;
        now.saturating_add(interval - jitter).saturating_add(offset)
    }

    fn observe(&mut self, now_nanos: u64) -> u64 {
        self.latest_nanos = self.latest_nanos.max(now_nanos);
        self.latest_nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn config() -> HealthConfig {
        HealthConfig {
            rise: 2,
            fall: 3,
            interval: Duration::from_secs(2),
            jitter: Duration::from_millis(200),
            slow_start: Duration::from_secs(10),
            slow_start_min_permille: 100,
            initial: Health::Healthy,
        }
    }

    #[test]
    fn starts_in_the_configured_state() {
        assert!(HealthState::new(config()).is_healthy());
        let down = HealthState::new(HealthConfig {
            initial: Health::Unhealthy,
            ..config()
        });
        assert_eq!(down.health(), Health::Unhealthy);
        assert_eq!(down.weight_permille(0), 0);
        // A static endpoint starting healthy gets its full weight at once.
        assert_eq!(HealthState::new(config()).weight_permille(0), 1000);
    }

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        let mut state = HealthState::new(config());
        assert_eq!(state.record(0, false), None);
        assert_eq!(state.record(1, false), None);
        assert_eq!(state.record(2, true), None); // breaks the run
        assert_eq!(state.record(3, false), None);
        assert_eq!(state.record(4, false), None);
        assert_eq!(state.record(5, false), Some(Health::Unhealthy));
        assert!(!state.is_healthy());
        // Further failures change nothing.
        assert_eq!(state.record(6, false), None);
    }

    #[test]
    fn rises_after_rise_passes_in_a_row() {
        let mut state = HealthState::new(HealthConfig {
            initial: Health::Unhealthy,
            ..config()
        });
        assert_eq!(state.record(0, true), None);
        assert_eq!(state.record(1, false), None); // breaks the run
        assert_eq!(state.record(2, true), None);
        assert_eq!(state.record(3, true), Some(Health::Healthy));
        assert_eq!(state.record(4, true), None);
    }

    #[test]
    fn zero_thresholds_read_as_one() {
        let mut state = HealthState::new(HealthConfig {
            rise: 0,
            fall: 0,
            ..config()
        });
        assert_eq!(state.record(0, false), Some(Health::Unhealthy));
        assert_eq!(state.record(0, true), Some(Health::Healthy));
    }

    #[test]
    fn recovery_ramps_the_weight_linearly() {
        let mut state = HealthState::new(config());
        for t in 0..3 {
            state.record(t, false);
        }
        state.record(100 * SEC, true);
        assert_eq!(state.record(100 * SEC, true), Some(Health::Healthy));
        let start = 100 * SEC;
        assert_eq!(state.weight_permille(start), 100);
        assert_eq!(state.weight_permille(start + 5 * SEC), 550);
        assert_eq!(state.weight_permille(start + 10 * SEC - 1), 999);
        assert_eq!(state.weight_permille(start + 10 * SEC), 1000);
        assert_eq!(state.weight_permille(start + 1000 * SEC), 1000);
        assert!((state.weight_factor(start + 5 * SEC) - 0.55).abs() < 1e-9);
        // The ramp never goes down as time passes.
        let mut previous = 0;
        for ms in (0..=10_000).step_by(7) {
            let permille = state.weight_permille(start + ms * MS);
            assert!(permille >= previous);
            previous = permille;
        }
    }

    #[test]
    fn scaled_weights() {
        let mut state = HealthState::new(config());
        state.begin_slow_start(0);
        assert_eq!(state.scale_weight(50, 0), 5);
        assert_eq!(state.scale_weight(1, 0), 1); // never below 1 while healthy
        assert_eq!(state.scale_weight(u32::MAX, 10 * SEC), u32::MAX);
        for t in 1..=3 {
            state.record(t, false);
        }
        assert_eq!(state.scale_weight(50, 20 * SEC), 0);
        assert_eq!(state.weight_factor(20 * SEC), 0.0);
    }

    #[test]
    fn slow_start_can_be_disabled_or_start_elsewhere() {
        let mut off = HealthState::new(HealthConfig {
            slow_start: Duration::ZERO,
            ..config()
        });
        off.begin_slow_start(0);
        assert_eq!(off.weight_permille(0), 1000);

        let mut custom = HealthState::new(HealthConfig {
            slow_start_min_permille: 5000,
            ..config()
        });
        custom.begin_slow_start(0);
        assert_eq!(custom.weight_permille(0), 1000);

        let mut zero = HealthState::new(HealthConfig {
            slow_start_min_permille: 0,
            ..config()
        });
        zero.begin_slow_start(0);
        assert_eq!(zero.weight_permille(0), 0);
        assert_eq!(zero.scale_weight(10, 0), 1);
        assert_eq!(zero.weight_permille(5 * SEC), 500);
    }

    #[test]
    fn going_down_cancels_the_ramp() {
        let mut state = HealthState::new(config());
        state.begin_slow_start(0);
        for t in 1..=3 {
            state.record(t, false);
        }
        state.set_config(HealthConfig {
            rise: 1,
            ..config()
        });
        assert_eq!(state.config().rise, 1);
        // Recovering at 50 s starts a new ramp from there, not from 0.
        assert_eq!(state.record(50 * SEC, true), Some(Health::Healthy));
        assert_eq!(state.weight_permille(50 * SEC), 100);
    }

    #[test]
    fn time_going_backwards_does_not_rewind_the_ramp() {
        let mut state = HealthState::new(config());
        state.begin_slow_start(5 * SEC);
        assert_eq!(state.weight_permille(0), 100);
        state.record(10 * SEC, true);
        // A reading from the past is taken at the latest time seen (10 s: halfway).
        assert_eq!(state.weight_permille(SEC), 550);
        assert!(state.next_check_at(0, 0) >= 10 * SEC);
    }

    #[test]
    fn next_check_is_interval_plus_minus_jitter() {
        let state = HealthState::new(config());
        let now = 1000 * SEC;
        assert_eq!(state.next_check_at(now, 0), now + 1800 * MS);
        assert_eq!(state.next_check_at(now, u64::MAX), now + 2200 * MS);
        assert_eq!(state.next_check_at(now, u64::MAX / 2), now + 2000 * MS);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut low = 0;
        for _ in 0..10_000 {
            let at = state.next_check_at(now, rng.u64(..));
            assert!((now + 1800 * MS..=now + 2200 * MS).contains(&at));
            if at < now + 2000 * MS {
                low += 1;
            }
        }
        // Uniform: about half fall below the interval.
        assert!((4500..5500).contains(&low), "{low}");
    }

    #[test]
    fn odd_intervals_never_spin_or_overflow() {
        let zero = HealthState::new(HealthConfig {
            interval: Duration::ZERO,
            jitter: Duration::from_secs(60),
            ..config()
        });
        // 1 ms minimum, jitter capped at half of it.
        assert_eq!(zero.next_check_at(0, 0), MS / 2);
        assert_eq!(zero.next_check_at(0, u64::MAX), MS + MS / 2);
        let huge = HealthState::new(HealthConfig {
            interval: Duration::MAX,
            jitter: Duration::MAX,
            ..config()
        });
        assert_eq!(huge.next_check_at(u64::MAX, u64::MAX), u64::MAX);
    }
}
