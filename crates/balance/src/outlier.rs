//! Passive outlier detection: ejecting endpoints that live traffic shows to be failing or slow.
//!
//! Active health checks ask an endpoint "are you alive?" every few seconds; outlier detection
//! reads the answers real requests already got, so it reacts within a handful of requests and
//! catches endpoints that pass a health check yet fail real work. One [`OutlierDetector`] per
//! cluster holds the state of every endpoint by index (the caller maps indices to endpoints,
//! as the [`Balancer`](crate::Balancer) does) and answers [`OutlierDetector::is_ejected`] for
//! the balancer's eligibility check.
//!
//! Rules (modelled on Envoy's outlier detection):
//! - **Consecutive 5xx**: `consecutive_5xx` responses in a row with status 500–599 or a
//!   gateway failure eject the endpoint.
//! - **Consecutive gateway failures**: `consecutive_gateway_failures` in a row of 502/503/504
//!   or a gateway failure (connect refused or timed out, reset or garbage before a response)
//!   eject it. Any other outcome (including 4xx) resets both counters.
//! - **Latency**: at each [`OutlierDetector::sweep`], an endpoint whose recent p99 is above
//!   `factor` × the median p99 of its peers is ejected, when it and enough peers have enough
//!   samples (see [`LatencyOutlierConfig`]). The slowest (by ratio) go first.
//! - **Duration**: `base_ejection × times ejected`, capped at `max_ejection`. The multiplier
//!   drops by one for every `base_ejection` the endpoint then stays in rotation without being
//!   ejected, so an endpoint that flapped once long ago is not punished forever.
//! - **Cap**: with n endpoints, at most `max(1, floor(n × max_ejection_percent / 100))` may be
//!   ejected at once, and never all of them: at least one endpoint always stays in rotation
//!   (so with n = 1 nothing is ever ejected). `max_ejection_percent = 0` disables ejection.
//!   A detection beyond the cap is still reported, with `enforced: false`, so it can be
//!   counted.
//! - **Return**: an ejection ends when its time is up, lazily: the next call that looks at
//!   the endpoint after that time sees it back, with its counters and latency samples reset.

use std::time::Duration;

use crate::latency::LatencyWindow;
use crate::time::saturating_nanos;

/// Outlier detection settings of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx (or gateway failures) that eject an endpoint; 0 disables the rule.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (502/503/504 or no response at all) that eject an
    /// endpoint; 0 disables the rule.
    pub consecutive_gateway_failures: u32,
    /// Ejection time of a first ejection; the n-th ejection lasts n times this.
    pub base_ejection: Duration,
    /// Upper bound of one ejection.
    pub max_ejection: Duration,
    /// Share of the cluster that may be ejected at once, in percent (values above 100 read as
    /// 100). See the module docs for the exact rule.
    pub max_ejection_percent: u32,
    /// Latency outlier detection; None disables it (and saves the per-endpoint histograms).
    pub latency: Option<LatencyOutlierConfig>,
}

impl Default for OutlierConfig {
    /// Envoy's defaults for the consecutive rules; latency detection off.
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            latency: None,
        }
    }
}

/// Latency outlier settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyOutlierConfig {
    /// An endpoint is an outlier when its quantile latency exceeds `factor` × its peers'
    /// median. Values below 1 (or NaN) read as 1.
    pub factor: f64,
    /// The quantile compared, e.g. 0.99.
    pub quantile: f64,
    /// Samples an endpoint needs in the window before its latency counts, either as a
    /// candidate or as a peer.
    pub min_samples: u64,
    /// Endpoints (candidate included) with enough samples needed before any latency ejection;
    /// at least 2. Comparing against too few peers ejects on noise.
    pub min_endpoints: usize,
    /// Latency at or below which an endpoint is never a latency outlier: 300 µs against 50 µs
    /// is a big ratio but no problem.
    pub min_outlier_latency: Duration,
    /// How far back latency samples count.
    pub window: Duration,
}

impl Default for LatencyOutlierConfig {
    fn default() -> Self {
        Self {
            factor: 3.0,
            quantile: 0.99,
            min_samples: 100,
            min_endpoints: 3,
            min_outlier_latency: Duration::from_millis(10),
            window: Duration::from_secs(30),
        }
    }
}

