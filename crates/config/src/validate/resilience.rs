//! Validation of a cluster's resilience settings: health checks, outlier detection, retries.
//!
//! Defaults and their reasons are in docs/resilience.md.

use super::Validator;
use crate::model::{
    AdaptiveTimeout, BreakerSettings, FaultSettings, HealthCheck, HealthProbe, Hedge, Outlier,
    RetrySettings,
};
use crate::raw::{
    RawAdaptiveTimeout, RawBreaker, RawFault, RawHealthCheck, RawHedge, RawOutlier, RawRetry,
};
use std::time::Duration;
use toml::Spanned;

const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_SLOW_START: Duration = Duration::from_secs(30);
const MAX_ATTEMPTS: u32 = 10;

impl Validator<'_> {
    pub(super) fn health_check(
        &mut self,
        spanned: &Spanned<RawHealthCheck>,
        field: &str,
    ) -> HealthCheck {
        let raw = spanned.get_ref();
        let kind = raw.kind.as_ref().map_or("http", |k| k.get_ref().as_str());
        let probe = match kind {
            "tcp" => {
                for (value, name) in [(&raw.path, "path"), (&raw.host, "host")] {
                    if let Some(v) = value {
                        self.error(
                            v,
                            &format!("{field}.{name}"),
                            format!("{name} only applies to kind = \"http\""),
                        );
                    }
                }
                HealthProbe::Tcp
            }
            other => {
                if other != "http"
                    && let Some(k) = &raw.kind
                {
                    self.error(
                        k,
                        &format!("{field}.kind"),
                        format!("unknown health check kind {other:?}; use \"http\" or \"tcp\""),
                    );
                }
                let path = raw.path.as_ref().map_or("/", |p| p.get_ref().as_str());
                if (!path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f))
                    && let Some(p) = &raw.path
                {
                    self.error(
                        p,
                        &format!("{field}.path"),
                        "the health check path must start with '/' and contain no spaces or control characters",
                    );
                }
                let host = raw.host.as_ref().map(|h| h.get_ref().clone());
                if let Some(h) = &raw.host
                    && (h.get_ref().is_empty() || h.get_ref().bytes().any(|b| b <= b' '))
                {
                    self.error(h, &format!("{field}.host"), "not a valid Host value");
                }
                let expect = match &raw.expect_status {
                    None => (200, 399),
                    Some(e) => parse_status_range(e.get_ref()).unwrap_or_else(|message| {
                        self.error(e, &format!("{field}.expect_status"), message);
                        (200, 399)
                    }),
                };
                HealthProbe::Http {
                    path: path.to_owned(),
                    host,
                    expect,
                }
            }
        };
        let interval = self.positive_duration(
            raw.interval.as_ref(),
            &format!("{field}.interval"),
            DEFAULT_HEALTH_INTERVAL,
        );
        let timeout = self.positive_duration(
            raw.timeout.as_ref(),
            &format!("{field}.timeout"),
            DEFAULT_HEALTH_TIMEOUT.min(interval),
        );
        let jitter = self.duration_or(
            raw.jitter.as_ref(),
            &format!("{field}.jitter"),
            interval / 10,
        );
        if jitter > interval / 2
            && let Some(j) = &raw.jitter
        {
            self.error(
                j,
                &format!("{field}.jitter"),
                "jitter must be at most half the interval",
            );
        }
        let slow_start = self.duration_or(
            raw.slow_start.as_ref(),
            &format!("{field}.slow_start"),
            DEFAULT_SLOW_START,
        );
        HealthCheck {
            probe,
            interval,
            jitter,
            timeout,
            rise: self.count_in(raw.rise.as_ref(), &format!("{field}.rise"), 2, 1..=100),
            fall: self.count_in(raw.fall.as_ref(), &format!("{field}.fall"), 3, 1..=100),
            slow_start,
        }
    }

    /// None when `enabled = false`.
    pub(super) fn outlier(
        &mut self,
        raw: Option<&Spanned<RawOutlier>>,
        field: &str,
    ) -> Option<Outlier> {
        let Some(spanned) = raw else {
            return Some(default_outlier());
        };
        let raw = spanned.get_ref();
        if raw.enabled == Some(false) {
            return None;
        }
        let defaults = default_outlier();
        let base_ejection = self.positive_duration(
            raw.base_ejection.as_ref(),
            &format!("{field}.base_ejection"),
            defaults.base_ejection,
        );
        let max_ejection = self.positive_duration(
            raw.max_ejection.as_ref(),
            &format!("{field}.max_ejection"),
            defaults.max_ejection.max(base_ejection),
        );
        if max_ejection < base_ejection
            && let Some(m) = &raw.max_ejection
        {
            self.error(
                m,
                &format!("{field}.max_ejection"),
                "max_ejection must not be shorter than base_ejection",
            );
        }
        Some(Outlier {
            consecutive_5xx: self.count_in(
                raw.consecutive_5xx.as_ref(),
                &format!("{field}.consecutive_5xx"),
                defaults.consecutive_5xx,
                0..=1000,
            ),
            consecutive_gateway_failures: self.count_in(
                raw.consecutive_gateway_failures.as_ref(),
                &format!("{field}.consecutive_gateway_failures"),
                defaults.consecutive_gateway_failures,
                0..=1000,
            ),
            base_ejection,
            max_ejection,
            max_ejection_percent: self.count_in(
                raw.max_ejection_percent.as_ref(),
                &format!("{field}.max_ejection_percent"),
                defaults.max_ejection_percent,
                0..=100,
            ),
            latency_factor_tenths: match &raw.latency_factor {
                None => None,
                Some(f) if (1.5..=100.0).contains(f.get_ref()) => {
                    Some((f.get_ref() * 10.0).round() as u32)
                }
                Some(f) => {
                    self.error(
                        f,
                        &format!("{field}.latency_factor"),
                        "latency_factor must be between 1.5 and 100",
                    );
                    None
                }
            },
        })
    }

    pub(super) fn retry(&mut self, raw: Option<&Spanned<RawRetry>>, field: &str) -> RetrySettings {
        let defaults = RetrySettings::default();
        let Some(spanned) = raw else { return defaults };
        let raw = spanned.get_ref();
        let mut on_status = Vec::new();
        match &raw.on_status {
            None => on_status = defaults.on_status.clone(),
            Some(list) => {
                for s in list {
                    if (500..=599).contains(s.get_ref()) || *s.get_ref() == 429 {
                        on_status.push(*s.get_ref());
                    } else {
                        self.error(
                            s,
                            &format!("{field}.on_status"),
                            "only 5xx statuses and 429 can count as a failed try",
                        );
                    }
                }
            }
        }
        let backoff_base = self.positive_duration(
            raw.backoff_base.as_ref(),
            &format!("{field}.backoff_base"),
            defaults.backoff_base,
        );
        let backoff_max = self.positive_duration(
            raw.backoff_max.as_ref(),
            &format!("{field}.backoff_max"),
            defaults.backoff_max.max(backoff_base),
        );
        if backoff_max < backoff_base
            && let Some(m) = &raw.backoff_max
        {
            self.error(
                m,
                &format!("{field}.backoff_max"),
                "backoff_max must not be shorter than backoff_base",
            );
        }
        RetrySettings {
            attempts: self.count_in(
                raw.attempts.as_ref(),
                &format!("{field}.attempts"),
                defaults.attempts,
                1..=MAX_ATTEMPTS,
            ),
            on_status,
            backoff_base,
            backoff_max,
            budget_percent: self.count_in(
                raw.budget_percent.as_ref(),
                &format!("{field}.budget_percent"),
                defaults.budget_percent,
                0..=100,
            ),
            budget_min_per_second: self.count_in(
                raw.budget_min_per_second.as_ref(),
                &format!("{field}.budget_min_per_second"),
                defaults.budget_min_per_second,
                0..=100_000,
            ),
            max_replay_body: self.size_or(
                raw.max_replay_body.as_ref(),
                &format!("{field}.max_replay_body"),
                defaults.max_replay_body,
            ),
        }
    }

    pub(super) fn breaker(
        &mut self,
        spanned: &Spanned<RawBreaker>,
        field: &str,
    ) -> BreakerSettings {
        let raw = spanned.get_ref();
        let open = self.positive_duration(
            raw.open.as_ref(),
            &format!("{field}.open"),
            Duration::from_secs(5),
        );
        let open_max = self.positive_duration(
            raw.open_max.as_ref(),
            &format!("{field}.open_max"),
            Duration::from_secs(60).max(open),
        );
        if open_max < open
            && let Some(m) = &raw.open_max
        {
            self.error(
                m,
                &format!("{field}.open_max"),
                "open_max must not be shorter than open",
            );
        }
        let settings = BreakerSettings {
            consecutive_failures: self.count_in(
                raw.consecutive_failures.as_ref(),
                &format!("{field}.consecutive_failures"),
                5,
                0..=10_000,
            ),
            failure_percent: self.count_in(
                raw.failure_percent.as_ref(),
                &format!("{field}.failure_percent"),
                50,
                0..=100,
            ),
            min_requests: self.count_in(
                raw.min_requests.as_ref(),
                &format!("{field}.min_requests"),
                20,
                1..=1_000_000,
            ),
            window: self.positive_duration(
                raw.window.as_ref(),
                &format!("{field}.window"),
                Duration::from_secs(10),
            ),
            open,
            open_max,
            half_open_probes: self.count_in(
                raw.half_open_probes.as_ref(),
                &format!("{field}.half_open_probes"),
                1,
                1..=1000,
            ),
            half_open_successes: self.count_in(
                raw.half_open_successes.as_ref(),
                &format!("{field}.half_open_successes"),
                3,
                1..=1000,
            ),
        };
        if settings.consecutive_failures == 0 && settings.failure_percent == 0 {
            self.error(
                spanned,
                field,
                "with consecutive_failures = 0 and failure_percent = 0 the breaker never opens; remove the section instead",
            );
        }
        settings
    }

    pub(super) fn fault(&mut self, spanned: &Spanned<RawFault>, field: &str) -> FaultSettings {
        let raw = spanned.get_ref();
        let mut percent = |value: &Option<Spanned<f64>>, name: &str| match value {
            None => 0.0,
            Some(v) if (0.0..=100.0).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    v,
                    &format!("{field}.{name}"),
                    "must be a number from 0 to 100",
                );
                0.0
            }
        };
        let delay_percent = percent(&raw.delay_percent, "delay_percent");
        let abort_percent = percent(&raw.abort_percent, "abort_percent");
        let blackhole_percent = percent(&raw.blackhole_percent, "blackhole_percent");
        let abort_status = match &raw.abort_status {
            None => 503,
            Some(s) if (200..=599).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.error(
                    s,
                    &format!("{field}.abort_status"),
                    "must be an HTTP status from 200 to 599",
                );
                503
            }
        };
        let delay = self.duration_or(
            raw.delay.as_ref(),
            &format!("{field}.delay"),
            Duration::ZERO,
        );
        let delay_jitter = self.duration_or(
            raw.delay_jitter.as_ref(),
            &format!("{field}.delay_jitter"),
            Duration::ZERO,
        );
        if delay_percent > 0.0 && delay.is_zero() && delay_jitter.is_zero() {
            self.error(
                spanned,
                &format!("{field}.delay"),
                "delay_percent is set but there is no delay (set delay and/or delay_jitter)",
            );
        }
        FaultSettings {
            delay,
            delay_jitter,
            delay_percent,
            abort_status,
            abort_percent,
            blackhole_percent,
        }
    }

    pub(super) fn hedge(&mut self, spanned: &Spanned<RawHedge>, field: &str) -> Hedge {
        let raw = spanned.get_ref();
        let min_delay = self.positive_duration(
            raw.min_delay.as_ref(),
            &format!("{field}.min_delay"),
            Duration::from_millis(5),
        );
        let max_delay = self.positive_duration(
            raw.max_delay.as_ref(),
            &format!("{field}.max_delay"),
            Duration::from_secs(1).max(min_delay),
        );
        if max_delay < min_delay
            && let Some(m) = &raw.max_delay
        {
            self.error(
                m,
                &format!("{field}.max_delay"),
                "max_delay must not be shorter than min_delay",
            );
        }
        Hedge {
            quantile: self.count_in(
                raw.quantile.as_ref(),
                &format!("{field}.quantile"),
                95,
                50..=99,
            ),
            min_delay,
            max_delay,
        }
    }

    pub(super) fn adaptive_timeout(
        &mut self,
        spanned: &Spanned<RawAdaptiveTimeout>,
        field: &str,
    ) -> AdaptiveTimeout {
        let raw = spanned.get_ref();
        let factor_tenths = match &raw.factor {
            None => 30,
            Some(f) if (1.0..=100.0).contains(f.get_ref()) => (f.get_ref() * 10.0).round() as u32,
            Some(f) => {
                self.error(
                    f,
                    &format!("{field}.factor"),
                    "factor must be between 1 and 100",
                );
                30
            }
        };
        let min = self.positive_duration(
            raw.min.as_ref(),
            &format!("{field}.min"),
            Duration::from_millis(50),
        );
        let max = self.positive_duration(
            raw.max.as_ref(),
            &format!("{field}.max"),
            Duration::from_secs(10).max(min),
        );
        if max < min
            && let Some(m) = &raw.max
        {
            self.error(
                m,
                &format!("{field}.max"),
                "max must not be shorter than min",
            );
        }
        AdaptiveTimeout {
            quantile: self.count_in(
                raw.quantile.as_ref(),
                &format!("{field}.quantile"),
                99,
                50..=99,
            ),
            factor_tenths,
            floor: self.duration_or(
                raw.floor.as_ref(),
                &format!("{field}.floor"),
                Duration::from_millis(10),
            ),
            min,
            max,
        }
    }

    /// A duration that must not be zero.
    pub(super) fn positive_duration(
        &mut self,
        value: Option<&Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration_or(value, field, default);
        if d.is_zero() {
            if let Some(v) = value {
                self.error(v, field, "must be longer than 0");
            }
            return default;
        }
        d
    }

    fn count_in(
        &mut self,
        value: Option<&Spanned<u32>>,
        field: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> u32 {
        let Some(v) = value else { return default };
        if range.contains(v.get_ref()) {
            *v.get_ref()
        } else {
            self.error(
                v,
                field,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            default
        }
    }
}

/// Ejection after 5 consecutive gateway failures (no answer, or 502/503/504) is on by default:
/// it only reacts to endpoints that are failing outright. Ejection on any 5xx is opt-in, since
/// an application's own 500s say nothing about the endpoint's health.
fn default_outlier() -> Outlier {
    Outlier {
        consecutive_5xx: 0,
        consecutive_gateway_failures: 5,
        base_ejection: Duration::from_secs(30),
        max_ejection: Duration::from_secs(300),
        max_ejection_percent: 50,
        latency_factor_tenths: None,
    }
}

/// "200", "200-399".
fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let parse = |s: &str| -> Result<u16, String> {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
            .ok_or_else(|| format!("{s:?} is not an HTTP status (100-599)"))
    };
    let (low, high) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let n = parse(text)?;
            (n, n)
        }
    };
    if low > high {
        return Err(format!("{text:?}: the range is empty (write low-high)"));
    }
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::parse_status_range;
    use crate::HealthProbe;

    const BASE: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[routes]]\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n";

    #[test]
    fn faults_from_the_config_file() {
        let good = format!(
            "{BASE}[clusters.fault]\ndelay = \"50ms\"\ndelay_percent = 25\nabort_percent = 1.5\n"
        );
        let config = crate::parse(&good, "t.toml").unwrap();
        let fault = config.clusters[0].fault.unwrap();
        assert_eq!(fault.delay.as_millis(), 50);
        assert_eq!((fault.delay_percent, fault.abort_percent), (25.0, 1.5));
        assert_eq!(fault.abort_status, 503, "the default abort status");
        let bad = format!(
            "{BASE}[clusters.fault]\ndelay_percent = 50\nabort_status = 99\nblackhole_percent = 101\n"
        );
        let text = crate::parse(&bad, "t.toml").unwrap_err().to_string();
        for expected in [
            "clusters[0].fault.abort_status",
            "clusters[0].fault.blackhole_percent",
            "there is no delay",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn defaults_are_safe_retries_and_gateway_failure_ejection() {
        let config = crate::parse(BASE, "t.toml").unwrap();
        let c = &config.clusters[0];
        assert!(c.health_check.is_none());
        assert_eq!(c.retry.attempts, 2);
        assert_eq!(c.retry.budget_percent, 20);
        let outlier = c.outlier.as_ref().unwrap();
        assert_eq!(
            (
                outlier.consecutive_5xx,
                outlier.consecutive_gateway_failures
            ),
            (0, 5)
        );
        assert_eq!(
            config.server.deadline_header.as_deref(),
            Some("x-gatehouse-timeout")
        );
    }

    #[test]
    fn resilience_sections_parse() {
        let text = format!(
            "{BASE}try_timeout = \"2s\"\n[clusters.health_check]\npath = \"/healthz\"\nexpect_status = \"200-299\"\ninterval = \"2s\"\n[clusters.outlier]\nenabled = false\n[clusters.retry]\nattempts = 3\non_status = [503]\n"
        );
        let config = crate::parse(&text, "t.toml").unwrap();
        let c = &config.clusters[0];
        let check = c.health_check.as_ref().unwrap();
        assert_eq!(
            check.probe,
            HealthProbe::Http {
                path: "/healthz".into(),
                host: None,
                expect: (200, 299)
            }
        );
        assert_eq!(check.jitter, std::time::Duration::from_millis(200));
        assert!(c.outlier.is_none());
        assert_eq!(
            (c.retry.attempts, c.retry.on_status.clone()),
            (3, vec![503])
        );
        assert_eq!(c.try_timeout, Some(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn every_bad_resilience_value_is_reported_with_its_field() {
        let text = format!(
            "{BASE}[clusters.health_check]\nkind = \"icmp\"\nexpect_status = \"2xx\"\ninterval = \"1s\"\njitter = \"900ms\"\nrise = 0\n[clusters.retry]\nattempts = 0\non_status = [404]\nbackoff_base = \"1s\"\nbackoff_max = \"10ms\"\n"
        );
        let errors = crate::parse(&text, "t.toml").unwrap_err().to_string();
        for field in [
            "clusters[0].health_check.kind",
            "clusters[0].health_check.expect_status",
            "clusters[0].health_check.jitter",
            "clusters[0].health_check.rise",
            "clusters[0].retry.attempts",
            "clusters[0].retry.on_status",
            "clusters[0].retry.backoff_max",
        ] {
            assert!(errors.contains(field), "{field} missing in:\n{errors}");
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("2xx").is_err());
        assert!(parse_status_range("600").is_err());
    }
}
