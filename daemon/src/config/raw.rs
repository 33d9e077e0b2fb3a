//! The config file as written: serde types that mirror the TOML with `deny_unknown_fields`,
//! keeping each table's span so validation can point at the line of the offending key.

use serde::Deserialize;
use toml::Spanned;

use super::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub daemon: Option<Spanned<RawDaemon>>,
    #[serde(default)]
    pub facron: Option<Spanned<String>>,
    /// An incron table pasted verbatim.
    #[serde(default)]
    pub incron: Option<Spanned<String>>,
    #[serde(default)]
    pub watch: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub timer: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub webhook: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub channel: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub trigger: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub syslog: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub source: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub provider: Vec<Spanned<RawProvider>>,
    #[serde(default)]
    pub broker: Option<Spanned<RawBroker>>,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
}

/// `[broker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// Accepted here too (and `incron`): TOML puts a key written after `[broker]` inside it.
    pub facron: Option<Spanned<String>>,
    pub incron: Option<Spanned<String>>,
    pub endpoint: Option<String>,
    pub security: Option<String>,
    pub server_key: Option<String>,
    pub secret_key: Option<String>,
    pub identity: Option<String>,
    pub token: Option<String>,
    pub spool: Option<String>,
    pub spool_max: Option<i64>,
    pub when_full: Option<String>,
    pub sync: Option<String>,
    pub heartbeat: Option<String>,
    pub timeout: Option<String>,
    pub window: Option<i64>,
    pub sync_triggers: Option<bool>,
    pub creds: Option<String>,
    pub nkey: Option<String>,
    pub tls_ca: Option<String>,
}

/// `[[service]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Option<String>,
    pub plugin: Option<String>,
    pub exec: Option<Vec<String>>,
    pub file: Option<String>,
    pub forward: Option<String>,
    pub plugin_dir: Option<String>,
    pub user: Option<String>,
    pub capacity: Option<i64>,
}

/// `[[provider]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: Option<String>,
    pub exec: Option<Vec<String>>,
    pub user: Option<String>,
    pub config: Option<toml::Table>,
    pub validate_timeout: Option<String>,
    pub max_line: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Accepted here too (and `incron`): TOML puts a key written after `[daemon]` inside it.
    pub facron: Option<Spanned<String>>,
    pub incron: Option<Spanned<String>>,
    pub control: Option<String>,
    pub control_mode: Option<String>,
    pub control_group: Option<String>,
    pub shutdown_grace: Option<String>,
    pub fs_mount: Option<String>,
    pub state_dir: Option<String>,
    pub dropins: Option<String>,
    /// `IP:PORT` of the Prometheus endpoint (port 0: any free port).
    pub metrics: Option<String>,
}

/// One rule table (`[[watch]]`, and the other rule kinds as they arrive). All rule kinds share
/// this one key set so that `deny_unknown_fields` works (serde cannot combine it with
/// `flatten`); validation then rejects keys that do not belong to the table's kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub path: Option<String>,
    pub events: Option<EventList>,
    pub recursive: Option<bool>,
    pub follow: Option<bool>,
    /// `[[watch]]`: `auto` (fanotify, inotify where fanotify refuses), `fanotify`, `inotify`.
    pub backend: Option<String>,
    /// `[[watch]]`: only changes made through the path's mount (`FAN_MARK_MOUNT`).
    pub mount_only: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub hidden: Option<bool>,
    /// `[[watch]]`: `report` or `rescan`.
    pub on_overflow: Option<String>,
    /// `[[watch]]`: poll with `stat` this often instead of a kernel mark.
    pub poll: Option<String>,
    pub exec: Option<Vec<String>>,
    pub send: Option<String>,
    pub plugin: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub timeout: Option<String>,
    pub on_timeout: Option<String>,
    pub debounce: Option<String>,
    /// `[[watch]]`: settle time of a batch, its bound in time and in paths.
    pub batch: Option<String>,
    pub batch_max_wait: Option<String>,
    pub max_batch: Option<i64>,
    /// What the command reads on stdin: `payload`, `paths`, `paths0`, `json`, `none`.
    pub stdin: Option<String>,
    pub max_running: Option<i64>,
    pub on_busy: Option<String>,
    #[serde(rename = "loop")]
    pub allow_loop: Option<bool>,
    pub retry: Option<RawRetry>,
    pub dead_letter: Option<Vec<String>>,
    pub run_at_start: Option<bool>,
    /// Variables added to the command's environment (after the base, before `TRIGGERD_*`).
    pub env: Option<std::collections::BTreeMap<String, String>>,
    /// The command's working directory (default `/`).
    pub chdir: Option<String>,
    pub rate: Option<String>,
    pub queue: Option<i64>,
    pub queue_bytes: Option<i64>,
    pub when_full: Option<String>,
    // [[timer]]
    pub every: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub max_fires: Option<i64>,
    pub once: Option<bool>,
    pub catchup: Option<String>,
    pub catchup_window: Option<String>,
    pub jitter: Option<String>,
    // [[webhook]]
    pub listen: Option<String>,
    pub max_body: Option<i64>,
    pub allow_remote: Option<bool>,
    pub secret: Option<String>,
    pub per_peer: Option<i64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    // [[channel]] (`group` there is the channel's group)
    pub owner: Option<String>,
    pub mode: Option<String>,
    pub capacity: Option<i64>,
    pub lanes: Option<i64>,
    // [[trigger]] (`owner`, `group`, `mode` there are the file's)
    pub file: Option<String>,
    pub split: Option<String>,
    pub max_open: Option<i64>,
    pub partial_bytes: Option<i64>,
    pub queue_wait: Option<String>,
    // [[channel]]
    pub handoff_bytes: Option<i64>,
    // [[syslog]] (`listen`, `allow_remote`, `owner`, `group`, `mode` as above)
    pub socket: Option<String>,
    pub buffer: Option<i64>,
    // [[source]]
    pub provider: Option<String>,
    pub params: Option<toml::Table>,
}

