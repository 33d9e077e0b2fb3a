//! Raw tables → the validated model: required keys, names, event expressions, durations,
//! users, and the rules that tie keys together. Every problem is collected (not just the first)
//! with the line of the key it concerns.

use std::collections::HashSet;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};

use triggerd_watch::{parse_events, EventMask};

use super::raw::{line_at, line_of_key, RawDaemon, RawFile, RawRule};
use super::{
    facron, parse_duration, Config, ConfigError, DaemonConfig, ExecAction, OnBusy, OnTimeout,
    Policy, Problem, Rule, RuleDef, Trigger, WatchTrigger,
};

/// Locates keys of one table in the source text for messages.
struct Table<'a> {
    text: &'a str,
    span: Range<usize>,
    heading: &'static str,
}

impl Table<'_> {
    fn problem(&self, key: &str, message: impl std::fmt::Display) -> Problem {
        Problem::new(
            line_of_key(self.text, &self.span, key),
            format!("{}: {key}: {message}", self.heading),
        )
    }

    fn line(&self) -> usize {
        line_at(self.text, self.span.start)
    }
}

pub fn validate(file: &Path, text: &str, raw: RawFile) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let daemon = match &raw.daemon {
        Some(d) => {
            let table = Table {
                text,
                span: d.span(),
                heading: "[daemon]",
            };
            daemon_config(&table, d.get_ref(), &mut problems)
        }
        None => DaemonConfig::default(),
    };
    let mut rules = Vec::new();
    let daemon_facron = raw
        .daemon
        .as_ref()
        .and_then(|d| d.get_ref().facron.as_ref());
    for table in raw.facron.iter().chain(daemon_facron) {
        facron_rules(
            text,
            table.span(),
            table.get_ref(),
            &mut rules,
            &mut problems,
        );
    }
    for watch in &raw.watch {
        let table = Table {
            text,
            span: watch.span(),
            heading: "[[watch]]",
        };
        if let Some(rule) = watch_rule(&table, watch.get_ref(), &mut problems) {
            rules.push(rule);
        }
    }
    check_names(&mut rules, &mut problems);
    if problems.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            daemon,
            rules,
        })
    } else {
        problems.sort_by_key(|p| p.line);
        Err(ConfigError::invalid(file, problems))
    }
}

fn daemon_config(table: &Table<'_>, raw: &RawDaemon, problems: &mut Vec<Problem>) -> DaemonConfig {
    let mut config = DaemonConfig::default();
    if let Some(path) = &raw.control {
        match absolute(path) {
            Ok(p) => config.control = p,
            Err(m) => problems.push(table.problem("control", m)),
        }
    }
    if let Some(mode) = &raw.control_mode {
        match u32::from_str_radix(mode.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o777 => config.control_mode = m,
            _ => {
                problems.push(table.problem("control_mode", "expected an octal mode like \"0600\""))
            }
        }
    }
    if let Some(grace) = &raw.shutdown_grace {
        match parse_duration(grace) {
            Ok(d) => config.shutdown_grace = d,
            Err(m) => problems.push(table.problem("shutdown_grace", m)),
        }
    }
    if let Some(path) = &raw.fs_mount {
        match absolute(path) {
            Ok(p) => config.fs_mount = p,
            Err(m) => problems.push(table.problem("fs_mount", m)),
        }
    }
    config
}

fn facron_rules(
    text: &str,
    span: Range<usize>,
    table_text: &str,
    rules: &mut Vec<Rule>,
    problems: &mut Vec<Problem>,
) {
    let first_line = facron_first_line(text, &span);
    let (lines, mut found) = facron::parse_table(table_text, first_line);
    problems.append(&mut found);
    for entry in lines {
        let line = first_line + entry.index;
        let mut line_problem =
            |m: String| problems.push(Problem::new(line, format!("facron: {m}")));
        let path = match absolute(&entry.path) {
            Ok(p) => p,
            Err(m) => {
                line_problem(m);
                continue;
            }
        };
        let events = match parse_events(&entry.masks) {
            Ok(e) => e,
            Err(e) => {
                line_problem(e.to_string());
                continue;
            }
        };
        let argv = match command(&entry.argv) {
            Ok(a) => a,
            Err(m) => {
                line_problem(m);
                continue;
            }
        };
        let trigger = WatchTrigger {
            path,
            children: events.contains(EventMask::EVENT_ON_CHILD),
            events,
            recursive: false,
        };
        if let Err(m) = check_event_classes(&trigger) {
            line_problem(m);
            continue;
        }
        rules.push(Rule {
            name: String::new(),
            line,
            def: RuleDef {
                trigger: Trigger::Watch(trigger),
                action: ExecAction {
                    argv,
                    user: None,
                    group: None,
                },
                policy: Policy::default(),
            },
        });
    }
}

/// The config line of the first line of a (possibly multi-line) string value: TOML drops a
/// newline that directly follows the opening delimiter.
fn facron_first_line(text: &str, span: &Range<usize>) -> usize {
    let value = &text[span.start.min(text.len())..span.end.min(text.len())];
    let delimiter = ["'''", "\"\"\"", "'", "\""]
        .into_iter()
        .find(|d| value.starts_with(d))
        .map_or(0, str::len);
    let after = &value[delimiter..];
    let skipped = usize::from(after.starts_with('\n') || after.starts_with("\r\n"));
    line_at(text, span.start) + skipped
}

