//! Timer arithmetic, kept pure so it can be checked against hand-computed values: the next
//! fire strictly after a given instant, for `every` (phase-locked to an anchor) and for cron
//! expressions read in an IANA time zone (DST gaps and repeats as croner defines them: a
//! wall-clock time that does not exist is skipped forward, a repeated one fires once). It owns
//! [`Schedule`], which the config parses once and every user shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Year};
use croner::Cron;

/// When a timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every interval, phase-locked to `start` (or the Unix epoch), so restarts never drift.
    Every(Duration),
    /// A cron expression of 5 or 6 fields (seconds first), read in an IANA time zone.
    Cron(CronSchedule),
}

/// A parsed cron expression and its time zone; equal when the text and the zone are.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: Box<Cron>,
    timezone: Tz,
}

impl CronSchedule {
    /// Parses `expr` (see [`parse_cron`]) read in the IANA zone `timezone`; each error says
    /// which of the two is wrong.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, CronError> {
        let cron = parse_cron(expr);
        let zone = parse_timezone(timezone);
        match (cron, zone) {
            (Ok(cron), Ok(timezone)) => Ok(CronSchedule {
                expr: expr.to_string(),
                cron: Box::new(cron),
                timezone,
            }),
            (cron, zone) => Err(CronError {
                expr: cron.err(),
                timezone: zone.err(),
            }),
        }
    }
}

/// Why a cron schedule was refused: the expression, the zone, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub expr: Option<String>,
    pub timezone: Option<String>,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr && self.timezone == other.timezone
    }
}

impl Eq for CronSchedule {}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron(c) => write!(f, "cron {} {}", c.expr, c.timezone.name()),
        }
    }
}

/// A schedule with its anchor, ready to compute fire times.
#[derive(Debug, Clone)]
pub enum Compiled {
    Every {
        period: Duration,
        anchor: SystemTime,
    },
    Cron(CronSchedule),
}

/// Parses a cron expression of 5 fields, or 6 with seconds first (or `@daily` and friends).
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{expr}` has {fields} fields; cron takes 5, or 6 with seconds first"
        ));
    }
    CronParser::builder()
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}`: {e}"))
}

fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone (e.g. \"UTC\", \"Europe/Paris\")"))
}

impl Compiled {
    /// `start` anchors an `every` schedule (the Unix epoch without it).
    pub fn new(schedule: &Schedule, start: Option<SystemTime>) -> Self {
        match schedule {
            Schedule::Every(period) => Compiled::Every {
                period: *period,
                anchor: start.unwrap_or(UNIX_EPOCH),
            },
            Schedule::Cron(cron) => Compiled::Cron(cron.clone()),
        }
    }

    /// The first scheduled instant strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        match self {
            Compiled::Every { period, anchor } => {
                if after < *anchor {
                    return Some(*anchor);
                }
                let since = after.duration_since(*anchor).ok()?.as_nanos();
                let period_ns = period.as_nanos().max(1);
                let k = since / period_ns + 1;
                let offset = u64::try_from(k.checked_mul(period_ns)?).ok()?;
                anchor.checked_add(Duration::from_nanos(offset))
            }
            Compiled::Cron(CronSchedule { cron, timezone, .. }) => {
                // croner carries the sub-second part of its input into the result: start from
                // the whole second so that fires land on whole seconds. The next occurrence
                // strictly after that second is also strictly after `after`.
                let utc: DateTime<Utc> = after.into();
                let whole = DateTime::<Utc>::from_timestamp(utc.timestamp(), 0)?;
                let local = timezone.from_utc_datetime(&whole.naive_utc());
                let next = cron.find_next_occurrence(&local, false).ok()?;
                Some(next.with_timezone(&Utc).into())
            }
        }
    }
}

