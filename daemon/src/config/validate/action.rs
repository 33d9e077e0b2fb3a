//! The keys every rule table shares: the command (`exec`, `user`, `group`) and how its runs
//! are governed and delivered (`timeout`, `debounce`, `max_running`, `on_busy`, `loop`,
//! `retry`, `dead_letter`, `rate`, `queue`, `when_full`; `batch` and `stdin` in `batch`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::raw::{RawRetry, RawRule};
use super::super::{
    parse_duration, Action, ExecAction, OnBusy, OnTimeout, Policy, Problem, Rate, Retry,
    SendAction, WhenFull,
};
use super::Table;

/// `exec` (a command) or `send` (a service at the broker, with an optional `plugin`).
pub(super) fn action(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Action> {
    match (&raw.exec, &raw.send) {
        (Some(_), Some(_)) => {
            problems.push(table.problem("send", "give `exec` or `send`, not both"));
            None
        }
        (None, None) => {
            problems.push(table.problem(
                "exec",
                "missing (the command to run as a list, or `send = \"SERVICE\"`)",
            ));
            None
        }
        (Some(argv), None) => {
            if raw.plugin.is_some() {
                problems.push(table.problem("plugin", "only applies to `send`"));
            }
            if let Err(m) = super::batch::stdin(raw) {
                problems.push(table.problem("stdin", m));
            }
            action_for(table, "exec", argv, raw, problems).map(Action::Exec)
        }
        (None, Some(service)) => {
            if raw.stdin.is_some() {
                problems.push(table.problem("stdin", "only applies to `exec`"));
            }
            if service.is_empty()
                || service.starts_with("mmi.")
                || service.contains(char::is_whitespace)
            {
                problems.push(table.problem("send", format!("`{service}` is not a service name")));
                return None;
            }
            Some(Action::Send(SendAction {
                service: service.clone(),
                plugin: raw.plugin.clone(),
            }))
        }
    }
}

/// A command plus the identity it runs as (shared by `exec` and `dead_letter`).
fn action_for(
    table: &Table<'_>,
    key: &str,
    argv: &[String],
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<ExecAction> {
    let before = problems.len();
    let argv = command(argv)
        .map_err(|m| problems.push(table.problem(key, m)))
        .ok();
    let user = raw.user.as_deref().and_then(|name| {
        lookup_user(name)
            .map_err(|m| problems.push(table.problem("user", m)))
            .ok()
    });
    let group = match raw
        .group
        .as_deref()
        .filter(|_| !table.group_is_the_objects())
    {
        Some(name) => lookup_group(name)
            .map_err(|m| problems.push(table.problem("group", m)))
            .ok(),
        None => user.map(|(_, gid)| gid),
    };
    let env = environment(table, raw, problems);
    let chdir = raw.chdir.as_deref().and_then(|dir| {
        let ok = dir.starts_with('/') && !dir.contains('\0');
        if !ok {
            problems.push(table.problem("chdir", format!("`{dir}` is not an absolute path")));
        }
        ok.then(|| PathBuf::from(dir))
    });
    (problems.len() == before).then(|| ExecAction {
        argv: argv.unwrap_or_default(),
        user: user.map(|(uid, _)| uid),
        group,
        env,
        chdir,
        // A bad `stdin` is reported once, by `action`.
        stdin: super::batch::stdin(raw).unwrap_or_default(),
        tokens: Default::default(),
    })
}

/// Longest `env` table accepted, in entries and in bytes of one value.
const MAX_ENV_ENTRIES: usize = 256;
const MAX_ENV_VALUE: usize = 64 * 1024;

/// The `env` table: names of letters, digits and `_` (not starting with a digit), not
/// `TRIGGERD_*` (the event's own), values without NUL.
fn environment(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Vec<(OsString, OsString)> {
    let Some(env) = &raw.env else {
        return Vec::new();
    };
    if env.len() > MAX_ENV_ENTRIES {
        problems.push(table.problem("env", format!("more than {MAX_ENV_ENTRIES} variables")));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, value) in env {
        let well_formed = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed || name.starts_with("TRIGGERD_") {
            problems.push(table.problem(
                "env",
                format!("`{name}` is not a variable name a rule may set"),
            ));
        } else if value.contains('\0') || value.len() > MAX_ENV_VALUE {
            problems.push(table.problem(
                "env",
                format!("`{name}`: a value holds no NUL and at most {MAX_ENV_VALUE} bytes"),
            ));
        } else {
            out.push((name.into(), value.into()));
        }
    }
    out
}

/// One of a fixed set of words.
fn choice<T: Copy>(
    table: &Table<'_>,
    key: &str,
    value: &Option<String>,
    options: &[(&str, T)],
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = value.as_deref()?;
    let found = options
        .iter()
        .find(|(word, _)| *word == value)
        .map(|(_, v)| *v);
    if found.is_none() {
        let words: Vec<String> = options.iter().map(|(w, _)| format!("\"{w}\"")).collect();
        problems.push(table.problem(key, format!("expected one of {}", words.join(", "))));
    }
    found
}

/// A whole number in `range`.
pub(super) fn number(
    table: &Table<'_>,
    key: &str,
    value: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    problems: &mut Vec<Problem>,
) -> Option<i64> {
    let n = value?;
    if range.contains(&n) {
        Some(n)
    } else {
        let (lo, hi) = range.into_inner();
        problems.push(table.problem(key, format!("expected a number from {lo} to {hi}")));
        None
    }
}

pub(super) fn duration(
    table: &Table<'_>,
    key: &str,
    value: &Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    value.as_deref().and_then(|v| {
        parse_duration(v)
            .map_err(|m| problems.push(table.problem(key, m)))
            .ok()
    })
}

pub(super) fn policy(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Policy> {
    let before = problems.len();
    let defaults = Policy::default();
    let policy = Policy {
        timeout: duration(table, "timeout", &raw.timeout, problems),
        debounce: duration(table, "debounce", &raw.debounce, problems),
        batch: super::batch::batch(table, raw, problems),
        on_timeout: choice(
            table,
            "on_timeout",
            &raw.on_timeout,
            &[("allow", OnTimeout::Allow), ("deny", OnTimeout::Deny)],
            problems,
        )
        .unwrap_or(defaults.on_timeout),
        max_running: number(table, "max_running", raw.max_running, 1..=4096, problems)
            .map_or(defaults.max_running, |n| n as usize),
        on_busy: choice(
            table,
            "on_busy",
            &raw.on_busy,
            &[
                ("queue", OnBusy::Queue),
                ("drop", OnBusy::Drop),
                ("restart", OnBusy::Restart),
            ],
            problems,
        )
        .unwrap_or(defaults.on_busy),
        allow_loop: raw.allow_loop.unwrap_or(false),
        retry: raw.retry.as_ref().and_then(|r| retry(table, r, problems)),
        dead_letter: raw
            .dead_letter
            .as_ref()
            .and_then(|argv| action_for(table, "dead_letter", argv, raw, problems)),
        rate: raw.rate.as_deref().and_then(|r| {
            parse_rate(r)
                .map_err(|m| problems.push(table.problem("rate", m)))
                .ok()
        }),
        queue: number(table, "queue", raw.queue, 1..=10_000_000, problems)
            .map_or(defaults.queue, |n| n as usize),
        queue_bytes: number(
            table,
            "queue_bytes",
            raw.queue_bytes,
            1..=(1 << 40),
            problems,
        )
        .map_or(defaults.queue_bytes, |n| n as usize),
        when_full: choice(
            table,
            "when_full",
            &raw.when_full,
            &[
                ("block", WhenFull::Block),
                ("drop_newest", WhenFull::DropNewest),
                ("coalesce", WhenFull::Coalesce),
            ],
            problems,
        )
        .unwrap_or(defaults.when_full),
        run_at_start: raw.run_at_start.unwrap_or(false),
    };
    (problems.len() == before).then_some(policy)
}

fn retry(table: &Table<'_>, raw: &RawRetry, problems: &mut Vec<Problem>) -> Option<Retry> {
    let before = problems.len();
    let retry = Retry {
        attempts: number(table, "retry", raw.attempts, 1..=1000, problems).map_or(3, |n| n as u32),
        backoff: duration(table, "retry", &raw.backoff, problems).unwrap_or(Duration::from_secs(1)),
        max_backoff: duration(table, "retry", &raw.max_backoff, problems)
            .unwrap_or(Duration::from_secs(300)),
        jitter: raw.jitter.unwrap_or(true),
    };
    (problems.len() == before).then_some(retry)
}

/// `"10/s"`, `"100/m"`, `"5/1h"`: a count per duration.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let bad = || format!("`{text}` is not a rate (write e.g. \"10/s\" or \"100/5m\")");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(per)?
    } else {
        parse_duration(&format!("1{per}"))?
    };
    if count == 0 || per.is_zero() {
        return Err(bad());
    }
    Ok(Rate { count, per })
}

/// The command must name its program absolutely: it is exec'd directly, with no shell and no
/// PATH search, so what runs does not depend on the daemon's environment.
pub(super) fn command(argv: &[String]) -> Result<Vec<OsString>, String> {
    match argv.first() {
        None => Err("the command is empty".into()),
        Some(program) if !Path::new(program).is_absolute() => Err(format!(
            "`{program}` must be an absolute path (commands run without a shell or PATH search)"
        )),
        Some(_) => Ok(argv.iter().map(OsString::from).collect()),
    }
}

pub(super) fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    if let Ok(uid) = name.parse::<u32>() {
        let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        return Ok((uid, user.map_or(uid, |u| u.gid.as_raw())));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(None) => Err(format!("no user `{name}` on this host")),
        Err(e) => Err(format!("cannot look up user `{name}`: {e}")),
    }
}

pub(super) fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group `{name}` on this host")),
        Err(e) => Err(format!("cannot look up group `{name}`: {e}")),
    }
}

/// An octal permission mode (`"0660"`) no larger than `max`.
pub(super) fn octal_mode(
    table: &Table<'_>,
    key: &str,
    value: Option<&str>,
    max: u32,
    problems: &mut Vec<Problem>,
) -> Option<u32> {
    let text = value?;
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= max => Some(mode),
        _ => {
            problems
                .push(table.problem(key, format!("`{text}` is not an octal mode like \"0660\"")));
            None
        }
    }
}

/// `owner`, `group` and `mode` of an object a table describes (a channel, a trigger file):
/// the group defaults to the owner's, the owner to root.
pub(super) fn object_access(
    table: &Table<'_>,
    raw: &RawRule,
    default_mode: u32,
    problems: &mut Vec<Problem>,
) -> (u32, u32, u32) {
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
    let mode =
        octal_mode(table, "mode", raw.mode.as_deref(), 0o7777, problems).unwrap_or(default_mode);
    (uid, gid, mode)
}
