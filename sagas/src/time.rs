//! Durations as definitions write them, and conversions to and from proto timestamps.
//!
//! A [`Span`] is a calendar-aware duration: "6 months" after 31 August is 28 February, not
//! 180 days later, because a Boekstart package or a card-destruction deadline is counted in
//! months the way people count them. Retry backoff and task timeouts are exact spans of
//! milliseconds; only waits and human deadlines use months and years.

use std::fmt;

use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use levensloop_proto::types::Timestamp;

/// A duration of whole months plus milliseconds, e.g. `6 months`, `30s`, `1h 30min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    months: u32,
    millis: u64,
}

impl Span {
    /// An exact span of milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { months: 0, millis }
    }

    /// An exact span of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1000))
    }

    /// A span of calendar months.
    pub const fn from_months(months: u32) -> Self {
        Self { months, millis: 0 }
    }

    /// The calendar months in the span.
    pub fn months(self) -> u32 {
        self.months
    }

    /// The exact part of the span, in milliseconds.
    pub fn millis(self) -> u64 {
        self.millis
    }

    /// Whether the span is zero.
    pub fn is_zero(self) -> bool {
        self.months == 0 && self.millis == 0
    }

    /// Whether the span is exact (has no calendar months): required for backoff.
    pub fn is_exact(self) -> bool {
        self.months == 0
    }

    /// Parses `<number><unit>` parts separated by optional spaces: `ms`; `s`, `sec`,
    /// `second(s)`; `min`, `minute(s)`; `h`, `hour(s)`; `d`, `day(s)`; `w`, `week(s)`;
    /// `month(s)`; `y`, `year(s)`. `m` alone is refused: minute or month is too easy to get
    /// wrong in a file that mixes both.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err("empty duration".into());
        }
        let mut span = Span::default();
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("expected a number at {rest:?}"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("number too large in {text:?}"))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let ms_per: Option<u64> = match unit {
                "ms" | "millis" | "millisecond" | "milliseconds" => Some(1),
                "s" | "sec" | "secs" | "second" | "seconds" => Some(1_000),
                "min" | "mins" | "minute" | "minutes" => Some(60_000),
                "h" | "hour" | "hours" => Some(3_600_000),
                "d" | "day" | "days" => Some(86_400_000),
                "w" | "week" | "weeks" => Some(7 * 86_400_000),
                "month" | "months" | "year" | "years" | "y" => None,
                "" => return Err(format!("missing unit after {n} in {text:?}")),
                "m" => {
                    return Err(format!(
                        "ambiguous unit `m` in {text:?}: write `min` or `months`"
                    ));
                }
                other => return Err(format!("unknown unit {other:?} in {text:?}")),
            };
            match ms_per {
                Some(per) => {
                    let add = n
                        .checked_mul(per)
                        .ok_or_else(|| format!("duration too large: {text:?}"))?;
                    span.millis = span
                        .millis
                        .checked_add(add)
                        .ok_or_else(|| format!("duration too large: {text:?}"))?;
                }
                None => {
                    let per = if unit.starts_with('y') { 12 } else { 1 };
                    let add = u32::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_mul(per))
                        .ok_or_else(|| format!("duration too large: {text:?}"))?;
                    span.months = span
                        .months
                        .checked_add(add)
                        .ok_or_else(|| format!("duration too large: {text:?}"))?;
                }
            }
        }
        Ok(span)
    }

    /// The instant this span after `t`; `None` past the end of chrono's calendar.
    pub fn after(self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.checked_add_months(Months::new(self.months))?;
        t.checked_add_signed(TimeDelta::milliseconds(i64::try_from(self.millis).ok()?))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.months > 0 {
            parts.push(format!("{} months", self.months));
        }
        let mut ms = self.millis;
        for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("min", 60_000)] {
            if ms >= per {
                parts.push(format!("{}{unit}", ms / per));
                ms %= per;
            }
        }
        if ms > 0 || parts.is_empty() {
            if ms.is_multiple_of(1000) {
                parts.push(format!("{}s", ms / 1000));
            } else {
                parts.push(format!("{ms}ms"));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// A proto timestamp as a UTC instant; `None` when out of range.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// A UTC instant as a proto timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// An ISO-8601 date (`YYYY-MM-DD`), as the life events carry them.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// Midnight UTC at the start of `date`. Dates in life events are Belgian calendar dates;
/// the engine has no time-zone database, and for waits counted in months an hour either way
/// does not matter.
pub fn start_of(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(Span::parse("30s"), Ok(Span::from_secs(30)));
        assert_eq!(Span::parse("250ms"), Ok(Span::from_millis(250)));
        assert_eq!(Span::parse("1h 30min"), Ok(Span::from_secs(5400)));
        assert_eq!(Span::parse("2 days"), Ok(Span::from_secs(2 * 86_400)));
        assert_eq!(Span::parse("6 months"), Ok(Span::from_months(6)));
        assert_eq!(Span::parse("1 year 3 months"), Ok(Span::from_months(15)));
        for bad in [
            "",
            "5",
            "m",
            "5m",
            "5 fortnights",
            "-5s",
            "1.5h",
            "99999999999999999999s",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn months_follow_the_calendar() {
        let t = start_of(NaiveDate::from_ymd_opt(2026, 8, 31).unwrap());
        let later = Span::from_months(6).after(t).unwrap();
        assert_eq!(
            later.date_naive(),
            NaiveDate::from_ymd_opt(2027, 2, 28).unwrap()
        );
    }

    #[test]
    fn displays_readably() {
        for (text, shown) in [
            ("30s", "30s"),
            ("6 months", "6 months"),
            ("1h 30min", "1h 30min"),
            ("250ms", "250ms"),
            ("2d", "2d"),
        ] {
            assert_eq!(Span::parse(text).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = DateTime::from_timestamp(1_790_000_000, 123_000_000).unwrap();
        assert_eq!(from_timestamp(&to_timestamp(t)), Some(t));
    }
}
