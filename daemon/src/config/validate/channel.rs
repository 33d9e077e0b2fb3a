//! `[[channel]]` tables: the channel's name (also the rule's), who may publish (`owner`,
//! `group`, `mode` of the shared region), its size and how many publishers it takes.

use super::super::raw::RawRule;
use super::super::{ChannelTrigger, Problem, Trigger};
use super::action::{number, object_access};
use super::Table;

const DEFAULT_CAPACITY: i64 = 4 << 20;
const DEFAULT_LANES: i64 = 16;
const DEFAULT_HANDOFF_BYTES: i64 = 16 << 20;
/// What `capacity` may be.
const SIZES: std::ops::RangeInclusive<i64> = 64 << 10..=(1 << 32);

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let name = match raw.name.as_deref() {
        Some(n) => match triggerd_ipc::check_name(n) {
            Ok(()) => Some(n.to_string()),
            Err(e) => {
                problems.push(table.problem("name", e.to_string()));
                None
            }
        },
        None => {
            problems.push(table.problem("name", "missing (the channel's name, e.g. \"metrics\")"));
            None
        }
    };
    let (uid, gid, mode) = object_access(table, raw, 0o600, problems);
    let capacity =
        number(table, "capacity", raw.capacity, SIZES, problems).unwrap_or(DEFAULT_CAPACITY);
    let lanes = number(
        table,
        "lanes",
        raw.lanes,
        1..=triggerd_ipc::MAX_LANES as i64,
        problems,
    )
    .unwrap_or(DEFAULT_LANES);
    let handoff_bytes = number(
        table,
        "handoff_bytes",
        raw.handoff_bytes,
        64 << 10..=(1 << 30),
        problems,
    )
    .unwrap_or(DEFAULT_HANDOFF_BYTES);
    // The region's own rule (`triggerd_ipc`), so that `triggerd check` refuses what the
    // channel would refuse at start.
    if problems.len() == before
        && (capacity as usize) / (lanes as usize) < triggerd_ipc::MIN_LANE_BYTES
    {
        problems.push(table.problem(
            "capacity",
            format!(
                "{capacity} bytes over {lanes} lanes leaves less than {} bytes per lane",
                triggerd_ipc::MIN_LANE_BYTES
            ),
        ));
    }
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
        handoff_bytes: handoff_bytes as usize,
    }))
}
