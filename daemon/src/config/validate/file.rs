//! `[[trigger]]` tables: a trigger file below `[daemon] fs_mount` (`file`), how its writes
//! become messages (`split`), and its `owner`, `group` and `mode`.

use super::super::raw::RawRule;
use super::super::{FileTrigger, Problem, Split, Trigger};
use super::action::object_access;
use super::Table;

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
    if problems.len() > before {
        return None;
    }
    Some(Trigger::File(FileTrigger {
        file: file?,
        split,
        mode,
        uid,
        gid,
    }))
}

/// `dir/name` below the mount: no leading `/`, no `.` or `..` components, no empty ones.
fn relative(file: &str) -> Result<String, String> {
    let parts: Vec<&str> = file.split('/').collect();
    let bad = file.starts_with('/')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'));
    if bad {
        return Err(format!(
            "`{file}` must be a relative path like \"dir/name\" (no `.`, `..` or empty parts)"
        ));
    }
    Ok(file.to_string())
}