/// What one request to an endpoint ended with, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No response: connect refused or timed out, reset or invalid response before a
    /// complete head. Counts as both a 5xx and a gateway failure.
    GatewayFailure,
}

/// Why an endpoint was (or would have been) ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `consecutive_5xx` reached.
    Consecutive5xx,
    /// `consecutive_gateway_failures` reached.
    ConsecutiveGatewayFailure,
    /// Latency quantile above `factor` × the peers' median.
    Latency {
        /// The endpoint's latency quantile, in nanoseconds.
        endpoint_nanos: u64,
        /// The median of its peers' quantiles, in nanoseconds.
        peer_median_nanos: u64,
    },
}

/// One ejection decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Endpoint index.
    pub index: usize,
    /// Which rule fired.
    pub reason: Reason,
    /// False when the ejection cap stopped it: the endpoint stays in rotation.
    pub enforced: bool,
    /// When the ejection ends (monotonic nanoseconds); equal to the decision time when not
    /// enforced.
    pub until_nanos: u64,
}

/// What a periodic [`OutlierDetector::sweep`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Endpoints whose ejection ended (since the last call that noticed).
    pub returned: Vec<usize>,
    /// Latency ejections decided in this sweep (enforced or not).
    pub ejections: Vec<Ejection>,
}

/// Outlier state of every endpoint of one cluster (see the module docs).
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Vec<EndpointState>,
    /// Latest time seen; earlier times read as this one, so time never goes backwards.
    latest_nanos: u64,
}

#[derive(Debug, Clone)]
struct EndpointState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<u64>,
    /// Ejection multiplier; decays while the endpoint stays in rotation.
    times_ejected: u32,
    /// When the endpoint last came back into rotation (or was created): the start of the
    /// decay of `times_ejected`.
    back_since: u64,
    latency: Option<LatencyWindow>,
}

impl OutlierDetector {
    /// A detector for a cluster of `endpoints` endpoints, none ejected.
    pub fn new(config: OutlierConfig, endpoints: usize) -> Self {
        let mut detector = Self {
            config,
            endpoints: Vec::new(),
            latest_nanos: 0,
        };
        detector.endpoints = (0..endpoints).map(|_| detector.fresh_state()).collect();
        detector
    }