/// A fixed delay in [0, jitter) derived from the rule's name (FNV-1a), the same on every run.
pub fn jitter_for(name: &str, jitter: Duration) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Duration::from_nanos(hash % jitter.as_nanos().min(u128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
            .into()
    }

    fn cron(expr: &str, tz: &str) -> Compiled {
        Compiled::new(
            &Schedule::Cron(CronSchedule::parse(expr, tz).unwrap()),
            None,
        )
    }

    #[test]
    fn every_is_phase_locked_to_its_anchor() {
        let every = Schedule::Every(Duration::from_secs(300));
        let c = Compiled::new(&every, None);
        assert_eq!(
            c.next_after(at("2026-03-01T10:02:13Z")),
            Some(at("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-03-01T10:05:00Z")),
            Some(at("2026-03-01T10:10:00Z"))
        );
        let c = Compiled::new(&every, Some(at("2026-03-01T10:01:00Z")));
        assert_eq!(
            c.next_after(at("2026-03-01T09:00:00Z")),
            Some(at("2026-03-01T10:01:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-03-01T10:02:13Z")),
            Some(at("2026-03-01T10:06:00Z"))
        );
    }

    // Hand-checked: in 2026, Europe/Paris springs forward on 29 March (02:00 CET → 03:00 CEST)
    // and falls back on 25 October (03:00 CEST → 02:00 CET); America/New_York springs forward on
    // 8 March (02:00 EST → 03:00 EDT) and falls back on 1 November (02:00 EDT → 01:00 EST).
    #[test]
    fn cron_across_dst_in_paris() {
        let daily_0830 = cron("30 8 * * *", "Europe/Paris");
        // Before the change 08:30 CET = 07:30 UTC; after it 08:30 CEST = 06:30 UTC.
        assert_eq!(
            daily_0830.next_after(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T06:30:00Z"))
        );
        assert_eq!(
            daily_0830.next_after(at("2026-03-27T12:00:00Z")),
            Some(at("2026-03-28T07:30:00Z"))
        );
        assert_eq!(
            daily_0830.next_after(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T07:30:00Z"))
        );
        // 02:30 does not exist on 29 March: the next real 02:30 is on the 30th (00:30 UTC).
        let at_0230 = cron("30 2 * * *", "Europe/Paris");
        let next = at_0230.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert!(
            next >= at("2026-03-29T00:00:00Z") && next <= at("2026-03-30T00:30:00Z"),
            "{:?}",
            DateTime::<Utc>::from(next)
        );
    }

    #[test]
    fn cron_across_dst_in_new_york() {
        let daily_0900 = cron("0 9 * * *", "America/New_York");
        // 09:00 EST = 14:00 UTC before 8 March, 09:00 EDT = 13:00 UTC after.
        assert_eq!(
            daily_0900.next_after(at("2026-03-07T15:00:00Z")),
            Some(at("2026-03-08T13:00:00Z"))
        );
        assert_eq!(
            daily_0900.next_after(at("2026-03-06T15:00:00Z")),
            Some(at("2026-03-07T14:00:00Z"))
        );
        assert_eq!(
            daily_0900.next_after(at("2026-11-01T00:00:00Z")),
            Some(at("2026-11-01T14:00:00Z"))
        );
        // Six fields: seconds first.
        let with_seconds = cron("15 0 12 * * *", "America/New_York");
        assert_eq!(
            with_seconds.next_after(at("2026-07-04T00:00:00Z")),
            Some(at("2026-07-04T16:00:15Z"))
        );
    }

    #[test]
    fn cron_fires_on_whole_seconds_after_a_fractional_instant() {
        let every_second = cron("* * * * * *", "Europe/Paris");
        let after = at("2026-07-04T10:00:00.164898795Z");
        assert_eq!(
            every_second.next_after(after),
            Some(at("2026-07-04T10:00:01Z"))
        );
        let hourly = cron("0 * * * *", "America/New_York");
        assert_eq!(
            hourly.next_after(at("2026-07-04T10:59:59.999Z")),
            Some(at("2026-07-04T11:00:00Z"))
        );
        assert_eq!(
            hourly.next_after(at("2026-07-04T11:00:00.5Z")),
            Some(at("2026-07-04T12:00:00Z"))
        );
    }

    #[test]
    fn repeated_wall_clock_time_fires_once_at_fall_back() {
        // 25 October 2026 in Paris: 02:00–03:00 happens twice (CEST, then CET).
        let at_0230 = cron("30 2 * * *", "Europe/Paris");
        let first = at_0230.next_after(at("2026-10-24T23:00:00Z")).unwrap();
        let second = at_0230.next_after(first).unwrap();
        assert_eq!(
            (DateTime::<Utc>::from(first), DateTime::<Utc>::from(second)),
            (
                DateTime::<Utc>::from(at("2026-10-25T00:30:00Z")),
                DateTime::<Utc>::from(at("2026-10-26T01:30:00Z"))
            )
        );
        // Every wall-clock quarter fires once, so an every-15-minutes cron does not fire in
        // the repeated hour (02:00–02:45 CET = 01:00–01:45 UTC): from 02:45 CEST (00:45 UTC)
        // its next fire is 03:00 CET (02:00 UTC).
        let quarters = cron("*/15 * * * *", "Europe/Paris");
        let mut t = at("2026-10-25T00:40:00Z");
        let mut seen = Vec::new();
        while t < at("2026-10-25T02:10:00Z") {
            t = quarters.next_after(t).unwrap();
            seen.push(DateTime::<Utc>::from(t).format("%H:%M").to_string());
        }
        assert_eq!(seen, ["00:45", "02:00", "02:15"]);
    }

    #[test]
    fn bad_cron_and_zone_are_refused() {
        assert!(parse_cron("* * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_cron("*/2 * * * *").is_ok());
    }

    #[test]
    fn jitter_is_deterministic_and_bounded() {
        let j = Duration::from_secs(60);
        assert_eq!(jitter_for("a", j), jitter_for("a", j));
        assert!(jitter_for("a", j) < j);
        assert_ne!(jitter_for("a", j), jitter_for("b", j));
    }
}
