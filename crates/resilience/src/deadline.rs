//! Request deadlines: parsing a client's timeout header, tracking the time left, and passing
//! what is left on to the upstream.
//!
//! A client may bound its request with the [`DEFAULT_HEADER`] (`x-gatehouse-timeout`). Accepted
//! values ([`parse_timeout`]):
//!
//! | value        | meaning                                   |
//! |--------------|-------------------------------------------|
//! | `250`        | bare number: milliseconds                 |
//! | `1500ms`     | milliseconds                              |
//! | `2s`         | seconds                                   |
//! | `100m`, `5S` | grpc-timeout units: `H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds |
//!
//! So `grpc-timeout` values parse too. Units are case-sensitive (`m` is milliseconds, `M`
//! minutes, as in gRPC). Surrounding spaces are ignored; signs, fractions and inner spaces are
//! errors, each naming the value and the accepted forms.
//!
//! The effective [`Deadline`] of a request is the earlier of the header's and the route's
//! timeout ([`request_deadline`]); the proxy forwards what is left in milliseconds
//! ([`Deadline::header_value`]), rounded down so an upstream is never promised more time than
//! the client gave.

use std::time::Duration;

use http::HeaderValue;

use crate::time::saturating_nanos;

/// The header a client sets to bound its request.
pub const DEFAULT_HEADER: &str = "x-gatehouse-timeout";

/// gRPC's timeout header; its values use the same parser.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// Longest value echoed back in an error message, so hostile input cannot bloat logs.
const MAX_ECHO: usize = 32;

/// A timeout header value that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but spaces.
    #[error(
        "empty timeout value; expected a number with an optional unit, e.g. \"1500ms\", \"2s\" or \"250\" (milliseconds)"
    )]
    Empty,
    /// No digits at the start (signs and letters included).
    #[error(
        "timeout {value:?} does not start with a number; expected e.g. \"1500ms\", \"2s\" or \"250\" (milliseconds)"
    )]
    MissingNumber {
        /// The value as received (shortened).
        value: String,
    },
    /// Digits followed by something that is not a known unit.
    #[error(
        "timeout {value:?} has an unknown unit {unit:?}; use ms or s, a grpc-timeout unit (H, M, S, m, u, n) or none for milliseconds, with whole numbers only"
    )]
    UnknownUnit {
        /// The value as received (shortened).
        value: String,
        /// What followed the digits (shortened).
        unit: String,
    },
    /// More than ~584 years.
    #[error("timeout {value:?} is too large")]
    TooLarge {
        /// The value as received (shortened).
        value: String,
    },
}

/// Parses a timeout header value (see the module docs for the forms).
pub fn parse_timeout(value: impl AsRef<[u8]>) -> Result<Duration, ParseError> {
    let raw = value.as_ref();
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(ParseError::Empty);
    }
    let digits = trimmed.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = trimmed.split_at(digits);
    if number.is_empty() {
        return Err(ParseError::MissingNumber {
            value: echo(trimmed),
        });
    }
    let too_large = || ParseError::TooLarge {
        value: echo(trimmed),
    };
    let count = number.iter().try_fold(0u64, |n, &digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    });
    let count = count.ok_or_else(too_large)?;
    let nanos_per_unit: u64 = match unit {
        b"" | b"ms" | b"m" => 1_000_000,
        b"s" | b"S" => 1_000_000_000,
        b"M" => 60_000_000_000,
        b"H" => 3_600_000_000_000,
        b"u" => 1_000,
        b"n" => 1,
        _ => {
            return Err(ParseError::UnknownUnit {
                value: echo(trimmed),
                unit: echo(unit),
            });
        }
    };
    let nanos = count.checked_mul(nanos_per_unit).ok_or_else(too_large)?;
    Ok(Duration::from_nanos(nanos))
}

/// `d` as a header value in whole milliseconds, rounded down.
pub fn format_millis(d: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `d` as a `grpc-timeout` value: at most 8 digits (the gRPC limit) in the finest unit that
/// fits, rounded down.
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX_DIGITS_VALUE: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per_unit, unit) in units {
        let count = nanos / per_unit;
        if count <= MAX_DIGITS_VALUE {
            return header(&format!("{count}{unit}"));
        }
    }
    // Longer than 99,999,999 hours (11,000 years): the largest expressible value.
    header("99999999H")
}

/// A point in time (monotonic nanoseconds) by which a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    /// The deadline, on the caller's monotonic clock.
    pub at_nanos: u64,
}

