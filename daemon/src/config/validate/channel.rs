//! `[[channel]]` tables: the channel's name (also the rule's), who may publish (`owner`,
//! `group`, `mode` of the shared region), its size and how many publishers it takes.

use super::super::raw::RawRule;
use super::super::{ChannelTrigger, Problem, Trigger};
use super::action::{lookup_group, lookup_user, number};
use super::Table;

const DEFAULT_CAPACITY: i64 = 4 << 20;
const DEFAULT_LANES: i64 = 16;

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let name = match raw.name.as_deref() {
        Some(n) if valid_name(n) => Some(n.to_string()),
        Some(n) => {
            problems.push(table.problem(
                "name",
                format!("`{n}`: use letters, digits, `-`, `_` and `.` (at most 200)"),
            ));
            None
        }
        None => {
            problems.push(table.problem("name", "missing (the channel's name, e.g. \"metrics\")"));
            None
        }
    };
    let (uid, owner_gid) = match raw.owner.as_deref() {
        Some(owner) => lookup_user(owner)
            .map_err(|m| problems.push(table.problem("owner", m)))
            .unwrap_or((0, 0)),
        None => (0, 0),
    };
    let gid = match raw.group.as_deref() {
        Some(group) => lookup_group(group)
            .map_err(|m| problems.push(table.problem("group", m)))
            .unwrap_or(0),
        None => owner_gid,
    };
    let mode = match raw.mode.as_deref() {
        None => 0o600,
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(mode) if mode <= 0o777 => mode,
            _ => {
                problems.push(table.problem("mode", "expected an octal mode like \"0660\""));
                0
            }
        },
    };
    let capacity = number(
        table,
        "capacity",
        raw.capacity,
        64 << 10..=(1 << 32),
        problems,
    )
    .unwrap_or(DEFAULT_CAPACITY);
    let lanes = number(table, "lanes", raw.lanes, 1..=64, problems).unwrap_or(DEFAULT_LANES);
    if problems.len() > before {
        return None;
    }
    Some(Trigger::Channel(ChannelTrigger {
        name: name?,
        uid,
        gid,
        mode,
        capacity: capacity as usize,
        lanes: lanes as usize,
    }))
}

/// The name becomes part of a path under /dev/shm.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
