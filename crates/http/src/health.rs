//! Endpoint health as the data path sees it.
//!
//! Two sources decide whether an endpoint is in rotation:
//! - **active health checks**: one task per checked endpoint probes it (TCP connect, or an
//!   HTTP GET expecting a status range) every interval ± jitter; `rise` passes in a row make it
//!   healthy, `fall` failures unhealthy ([`gatehouse_balance::HealthState`]);
//! - **passive outlier detection**: failed tries eject an endpoint for a while
//!   ([`gatehouse_balance::outlier`]).
//!
//! [`EndpointHealth`] folds both into atomics, so the balancer's eligibility check costs two
//! loads and no lock. It lives in the endpoint store, so a reload keeps it.
//! [`HealthCheckers`] keeps exactly one probe task per endpoint whose cluster asks for checks.

use crate::tls_edge::UpstreamTls;
use gatehouse_balance::{Health, HealthConfig, HealthState};
use gatehouse_config::{HealthCheck, HealthProbe};
use gatehouse_core::{EndpointId, MonotonicClock};
use gatehouse_observe::{EndpointLabels, HealthCheckLabels, Metrics, label};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Whether one endpoint may take traffic, readable without a lock.
#[derive(Debug)]
pub struct EndpointHealth {
    /// Active checks pass (true while unchecked).
    passing: AtomicBool,
    /// An outlier ejection lasts until this clock time (nanoseconds); 0 when not ejected.
    ejected_until: AtomicU64,
    /// A try failed since the last success: only then must a success reach the outlier
    /// detector (to reset its counters), so healthy traffic takes no lock.
    failing: AtomicBool,
    /// Slow start after recovering: when the ramp began (clock nanoseconds; 0 = not ramping)...
    ramp_start: AtomicU64,
    /// ...and how long it lasts.
    ramp_nanos: AtomicU64,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            passing: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            ramp_start: AtomicU64::new(0),
            ramp_nanos: AtomicU64::new(0),
        }
    }
}

impl EndpointHealth {
    /// In rotation: passing its checks and not ejected. `now` is only called when an ejection
    /// is recorded (the clock read is skipped otherwise).
    pub fn in_rotation(&self, now: impl FnOnce() -> u64) -> bool {
        if !self.passing.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now()
    }

    pub fn is_passing(&self) -> bool {
        self.passing.load(Ordering::Relaxed)
    }

    pub(crate) fn set_passing(&self, passing: bool) {
        self.passing.store(passing, Ordering::Relaxed);
    }

    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn eject_until(&self, until_nanos: u64) {
        self.ejected_until.store(until_nanos, Ordering::Relaxed);
    }

    /// Starts the slow-start ramp of an endpoint that just came back.
    pub(crate) fn begin_slow_start(&self, now_nanos: u64, window: Duration) {
        if window.is_zero() {
            return;
        }
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        self.ramp_nanos.store(window, Ordering::Relaxed);
        self.ramp_start.store(now_nanos.max(1), Ordering::Relaxed);
    }

    /// The share of its usual traffic this endpoint takes now, in permille: 1000 normally,
    /// rising linearly from 100 to 1000 over the slow-start window after it recovered. `now` is
    /// only called while ramping.
    pub fn ramp_permille(&self, now: impl FnOnce() -> u64) -> u32 {
        let start = self.ramp_start.load(Ordering::Relaxed);
        if start == 0 {
            return 1000;
        }
        let window = self.ramp_nanos.load(Ordering::Relaxed).max(1);
        let elapsed = now().saturating_sub(start);
        if elapsed >= window {
            self.ramp_start.store(0, Ordering::Relaxed);
            return 1000;
        }
        100 + u32::try_from(u128::from(elapsed) * 900 / u128::from(window)).unwrap_or(900)
    }

    /// Marks a failed try; returns whether the endpoint was already failing.
    pub(crate) fn mark_failing(&self) -> bool {
        self.failing.swap(true, Ordering::Relaxed)
    }

    /// Marks a successful try; returns whether it ends a run of failures.
    pub(crate) fn mark_succeeding(&self) -> bool {
        self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed)
    }
}

/// One probe task per checked endpoint, reconciled with each new snapshot.
#[derive(Default)]
pub struct HealthCheckers {
    tasks: Mutex<HashMap<EndpointId, RunningCheck>>,
}

struct RunningCheck {
    config: HealthCheck,
    tls: Option<UpstreamTls>,
    stop: CancellationToken,
}

/// What a checker task needs about its endpoint.
pub struct CheckTarget {
    pub id: EndpointId,
    pub health: Arc<EndpointHealth>,
    pub config: HealthCheck,
    /// The cluster's upstream TLS: probes go over TLS as requests do.
    pub tls: Option<UpstreamTls>,
}

impl HealthCheckers {
    /// Starts checks for new or changed targets and stops the rest. An endpoint that is no
    /// longer checked goes back into rotation.
    pub fn reconcile(
        &self,
        targets: Vec<CheckTarget>,
        unchecked: &[Arc<EndpointHealth>],
        metrics: &Arc<Metrics>,
        clock: MonotonicClock,
    ) {
        let mut tasks = self.tasks.lock();
        let wanted: HashMap<&EndpointId, &CheckTarget> =
            targets.iter().map(|t| (&t.id, t)).collect();
        tasks.retain(|id, running| {
            let keep = wanted
                .get(id)
                .is_some_and(|t| t.config == running.config && t.tls == running.tls);
            if !keep {
                running.stop.cancel();
            }
            keep
        });
        for health in unchecked {
            health.set_passing(true);
        }
        for target in &targets {
            if tasks.contains_key(&target.id) {
                continue;
            }
            let stop = CancellationToken::new();
            tokio::spawn(run_checks(
                target.id.clone(),
                Arc::clone(&target.health),
                target.config.clone(),
                target.tls.clone(),
                stop.clone(),
                Arc::clone(metrics),
                clock,
            ));
            tasks.insert(
                target.id.clone(),
                RunningCheck {
                    config: target.config.clone(),
                    tls: target.tls.clone(),
                    stop,
                },
            );
        }
    }

