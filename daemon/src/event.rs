//! The one event type every source produces and every action sees.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use triggerd_watch::EventMask;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Fanotify,
    Timer,
    Webhook,
    Channel,
    TriggerFile,
    /// A `[[provider]]` process.
    Provider,
    /// A `[[syslog]]` socket.
    Syslog,
    /// `triggerctl fire`.
    Manual,
    /// `run_at_start`: the rule started (daemon start, or a reload added or changed it).
    Start,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Fanotify => "fanotify",
            SourceKind::Timer => "timer",
            SourceKind::Webhook => "webhook",
            SourceKind::Channel => "channel",
            SourceKind::TriggerFile => "trigger",
            SourceKind::Provider => "provider",
            SourceKind::Syslog => "syslog",
            SourceKind::Manual => "manual",
            SourceKind::Start => "start",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Unique within one daemon run, in the order events were read.
    pub id: u64,
    pub source: SourceKind,
    /// The path (or trigger file, channel) the event is about; may hold any bytes.
    pub subject: PathBuf,
    pub mask: EventMask,
    /// The process that caused it, when the source knows.
    pub pid: Option<i32>,
    pub time: SystemTime,
    pub payload: Vec<u8>,
    /// Where the action's output goes back to (a trigger file's read side), if anywhere.
    pub reply: Option<ReplyTo>,
    /// Named values a source attaches (providers): `${name}` in arguments and
    /// `TRIGGERD_FIELD_NAME` in the environment. Names are `[A-Za-z0-9_]`, checked by the source.
    pub fields: Vec<(String, String)>,
    /// The changed paths of a batched run (`batch`); `None` for a single event.
    pub batch: Option<Arc<Batch>>,
}

/// Every path a batched run is for, each once, in the order first seen.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<BatchEntry>,
    /// The batch reached `max_batch` (or its byte bound) and was cut: the paths that followed
    /// are in the next run (`TRIGGERD_BATCH_OVERFLOW=1`).
    pub cut: bool,
}

/// One changed path of a batch: the kinds seen on it, and the latest event's pid and time.
#[derive(Debug, Clone)]
pub struct BatchEntry {
    pub path: PathBuf,
    pub mask: EventMask,
    pub pid: Option<i32>,
    pub time: SystemTime,
}

impl BatchEntry {
    /// What an entry holds, counted against a batch's and a queue's byte bounds.
    pub fn bytes(&self) -> usize {
        self.path.as_os_str().len() + std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
impl Event {
    /// A fanotify event on `subject` with kinds `mask` from pid 42, for unit tests.
    pub fn for_test(subject: impl Into<PathBuf>, mask: EventMask) -> Self {
        Self {
            id: 1,
            source: SourceKind::Fanotify,
            subject: subject.into(),
            mask,
            pid: Some(42),
            time: SystemTime::now(),
            payload: Vec::new(),
            reply: None,
            fields: Vec::new(),
            batch: None,
        }
    }
}

/// Called with an action's output.
pub type ReplyFn = dyn Fn(&[u8]) + Send + Sync;

/// Takes an action's output back to the event's source.
#[derive(Clone)]
pub struct ReplyTo(pub Arc<ReplyFn>);

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTo")
    }
}