/// Which keys belong to which rule table; the others are refused there.
pub const WATCH_KEYS: &[&str] = &[
    "path",
    "events",
    "recursive",
    "follow",
    "on_timeout",
    "backend",
    "mount_only",
    "include",
    "exclude",
    "hidden",
    "batch",
    "batch_max_wait",
    "max_batch",
    "on_overflow",
    "poll",
];
pub const TIMER_KEYS: &[&str] = &[
    "every",
    "cron",
    "timezone",
    "start",
    "stop",
    "max_fires",
    "once",
    "catchup",
    "catchup_window",
    "jitter",
];
pub const WEBHOOK_KEYS: &[&str] = &[
    "listen",
    "path",
    "max_body",
    "allow_remote",
    "secret",
    "per_peer",
    "header_timeout",
    "body_timeout",
];
pub const CHANNEL_KEYS: &[&str] = &["owner", "mode", "capacity", "lanes", "handoff_bytes"];
pub const SOURCE_KEYS: &[&str] = &["provider", "params"];
pub const SYSLOG_KEYS: &[&str] = &[
    "socket",
    "listen",
    "allow_remote",
    "owner",
    "mode",
    "buffer",
];
pub const TRIGGER_KEYS: &[&str] = &[
    "file",
    "split",
    "owner",
    "mode",
    "max_open",
    "partial_bytes",
    "queue_wait",
];

/// `retry = { attempts = 5, backoff = "1s", max_backoff = "1m", jitter = true }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub jitter: Option<bool>,
}

/// The keys written in the table that starts at `span.start` (up to the next header).
pub fn keys_in_table(source: &Source<'_>, span: &std::ops::Range<usize>) -> Vec<(String, usize)> {
    let text = source.text;
    let start = span.start.min(text.len());
    let mut keys = Vec::new();
    let mut offset = start;
    for (i, line) in text[start..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        if let Some((key, _)) = trimmed.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                keys.push((key.to_string(), source.line_at(offset)));
            }
        }
        offset += line.len();
    }
    keys
}

/// `events = "close_write|moved_to"` or `events = ["close_write", "moved_to"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EventList {
    One(String),
    Many(Vec<String>),
}

impl EventList {
    /// All names as one expression that `parse_events` understands.
    pub fn expression(&self) -> String {
        match self {
            EventList::One(s) => s.clone(),
            EventList::Many(v) => v.join("|"),
        }
    }
}

pub fn parse(text: &str) -> Result<RawFile, Problem> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| Source::new(text).line_at(s.start));
        let key = e.span().and_then(|s| key_at(text, s.start));
        let message = e.message().trim().to_string();
        match key {
            Some(key) if !message.contains(&format!("`{key}`")) => {
                Problem::new(line, format!("{key}: {message}"))
            }
            _ => Problem::new(line, message),
        }
    })
}

/// Config text with its line starts indexed, so every line number is a binary search
/// (a config with thousands of tables must not cost a scan per key).
pub struct Source<'a> {
    pub text: &'a str,
    newlines: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Self { text, newlines }
    }

    /// 1-based line of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }
}

/// The key of a `key = value` line containing `offset`, when there is one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    plain.then(|| key.to_string())
}

/// The line of `key` inside the table that starts at `span.start`, or the table's first line.
/// The table runs to the next table header (a span may cover only the header itself).
pub fn line_of_key(source: &Source<'_>, span: &std::ops::Range<usize>, key: &str) -> usize {
    let text = source.text;
    let start = span.start.min(text.len());
    let mut offset = start;
    for (i, line) in text[start..].split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if i > 0 && trimmed.starts_with('[') {
            break;
        }
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return source.line_at(offset);
            }
        }
        offset += line.len();
    }
    source.line_at(start)
}
