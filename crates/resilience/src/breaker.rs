//! Circuit breaker: stop sending requests to an upstream that keeps failing, then probe it
//! back into service.
//!
//! ```text
//!            N consecutive failures, or failure ratio >= threshold
//!            over the window once min_requests is reached
//!   Closed ───────────────────────────────────────────────► Open
//!     ▲                                                      │  ▲
//!     │ M probe successes                  open time elapsed │  │ a probe fails
//!     │                                                      ▼  │ (open time doubles,
//!     └──────────────────────────────────────────────── HalfOpen   up to open_max)
//!                                at most K probes in flight
//! ```
//!
//! Every request asks [`Breaker::try_acquire`] first and hands the [`Permit`] back to
//! [`Breaker::record`] with its [`Outcome`]. Outcomes only count in the state they were
//! admitted in: a request admitted while closed that fails after the breaker opened is
//! ignored (the breaker has already decided), and so is a probe whose slot was reclaimed.
//! Transitions are returned to the caller (to log and count), never performed behind its back:
//! Open turns into HalfOpen lazily, in the first `try_acquire` after the open time.
//!
//! A permit must be returned, with [`Outcome::Ignored`] when the request ended without a
//! verdict (client went away, 4xx): a half-open breaker has only K probe slots. As a
//! safety net, slots whose permits never come back are reclaimed after `probe_timeout`.
//!
//! The breaker is a plain value (`&mut self`); [`SharedBreaker`] puts it behind a
//! `parking_lot::Mutex` for the proxy, whose critical sections are a few integer operations.

use std::time::Duration;

use gatehouse_balance::SlidingWindow;
use parking_lot::Mutex;

use crate::time::saturating_nanos;

/// Circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables this rule.
    pub consecutive_failures: u32,
    /// Failure ratio (0.0..=1.0) over the window that opens the breaker; 0 or NaN disables
    /// this rule, values above 1 read as 1.
    pub failure_ratio: f64,
    /// Requests the window must hold before the ratio rule may fire (0 reads as 1).
    pub min_requests: u32,
    /// Sliding window of the ratio rule.
    pub window: Duration,
    /// Buckets the window is split into (1..=1024); more buckets forget more smoothly.
    pub buckets: usize,
    /// How long the breaker stays open the first time.
    pub open_base: Duration,
    /// Cap of the open time, which doubles each time a probe fails.
    pub open_max: Duration,
    /// Probes allowed in flight at once while half-open (0 reads as 1).
    pub half_open_probes: u32,
    /// Probe successes that close the breaker (0 reads as 1).
    pub half_open_successes: u32,
    /// After this long without a returned probe permit, half-open probe slots are assumed lost
    /// and reclaimed, so a leaked permit cannot wedge the breaker half-open.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            buckets: 10,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
            half_open_probes: 1,
            half_open_successes: 3,
            probe_timeout: Duration::from_secs(30),
        }
    }
}

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests are rejected until the open time has passed.
    Open,
    /// A few probe requests test the upstream.
    HalfOpen,
}

/// A state change, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// What a request admitted by the breaker ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream did its job.
    Success,
    /// The upstream failed (the caller decides what counts: typically gateway errors, 5xx
    /// and timeouts).
    Failure,
    /// No verdict (client cancelled, request error on our side): frees a probe slot, counts
    /// for nothing.
    Ignored,
}

/// Proof of admission; hand it back to [`Breaker::record`].
#[must_use = "a permit must be returned to `record`, or a half-open probe slot stays taken"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    /// State generation the permit was issued in; outcomes from older generations are void.
    generation: u64,
    probe: bool,
}

impl Permit {
    /// True for a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A request the breaker let through.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    /// Return it to [`Breaker::record`].
    pub permit: Permit,
    /// Set when this call moved the breaker from Open to HalfOpen.
    pub transition: Option<Transition>,
}

/// A request the breaker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state:?}: upstream is failing, retry after {} ms", retry_after.as_millis())]
pub struct Rejected {
    /// When trying again may succeed: the rest of the open time, or while half-open with all
    /// probe slots taken, `open_base` (a probe verdict is due by then in the common case).
    pub retry_after: Duration,
    /// State that refused: Open or HalfOpen.
    pub state: State,
}