impl Deadline {
    /// The deadline `timeout` after `now` (saturating: a huge timeout means "never").
    pub fn after(now_nanos: u64, timeout: Duration) -> Self {
        Self {
            at_nanos: now_nanos.saturating_add(saturating_nanos(timeout)),
        }
    }

    /// Time left at `now`, or None when the deadline has passed (reached counts as passed).
    pub fn remaining(&self, now_nanos: u64) -> Option<Duration> {
        (now_nanos < self.at_nanos).then(|| Duration::from_nanos(self.at_nanos - now_nanos))
    }

    /// True once the deadline is reached.
    pub fn is_expired(&self, now_nanos: u64) -> bool {
        self.remaining(now_nanos).is_none()
    }

    /// The earlier of this deadline and `timeout` after `now` (e.g. a per-try timeout).
    pub fn min_with_timeout(self, now_nanos: u64, timeout: Duration) -> Self {
        self.min(Self::after(now_nanos, timeout))
    }

    /// Time left at `now` as a header value in milliseconds, rounded down; "0" when passed.
    pub fn header_value(&self, now_nanos: u64) -> HeaderValue {
        format_millis(self.remaining(now_nanos).unwrap_or_default())
    }
}

/// The effective deadline of a request arriving at `now`: the earlier of the client's header
/// timeout and the route's timeout, or None when neither is set.
pub fn request_deadline(
    now_nanos: u64,
    header: Option<Duration>,
    route: Option<Duration>,
) -> Option<Deadline> {
    let from_header = header.map(|t| Deadline::after(now_nanos, t));
    let from_route = route.map(|t| Deadline::after(now_nanos, t));
    match (from_header, from_route) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A header value from text that is known to be digits and a unit letter.
fn header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("0"))
}

