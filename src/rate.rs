//! A request rate as a person writes it (`5`, `0.5`, `300/min`, `2/h`) and the governor
//! quota it means.
//!
//! Owns the parsing, the bounds and the quota; it knows nothing of flags, requests or
//! the API, and must not: the CLI parses into it, the send stage builds its limiter from it.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::Quota;

/// The most requests a second: a million a second is no limit at all.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;
/// The least: one request an hour.
pub const MIN_PER_SECOND: f64 = 1.0 / 3600.0;

/// Requests per period, e.g. 300 a minute: a steady interval between two requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    count: f64,
    period: Period,
}

/// The period a rate is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Second,
    Minute,
    Hour,
}

impl Period {
    fn secs(self) -> f64 {
        match self {
            Period::Second => 1.0,
            Period::Minute => 60.0,
            Period::Hour => 3600.0,
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "min",
            Period::Hour => "h",
        }
    }
}

impl Rate {
    /// `n` requests a second.
    pub fn per_second(n: NonZeroU32) -> Rate {
        Rate {
            count: f64::from(n.get()),
            period: Period::Second,
        }
    }

    /// Requests a second, maybe less than one.
    pub fn per_second_f64(&self) -> f64 {
        self.count / self.period.secs()
    }

    /// The time between two requests at this rate.
    pub fn interval(&self) -> Duration {
        // Bounded by parsing: from a microsecond to an hour.
        Duration::from_secs_f64(1.0 / self.per_second_f64()).max(Duration::from_nanos(1))
    }

    /// Whole requests a second, at least one: the default burst's basis.
    pub fn per_second_whole(&self) -> NonZeroU32 {
        // `as` saturates; the rate is at most a million a second.
        NonZeroU32::new(self.per_second_f64().floor() as u32).unwrap_or(NonZeroU32::MIN)
    }

    /// The governor quota: one request every [`Rate::interval`], `burst` at once.
    pub fn quota(&self, burst: NonZeroU32) -> Quota {
        Quota::with_period(self.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.period.unit())
    }
}

/// Why a rate was refused, in words that say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RateError(String);

const FORMS: &str = "e.g. 5 (a second), 0.5 (one every two seconds), 300/min or 100/h";

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Rate, RateError> {
        let text = s.trim();
        let (number, unit) = match text.split_once('/') {
            Some((n, u)) => (n.trim(), u.trim()),
            None => (text, "s"),
        };
        let period = match unit.to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Period::Second,
            "m" | "min" | "minute" => Period::Minute,
            "h" | "hour" => Period::Hour,
            _ => {
                return Err(RateError(format!(
                    "unknown period \"{unit}\" in \"{s}\"; use /s, /min or /h ({FORMS})"
                )));
            }
        };
        let count: f64 = number
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| {
                RateError(format!(
                    "expected requests per period, got \"{s}\"; {FORMS}"
                ))
            })?;
        let rate = Rate { count, period };
        let per_second = rate.per_second_f64();
        if count <= 0.0 {
            return Err(RateError(format!(
                "\"{s}\" is not a rate: it must be more than 0, and the smallest is 1/h (one request an hour); {FORMS}"
            )));
        }
        if per_second < MIN_PER_SECOND * (1.0 - 1e-9) {
            return Err(RateError(format!(
                "\"{s}\" is too slow: the smallest rate is 1/h (one request an hour); {FORMS}"
            )));
        }
        if per_second > MAX_PER_SECOND {
            return Err(RateError(format!(
                "\"{s}\" is too fast: the largest rate is 1000000 a second"
            )));
        }
        Ok(rate)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn every_humane_form_means_its_interval() {
        assert_eq!(rate("5").interval(), Duration::from_millis(200));
        assert_eq!(rate("5/s").interval(), Duration::from_millis(200));
        assert_eq!(rate("0.5").interval(), Duration::from_secs(2));
        assert_eq!(rate("300/min").interval(), Duration::from_millis(200));
        assert_eq!(rate("2/h").interval(), Duration::from_secs(1800));
        assert_eq!(rate("1/h").interval(), Duration::from_secs(3600));
        assert_eq!(rate("1000000").interval(), Duration::from_micros(1));
        assert_eq!(rate(" 30 / MIN ").per_second_whole().get(), 1);
        assert_eq!(rate("25").per_second_whole().get(), 25);
    }

    #[test]
    fn refusals_say_what_to_write() {
        for (bad, says) in [
            ("0", "the smallest is 1/h"),
            ("-5", "the smallest is 1/h"),
            ("0.5/h", "smallest rate is 1/h"),
            ("1000001", "largest rate"),
            ("abc", "expected requests per period"),
            ("inf", "expected requests per period"),
            ("NaN", "expected requests per period"),
            ("5/week", "unknown period"),
        ] {
            let e = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_quota_replenishes_one_request_per_interval() {
        let q = rate("0.5").quota(NonZeroU32::MIN);
        assert_eq!(q.replenish_interval(), Duration::from_secs(2));
        assert_eq!(q.burst_size().get(), 1);
        let q = rate("300/min").quota(NonZeroU32::new(30).unwrap());
        assert_eq!(q.replenish_interval(), Duration::from_millis(200));
    }
}