    /// Stops every check (shutdown).
    pub fn stop_all(&self) {
        for (_, running) in self.tasks.lock().drain() {
            running.stop.cancel();
        }
    }
}

fn health_config(check: &HealthCheck) -> HealthConfig {
    HealthConfig {
        rise: check.rise,
        fall: check.fall,
        interval: check.interval,
        jitter: check.jitter,
        slow_start: check.slow_start,
        slow_start_min_permille: 100,
        // Static endpoints start in rotation: starting them out would refuse all traffic for
        // rise × interval after every start.
        initial: Health::Healthy,
    }
}

async fn run_checks(
    id: EndpointId,
    health: Arc<EndpointHealth>,
    check: HealthCheck,
    tls: Option<UpstreamTls>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    clock: MonotonicClock,
) {
    let mut state = HealthState::new(health_config(&check));
    // A restarted check (config changed) keeps what the last one concluded.
    if !health.is_passing() {
        for _ in 0..check.fall {
            state.record(clock.now_nanos(), false);
        }
    }
    let labels = EndpointLabels {
        cluster: label(&id.cluster),
        endpoint: label(&id.addr.to_string()),
    };
    let gauge = metrics.endpoint_healthy.get_or_create(&labels).clone();
    gauge.set(i64::from(health.is_passing()));
    let mut first = true;
    loop {
        let now = clock.now_nanos();
        // The first probe goes out at once (within the jitter), so a dead endpoint found at
        // start is out of rotation after `fall` probes, not an interval later.
        let wait = if first {
            Duration::from_nanos(fastrand::u64(..=check.jitter.as_nanos() as u64))
        } else {
            Duration::from_nanos(
                state
                    .next_check_at(now, fastrand::u64(..))
                    .saturating_sub(now),
            )
        };
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let passed = tokio::select! {
            _ = stop.cancelled() => return,
            passed = probe(id.addr, &check, tls.as_ref()) => passed,
        };
        metrics
            .health_checks
            .get_or_create(&HealthCheckLabels {
                cluster: Arc::clone(&labels.cluster),
                endpoint: Arc::clone(&labels.endpoint),
                result: if passed.is_ok() { "pass" } else { "fail" },
            })
            .inc();
        if let Some(changed) = state.record(clock.now_nanos(), passed.is_ok()) {
            let healthy = changed == Health::Healthy;
            health.set_passing(healthy);
            if healthy {
                health.begin_slow_start(clock.now_nanos(), check.slow_start);
            }
            gauge.set(i64::from(healthy));
            match passed {
                Ok(()) => {
                    tracing::info!(cluster = %id.cluster, endpoint = %id.addr, "endpoint healthy again")
                }
                Err(reason) => {
                    tracing::warn!(cluster = %id.cluster, endpoint = %id.addr, %reason, "endpoint unhealthy")
                }
            }
        }
    }
}

/// One probe; Err says why it failed.
pub async fn probe(
    addr: SocketAddr,
    check: &HealthCheck,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    match tokio::time::timeout(check.timeout, probe_inner(addr, &check.probe, tls)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
    }
}

/// Connects (and, for a TLS cluster, completes the handshake: a "tcp" check then also proves
/// the upstream's certificate verifies), then asks over whichever stream results.
async fn probe_inner(
    addr: SocketAddr,
    probe: &HealthProbe,
    tls: Option<&UpstreamTls>,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match tls {
        None => ask(stream, addr, probe).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name_for(addr), stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            ask(stream, addr, probe).await
        }
    }
}

/// The HTTP part of a probe (nothing for a TCP probe).
async fn ask(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: SocketAddr,
    probe: &HealthProbe,
) -> Result<(), String> {
    let HealthProbe::Http { path, host, expect } = probe else {
        return Ok(());
    };
    let host = host.clone().unwrap_or_else(|| addr.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: gatehouse-health-check\r\naccept: */*\r\nconnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The status line is all a check needs; a head larger than this is not an answer.
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.unwrap_or(0);
                return if (expect.0..=expect.1).contains(&status) {
                    Ok(())
                } else {
                    Err(format!(
                        "status {status}, expected {}-{}",
                        expect.0, expect.1
                    ))
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            Ok(httparse::Status::Partial) => return Err("response head too large".into()),
            Err(e) => return Err(format!("invalid response: {e}")),
        }
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovered_endpoint_ramps_from_ten_percent_to_all() {
        let health = EndpointHealth::default();
        assert_eq!(
            health.ramp_permille(|| unreachable!("no clock read when not ramping")),
            1000
        );
        health.begin_slow_start(1_000, Duration::from_nanos(1_000));
        assert_eq!(health.ramp_permille(|| 1_000), 100);
        assert_eq!(health.ramp_permille(|| 1_500), 550);
        assert_eq!(health.ramp_permille(|| 2_000), 1000);
        assert_eq!(
            health.ramp_permille(|| unreachable!("the ramp is over")),
            1000
        );
        health.begin_slow_start(5, Duration::ZERO);
        assert_eq!(health.ramp_permille(|| 5), 1000, "no window, no ramp");
    }
}