/// Request counts of the ratio window, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Successes in the window.
    pub successes: u64,
    /// Failures in the window.
    pub failures: u64,
}

/// A circuit breaker (see the module docs).
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every transition (and probe reclaim) so stale permits are recognised.
    generation: u64,
    /// Outcomes while closed, for the ratio rule. Its latest time is the breaker's clock:
    /// earlier times read as the latest, so time going backwards cannot panic or reopen.
    window: SlidingWindow<WindowCounts>,
    consecutive_failures: u32,
    /// Times opened since the breaker last closed; the open time doubles with each.
    opens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: u64,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        last_admit: u64,
    },
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let window = SlidingWindow::new(config.window, config.buckets);
        Self {
            config,
            phase: Phase::Closed,
            generation: 0,
            window,
            consecutive_failures: 0,
            opens: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Current state. Open stays Open here until a [`Self::try_acquire`] after the open time.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// When an open breaker will let probes through (monotonic nanoseconds); None unless open.
    pub fn open_until(&self) -> Option<u64> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Successes and failures in the ratio window at `now` (closed state only; opening and
    /// closing start a fresh window).
    pub fn window_counts(&self, now_nanos: u64) -> WindowCounts {
        self.window
            .live(now_nanos)
            .fold(WindowCounts::default(), |sum, counts| WindowCounts {
                successes: sum.successes.saturating_add(counts.successes),
                failures: sum.failures.saturating_add(counts.failures),
            })
    }

    /// Asks to send one request at `now`.
    pub fn try_acquire(&mut self, now_nanos: u64) -> Result<Admission, Rejected> {
        let now = self.window.observe(now_nanos);
        let mut transition = None;
        if let Phase::Open { until } = self.phase
            && now >= until
        {
            transition = Some(self.enter(State::HalfOpen, now));
        }
        let max_probes = self.config.half_open_probes.max(1);
        let probe_timeout = saturating_nanos(self.config.probe_timeout);
        match &mut self.phase {
            Phase::Closed => Ok(Admission {
                permit: Permit {
                    generation: self.generation,
                    probe: false,
                },
                transition,
            }),
            Phase::Open { until } => Err(Rejected {
                retry_after: Duration::from_nanos(until.saturating_sub(now)),
                state: State::Open,
            }),
            Phase::HalfOpen {
                in_flight,
                last_admit,
                ..
            } => {
                if *in_flight >= max_probes && now.saturating_sub(*last_admit) >= probe_timeout {
                    // Every slot was taken at least probe_timeout ago: those permits are lost.
                    // A new generation voids them should they come back after all.
                    *in_flight = 0;
                    self.generation = self.generation.wrapping_add(1);
                }
                if *in_flight < max_probes {
                    *in_flight += 1;
                    *last_admit = now;
                    Ok(Admission {
                        permit: Permit {
                            generation: self.generation,
                            probe: true,
                        },
                        transition,
                    })
                } else {
                    Err(Rejected {
                        retry_after: self.config.open_base,
                        state: State::HalfOpen,
                    })
                }
            }
        }
    }

    /// Reports how an admitted request ended; returns the transition it caused, if any.
    pub fn record(
        &mut self,
        now_nanos: u64,
        permit: Permit,
        outcome: Outcome,
    ) -> Option<Transition> {
        let now = self.window.observe(now_nanos);
        if permit.generation != self.generation {
            // Admitted under an earlier state: that state's decision has been made.
            return None;
        }
        match &mut self.phase {
            Phase::Closed => {
                match outcome {
                    Outcome::Ignored => return None,
                    Outcome::Success => {
                        self.consecutive_failures = 0;
                        let counts = self.window.current_mut(now);
                        counts.successes = counts.successes.saturating_add(1);
                    }
                    Outcome::Failure => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                        let counts = self.window.current_mut(now);
                        counts.failures = counts.failures.saturating_add(1);
                    }
                }
                self.should_trip(now).then(|| self.enter(State::Open, now))
            }
            // Unreachable with a current permit (opening bumps the generation), but harmless.
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Ignored => None,
                    Outcome::Failure => Some(self.enter(State::Open, now)),
                    Outcome::Success => {
                        *successes = successes.saturating_add(1);
                        (*successes >= self.config.half_open_successes.max(1))
                            .then(|| self.enter(State::Closed, now))
                    }
                }
            }
        }
    }

    /// Whether the closed-state rules say "open" at `now`.
    fn should_trip(&self, now: u64) -> bool {
        let threshold = self.config.consecutive_failures;
        if threshold > 0 && self.consecutive_failures >= threshold {
            return true;
        }
        let ratio = self.config.failure_ratio;
        if ratio.is_nan() || ratio <= 0.0 {
            return false;
        }
        let counts = self.window_counts(now);
        let total = counts.successes.saturating_add(counts.failures);
        total >= u64::from(self.config.min_requests.max(1))
            && counts.failures as f64 >= ratio.min(1.0) * total as f64
    }

    fn enter(&mut self, to: State, now: u64) -> Transition {
        let from = self.state();
        self.generation = self.generation.wrapping_add(1);
        self.window.clear();
        self.consecutive_failures = 0;
        self.phase = match to {
            State::Closed => {
                self.opens = 0;
                Phase::Closed
            }
            State::Open => {
                self.opens = self.opens.saturating_add(1);
                let doubling = 1u64.checked_shl(self.opens - 1).unwrap_or(u64::MAX);
                let open = saturating_nanos(self.config.open_base)
                    .saturating_mul(doubling)
                    .min(saturating_nanos(self.config.open_max));
                Phase::Open {
                    until: now.saturating_add(open),
                }
            }
            State::HalfOpen => Phase::HalfOpen {
                in_flight: 0,
                successes: 0,
                last_admit: now,
            },
        };
        Transition { from, to }
    }
}

