//! Raw tables → the validated model: required keys, names, event expressions, durations,
//! users, schedules, and the rules that tie keys together. Every problem is collected (not
//! just the first) with the line of the key it concerns. One file per rule kind; the keys
//! every rule shares (action and delivery) are in `action`.

mod action;
mod batch;
mod channel;
mod file;
mod pasted;
mod provider;
mod remote;
mod syslog;
mod timer;
mod watch;
mod webhook;

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::{keys_in_table, line_of_key, RawDaemon, RawFile, RawRule, Source};
use super::raw::{
    CHANNEL_KEYS, SOURCE_KEYS, SYSLOG_KEYS, TIMER_KEYS, TRIGGER_KEYS, WATCH_KEYS, WEBHOOK_KEYS,
};
use pasted::Dialect;

use super::{
    parse_duration, Config, ConfigError, DaemonConfig, Policy, Problem, Rule, RuleDef, Trigger,
};

/// Locates keys of one table in the source text for messages.
pub(super) struct Table<'a> {
    source: &'a Source<'a>,
    span: Range<usize>,
    heading: &'static str,
}

impl Table<'_> {
    fn problem(&self, key: &str, message: impl std::fmt::Display) -> Problem {
        Problem::new(
            line_of_key(self.source, &self.span, key),
            format!("{}: {key}: {message}", self.heading),
        )
    }

    fn line(&self) -> usize {
        self.source.line_at(self.span.start)
    }

    /// In tables that describe an object of their own (a channel), `group` is that object's
    /// group, not the group the command runs as.
    fn group_is_the_objects(&self) -> bool {
        matches!(self.heading, "[[channel]]" | "[[trigger]]" | "[[syslog]]")
    }

    /// Refuses keys that belong to another kind of rule table.
    fn check_kind_keys(&self, own: &[&str], problems: &mut Vec<Problem>) {
        let foreign = [
            WATCH_KEYS,
            TIMER_KEYS,
            WEBHOOK_KEYS,
            CHANNEL_KEYS,
            TRIGGER_KEYS,
            SOURCE_KEYS,
            SYSLOG_KEYS,
        ];
        for (key, line) in keys_in_table(self.source, &self.span) {
            let elsewhere = foreign.iter().any(|keys| keys.contains(&key.as_str()));
            if elsewhere && !own.contains(&key.as_str()) {
                problems.push(Problem::new(
                    line,
                    format!("{}: {key}: not a key of this table", self.heading),
                ));
            }
        }
    }
}

/// The rule tables of one file (the main config or a drop-in), in order: facron and incron tables, then
/// each kind's tables. `broker`: whether the main file has a `[broker]` (for `send`).
fn rule_tables(
    source: &Source<'_>,
    raw: &RawFile,
    broker: bool,
    policies: &mut Policies,
    rules: &mut Vec<Rule>,
    problems: &mut Vec<Problem>,
) {
    // A pasted table written after a section header belongs to that section in TOML: accept it
    // where the documented layout puts it.
    let daemon = raw.daemon.as_ref().map(|d| d.get_ref());
    let broker_table = raw.broker.as_ref().map(|b| b.get_ref());
    let pasted = [
        (
            Dialect::Facron,
            [
                raw.facron.as_ref(),
                daemon.and_then(|d| d.facron.as_ref()),
                broker_table.and_then(|b| b.facron.as_ref()),
            ],
        ),
        (
            Dialect::Incron,
            [
                raw.incron.as_ref(),
                daemon.and_then(|d| d.incron.as_ref()),
                broker_table.and_then(|b| b.incron.as_ref()),
            ],
        ),
    ];
    for (dialect, tables) in pasted {
        for table in tables.into_iter().flatten() {
            let text = table.get_ref();
            pasted::pasted_rules(source, table.span(), text, dialect, rules, problems);
        }
    }
    let kinds: [RuleKind<'_>; 7] = [
        (&raw.watch, "[[watch]]", WATCH_KEYS, watch::trigger),
        (&raw.timer, "[[timer]]", TIMER_KEYS, timer::trigger),
        (&raw.webhook, "[[webhook]]", WEBHOOK_KEYS, webhook::trigger),
        (&raw.channel, "[[channel]]", CHANNEL_KEYS, channel::trigger),
        (&raw.trigger, "[[trigger]]", TRIGGER_KEYS, file::trigger),
        (&raw.source, "[[source]]", SOURCE_KEYS, provider::trigger),
        (&raw.syslog, "[[syslog]]", SYSLOG_KEYS, syslog::trigger),
    ];
    for (tables, heading, own_keys, build) in kinds {
        for spanned in tables {
            let table = Table {
                source,
                span: spanned.span(),
                heading,
            };
            table.check_kind_keys(own_keys, problems);
            remote::check_send(&table, spanned.get_ref(), broker, problems);
            if let Some(rule) = rule(&table, spanned.get_ref(), build, policies, problems) {
                rules.push(rule);
            }
        }
    }
}