    /// The configuration in force.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Number of endpoints tracked.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when no endpoint is tracked.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Records the outcome of one request to endpoint `index`; returns the ejection it caused,
    /// if any. Results for an endpoint that is currently ejected (requests that were already in
    /// flight) and unknown indices are ignored.
    pub fn record(&mut self, now_nanos: u64, index: usize, outcome: Outcome) -> Option<Ejection> {
        let now = self.observe(now_nanos);
        let config = &self.config;
        let state = self.endpoints.get_mut(index)?;
        state.return_if_due(now);
        if state.is_ejected(now) {
            return None;
        }
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(status) => ((500..=599).contains(&status), matches!(status, 502..=504)),
            Outcome::GatewayFailure => (true, true),
        };
        state.consecutive_5xx = if is_5xx {
            state.consecutive_5xx.saturating_add(1)
        } else {
            0
        };
        state.consecutive_gateway = if is_gateway {
            state.consecutive_gateway.saturating_add(1)
        } else {
            0
        };
        // Gateway failures are a subset of 5xx: name the more specific rule when both fire.
        let reason = if reached(
            state.consecutive_gateway,
            config.consecutive_gateway_failures,
        ) {
            Reason::ConsecutiveGatewayFailure
        } else if reached(state.consecutive_5xx, config.consecutive_5xx) {
            Reason::Consecutive5xx
        } else {
            return None;
        };
        self.eject(now, index, reason)
    }

    /// Records one request latency (nanoseconds) of endpoint `index` for latency detection.
    /// A no-op when latency detection is off, for unknown indices and while ejected.
    pub fn record_latency(&mut self, now_nanos: u64, index: usize, latency_nanos: u64) {
        let now = self.observe(now_nanos);
        let Some(state) = self.endpoints.get_mut(index) else {
            return;
        };
        state.return_if_due(now);
        if state.is_ejected(now) {
            return;
        }
        if let Some(window) = &mut state.latency {
            window.record(now, latency_nanos);
        }
    }

    /// Periodic pass (every few seconds, e.g. Envoy's 10 s interval): ends due ejections and
    /// runs latency detection. Consecutive-failure ejections do not need it; they happen in
    /// [`Self::record`].
    pub fn sweep(&mut self, now_nanos: u64) -> Sweep {
        let now = self.observe(now_nanos);
        let mut sweep = Sweep::default();
        for (index, state) in self.endpoints.iter_mut().enumerate() {
            if state.return_if_due(now) {
                sweep.returned.push(index);
            }
        }
        for (index, reason) in self.latency_outliers(now) {
            if let Some(ejection) = self.eject(now, index, reason) {
                sweep.ejections.push(ejection);
            }
        }
        sweep
    }

    /// Whether endpoint `index` is ejected at `now` (false for unknown indices). This is the
    /// balancer's eligibility check.
    pub fn is_ejected(&self, now_nanos: u64, index: usize) -> bool {
        let now = now_nanos.max(self.latest_nanos);
        self.endpoints
            .get(index)
            .is_some_and(|state| state.is_ejected(now))
    }

    /// When the ejection of endpoint `index` ends, if it is ejected at `now`.
    pub fn ejected_until(&self, now_nanos: u64, index: usize) -> Option<u64> {
        let now = now_nanos.max(self.latest_nanos);
        let state = self.endpoints.get(index)?;
        state.ejected_until.filter(|&until| until > now)
    }

    /// Endpoints ejected at `now`.
    pub fn ejected_count(&self, now_nanos: u64) -> usize {
        let now = now_nanos.max(self.latest_nanos);
        self.endpoints
            .iter()
            .filter(|state| state.is_ejected(now))
            .count()
    }

    /// Most endpoints that may be ejected at once (see the module docs).
    pub fn max_ejected(&self) -> usize {
        let n = self.endpoints.len();
        let percent = self.config.max_ejection_percent.min(100) as usize;
        if percent == 0 || n <= 1 {
            return 0;
        }
        (n * percent / 100).max(1).min(n - 1)
    }

    /// Applies a reload: the new configuration and the new endpoint list, where
    /// `previous[i]` is the old index of new endpoint `i` (None for an endpoint that is new).
    /// Kept endpoints keep their ejection and counters; latency samples are kept unless the
    /// latency window changed.
    pub fn reconfigure(&mut self, config: OutlierConfig, previous: &[Option<usize>]) {
        let window_changed = self.config.latency.as_ref().map(|l| l.window)
            != config.latency.as_ref().map(|l| l.window);
        self.config = config;
        let mut old: Vec<Option<EndpointState>> = std::mem::take(&mut self.endpoints)
            .into_iter()
            .map(Some)
            .collect();
        let endpoints = previous
            .iter()
            .map(|&from| {
                let kept = from.and_then(|i| old.get_mut(i).and_then(Option::take));
                match kept {
                    Some(mut state) => {
                        if window_changed {
                            state.latency = self.fresh_latency();
                        }
                        state
                    }
                    None => self.fresh_state(),
                }
            })
            .collect();
        self.endpoints = endpoints;
    }

    /// Ejects `index` for reason if the cap allows; resets its failure counters either way,
    /// so a suppressed endpoint is reconsidered after another full run of failures rather
    /// than on every single one.
    fn eject(&mut self, now: u64, index: usize, reason: Reason) -> Option<Ejection> {
        let enforced = self.ejected_count(now) < self.max_ejected();
        let base = saturating_nanos(self.config.base_ejection);
        let max = saturating_nanos(self.config.max_ejection);
        let state = self.endpoints.get_mut(index)?;
        state.consecutive_5xx = 0;
        state.consecutive_gateway = 0;
        if !enforced {
            return Some(Ejection {
                index,
                reason,
                enforced: false,
                until_nanos: now,
            });
        }
        if let Some(periods) = now.saturating_sub(state.back_since).checked_div(base) {
            let periods = u32::try_from(periods).unwrap_or(u32::MAX);
            state.times_ejected = state.times_ejected.saturating_sub(periods);
        }
        state.times_ejected = state.times_ejected.saturating_add(1);
        let duration = base.saturating_mul(u64::from(state.times_ejected)).min(max);
        let until = now.saturating_add(duration);
        state.ejected_until = Some(until);
        if let Some(window) = &mut state.latency {
            // Old samples would eject it again as soon as it returns.
            window.clear();
        }
        Some(Ejection {
            index,
            reason,
            enforced: true,
            until_nanos: until,
        })
    }

    /// Latency outliers at `now`, worst (highest ratio to the peer median) first.
    fn latency_outliers(&self, now: u64) -> Vec<(usize, Reason)> {
        let Some(config) = &self.config.latency else {
            return Vec::new();
        };
        // (quantile, index) of every endpoint in rotation with enough samples.
        let mut measured: Vec<(u64, usize)> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, state)| !state.is_ejected(now))
            .filter_map(|(index, state)| {
                let window = state.latency.as_ref()?;
                if window.count(now) < config.min_samples.max(1) {
                    return None;
                }
                Some((window.quantile(now, config.quantile)?, index))
            })
            .collect();
        if measured.len() < config.min_endpoints.max(2) {
            return Vec::new();
        }
        measured.sort_unstable();
        let factor = if config.factor >= 1.0 {
            config.factor
        } else {
            1.0
        };
        let floor = saturating_nanos(config.min_outlier_latency);
        let mut outliers: Vec<(f64, usize, Reason)> = Vec::new();
        for (position, &(latency, index)) in measured.iter().enumerate() {
            let median = median_excluding(&measured, position);
            if latency > floor && latency as f64 > factor * median as f64 {
                let ratio = latency as f64 / median.max(1) as f64;
                let reason = Reason::Latency {
                    endpoint_nanos: latency,
                    peer_median_nanos: median,
                };
                outliers.push((ratio, index, reason));
            }
        }
        outliers.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        outliers
            .into_iter()
            .map(|(_, index, reason)| (index, reason))
            .collect()
    }

    fn observe(&mut self, now_nanos: u64) -> u64 {
        self.latest_nanos = self.latest_nanos.max(now_nanos);
        self.latest_nanos
    }

    fn fresh_state(&self) -> EndpointState {
        EndpointState {
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            ejected_until: None,
            times_ejected: 0,
            back_since: self.latest_nanos,
            latency: self.fresh_latency(),
        }
    }

    fn fresh_latency(&self) -> Option<LatencyWindow> {
        self.config
            .latency
            .as_ref()
            .map(|latency| LatencyWindow::new(latency.window))
    }
}