/// A [`Breaker`] behind a mutex, to share (in an `Arc`) between the requests of a route or
/// cluster. Each call holds the lock for a few integer operations.
#[derive(Debug)]
pub struct SharedBreaker {
    inner: Mutex<Breaker>,
}

impl SharedBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Breaker::new(config)),
        }
    }

    /// See [`Breaker::try_acquire`].
    pub fn try_acquire(&self, now_nanos: u64) -> Result<Admission, Rejected> {
        self.inner.lock().try_acquire(now_nanos)
    }

    /// See [`Breaker::record`].
    pub fn record(&self, now_nanos: u64, permit: Permit, outcome: Outcome) -> Option<Transition> {
        self.inner.lock().record(now_nanos, permit, outcome)
    }

    /// See [`Breaker::state`].
    pub fn state(&self) -> State {
        self.inner.lock().state()
    }

    /// See [`Breaker::window_counts`].
    pub fn window_counts(&self, now_nanos: u64) -> WindowCounts {
        self.inner.lock().window_counts(now_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.0,
            min_requests: 10,
            window: Duration::from_secs(10),
            buckets: 10,
            open_base: Duration::from_secs(1),
            open_max: Duration::from_secs(5),
            half_open_probes: 2,
            half_open_successes: 3,
            probe_timeout: Duration::from_secs(30),
        }
    }

    fn ratio_config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: 0.5,
            ..config()
        }
    }

    /// One request at `now` with `outcome`; returns the transition it caused.
    fn run(breaker: &mut Breaker, now: u64, outcome: Outcome) -> Option<Transition> {
        let admission = breaker.try_acquire(now).expect("admitted");
        breaker.record(now, admission.permit, outcome)
    }

    const TO_OPEN: Transition = Transition {
        from: State::Closed,
        to: State::Open,
    };

    /// A breaker opened at `now` by consecutive failures.
    fn opened(now: u64) -> Breaker {
        let mut breaker = Breaker::new(config());
        run(&mut breaker, now, Outcome::Failure);
        run(&mut breaker, now, Outcome::Failure);
        assert_eq!(run(&mut breaker, now, Outcome::Failure), Some(TO_OPEN));
        breaker
    }

    #[test]
    fn stays_closed_while_requests_succeed() {
        let mut breaker = Breaker::new(config());
        for i in 0..1000 {
            assert_eq!(run(&mut breaker, i * MS, Outcome::Success), None);
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.window_counts(999 * MS).successes, 1000);
    }

    #[test]
    fn opens_after_consecutive_failures_and_rejects_until_the_open_time() {
        let mut breaker = opened(10 * SEC);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.open_until(), Some(11 * SEC));
        let rejected = breaker.try_acquire(10 * SEC).unwrap_err();
        assert_eq!(
            rejected,
            Rejected {
                retry_after: Duration::from_secs(1),
                state: State::Open
            }
        );
        let later = breaker.try_acquire(10 * SEC + 400 * MS).unwrap_err();
        assert_eq!(later.retry_after, Duration::from_millis(600));
        assert!(later.to_string().contains("retry after 600 ms"), "{later}");
    }

    #[test]
    fn a_success_breaks_the_run_of_failures() {
        let mut breaker = Breaker::new(config());
        for i in 0..100 {
            let outcome = if i % 3 == 2 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            assert_eq!(run(&mut breaker, i, outcome), None);
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn ignored_outcomes_count_for_nothing() {
        let mut breaker = Breaker::new(config());
        run(&mut breaker, 0, Outcome::Failure);
        run(&mut breaker, 0, Outcome::Failure);
        for _ in 0..10 {
            assert_eq!(run(&mut breaker, 0, Outcome::Ignored), None);
        }
        assert_eq!(
            breaker.window_counts(0),
            WindowCounts {
                successes: 0,
                failures: 2
            }
        );
        // Ignored did not reset the run either.
        assert_eq!(run(&mut breaker, 0, Outcome::Failure), Some(TO_OPEN));
    }

    #[test]
    fn ratio_needs_the_minimum_volume() {
        let mut breaker = Breaker::new(ratio_config());
        // Nine failures in a row: 100% but below min_requests (10).
        for _ in 0..9 {
            assert_eq!(run(&mut breaker, SEC, Outcome::Failure), None);
        }
        // The tenth request reaches the volume; 10/10 failed.
        assert_eq!(run(&mut breaker, SEC, Outcome::Failure), Some(TO_OPEN));
    }

    #[test]
    fn ratio_at_the_threshold_opens_and_below_does_not() {
        let mut below = Breaker::new(ratio_config());
        for i in 0..100 {
            // 2 failures in every 5: the running ratio stays in 40–43% < 50% once the
            // volume is reached.
            let outcome = if i % 5 == 1 || i % 5 == 3 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(run(&mut below, SEC, outcome), None, "request {i}");
        }

        let mut at = Breaker::new(ratio_config());
        for _ in 0..5 {
            assert_eq!(run(&mut at, SEC, Outcome::Success), None);
        }
        for _ in 0..4 {
            assert_eq!(run(&mut at, SEC, Outcome::Failure), None);
        }
        // 5 of 10 failed: exactly 50%.
        assert_eq!(run(&mut at, SEC, Outcome::Failure), Some(TO_OPEN));
    }

    #[test]
    fn a_success_reaching_the_volume_can_trip_the_ratio() {
        let mut breaker = Breaker::new(ratio_config());
        for _ in 0..9 {
            run(&mut breaker, SEC, Outcome::Failure);
        }
        // 9 of 10 failed once this success arrives.
        assert_eq!(run(&mut breaker, SEC, Outcome::Success), Some(TO_OPEN));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut breaker = Breaker::new(ratio_config());
        for _ in 0..9 {
            run(&mut breaker, 0, Outcome::Failure);
        }
        // 10 s later the failures from [0 s, 1 s) have expired; volume restarts.
        assert_eq!(run(&mut breaker, 10 * SEC, Outcome::Failure), None);
        assert_eq!(breaker.window_counts(10 * SEC).failures, 1);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn half_open_admits_at_most_k_probes() {
        let mut breaker = opened(0);
        let first = breaker.try_acquire(SEC).unwrap();
        assert_eq!(
            first.transition,
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen
            })
        );
        assert!(first.permit.is_probe());
        let second = breaker.try_acquire(SEC).unwrap();
        assert_eq!(second.transition, None);
        let third = breaker.try_acquire(SEC).unwrap_err();
        assert_eq!(third.state, State::HalfOpen);
        assert_eq!(third.retry_after, Duration::from_secs(1));
        // A returned probe frees its slot.
        assert_eq!(breaker.record(SEC, first.permit, Outcome::Success), None);
        let fourth = breaker.try_acquire(SEC).unwrap();
        assert!(fourth.permit.is_probe());
        let _ = (second, fourth);
    }

    #[test]
    fn m_probe_successes_close_the_breaker_with_a_clean_window() {
        let mut breaker = opened(0);
        assert_eq!(run(&mut breaker, SEC, Outcome::Success), None);
        assert_eq!(run(&mut breaker, SEC, Outcome::Ignored), None);
        assert_eq!(run(&mut breaker, SEC, Outcome::Success), None);
        assert_eq!(
            run(&mut breaker, SEC, Outcome::Success),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed
            })
        );
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.window_counts(SEC), WindowCounts::default());
        // The consecutive count restarted too: two failures do not reopen.
        run(&mut breaker, SEC, Outcome::Failure);
        run(&mut breaker, SEC, Outcome::Failure);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_probe_failure_reopens_for_longer_each_time_up_to_the_cap() {
        let mut breaker = opened(0);
        let mut now = 0;
        let mut open_times = vec![breaker.open_until().unwrap() - now];
        for _ in 0..5 {
            now = breaker.open_until().unwrap();
            assert_eq!(
                run(&mut breaker, now, Outcome::Failure),
                Some(Transition {
                    from: State::HalfOpen,
                    to: State::Open
                })
            );
            open_times.push(breaker.open_until().unwrap() - now);
        }
        let seconds: Vec<u64> = open_times.iter().map(|t| t / SEC).collect();
        assert_eq!(seconds, vec![1, 2, 4, 5, 5, 5]);
    }

    #[test]
    fn closing_resets_the_open_time() {
        let mut breaker = opened(0);
        run(&mut breaker, SEC, Outcome::Failure); // reopen for 2 s, until 3 s
        for _ in 0..3 {
            run(&mut breaker, 3 * SEC, Outcome::Success);
        }
        assert_eq!(breaker.state(), State::Closed);
        for _ in 0..3 {
            run(&mut breaker, 4 * SEC, Outcome::Failure);
        }
        assert_eq!(breaker.open_until(), Some(5 * SEC));
    }

    #[test]
    fn permits_from_an_earlier_state_are_ignored() {
        let mut breaker = Breaker::new(config());
        let slow = breaker.try_acquire(0).unwrap().permit;
        for _ in 0..3 {
            run(&mut breaker, 0, Outcome::Failure);
        }
        // The slow request, admitted while closed, succeeds after the breaker opened...
        assert_eq!(breaker.record(MS, slow, Outcome::Success), None);
        assert_eq!(breaker.state(), State::Open);
        // ...and a probe permit returned after the breaker reopened counts for nothing.
        let probe_a = breaker.try_acquire(SEC).unwrap().permit;
        let probe_b = breaker.try_acquire(SEC).unwrap().permit;
        assert!(breaker.record(SEC, probe_a, Outcome::Failure).is_some());
        assert_eq!(breaker.record(SEC, probe_b, Outcome::Success), None);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn lost_probes_are_reclaimed_after_the_probe_timeout() {
        let mut breaker = opened(0);
        let lost_a = breaker.try_acquire(SEC).unwrap().permit;
        let lost_b = breaker.try_acquire(SEC).unwrap().permit;
        assert!(breaker.try_acquire(30 * SEC).is_err());
        // 30 s after the last probe was admitted, its slot is reclaimed.
        let fresh = breaker.try_acquire(31 * SEC).unwrap();
        assert!(fresh.permit.is_probe());
        assert_eq!(fresh.transition, None);
        // The lost permits turn up late: void, they neither close nor reopen.
        assert_eq!(breaker.record(31 * SEC, lost_a, Outcome::Failure), None);
        assert_eq!(breaker.record(31 * SEC, lost_b, Outcome::Success), None);
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(
            breaker.record(31 * SEC, fresh.permit, Outcome::Success),
            None
        );
    }

    #[test]
    fn disabled_rules_never_open() {
        let mut breaker = Breaker::new(BreakerConfig {
            consecutive_failures: 0,
            failure_ratio: f64::NAN,
            ..config()
        });
        for i in 0..1000 {
            assert_eq!(run(&mut breaker, i * MS, Outcome::Failure), None);
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn ratio_above_one_means_all_failed() {
        let mut breaker = Breaker::new(BreakerConfig {
            failure_ratio: 7.0,
            ..ratio_config()
        });
        for _ in 0..9 {
            run(&mut breaker, 0, Outcome::Failure);
        }
        run(&mut breaker, 0, Outcome::Success);
        assert_eq!(breaker.state(), State::Closed);
        let mut all = Breaker::new(BreakerConfig {
            failure_ratio: 7.0,
            ..ratio_config()
        });
        for _ in 0..10 {
            run(&mut all, 0, Outcome::Failure);
        }
        assert_eq!(all.state(), State::Open);
    }

    #[test]
    fn zero_and_huge_settings() {
        // Zero open time: the next request is already a probe; zero probes/successes read as 1.
        let mut breaker = Breaker::new(BreakerConfig {
            open_base: Duration::ZERO,
            half_open_probes: 0,
            half_open_successes: 0,
            ..config()
        });
        for _ in 0..3 {
            run(&mut breaker, 0, Outcome::Failure);
        }
        let probe = breaker.try_acquire(0).unwrap();
        assert!(probe.permit.is_probe());
        assert!(breaker.try_acquire(0).is_err());
        assert_eq!(
            breaker.record(0, probe.permit, Outcome::Success),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed
            })
        );

        // Huge open times saturate instead of overflowing, even after many reopenings.
        let mut forever = Breaker::new(BreakerConfig {
            open_base: Duration::MAX,
            open_max: Duration::MAX,
            ..config()
        });
        for _ in 0..3 {
            run(&mut forever, SEC, Outcome::Failure);
        }
        assert_eq!(forever.open_until(), Some(u64::MAX));
        let rejected = forever.try_acquire(u64::MAX - 1).unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_nanos(1));
    }

    #[test]
    fn open_max_below_open_base_caps_it() {
        let mut breaker = Breaker::new(BreakerConfig {
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(2),
            ..config()
        });
        for _ in 0..3 {
            run(&mut breaker, 0, Outcome::Failure);
        }
        assert_eq!(breaker.open_until(), Some(2 * SEC));
    }

    #[test]
    fn many_reopenings_do_not_overflow_the_doubling() {
        let mut breaker = opened(0);
        for _ in 0..100 {
            let now = breaker.open_until().unwrap();
            run(&mut breaker, now, Outcome::Failure);
        }
        let now = breaker.open_until().unwrap() - 5 * SEC;
        assert_eq!(
            breaker.try_acquire(now).unwrap_err().retry_after,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn time_going_backwards_neither_panics_nor_reopens_early() {
        let mut breaker = opened(10 * SEC);
        // A caller with an older clock reading is treated as "now".
        let rejected = breaker.try_acquire(0).unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
        let probe = breaker.try_acquire(11 * SEC).unwrap();
        assert_eq!(
            breaker
                .record(5 * SEC, probe.permit, Outcome::Failure)
                .map(|t| t.to),
            Some(State::Open)
        );
        // Reopened for 2 s from 11 s (the latest time), not from 5 s.
        assert_eq!(breaker.open_until(), Some(13 * SEC));
    }

    #[test]
    fn shared_breaker_opens_exactly_once_under_concurrency() {
        let shared = SharedBreaker::new(BreakerConfig {
            open_base: Duration::from_secs(3600),
            ..config()
        });
        let opened = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        let Ok(admission) = shared.try_acquire(SEC) else {
                            continue;
                        };
                        let transition = shared.record(SEC, admission.permit, Outcome::Failure);
                        if transition == Some(TO_OPEN) {
                            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(opened.into_inner(), 1);
        assert_eq!(shared.state(), State::Open);
        assert_eq!(shared.window_counts(SEC), WindowCounts::default());
    }

    #[test]
    fn breaker_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedBreaker>();
        assert_send_sync::<Permit>();
    }
}
