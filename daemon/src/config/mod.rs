//! The daemon's configuration: the validated model every other module reads, and `load`, which
//! turns `/etc/triggerd.conf` into it (parse → validate; `diff` lives with the dispatcher, which
//! owns the runtime state a diff must preserve). Every error names the file, the line and the
//! key, so `triggerd check` and a failed reload say exactly what to fix.

mod command;
mod dropins;
mod duration;
mod error;
mod facron;
mod incron;
mod path_filter;
mod provider;
mod raw;
mod remote;
pub mod synced;
mod validate;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use triggerd_watch::EventMask;

pub use command::{BatchPolicy, Stdin, Tokens};
pub use duration::parse_duration;
pub use error::{ConfigError, Problem};
pub use path_filter::{BadGlob, PathFilter};
pub use provider::{ProviderSettings, ProviderTrigger};
pub use remote::{BrokerSettings, FullPolicy, ServiceSettings, SyncPolicy};

/// Where the daemon listens and how it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The control socket (`triggerctl`), created mode 0600 unless `control_mode` says otherwise.
    pub control: PathBuf,
    pub control_mode: u32,
    /// Members of this group may use the read-only verbs (`status`, `list`, `show`); every
    /// other verb is root's alone. The socket is chowned to it.
    pub control_group: Option<u32>,
    /// How long SIGTERM waits for running actions before killing them.
    pub shutdown_grace: Duration,
    /// Where the trigger filesystem is mounted (used once trigger files exist).
    pub fs_mount: PathBuf,
    /// Where state that must survive restarts lives (paused rules, timers' last fires).
    pub state_dir: PathBuf,
    /// `dropins`: the drop-in directory when set (else `NAME.d` beside the config file).
    pub dropins: Option<PathBuf>,
    /// `metrics`: where the Prometheus endpoint listens (`IP:PORT`); none when unset.
    pub metrics: Option<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            control: PathBuf::from("/run/triggerd/control.sock"),
            control_mode: 0o600,
            control_group: None,
            shutdown_grace: Duration::from_secs(10),
            fs_mount: PathBuf::from("/run/triggerd/fs"),
            state_dir: PathBuf::from("/var/lib/triggerd"),
            dropins: None,
            metrics: None,
        }
    }
}

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (reload reads it again).
    pub file: PathBuf,
    pub daemon: DaemonConfig,
    /// Shared with the sources' bindings and the dispatcher's runtimes (one copy per rule).
    pub rules: Vec<Arc<Rule>>,
    /// `[broker]`: where `send` actions go (none: everything stays local).
    pub broker: Option<BrokerSettings>,
    /// `[[service]]` tables: services this host serves as a worker.
    pub services: Vec<ServiceSettings>,
    /// `[[provider]]` tables: event-source programs that `[[source]]` rules bind to.
    pub providers: Vec<ProviderSettings>,
}

impl Rule {
    /// `FILE:LINE` of the table the rule comes from, for messages.
    pub fn place(&self, main: &Path) -> String {
        let file = self.origin.as_deref().unwrap_or(main);
        format!("{}:{}", file.display(), self.line)
    }

    /// A problem at the rule's line, in the file it comes from.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        let problem = Problem::new(self.line, message);
        match &self.origin {
            Some(file) => problem.in_file(file),
            None => problem,
        }
    }
}

impl Config {
    /// Makes each rule that `running` has unchanged (same name, definition and line) share
    /// `running`'s allocation, so that a reload keeps one copy of an unchanged rule, not two
    /// (the dispatcher's kept runtimes hold the old one).
    pub fn share_unchanged(&mut self, running: &Config) {
        let old: std::collections::HashMap<&str, &Arc<Rule>> =
            running.rules.iter().map(|r| (r.name.as_str(), r)).collect();
        for rule in &mut self.rules {
            if let Some(&kept) = old.get(rule.name.as_str()) {
                if kept.line == rule.line && kept.origin == rule.origin && kept.def == rule.def {
                    *rule = Arc::clone(kept);
                }
            }
        }
    }
}

/// One rule: what fires it, what it runs, and how runs are governed.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// The config line the rule starts on (for messages; not part of its identity).
    pub line: usize,
    /// The drop-in file `line` is in; `None`: the main config file.
    pub origin: Option<Arc<Path>>,
    pub def: RuleDef,
}

/// Everything that defines a rule's behaviour. Two rules with equal `RuleDef` and name are the
/// same rule across a reload, and keep their marks, queues and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDef {
    pub trigger: Trigger,
    pub action: Action,
    /// Shared by every rule with an equal policy (most rules use the defaults).
    pub policy: Arc<Policy>,
}

/// What a fired rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command.
    Exec(ExecAction),
    /// Forward the event to a service at the broker (through the durable spool).
    Send(SendAction),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAction {
    pub service: String,
    /// The plugin the worker should run (the service's default when absent).
    pub plugin: Option<String>,
}

/// What fires a rule; the variant names the event source that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Watch(WatchTrigger),
    Timer(TimerTrigger),
    Webhook(WebhookTrigger),
    Channel(ChannelTrigger),
    File(FileTrigger),
    Provider(ProviderTrigger),
    Syslog(SyslogTrigger),
}