fn watch_rule(table: &Table<'_>, raw: &RawRule, problems: &mut Vec<Problem>) -> Option<Rule> {
    let before = problems.len();
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
    let action = exec_action(table, raw, problems);
    let policy = policy(table, raw, problems);
    let (Some(path), Some(events), Some(action), Some(policy)) = (path, events, action, policy)
    else {
        return None;
    };
    let trigger = WatchTrigger {
        path,
        events,
        recursive: raw.recursive.unwrap_or(false),
        children: true,
    };
    if let Err(m) = check_event_classes(&trigger) {
        problems.push(table.problem("events", m));
    }
    if trigger.is_permission() && policy.debounce.is_some() {
        problems.push(table.problem("debounce", "permission events cannot be debounced"));
    }
    if !trigger.is_permission() && raw.on_timeout.is_some() {
        problems.push(table.problem("on_timeout", "only applies to permission events"));
    }
    if problems.len() > before {
        return None;
    }
    Some(Rule {
        name: raw.name.clone().unwrap_or_default(),
        line: table.line(),
        def: RuleDef {
            trigger: Trigger::Watch(trigger),
            action,
            policy,
        },
    })
}

/// Permission and notification kinds are answered differently; one rule does one of them.
fn check_event_classes(trigger: &WatchTrigger) -> Result<(), String> {
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

fn exec_action(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<ExecAction> {
    let before = problems.len();
    let argv = match &raw.exec {
        None => {
            problems.push(table.problem("exec", "missing (the command to run, as a list)"));
            None
        }
        Some(argv) => command(argv)
            .map_err(|m| problems.push(table.problem("exec", m)))
            .ok(),
    };
    let user = raw.user.as_deref().and_then(|name| {
        lookup_user(name)
            .map_err(|m| problems.push(table.problem("user", m)))
            .ok()
    });
    let group = match raw.group.as_deref() {
        Some(name) => lookup_group(name)
            .map_err(|m| problems.push(table.problem("group", m)))
            .ok(),
        None => user.map(|(_, gid)| gid),
    };
    (problems.len() == before).then(|| ExecAction {
        argv: argv.unwrap_or_default(),
        user: user.map(|(uid, _)| uid),
        group,
    })
}

fn policy(table: &Table<'_>, raw: &RawRule, problems: &mut Vec<Problem>) -> Option<Policy> {
    let before = problems.len();
    let mut policy = Policy::default();
    let mut duration = |key: &str, value: &Option<String>| {
        value.as_deref().and_then(|v| {
            parse_duration(v)
                .map_err(|m| problems.push(table.problem(key, m)))
                .ok()
        })
    };
    policy.timeout = duration("timeout", &raw.timeout);
    policy.debounce = duration("debounce", &raw.debounce);
    if let Some(v) = &raw.on_timeout {
        match v.as_str() {
            "allow" => policy.on_timeout = OnTimeout::Allow,
            "deny" => policy.on_timeout = OnTimeout::Deny,
            _ => problems.push(table.problem("on_timeout", "expected \"allow\" or \"deny\"")),
        }
    }
    if let Some(n) = raw.max_running {
        match usize::try_from(n) {
            Ok(n) if (1..=4096).contains(&n) => policy.max_running = n,
            _ => problems.push(table.problem("max_running", "expected a number from 1 to 4096")),
        }
    }
    if let Some(v) = &raw.on_busy {
        match v.as_str() {
            "queue" => policy.on_busy = OnBusy::Queue,
            "drop" => policy.on_busy = OnBusy::Drop,
            "restart" => policy.on_busy = OnBusy::Restart,
            _ => problems
                .push(table.problem("on_busy", "expected \"queue\", \"drop\" or \"restart\"")),
        }
    }
    policy.allow_loop = raw.allow_loop.unwrap_or(false);
    (problems.len() == before).then_some(policy)
}

/// Names must be unique; a rule without one gets `kind:subject`, numbered when that repeats.
fn check_names(rules: &mut [Rule], problems: &mut Vec<Problem>) {
    let mut taken: HashSet<String> = HashSet::new();
    for rule in rules.iter().filter(|r| !r.name.is_empty()) {
        if !taken.insert(rule.name.clone()) {
            problems.push(Problem::new(
                rule.line,
                format!("name: `{}` is used by another rule", rule.name),
            ));
        }
    }
    for rule in rules.iter_mut().filter(|r| r.name.is_empty()) {
        let base = format!("{}:{}", rule.def.trigger.kind(), rule.def.trigger.subject());
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        taken.insert(name.clone());
        rule.name = name;
    }
}

fn absolute(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("`{path}` is not an absolute path"));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(PathBuf::from(if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }))
}

/// The command must name its program absolutely: it is exec'd directly, with no shell and no
/// PATH search, so what runs does not depend on the daemon's environment.
fn command(argv: &[String]) -> Result<Vec<OsString>, String> {
    match argv.first() {
        None => Err("the command is empty".into()),
        Some(program) if !Path::new(program).is_absolute() => Err(format!(
            "`{program}` must be an absolute path (commands run without a shell or PATH search)"
        )),
        Some(_) => Ok(argv.iter().map(OsString::from).collect()),
    }
}

fn lookup_user(name: &str) -> Result<(u32, u32), String> {
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

fn lookup_group(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group `{name}` on this host")),
        Err(e) => Err(format!("cannot look up group `{name}`: {e}")),
    }
}
