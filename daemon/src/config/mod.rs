//! The daemon's configuration: the validated model every other module reads, and `load`, which
//! turns `/etc/triggerd.conf` into it (parse → validate; `diff` lives with the dispatcher, which
//! owns the runtime state a diff must preserve). Every error names the file, the line and the
//! key, so `triggerd check` and a failed reload say exactly what to fix.

mod duration;
mod error;
mod facron;
mod raw;
mod validate;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use triggerd_watch::EventMask;

pub use duration::parse_duration;
pub use error::{ConfigError, Problem};

/// Where the daemon listens and how it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The control socket (`triggerctl`), created mode 0600 unless `control_mode` says otherwise.
    pub control: PathBuf,
    pub control_mode: u32,
    /// How long SIGTERM waits for running actions before killing them.
    pub shutdown_grace: Duration,
    /// Where the trigger filesystem is mounted (used once trigger files exist).
    pub fs_mount: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control: PathBuf::from("/run/triggerd/control.sock"),
            control_mode: 0o600,
            shutdown_grace: Duration::from_secs(10),
            fs_mount: PathBuf::from("/run/triggerd/fs"),
        }
    }
}

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (reload reads it again).
    pub file: PathBuf,
    pub daemon: DaemonConfig,
    pub rules: Vec<Rule>,
}

/// One rule: what fires it, what it runs, and how runs are governed.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The config line the rule starts on (for messages; not part of its identity).
    pub line: usize,
    pub def: RuleDef,
}

/// Everything that defines a rule's behaviour. Two rules with equal `RuleDef` and name are the
/// same rule across a reload, and keep their marks, queues and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDef {
    pub trigger: Trigger,
    pub action: ExecAction,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Watch(WatchTrigger),
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Watch(_) => "watch",
        }
    }

    pub fn subject(&self) -> String {
        match self {
            Trigger::Watch(w) => w.path.display().to_string(),
        }
    }
}

/// A fanotify watch on a real path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTrigger {
    pub path: PathBuf,
    /// Event kinds, possibly with ONDIR / EVENT_ON_CHILD and permission bits.
    pub events: EventMask,
    /// Covers the whole tree below `path`, including directories created later.
    pub recursive: bool,
    /// Events on the entries of a watched directory fire too (always for `[[watch]]`; for a
    /// facron line only with `FAN_EVENT_ON_CHILD`).
    pub children: bool,
}

impl WatchTrigger {
    /// Whether an event on `path` with kinds `mask` concerns this watch.
    pub fn matches(&self, path: &Path, mask: EventMask) -> bool {
        if !self
            .events
            .intersects(mask.notification_part().union(mask.permission_part()))
        {
            return false;
        }
        if mask.contains(EventMask::ONDIR) && !self.wants_directory_event(mask) {
            return false;
        }
        if path == self.path {
            return true;
        }
        if self.recursive {
            return path.starts_with(&self.path);
        }
        self.children && path.parent() == Some(self.path.as_path())
    }

    /// Directory entries appearing or leaving are always reported; other events on
    /// directories only when the rule asked for `ondir`.
    fn wants_directory_event(&self, mask: EventMask) -> bool {
        let entry_kinds = EventMask::CREATE
            .union(EventMask::DELETE)
            .union(EventMask::MOVED_FROM)
            .union(EventMask::MOVED_TO);
        self.events.contains(EventMask::ONDIR) || entry_kinds.intersects(mask)
    }

    pub fn is_permission(&self) -> bool {
        !self.events.permission_part().is_empty()
    }
}

/// A command run with tokens substituted per argument; never through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecAction {
    pub argv: Vec<OsString>,
    /// Run as this uid/gid (names resolved at load time).
    pub user: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBusy {
    /// Wait for a free slot (bounded queue; overflow is counted as dropped).
    Queue,
    /// Drop the event, counted.
    Drop,
    /// Kill the oldest running action and start this one.
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Allow,
    Deny,
}

/// How a rule's runs are governed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub timeout: Option<Duration>,
    /// For permission rules: the answer when the action runs past `timeout`.
    pub on_timeout: OnTimeout,
    /// Coalesce a burst on one path into one run, after this much quiet.
    pub debounce: Option<Duration>,
    pub max_running: usize,
    pub on_busy: OnBusy,
    /// Let events caused by this rule's own running actions fire it again.
    pub allow_loop: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: None,
            on_timeout: OnTimeout::Allow,
            debounce: None,
            max_running: 8,
            on_busy: OnBusy::Queue,
            allow_loop: false,
        }
    }
}

/// Reads, parses and validates a config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(file, &text)
}

/// Parses and validates config text; `file` is only used in messages and kept for reloads.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw = raw::parse(text).map_err(|p| ConfigError::invalid(file, vec![p]))?;
    validate::validate(file, text, raw)
}
