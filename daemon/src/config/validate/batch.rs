//! `batch`, `batch_max_wait`, `max_batch` (watches) and `stdin` (every command).

use super::super::raw::RawRule;
use super::super::{BatchPolicy, Problem, Stdin};
use super::action::{duration, number};
use super::Table;

/// `batch` and its bounds; the bounds alone are an error (they would silently do nothing).
pub(super) fn batch(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<BatchPolicy> {
    let Some(settle) = duration(table, "batch", &raw.batch, problems) else {
        for (key, given) in [
            ("batch_max_wait", raw.batch_max_wait.is_some()),
            ("max_batch", raw.max_batch.is_some()),
        ] {
            if given && raw.batch.is_none() {
                problems.push(table.problem(key, "only applies with `batch`"));
            }
        }
        return None;
    };
    if settle.is_zero() {
        problems.push(table.problem("batch", "the settle time must be above zero"));
        return None;
    }
    let max_wait = duration(table, "batch_max_wait", &raw.batch_max_wait, problems)
        .unwrap_or_else(|| BatchPolicy::default_max_wait(settle));
    if max_wait < settle {
        problems.push(table.problem("batch_max_wait", "must be at least `batch`"));
        return None;
    }
    let max_paths = number(table, "max_batch", raw.max_batch, 1..=1_000_000, problems)
        .map_or(BatchPolicy::DEFAULT_MAX_PATHS, |n| n as usize);
    Some(BatchPolicy {
        settle,
        max_wait,
        max_paths,
    })
}

/// `stdin`; a batch's command reads its paths by default, any other command its payload.
pub(super) fn stdin(raw: &RawRule) -> Result<Stdin, String> {
    Ok(match raw.stdin.as_deref() {
        None if raw.batch.is_some() => Stdin::Paths,
        None => Stdin::Payload,
        Some("payload") => Stdin::Payload,
        Some("paths") => Stdin::Paths,
        Some("paths0") => Stdin::Paths0,
        Some("json") => Stdin::Json,
        Some("none") => Stdin::None,
        Some(_) => {
            return Err(
                "expected one of \"payload\", \"paths\", \"paths0\", \"json\", \"none\"".into(),
            )
        }
    })
}
