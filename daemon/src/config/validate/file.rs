//! `[[trigger]]` tables: a trigger file below `[daemon] fs_mount` (`file`), how its writes
//! become messages (`split`), and its `owner`, `group` and `mode`.

use super::super::raw::RawRule;
use super::super::{FileTrigger, Problem, Split, Trigger};
use super::action::{duration, number, object_access};
use super::Table;

const DEFAULT_MAX_OPEN: i64 = 64;
const DEFAULT_PARTIAL_BYTES: i64 = 16 << 20;
const DEFAULT_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let file = match raw.file.as_deref() {
        None => {
            problems.push(table.problem(
                "file",
                "missing (a path below fs_mount, e.g. \"nginx/access\")",
            ));
            None
        }
        Some(f) => match relative(f) {
            Ok(f) => Some(f),
            Err(m) => {
                problems.push(table.problem("file", m));
                None
            }
        },
    };
    let split = match raw.split.as_deref() {
        None | Some("write") => Split::Write,
        Some("line") => Split::Line,
        Some(_) => {
            problems.push(table.problem("split", "expected one of \"write\", \"line\""));
            Split::Write
        }
    };
    let (uid, gid, mode) = object_access(table, raw, 0o620, problems);
    let max_open =
        number(table, "max_open", raw.max_open, 1..=65_536, problems).unwrap_or(DEFAULT_MAX_OPEN);
    let partial_bytes = number(
        table,
        "partial_bytes",
        raw.partial_bytes,
        0..=(1 << 32),
        problems,
    )
    .unwrap_or(DEFAULT_PARTIAL_BYTES);
    let queue_wait = duration(table, "queue_wait", &raw.queue_wait, problems);
    if queue_wait.is_some_and(|w| w > std::time::Duration::from_secs(60)) {
        problems.push(table.problem("queue_wait", "at most 60s (a writer waits this long)"));
    }
    if problems.len() > before {
        return None;
    }
    Some(Trigger::File(FileTrigger {
        file: file?,
        split,
        mode,
        uid,
        gid,
        max_open: max_open as usize,
        partial_bytes: partial_bytes as usize,
        queue_wait: queue_wait.unwrap_or(DEFAULT_QUEUE_WAIT),
    }))
}

/// `dir/name` below the mount, by the trigger tree's own rule (plain components within
/// `NAME_MAX`, the whole within `PATH_MAX`).
fn relative(file: &str) -> Result<String, String> {
    triggerd_fusefs::check_trigger_path(file)
        .map_err(|why| format!("`{file}` must be a relative path like \"dir/name\": {why}"))?;
    Ok(file.to_string())
}