impl EndpointState {
    fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// Ends an ejection whose time is up; true if it did.
    fn return_if_due(&mut self, now: u64) -> bool {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                // Decay counts from when the ejection ended, not from when it was noticed.
                self.back_since = until;
                self.consecutive_5xx = 0;
                self.consecutive_gateway = 0;
                true
            }
            _ => false,
        }
    }
}

/// True when a counter reached an enabled (non-zero) threshold.
fn reached(count: u32, threshold: u32) -> bool {
    threshold > 0 && count >= threshold
}

/// Median of the values of `sorted` other than the one at `skip` (the mean of the two middle
/// values for an even count); 0 when there are no other values.
fn median_excluding(sorted: &[(u64, usize)], skip: usize) -> u64 {
    let value = |j: usize| {
        let at = if j < skip { j } else { j + 1 };
        sorted.get(at).map_or(0, |&(value, _)| value)
    };
    let rest = sorted.len().saturating_sub(1);
    if rest == 0 {
        return 0;
    }
    if rest % 2 == 1 {
        value(rest / 2)
    } else {
        let (a, b) = (value(rest / 2 - 1), value(rest / 2));
        ((u128::from(a) + u128::from(b)) / 2) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_gateway_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejection_percent: 50,
            latency: None,
        }
    }

    fn fail_5xx(detector: &mut OutlierDetector, now: u64, index: usize, times: u32) {
        for _ in 0..times {
            detector.record(now, index, Outcome::Status(500));
        }
    }

    #[test]
    fn consecutive_5xx_eject_at_the_threshold() {
        let mut detector = OutlierDetector::new(config(), 4);
        assert_eq!(detector.record(0, 1, Outcome::Status(500)), None);
        assert_eq!(detector.record(0, 1, Outcome::Status(503)), None);
        assert!(!detector.is_ejected(0, 1));
        let ejection = detector.record(0, 1, Outcome::Status(500)).unwrap();
        assert_eq!(
            ejection,
            Ejection {
                index: 1,
                reason: Reason::Consecutive5xx,
                enforced: true,
                until_nanos: 10 * SEC,
            }
        );
        assert!(detector.is_ejected(0, 1));
        assert!(!detector.is_ejected(0, 0));
        assert_eq!(detector.ejected_until(0, 1), Some(10 * SEC));
        assert_eq!(detector.ejected_count(0), 1);
    }

    #[test]
    fn a_success_or_4xx_resets_the_run() {
        let mut detector = OutlierDetector::new(config(), 4);
        for round in 0..10 {
            fail_5xx(&mut detector, round, 0, 2);
            let reset = if round % 2 == 0 { 200 } else { 404 };
            assert_eq!(detector.record(round, 0, Outcome::Status(reset)), None);
        }
        assert!(!detector.is_ejected(10, 0));
    }

    #[test]
    fn gateway_failures_have_their_own_threshold() {
        let mut detector = OutlierDetector::new(config(), 4);
        assert_eq!(detector.record(0, 2, Outcome::GatewayFailure), None);
        let ejection = detector.record(0, 2, Outcome::Status(504)).unwrap();
        assert_eq!(ejection.reason, Reason::ConsecutiveGatewayFailure);
        assert!(ejection.enforced);

        // A 500 is a 5xx but not a gateway failure: it breaks the gateway run, so 502, 500,
        // 503 ejects for three consecutive 5xx, not for two gateway failures in a row.
        let mut detector = OutlierDetector::new(config(), 4);
        assert_eq!(detector.record(0, 2, Outcome::Status(502)), None);
        assert_eq!(detector.record(0, 2, Outcome::Status(500)), None);
        let ejection = detector.record(0, 2, Outcome::Status(503)).unwrap();
        assert_eq!(ejection.reason, Reason::Consecutive5xx);
    }

    #[test]
    fn five_hundreds_mixed_with_gateway_failures_count_as_5xx() {
        let mut detector = OutlierDetector::new(
            OutlierConfig {
                consecutive_gateway_failures: 0,
                ..config()
            },
            4,
        );
        assert_eq!(detector.record(0, 0, Outcome::GatewayFailure), None);
        assert_eq!(detector.record(0, 0, Outcome::Status(500)), None);
        let ejection = detector.record(0, 0, Outcome::Status(599)).unwrap();
        assert_eq!(ejection.reason, Reason::Consecutive5xx);
    }

    #[test]
    fn disabled_rules_never_eject() {
        let mut detector = OutlierDetector::new(
            OutlierConfig {
                consecutive_5xx: 0,
                consecutive_gateway_failures: 0,
                ..config()
            },
            4,
        );
        for _ in 0..1000 {
            assert_eq!(detector.record(0, 0, Outcome::GatewayFailure), None);
        }
        assert!(!detector.is_ejected(0, 0));
    }

    #[test]
    fn ejection_ends_when_time_is_up_and_sweep_reports_it() {
        let mut detector = OutlierDetector::new(config(), 4);
        fail_5xx(&mut detector, SEC, 3, 3);
        assert!(detector.is_ejected(SEC, 3));
        assert!(detector.is_ejected(11 * SEC - 1, 3));
        assert!(!detector.is_ejected(11 * SEC, 3));
        assert_eq!(detector.ejected_until(11 * SEC, 3), None);
        let sweep = detector.sweep(12 * SEC);
        assert_eq!(sweep.returned, vec![3]);
        assert!(sweep.ejections.is_empty());
        // Reported once only.
        assert!(detector.sweep(13 * SEC).returned.is_empty());
        // Counters start from zero: two failures are not enough again.
        fail_5xx(&mut detector, 13 * SEC, 3, 2);
        assert!(!detector.is_ejected(13 * SEC, 3));
    }

    #[test]
    fn results_of_requests_in_flight_at_ejection_are_ignored() {
        let mut detector = OutlierDetector::new(config(), 4);
        fail_5xx(&mut detector, 0, 0, 3);
        // More failures while ejected neither extend nor re-eject.
        for _ in 0..10 {
            assert_eq!(detector.record(SEC, 0, Outcome::Status(500)), None);
        }
        assert_eq!(detector.ejected_until(SEC, 0), Some(10 * SEC));
    }

    #[test]
    fn repeat_ejections_grow_up_to_the_cap() {
        let mut detector = OutlierDetector::new(config(), 4);
        let mut now = 0;
        let mut durations = Vec::new();
        for _ in 0..4 {
            fail_5xx(&mut detector, now, 0, 3);
            let until = detector.ejected_until(now, 0).unwrap();
            durations.push((until - now) / SEC);
            // Fail again right after returning: no time for the multiplier to decay.
            now = until;
        }
        assert_eq!(durations, vec![10, 20, 25, 25]);
    }

    #[test]
    fn multiplier_decays_while_in_rotation() {
        let mut detector = OutlierDetector::new(config(), 4);
        fail_5xx(&mut detector, 0, 0, 3); // 1st: 10 s, back at 10 s
        fail_5xx(&mut detector, 10 * SEC, 0, 3); // 2nd: 20 s, back at 30 s
        // 25 s in rotation = two base periods: the multiplier drops from 2 to 0, so the next
        // ejection is a first one again.
        let now = 55 * SEC;
        fail_5xx(&mut detector, now, 0, 3);
        assert_eq!(detector.ejected_until(now, 0), Some(now + 10 * SEC));
    }

    #[test]
    fn the_cap_limits_ejections_and_reports_suppressed_ones() {
        // 5 endpoints at 50%: floor(2.5) = 2 may be ejected.
        let mut detector = OutlierDetector::new(config(), 5);
        assert_eq!(detector.max_ejected(), 2);
        fail_5xx(&mut detector, 0, 0, 3);
        fail_5xx(&mut detector, 0, 1, 3);
        fail_5xx(&mut detector, 0, 2, 2);
        let suppressed = detector.record(0, 2, Outcome::Status(500)).unwrap();
        assert!(!suppressed.enforced);
        assert_eq!(suppressed.until_nanos, 0);
        assert!(!detector.is_ejected(0, 2));
        assert_eq!(detector.ejected_count(0), 2);
        // The counter restarted: the next failure alone does not report again.
        assert_eq!(detector.record(0, 2, Outcome::Status(500)), None);
        // Once a slot frees up, a new run of failures ejects it.
        let later = 10 * SEC;
        assert_eq!(detector.ejected_count(later), 0);
        fail_5xx(&mut detector, later, 2, 3);
        assert!(detector.is_ejected(later, 2));
    }

    #[test]
    fn max_ejected_rule() {
        let cases = [
            // (endpoints, percent, max ejected)
            (0, 50, 0),
            (1, 100, 0), // never eject the only endpoint
            (2, 10, 1),  // at least one may go...
            (3, 10, 1),
            (10, 10, 1),
            (10, 25, 2),
            (4, 100, 3), // ...but one always stays
            (4, 250, 3),
            (10, 0, 0), // 0 disables ejection
        ];
        for (n, percent, expected) in cases {
            let detector = OutlierDetector::new(
                OutlierConfig {
                    max_ejection_percent: percent,
                    ..config()
                },
                n,
            );
            assert_eq!(
                detector.max_ejected(),
                expected,
                "{n} endpoints at {percent}%"
            );
        }
    }

    #[test]
    fn a_single_endpoint_is_never_ejected() {
        let mut detector = OutlierDetector::new(config(), 1);
        fail_5xx(&mut detector, 0, 0, 100);
        assert!(!detector.is_ejected(0, 0));
    }

    #[test]
    fn unknown_indices_are_ignored() {
        let mut detector = OutlierDetector::new(config(), 2);
        assert_eq!(detector.record(0, 7, Outcome::GatewayFailure), None);
        detector.record_latency(0, 7, MS);
        assert!(!detector.is_ejected(0, 7));
        assert_eq!(detector.ejected_until(0, 7), None);
    }

    #[test]
    fn time_going_backwards_does_not_end_or_extend_ejections() {
        let mut detector = OutlierDetector::new(config(), 4);
        fail_5xx(&mut detector, 100 * SEC, 0, 3);
        // An earlier time reads as the latest one.
        assert!(detector.is_ejected(0, 0));
        assert_eq!(detector.record(SEC, 0, Outcome::Status(500)), None);
        assert_eq!(detector.ejected_until(0, 0), Some(110 * SEC));
        assert_eq!(detector.sweep(0), Sweep::default());
    }

    #[test]
    fn zero_and_huge_durations() {
        let mut zero = OutlierDetector::new(
            OutlierConfig {
                base_ejection: Duration::ZERO,
                ..config()
            },
            4,
        );
        fail_5xx(&mut zero, SEC, 0, 3);
        assert!(!zero.is_ejected(SEC, 0));

        let mut huge = OutlierDetector::new(
            OutlierConfig {
                base_ejection: Duration::MAX,
                max_ejection: Duration::MAX,
                ..config()
            },
            4,
        );
        fail_5xx(&mut huge, SEC, 0, 3);
        assert_eq!(huge.ejected_until(SEC, 0), Some(u64::MAX));
    }

    fn latency_config() -> OutlierConfig {
        OutlierConfig {
            max_ejection_percent: 40,
            latency: Some(LatencyOutlierConfig {
                factor: 3.0,
                quantile: 0.99,
                min_samples: 50,
                min_endpoints: 3,
                min_outlier_latency: Duration::from_millis(5),
                window: Duration::from_secs(10),
            }),
            ..config()
        }
    }

    /// Records `samples` latencies of `latency_ms` for endpoint `index` at `now`.
    fn feed(detector: &mut OutlierDetector, now: u64, index: usize, latency_ms: u64, samples: u32) {
        for _ in 0..samples {
            detector.record_latency(now, index, latency_ms * MS);
        }
    }

    #[test]
    fn a_slow_endpoint_is_ejected_by_the_sweep() {
        let mut detector = OutlierDetector::new(latency_config(), 5);
        for index in 0..4 {
            feed(&mut detector, SEC, index, 10 + index as u64, 100);
        }
        feed(&mut detector, SEC, 4, 80, 100);
        let sweep = detector.sweep(SEC);
        assert_eq!(sweep.ejections.len(), 1, "{sweep:?}");
        let ejection = sweep.ejections[0];
        assert_eq!(ejection.index, 4);
        assert!(ejection.enforced);
        match ejection.reason {
            Reason::Latency {
                endpoint_nanos,
                peer_median_nanos,
            } => {
                assert_eq!(endpoint_nanos, 80 * MS);
                // Peers 10, 11, 12, 13 ms: median 11.5 ms.
                assert_eq!(peer_median_nanos, 11_500_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(detector.is_ejected(SEC, 4));
    }

    #[test]
    fn a_slow_endpoint_just_under_the_factor_stays() {
        let mut detector = OutlierDetector::new(latency_config(), 4);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 10, 100);
        }
        feed(&mut detector, SEC, 3, 30, 100); // exactly 3× is not above 3×
        assert!(detector.sweep(SEC).ejections.is_empty());
    }

    #[test]
    fn latency_needs_enough_samples_and_peers() {
        // Too few samples from the slow endpoint.
        let mut detector = OutlierDetector::new(latency_config(), 4);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 10, 100);
        }
        feed(&mut detector, SEC, 3, 100, 49);
        assert!(detector.sweep(SEC).ejections.is_empty());
        feed(&mut detector, SEC, 3, 100, 1);
        assert_eq!(detector.sweep(SEC).ejections.len(), 1);

        // Too few measured endpoints: only two of four have enough samples.
        let mut detector = OutlierDetector::new(latency_config(), 4);
        feed(&mut detector, SEC, 0, 10, 100);
        feed(&mut detector, SEC, 1, 100, 100);
        feed(&mut detector, SEC, 2, 10, 10);
        assert!(detector.sweep(SEC).ejections.is_empty());
    }

    #[test]
    fn fast_outliers_below_the_floor_are_left_alone() {
        let mut detector = OutlierDetector::new(latency_config(), 4);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 1, 100);
        }
        feed(&mut detector, SEC, 3, 5, 100); // 5× its peers, but only 5 ms
        assert!(detector.sweep(SEC).ejections.is_empty());
    }

    #[test]
    fn the_worst_latency_outliers_go_first_within_the_cap() {
        // 6 endpoints at 40%: two may be ejected; three are slow.
        let mut detector = OutlierDetector::new(latency_config(), 6);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 10, 100);
        }
        feed(&mut detector, SEC, 3, 50, 100);
        feed(&mut detector, SEC, 4, 200, 100);
        feed(&mut detector, SEC, 5, 100, 100);
        let sweep = detector.sweep(SEC);
        let decided: Vec<(usize, bool)> = sweep
            .ejections
            .iter()
            .map(|e| (e.index, e.enforced))
            .collect();
        assert_eq!(decided, vec![(4, true), (5, true), (3, false)]);
    }

    #[test]
    fn a_returning_endpoint_starts_with_no_latency_history() {
        let mut config = latency_config();
        if let Some(latency) = &mut config.latency {
            latency.window = Duration::from_secs(60);
        }
        let mut detector = OutlierDetector::new(config, 4);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 10, 100);
        }
        feed(&mut detector, SEC, 3, 100, 100);
        assert_eq!(detector.sweep(SEC).ejections.len(), 1);
        // Back at 11 s, well inside the 60 s window of its old samples: not re-ejected.
        for index in 0..3 {
            feed(&mut detector, 11 * SEC, index, 10, 100);
        }
        let sweep = detector.sweep(11 * SEC);
        assert_eq!(sweep.returned, vec![3]);
        assert!(sweep.ejections.is_empty());
    }

    #[test]
    fn latency_samples_are_ignored_while_disabled_or_ejected() {
        let mut detector = OutlierDetector::new(config(), 4);
        for index in 0..4 {
            feed(&mut detector, SEC, index, 10 + 90 * index as u64, 100);
        }
        assert!(detector.sweep(SEC).ejections.is_empty());
    }

    #[test]
    fn reconfigure_keeps_state_by_previous_index() {
        let config = || OutlierConfig {
            max_ejection_percent: 100,
            ..config()
        };
        let mut detector = OutlierDetector::new(config(), 3);
        fail_5xx(&mut detector, 0, 2, 3);
        fail_5xx(&mut detector, 0, 0, 2);
        // New list: old 2, a new endpoint, old 0.
        detector.reconfigure(config(), &[Some(2), None, Some(0)]);
        assert_eq!(detector.len(), 3);
        assert!(detector.is_ejected(0, 0));
        assert!(!detector.is_ejected(0, 1));
        // Old endpoint 0 kept its two failures: one more ejects it.
        let ejection = detector.record(0, 2, Outcome::Status(500)).unwrap();
        assert!(ejection.enforced);
        // A duplicated or out-of-range previous index yields a fresh state.
        detector.reconfigure(config(), &[Some(0), Some(0), Some(9)]);
        assert!(detector.is_ejected(0, 0));
        assert!(!detector.is_ejected(0, 1));
        assert!(!detector.is_ejected(0, 2));
    }

    #[test]
    fn reconfigure_can_turn_latency_detection_on() {
        let mut detector = OutlierDetector::new(config(), 4);
        detector.reconfigure(latency_config(), &[Some(0), Some(1), Some(2), Some(3)]);
        for index in 0..3 {
            feed(&mut detector, SEC, index, 10, 100);
        }
        feed(&mut detector, SEC, 3, 100, 100);
        assert_eq!(detector.sweep(SEC).ejections.len(), 1);
    }

    #[test]
    fn median_excluding_each_position() {
        let sorted: Vec<(u64, usize)> = [1, 2, 3, 10].iter().map(|&v| (v, 0)).collect();
        assert_eq!(median_excluding(&sorted, 0), 3); // 2 3 10
        assert_eq!(median_excluding(&sorted, 1), 3); // 1 3 10
        assert_eq!(median_excluding(&sorted, 3), 2); // 1 2 3
        let pair: Vec<(u64, usize)> = vec![(4, 0), (u64::MAX, 1)];
        assert_eq!(median_excluding(&pair, 0), u64::MAX);
        assert_eq!(median_excluding(&pair, 1), 4);
        let three: Vec<(u64, usize)> = vec![(1, 0), (3, 1), (u64::MAX, 2)];
        assert_eq!(median_excluding(&three, 0), u64::MAX / 2 + 2);
        assert_eq!(median_excluding(&[(5, 0)], 0), 0);
    }
}
