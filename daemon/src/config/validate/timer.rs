//! `[[timer]]` tables: `every` or `cron` (+ `timezone`), `start`/`stop`, `max_fires`/`once`,
//! `catchup` within `catchup_window`, `jitter`.

use std::time::{Duration, SystemTime};

use super::super::raw::RawRule;
use super::super::{Catchup, Problem, Schedule, TimerTrigger, Trigger};
use super::action::duration;
use super::Table;
use crate::schedule::CronSchedule;

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let schedule = match (&raw.every, &raw.cron) {
        (Some(_), Some(_)) => {
            problems.push(table.problem("cron", "give `every` or `cron`, not both"));
            None
        }
        (None, None) => {
            problems.push(table.problem(
                "every",
                "missing (`every = \"5m\"` or `cron = \"*/5 * * * *\"`)",
            ));
            None
        }
        (Some(_), None) => {
            if raw.timezone.is_some() {
                problems.push(table.problem("timezone", "only applies to `cron`"));
            }
            duration(table, "every", &raw.every, problems)
                .filter(|d| {
                    let ok = !d.is_zero();
                    if !ok {
                        problems.push(table.problem("every", "must be longer than zero"));
                    }
                    ok
                })
                .map(Schedule::Every)
        }
        (None, Some(expr)) => {
            let timezone = raw.timezone.as_deref().unwrap_or("UTC");
            match CronSchedule::parse(expr, timezone) {
                Ok(cron) => Some(Schedule::Cron(cron)),
                Err(e) => {
                    let keys = [("cron", e.expr), ("timezone", e.timezone)];
                    for (key, message) in keys {
                        if let Some(m) = message {
                            problems.push(table.problem(key, m));
                        }
                    }
                    None
                }
            }
        }
    };
    let start = instant(table, "start", &raw.start, problems);
    let stop = instant(table, "stop", &raw.stop, problems);
    if let (Some(a), Some(b)) = (start, stop) {
        if b <= a {
            problems.push(table.problem("stop", "must be after `start`"));
        }
    }
    let max_fires = match (raw.max_fires, raw.once) {
        (Some(n), _) if n < 1 => {
            problems.push(table.problem("max_fires", "must be at least 1"));
            None
        }
        (Some(n), Some(true)) if n != 1 => {
            problems.push(table.problem("once", "contradicts `max_fires`"));
            None
        }
        (Some(n), _) => Some(n as u64),
        (None, Some(true)) => Some(1),
        (None, _) => None,
    };
    let catchup = match raw.catchup.as_deref() {
        None | Some("skip") => Catchup::Skip,
        Some("once") => Catchup::Once,
        Some("all") => Catchup::All,
        Some(_) => {
            problems.push(table.problem("catchup", "expected one of \"skip\", \"once\", \"all\""));
            Catchup::Skip
        }
    };
    let catchup_window = duration(table, "catchup_window", &raw.catchup_window, problems)
        .unwrap_or(Duration::from_secs(24 * 3600));
    let jitter = duration(table, "jitter", &raw.jitter, problems);
    if problems.len() > before {
        return None;
    }
    Some(Trigger::Timer(TimerTrigger {
        schedule: schedule?,
        start,
        stop,
        max_fires,
        catchup,
        catchup_window,
        jitter,
    }))
}

/// An RFC 3339 instant such as "2026-12-01T00:00:00Z".
fn instant(
    table: &Table<'_>,
    key: &str,
    value: &Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<SystemTime> {
    let text = value.as_deref()?;
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&chrono::Utc).into()),
        Err(e) => {
            problems.push(table.problem(key, format!("`{text}` is not an RFC 3339 time: {e}")));
            None
        }
    }
}