/// What only the main file may hold: a drop-in adds rules, it does not reconfigure the daemon.
fn main_only(source: &Source<'_>, raw: &RawFile, problems: &mut Vec<Problem>) {
    let tables = [
        ("[daemon]", raw.daemon.as_ref().map(|t| t.span())),
        ("[broker]", raw.broker.as_ref().map(|t| t.span())),
        ("[[service]]", raw.service.first().map(|t| t.span())),
        ("[[provider]]", raw.provider.first().map(|t| t.span())),
    ];
    for (heading, span) in tables {
        if let Some(span) = span {
            problems.push(Problem::new(
                source.line_at(span.start),
                format!("{heading}: belongs in the main config file, not a drop-in"),
            ));
        }
    }
}

/// A drop-in file: where it is, its text and its tables.
pub struct DropIn {
    pub file: PathBuf,
    pub text: String,
    pub raw: RawFile,
}

/// Builds the trigger of one rule table, or records why it cannot.
type TriggerBuilder = fn(&Table<'_>, &RawRule, &mut Vec<Problem>) -> Option<Trigger>;

/// One kind of rule table: its tables, heading, own keys and trigger builder.
type RuleKind<'a> = (
    &'a [Spanned<RawRule>],
    &'static str,
    &'static [&'static str],
    TriggerBuilder,
);

pub fn validate(
    file: &Path,
    text: &str,
    raw: RawFile,
    dropins: Vec<DropIn>,
) -> Result<Config, ConfigError> {
    let source = Source::new(text);
    let mut problems = Vec::new();
    let daemon = match &raw.daemon {
        Some(d) => {
            let table = Table {
                source: &source,
                span: d.span(),
                heading: "[daemon]",
            };
            daemon_config(&table, d.get_ref(), &mut problems)
        }
        None => DaemonConfig::default(),
    };
    let mut rules = Vec::new();
    let mut policies = Policies::default();
    let broker = raw.broker.is_some();
    rule_tables(
        &source,
        &raw,
        broker,
        &mut policies,
        &mut rules,
        &mut problems,
    );
    for dropin in &dropins {
        let source = Source::new(&dropin.text);
        let mut found = Vec::new();
        main_only(&source, &dropin.raw, &mut found);
        let first = rules.len();
        rule_tables(
            &source,
            &dropin.raw,
            broker,
            &mut policies,
            &mut rules,
            &mut found,
        );
        let origin: std::sync::Arc<Path> = std::sync::Arc::from(dropin.file.as_path());
        for rule in &mut rules[first..] {
            rule.origin = Some(std::sync::Arc::clone(&origin));
        }
        problems.extend(found.into_iter().map(|p| p.in_file(&dropin.file)));
    }
    check_names(&mut rules, &mut problems);
    let providers = provider::providers(&source, &raw.provider, &rules, &mut problems);
    let (broker, services) = remote::remote(
        &source,
        raw.broker.as_ref(),
        &raw.service,
        &daemon.state_dir,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            daemon,
            // Not collected in place: that would keep the whole `Vec<Rule>` buffer alive.
            rules: {
                let mut shared = Vec::with_capacity(rules.len());
                shared.extend(rules.into_iter().map(std::sync::Arc::new));
                shared
            },
            broker,
            services,
            providers,
        })
    } else {
        problems.sort_by_key(|p| p.line);
        Err(ConfigError::invalid(file, problems))
    }
}