impl Trigger {
    /// The config table and the source kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Watch(_) => "watch",
            Trigger::Timer(_) => "timer",
            Trigger::Webhook(_) => "webhook",
            Trigger::Channel(_) => "channel",
            Trigger::File(_) => "trigger",
            Trigger::Provider(_) => "source",
            Trigger::Syslog(_) => "syslog",
        }
    }

    /// What the rule is about, for names and status.
    pub fn subject(&self) -> String {
        match self {
            Trigger::Watch(w) => w.path.display().to_string(),
            Trigger::Timer(t) => t.schedule.to_string(),
            Trigger::Webhook(w) => format!("{}{}", w.listen, w.path),
            Trigger::Channel(c) => c.name.clone(),
            Trigger::File(f) => f.file.clone(),
            Trigger::Provider(p) => p.provider.clone(),
            Trigger::Syslog(s) => s.listen.to_string(),
        }
    }

    /// The event kinds, as `status` shows them.
    pub fn events(&self) -> String {
        match self {
            Trigger::Watch(w) => w.events.to_string(),
            Trigger::Timer(_) => "tick".into(),
            Trigger::Webhook(_) => "post".into(),
            Trigger::Channel(_) => "message".into(),
            Trigger::File(f) => match f.split {
                Split::Write => "write".into(),
                Split::Line => "line".into(),
            },
            Trigger::Provider(_) => "fire".into(),
            Trigger::Syslog(_) => "message".into(),
        }
    }
}

pub use crate::schedule::Schedule;

/// What a timer does about fires it missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catchup {
    Skip,
    Once,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTrigger {
    pub schedule: Schedule,
    pub start: Option<SystemTime>,
    pub stop: Option<SystemTime>,
    /// Stop after this many fires (`once = true` is 1); counted across restarts.
    pub max_fires: Option<u64>,
    pub catchup: Catchup,
    /// Missed fires older than this are not caught up.
    pub catchup_window: Duration,
    /// Each fire is delayed by a fixed amount in [0, jitter), derived from the rule's name,
    /// so it is the same on every host restart.
    pub jitter: Option<Duration>,
}

/// A shared-memory channel: each message a local program publishes is one event. Who may
/// publish is whoever may connect to the channel's socket: `owner`, `group`, `mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelTrigger {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub capacity: usize,
    /// Publishers connected at once.
    pub lanes: usize,
    /// Bytes of messages copied out of the region but not yet taken by the rule; past it the
    /// draining thread waits and the ring fills (publishers see "would block").
    pub handoff_bytes: usize,
}

/// How a trigger file's writes become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// One message per write(2).
    Write,
    /// One message per line (without its newline); a partial line waits for its end or close.
    Line,
}

/// A trigger file under `[daemon] fs_mount`: every write is a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTrigger {
    /// Relative path below the mount, e.g. "nginx/access".
    pub file: String,
    pub split: Split,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Open handles at once; opens past it fail with ENFILE.
    pub max_open: usize,
    /// Bytes of partial lines (`split = "line"`) held over all handles; a write past it fails
    /// with ENOSPC.
    pub partial_bytes: usize,
    /// How long a write waits for room in the rule's queue before it fails with EAGAIN.
    pub queue_wait: Duration,
}

/// Where a `[[syslog]]` rule receives datagrams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SyslogListen {
    /// A Unix datagram socket at this path (as `/dev/log` is).
    Unix(PathBuf),
    /// A UDP address.
    Udp(std::net::SocketAddr),
}

impl std::fmt::Display for SyslogListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyslogListen::Unix(path) => write!(f, "{}", path.display()),
            SyslogListen::Udp(addr) => write!(f, "udp://{addr}"),
        }
    }
}

/// Every syslog message received on a socket fires the rule, the message as payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTrigger {
    pub listen: SyslogListen,
    /// Owner, group and mode of a Unix socket file (who may send).
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The socket's receive buffer (`SO_RCVBUF`) in bytes; the kernel's default when absent.
    pub buffer: Option<usize>,
}

/// An HTTP POST on a local address fires the rule with the body as payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTrigger {
    pub listen: std::net::SocketAddr,
    /// The request path, starting with `/`.
    pub path: String,
    pub max_body: usize,
    /// Connections one peer address may hold open on this listener.
    pub per_peer: usize,
    /// Deadline for the request line and headers, and for the body once they arrived.
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// The HMAC-SHA256 key callers sign bodies with (`X-Hub-Signature-256`), if required.
    pub secret: Option<Secret>,
}

/// Key bytes read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
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
    /// A symbolic link at `path` is followed (as inotify does); off, the link itself is watched.
    pub follow: bool,
    /// Events on the entries of a watched directory fire too (always for `[[watch]]`; for a
    /// facron line only with `FAN_EVENT_ON_CHILD`).
    pub children: bool,
    /// Which kernel interface watches the path.
    pub backend: WatchBackend,
    /// Only changes made through the path's mount fire (`FAN_MARK_MOUNT`).
    pub mount_only: bool,
    /// `include`, `exclude`, `hidden`: which paths below `path` fire.
    pub filter: PathFilter,
    /// What a queue overflow does for this watch (`on_overflow`).
    pub on_overflow: OnOverflow,
    /// `poll`: served by comparing `stat` snapshots this often instead of a kernel mark (for
    /// filesystems whose other clients' changes the kernel never reports).
    pub poll: Option<Duration>,
}