/// `bytes` as text for an error message: lossy UTF-8, at most `MAX_ECHO` characters.
fn echo(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    let mut shown: String = chars.by_ref().take(MAX_ECHO).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("250", Duration::from_millis(250)),
            ("1500ms", Duration::from_millis(1500)),
            ("2s", Duration::from_secs(2)),
            ("5S", Duration::from_secs(5)),
            ("100m", Duration::from_millis(100)),
            ("3M", Duration::from_secs(180)),
            ("1H", Duration::from_secs(3600)),
            ("750u", Duration::from_micros(750)),
            ("42n", Duration::from_nanos(42)),
            ("0", Duration::ZERO),
            ("007ms", Duration::from_millis(7)),
            ("  1500ms \t", Duration::from_millis(1500)),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_timeout(value), Ok(expected), "{value:?}");
        }
        assert_eq!(
            parse_timeout(HeaderValue::from_static("2s").as_bytes()),
            Ok(Duration::from_secs(2))
        );
    }

    #[test]
    fn rejects_with_errors_that_name_the_value_and_the_fix() {
        assert_eq!(parse_timeout(""), Err(ParseError::Empty));
        assert_eq!(parse_timeout("   "), Err(ParseError::Empty));
        for value in ["ms", "-5", "+5", "s2", "١٢"] {
            assert!(
                matches!(parse_timeout(value), Err(ParseError::MissingNumber { .. })),
                "{value:?}"
            );
        }
        let cases = [
            ("1.5s", ".5s"),
            ("10 ms", " ms"),
            ("5h", "h"),
            ("5sec", "sec"),
            ("5MS", "MS"),
            ("10mss", "mss"),
        ];
        for (value, unit) in cases {
            assert_eq!(
                parse_timeout(value),
                Err(ParseError::UnknownUnit {
                    value: value.to_string(),
                    unit: unit.to_string()
                }),
                "{value:?}"
            );
        }
        let message = parse_timeout("1.5s").unwrap_err().to_string();
        assert!(
            message.contains("\"1.5s\"") && message.contains("ms"),
            "{message}"
        );
        let message = parse_timeout("soon").unwrap_err().to_string();
        assert!(
            message.contains("\"soon\"") && message.contains("250"),
            "{message}"
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(matches!(
            parse_timeout("99999999999999999999999"),
            Err(ParseError::TooLarge { .. })
        ));
        // Fits in u64 as a count but not once multiplied by the unit.
        assert!(matches!(
            parse_timeout("18446744073709551615H"),
            Err(ParseError::TooLarge { .. })
        ));
        assert_eq!(
            parse_timeout("18446744073709551615n"),
            Ok(Duration::from_nanos(u64::MAX))
        );
    }

    #[test]
    fn error_echo_is_bounded_and_lossy() {
        let long = format!("1{}", "x".repeat(10_000));
        let Err(ParseError::UnknownUnit { value, unit }) = parse_timeout(&long) else {
            panic!("expected an unknown unit");
        };
        assert_eq!(value.chars().count(), MAX_ECHO + 1);
        assert!(value.ends_with('…'));
        assert_eq!(unit.chars().count(), MAX_ECHO + 1);
        let Err(ParseError::UnknownUnit { unit, .. }) = parse_timeout(b"5\xff") else {
            panic!("expected an unknown unit");
        };
        assert_eq!(unit, "\u{fffd}");
    }

    #[test]
    fn remaining_time_counts_down_and_runs_out() {
        let deadline = Deadline::after(10 * SEC, Duration::from_millis(1500));
        assert_eq!(deadline.at_nanos, 11 * SEC + 500 * MS);
        assert_eq!(
            deadline.remaining(10 * SEC),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            deadline.remaining(11 * SEC + 500 * MS - 1),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(deadline.remaining(11 * SEC + 500 * MS), None);
        assert!(deadline.is_expired(100 * SEC));
        assert!(!deadline.is_expired(0));
        // A clock reading from before the deadline was set just shows more time left.
        assert_eq!(
            deadline.remaining(0),
            Some(Duration::from_nanos(deadline.at_nanos))
        );
    }

    #[test]
    fn huge_timeouts_saturate() {
        let never = Deadline::after(5, Duration::MAX);
        assert_eq!(never.at_nanos, u64::MAX);
        assert!(!never.is_expired(u64::MAX - 1));
        assert_eq!(
            Deadline::after(u64::MAX, Duration::from_secs(1)).at_nanos,
            u64::MAX
        );
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let now = SEC;
        let header = Some(Duration::from_millis(300));
        let route = Some(Duration::from_secs(2));
        assert_eq!(
            request_deadline(now, header, route),
            Some(Deadline::after(now, Duration::from_millis(300)))
        );
        assert_eq!(
            request_deadline(now, Some(Duration::from_secs(60)), route),
            Some(Deadline::after(now, Duration::from_secs(2)))
        );
        assert_eq!(
            request_deadline(now, None, route),
            Some(Deadline::after(now, Duration::from_secs(2)))
        );
        assert_eq!(
            request_deadline(now, header, None),
            Some(Deadline::after(now, Duration::from_millis(300)))
        );
        assert_eq!(request_deadline(now, None, None), None);
        let deadline = Deadline::after(0, Duration::from_secs(1));
        assert_eq!(
            deadline.min_with_timeout(900 * MS, Duration::from_millis(50)),
            Deadline::after(900 * MS, Duration::from_millis(50))
        );
        assert_eq!(
            deadline.min_with_timeout(900 * MS, Duration::from_millis(500)),
            deadline
        );
    }

    #[test]
    fn forwards_the_remaining_budget_in_whole_milliseconds() {
        let deadline = Deadline::after(0, Duration::from_millis(1500));
        assert_eq!(deadline.header_value(0), "1500");
        // 1499.999 ms left is forwarded as 1499: never promise more than is left.
        assert_eq!(deadline.header_value(1), "1499");
        assert_eq!(deadline.header_value(1500 * MS - 1), "0");
        assert_eq!(deadline.header_value(2 * SEC), "0");
        // What we send parses back to at most what was left.
        let sent = deadline.header_value(123_456_789);
        let parsed = parse_timeout(sent.as_bytes()).unwrap();
        assert!(parsed <= deadline.remaining(123_456_789).unwrap());
        assert_eq!(format_millis(Duration::MAX), u64::MAX.to_string().as_str());
    }

    #[test]
    fn grpc_timeouts_use_at_most_eight_digits() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_millis(1500), "1500000u"),
            (Duration::from_secs(200), "200000m"),
            (Duration::from_secs(200_000), "200000S"),
            // 100,000,000 minutes is one digit too many: whole hours instead.
            (Duration::from_secs(100_000_000 * 60), "1666666H"),
            (Duration::MAX, "99999999H"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_grpc_timeout(duration), expected, "{duration:?}");
            if duration != Duration::MAX {
                let parsed = parse_timeout(format_grpc_timeout(duration).as_bytes()).unwrap();
                assert!(parsed <= duration, "{duration:?}");
            }
        }
    }
}