/// One rule table: its trigger (by kind), action and policy.
fn rule(
    table: &Table<'_>,
    raw: &RawRule,
    build: TriggerBuilder,
    policies: &mut Policies,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let trigger = build(table, raw, problems);
    let action = action::action(table, raw, problems);
    let policy = action::policy(table, raw, problems);
    let (Some(trigger), Some(action), Some(policy)) = (trigger, action, policy) else {
        return None;
    };
    if let Trigger::Watch(w) = &trigger {
        watch::check_policy(table, raw, w, &action, &policy, problems);
    }
    if problems.len() > before {
        return None;
    }
    Some(Rule {
        name: raw.name.clone().unwrap_or_default(),
        line: table.line(),
        origin: None,
        def: RuleDef {
            trigger,
            action,
            policy: policies.share(policy),
        },
    })
}

/// Equal policies share one allocation: most rules use the defaults, and a policy is some
/// 200 bytes that 50,000 rules would otherwise each carry.
#[derive(Default)]
struct Policies(HashSet<std::sync::Arc<Policy>>);

impl Policies {
    fn share(&mut self, policy: Policy) -> std::sync::Arc<Policy> {
        if let Some(shared) = self.0.get(&policy) {
            return std::sync::Arc::clone(shared);
        }
        let shared = std::sync::Arc::new(policy);
        self.0.insert(std::sync::Arc::clone(&shared));
        shared
    }
}

fn daemon_config(table: &Table<'_>, raw: &RawDaemon, problems: &mut Vec<Problem>) -> DaemonConfig {
    let mut config = DaemonConfig::default();
    let mut path = |key: &str, value: &Option<String>, into: &mut PathBuf| {
        if let Some(v) = value {
            match absolute(v) {
                Ok(p) => *into = p,
                Err(m) => problems.push(table.problem(key, m)),
            }
        }
    };
    path("control", &raw.control, &mut config.control);
    path("fs_mount", &raw.fs_mount, &mut config.fs_mount);
    path("state_dir", &raw.state_dir, &mut config.state_dir);
    let mut dropins = PathBuf::new();
    path("dropins", &raw.dropins, &mut dropins);
    config.dropins = (!dropins.as_os_str().is_empty()).then_some(dropins);
    if let Some(mode) = action::octal_mode(
        table,
        "control_mode",
        raw.control_mode.as_deref(),
        0o777,
        problems,
    ) {
        config.control_mode = mode;
    }
    if let Some(name) = &raw.control_group {
        match action::lookup_group(name) {
            Ok(gid) => config.control_group = Some(gid),
            Err(m) => problems.push(table.problem("control_group", m)),
        }
    }
    if let Some(address) = &raw.metrics {
        match triggerd_metrics::parse_address(address) {
            Ok(_) => config.metrics = Some(address.clone()),
            Err(e) => problems.push(table.problem("metrics", e.to_string())),
        }
    }
    if let Some(grace) = &raw.shutdown_grace {
        match parse_duration(grace) {
            Ok(d) => config.shutdown_grace = d,
            Err(m) => problems.push(table.problem("shutdown_grace", m)),
        }
    }
    config
}

/// Names must be unique; a rule without one gets `kind:subject`, numbered when that repeats.
fn check_names(rules: &mut [Rule], problems: &mut Vec<Problem>) {
    let mut taken: HashSet<String> = HashSet::new();
    for rule in rules.iter().filter(|r| !r.name.is_empty()) {
        if !taken.insert(rule.name.clone()) {
            problems.push(rule.problem(format!("name: `{}` is used by another rule", rule.name)));
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