/// `on_overflow` of a `[[watch]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnOverflow {
    /// Count it (and fire rules that ask for `overflow`).
    #[default]
    Report,
    /// Also walk the tree and fire for each file changed since the last walk.
    Rescan,
}

/// The kinds a polled watch can report: what two `stat` snapshots can tell apart.
pub const POLL_KINDS: EventMask = EventMask::CLOSE_WRITE
    .union(EventMask::MODIFY)
    .union(EventMask::CREATE)
    .union(EventMask::DELETE)
    .union(EventMask::ATTRIB);

impl OnOverflow {
    /// The kinds a rescan can report (it sees sizes and times, not who opened a file), in the
    /// order one is chosen among a rule's `events` for the events it fires.
    pub const KINDS: [EventMask; 5] = [
        EventMask::CLOSE_WRITE,
        EventMask::CREATE,
        EventMask::MOVED_TO,
        EventMask::MODIFY,
        EventMask::ATTRIB,
    ];
}

/// `backend` of a `[[watch]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchBackend {
    /// fanotify, and inotify where the kernel refuses fanotify on the path's filesystem.
    #[default]
    Auto,
    Fanotify,
    Inotify,
}

impl WatchTrigger {
    /// Whether an event with kinds `mask` on this watch's object or below it (the watcher
    /// found which, by identity) concerns this rule.
    pub fn accepts(&self, mask: EventMask) -> bool {
        self.events
            .intersects(mask.notification_part().union(mask.permission_part()))
            && (!mask.contains(EventMask::ONDIR) || self.wants_directory_event(mask))
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecAction {
    pub argv: Vec<OsString>,
    /// Run as this uid/gid (names resolved at load time).
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// The rule's `env` table, set on top of the base environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory (`chdir`); `/` when unset.
    pub chdir: Option<PathBuf>,
    /// What the command reads on stdin (`stdin`).
    pub stdin: Stdin,
    /// The token dialect of `argv` (a pasted facron or incron line keeps its own).
    pub tokens: Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnBusy {
    /// Wait for a free slot (bounded queue; overflow is counted as dropped).
    Queue,
    /// Drop the event, counted.
    Drop,
    /// Kill the oldest running action and start this one.
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnTimeout {
    Allow,
    Deny,
}

/// What happens to an event that finds the rule's queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhenFull {
    /// The source waits for room (back-pressure; a FUSE writer waits, fanotify reading pauses).
    Block,
    /// The new event is dropped and counted.
    DropNewest,
    /// Replaces a queued event for the same subject; dropped and counted if there is none.
    Coalesce,
}

/// Retry a failed run with exponential back-off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Retry {
    /// Total runs, the first included.
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub jitter: bool,
}

/// At most `count` runs started per `per`; the rest wait in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// How a rule's runs are governed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    pub timeout: Option<Duration>,
    /// For permission rules: the answer when the action runs past `timeout`.
    pub on_timeout: OnTimeout,
    /// Coalesce a burst on one path into one run, after this much quiet.
    pub debounce: Option<Duration>,
    /// Gather a burst of changes below a watch into one run (`batch`).
    pub batch: Option<BatchPolicy>,
    pub max_running: usize,
    pub on_busy: OnBusy,
    /// Let events caused by this rule's own running actions fire it again.
    pub allow_loop: bool,
    pub retry: Option<Retry>,
    /// Run for an event whose runs all failed.
    pub dead_letter: Option<ExecAction>,
    pub rate: Option<Rate>,
    /// Events waiting for a run slot (or a rate token).
    pub queue: usize,
    /// Payload bytes the queue may hold; an event past it finds the queue full.
    pub queue_bytes: usize,
    pub when_full: WhenFull,
    /// Fire once when the rule starts: at daemon start, and when a reload adds or changes it.
    pub run_at_start: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: None,
            on_timeout: OnTimeout::Allow,
            debounce: None,
            batch: None,
            max_running: 8,
            on_busy: OnBusy::Queue,
            allow_loop: false,
            retry: None,
            dead_letter: None,
            rate: None,
            queue: 65_536,
            queue_bytes: 64 << 20,
            when_full: WhenFull::DropNewest,
            run_at_start: false,
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
    let (found, problems) = match dropins::directory(file, dropins::explicit(&raw)) {
        Some(dir) => dropins::read(&dir),
        None => Default::default(),
    };
    // Validated with the drop-ins that parsed, so that every problem shows at once.
    match validate::validate(file, text, raw, found) {
        Ok(_) if !problems.is_empty() => Err(ConfigError::invalid(file, problems)),
        Err(ConfigError::Invalid {
            file,
            problems: mut more,
        }) => {
            more.extend(problems);
            Err(ConfigError::Invalid {
                file,
                problems: more,
            })
        }
        other => other,
    }
}
