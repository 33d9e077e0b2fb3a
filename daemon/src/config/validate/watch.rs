//! `[[watch]]` tables: paths, event expressions, and what only watches may say (permission
//! answers on timeout, batches).

use triggerd_watch::{parse_events, EventMask};

use super::super::raw::RawRule;
use std::time::Duration;

use super::super::{
    Action, OnOverflow, PathFilter, Policy, Problem, Trigger, WatchBackend, WatchTrigger,
    POLL_KINDS,
};
use super::{absolute, Table};

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let path = match raw.path.as_deref() {
        None => {
            problems.push(table.problem("path", "missing (the path to watch)"));
            None
        }
        Some(p) => absolute(p)
            .map_err(|m| problems.push(table.problem("path", m)))
            .ok(),
    };
    let events = match &raw.events {
        None => {
            problems.push(table.problem("events", "missing (e.g. [\"close_write\"])"));
            None
        }
        Some(list) => parse_events(&list.expression())
            .map_err(|e| problems.push(table.problem("events", e)))
            .ok(),
    };
    let trigger = WatchTrigger {
        path: path?,
        events: events?,
        recursive: raw.recursive.unwrap_or(false),
        follow: raw.follow.unwrap_or(true),
        children: true,
        backend: backend(table, raw, problems)?,
        mount_only: raw.mount_only.unwrap_or(false),
        filter: PathFilter::new(
            raw.include.as_deref().unwrap_or_default(),
            raw.exclude.as_deref().unwrap_or_default(),
            raw.hidden.unwrap_or(true),
        )
        .map_err(|e| problems.push(table.problem(e.key, e.to_string())))
        .ok()?,
        poll: super::action::duration(table, "poll", &raw.poll, problems),
        on_overflow: match raw.on_overflow.as_deref() {
            None | Some("report") => OnOverflow::Report,
            Some("rescan") => OnOverflow::Rescan,
            Some(_) => {
                problems.push(table.problem("on_overflow", "expected \"report\" or \"rescan\""));
                return None;
            }
        },
    };
    if let Err(m) = check_event_classes(&trigger) {
        problems.push(table.problem("events", m));
        return None;
    }
    if trigger.on_overflow == OnOverflow::Rescan {
        if trigger.is_permission() {
            problems.push(table.problem("on_overflow", "a permission event cannot be rescanned"));
            return None;
        }
        if !OnOverflow::KINDS
            .iter()
            .any(|k| trigger.events.contains(*k))
        {
            problems.push(table.problem(
                "on_overflow",
                "a rescan reports changed files: `events` needs close_write, create, moved_to, modify or attrib",
            ));
            return None;
        }
    }
    if let Some(every) = trigger.poll {
        if let Err(m) = check_poll(&trigger, raw, every) {
            problems.push(table.problem("poll", m));
            return None;
        }
    }
    if let Err((key, m)) = check_backend(&trigger) {
        problems.push(table.problem(key, m));
        return None;
    }
    Some(Trigger::Watch(trigger))
}

/// What only makes sense for one class of watch.
pub(super) fn check_policy(
    table: &Table<'_>,
    raw: &RawRule,
    trigger: &WatchTrigger,
    action: &Action,
    policy: &Policy,
    problems: &mut Vec<Problem>,
) {
    if trigger.is_permission() && matches!(action, Action::Send(_)) {
        problems.push(table.problem(
            "send",
            "a permission answer comes from a local command (`exec`)",
        ));
    }
    if trigger.is_permission() && policy.debounce.is_some() {
        problems.push(table.problem("debounce", "permission events cannot be debounced"));
    }
    if trigger.is_permission() && policy.batch.is_some() {
        problems.push(table.problem("batch", "permission events cannot be batched"));
    }
    if policy.batch.is_some() && matches!(action, Action::Send(_)) {
        problems.push(table.problem("batch", "a batch runs a local command (`exec`)"));
    }
    if policy.batch.is_some() && policy.debounce.is_some() {
        problems.push(table.problem("batch", "give `batch` or `debounce`, not both"));
    }
    if trigger.is_permission() && policy.retry.is_some() {
        problems.push(table.problem("retry", "a permission answer cannot be retried"));
    }
    if !trigger.is_permission() && raw.on_timeout.is_some() {
        problems.push(table.problem("on_timeout", "only applies to permission events"));
    }
}

fn backend(table: &Table<'_>, raw: &RawRule, problems: &mut Vec<Problem>) -> Option<WatchBackend> {
    match raw.backend.as_deref() {
        None | Some("auto") => Some(WatchBackend::Auto),
        Some("fanotify") => Some(WatchBackend::Fanotify),
        Some("inotify") => Some(WatchBackend::Inotify),
        Some(other) => {
            problems.push(table.problem(
                "backend",
                format!("{other:?}: expected \"auto\", \"fanotify\" or \"inotify\""),
            ));
            None
        }
    }
}

/// The kinds a mount mark can carry (the kernel refuses the others with EINVAL: they need
/// FID-mode events, which a mount mark cannot filter by mount; checked on Linux 6.18).
const MOUNT_KINDS: EventMask = EventMask::ACCESS
    .union(EventMask::MODIFY)
    .union(EventMask::OPEN)
    .union(EventMask::OPEN_EXEC)
    .union(EventMask::CLOSE);

/// What the chosen backend (and `mount_only`) can deliver: (key, why not).
fn check_backend(trigger: &WatchTrigger) -> Result<(), (&'static str, String)> {
    let events = trigger.events;
    if trigger.backend == WatchBackend::Inotify {
        let lacking = triggerd_watch::inotify_lacks(events);
        if !lacking.is_empty() {
            return Err(("backend", format!("inotify has no equivalent of {lacking}")));
        }
        if trigger.mount_only {
            return Err((
                "mount_only",
                "needs fanotify (inotify watches objects, not mounts)".into(),
            ));
        }
    }
    if trigger.mount_only {
        if trigger.is_permission() {
            return Err(("mount_only", "not available for permission events".into()));
        }
        let refused = events
            .notification_part()
            .difference(MOUNT_KINDS.union(EventMask::OVERFLOW));
        if !refused.is_empty() {
            return Err((
                "mount_only",
                format!(
                    "a mount mark cannot report {refused} (only access, modify, open, open_exec, close_write, close_nowrite)"
                ),
            ));
        }
    }
    Ok(())
}

/// What a polled watch can do: see changes in snapshots, not who opened what.
fn check_poll(trigger: &WatchTrigger, raw: &RawRule, every: Duration) -> Result<(), String> {
    if every < Duration::from_millis(10) {
        return Err("poll at most every 10ms".into());
    }
    if raw.backend.is_some() || trigger.mount_only {
        return Err("a polled watch has no kernel backend (`backend`, `mount_only`)".into());
    }
    let unseen = trigger
        .events
        .notification_part()
        .union(trigger.events.permission_part())
        .difference(POLL_KINDS);
    if !unseen.is_empty() {
        return Err(format!("polling sees {POLL_KINDS} of files, not {unseen}"));
    }
    Ok(())
}

/// Permission and notification kinds are answered differently; one rule does one of them.
pub(super) fn check_event_classes(trigger: &WatchTrigger) -> Result<(), String> {
    let events = trigger.events;
    if events.notification_part().is_empty() && events.permission_part().is_empty() {
        return Err("no event kinds given".into());
    }
    if !events.permission_part().is_empty() && !events.notification_part().is_empty() {
        return Err(
            "permission events (*_perm) and notification events need separate rules".into(),
        );
    }
    Ok(())
}
