//! The live feed behind `triggerctl events`: every event a rule is offered and every run it
//! finishes, as [`Record`]s, to at most [`MAX_SUBSCRIBERS`] readers. The dispatcher never
//! waits for a reader: each subscriber has its own bounded buffer ([`BUFFER`] records), a
//! record that does not fit is dropped and counted for that subscriber alone, and the
//! connection tells its reader how many it missed. With no subscriber, publishing costs one
//! atomic load and builds nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::action::ExecOutcome;
use crate::event::Event;

/// Readers at once; one more is refused.
pub const MAX_SUBSCRIBERS: usize = 8;
/// Records buffered per reader before they are dropped (counted).
pub const BUFFER: usize = 1024;

/// One line of the feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// An event was offered to `rule` (before lifecycle, debounce and queue decide on it).
    Event {
        rule: String,
        id: u64,
        source: String,
        /// The subject, lossily shown as UTF-8.
        subject: String,
        /// Seconds since the Unix epoch.
        time: f64,
    },
    /// A run of `rule` for event `id` ended.
    Run {
        rule: String,
        id: u64,
        subject: String,
        /// `exit 0`, `exit 3`, `signal 9`, `timed out`, `spawn failed: …`.
        outcome: String,
        ok: bool,
        duration_ms: f64,
        /// 0 for the first run, then each retry.
        attempt: u32,
        /// When it ended, in seconds since the Unix epoch.
        time: f64,
    },
    /// This reader missed `count` records: its buffer was full.
    Dropped { count: u64 },
}

impl Record {
    /// The rule a record is about (none for `Dropped`).
    pub fn rule(&self) -> Option<&str> {
        match self {
            Record::Event { rule, .. } | Record::Run { rule, .. } => Some(rule),
            Record::Dropped { .. } => None,
        }
    }

    pub fn event(rule: &str, event: &Event) -> Record {
        Record::Event {
            rule: rule.to_string(),
            id: event.id,
            source: event.source.as_str().to_string(),
            subject: event.subject.to_string_lossy().into_owned(),
            time: seconds(event.time),
        }
    }

    pub fn run(
        rule: &str,
        event: &Event,
        outcome: &ExecOutcome,
        took: Duration,
        attempt: u32,
    ) -> Record {
        Record::Run {
            rule: rule.to_string(),
            id: event.id,
            subject: event.subject.to_string_lossy().into_owned(),
            outcome: describe(outcome),
            ok: outcome.success(),
            duration_ms: took.as_secs_f64() * 1e3,
            attempt,
            time: seconds(SystemTime::now()),
        }
    }
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn describe(outcome: &ExecOutcome) -> String {
    match outcome {
        ExecOutcome::Exited(code) => format!("exit {code}"),
        ExecOutcome::Signaled(signal) => format!("signal {signal}"),
        ExecOutcome::TimedOut => "timed out".into(),
        ExecOutcome::SpawnFailed(why) => format!("spawn failed: {why}"),
    }
}

struct Subscriber {
    id: u64,
    /// Only this rule's records, when set.
    rule: Option<String>,
    records: mpsc::Sender<Arc<Record>>,
    dropped: Arc<AtomicU64>,
}

/// The subscribers, and the count publishing checks first.
#[derive(Default)]
pub struct Feed {
    subscribers: RwLock<Vec<Subscriber>>,
    count: AtomicUsize,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("subscribers", &self.count.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why a reader was not subscribed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many event readers ({MAX_SUBSCRIBERS}); try again when one ends")]
    TooMany,
    #[error("no rule named `{0}`")]
    NoSuchRule(String),
}

/// One reader's end; unsubscribes when dropped.
pub struct Subscription {
    feed: Arc<Feed>,
    id: u64,
    pub records: mpsc::Receiver<Arc<Record>>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Records missed since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut list = self
            .feed
            .subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner());
        list.retain(|s| s.id != self.id);
        self.feed.count.store(list.len(), Ordering::Relaxed);
    }
}

impl Feed {
    /// A new reader of `rule`'s records (every rule's when `None`).
    pub fn subscribe(
        self: &Arc<Self>,
        rule: Option<String>,
    ) -> Result<Subscription, SubscribeError> {
        let mut list = self.subscribers.write().unwrap_or_else(|p| p.into_inner());
        if list.len() >= MAX_SUBSCRIBERS {
            return Err(SubscribeError::TooMany);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (records, receiver) = mpsc::channel(BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        list.push(Subscriber {
            id,
            rule,
            records,
            dropped: Arc::clone(&dropped),
        });
        self.count.store(list.len(), Ordering::Relaxed);
        Ok(Subscription {
            feed: Arc::clone(self),
            id,
            records: receiver,
            dropped,
        })
    }

    /// Readers subscribed now.
    pub fn readers(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Offers `rule`'s record (built only if some reader wants it) to every reader; a full
    /// buffer drops it for that reader. Never waits.
    pub fn publish(&self, rule: &str, record: impl FnOnce() -> Record) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let list = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        let wants = |s: &&Subscriber| s.rule.as_deref().is_none_or(|r| r == rule);
        // Each wanting reader is decided once: sent to, or counted. A full buffer is counted
        // without building the record: a stuck reader costs an increment, not allocations.
        let mut open = [false; MAX_SUBSCRIBERS];
        for (i, s) in list.iter().enumerate().filter(|(_, s)| wants(s)) {
            match s.records.capacity() {
                0 => _ = s.dropped.fetch_add(1, Ordering::Relaxed),
                _ => open[i] = true,
            }
        }
        if !open.contains(&true) {
            return;
        }
        let record = Arc::new(record());
        for (s, _) in list.iter().zip(open).filter(|(_, open)| *open) {
            if s.records.try_send(Arc::clone(&record)).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rule: &str, id: u64) -> Record {
        Record::Event {
            rule: rule.into(),
            id,
            source: "manual".into(),
            subject: String::new(),
            time: 0.0,
        }
    }

    #[test]
    fn a_full_reader_loses_records_counted_while_others_get_theirs() {
        let feed = Arc::new(Feed::default());
        let mut stuck = feed.subscribe(None).expect("subscribe");
        let mut only_b = feed.subscribe(Some("b".into())).expect("subscribe");
        for id in 0..(BUFFER as u64 + 10) {
            feed.publish("a", || record("a", id));
        }
        feed.publish("b", || record("b", 0));
        assert_eq!(stuck.take_dropped(), 11, "the buffer holds BUFFER records");
        assert_eq!(stuck.take_dropped(), 0, "taken once");
        assert_eq!(only_b.records.try_recv().expect("b").rule(), Some("b"));
        assert!(only_b.records.try_recv().is_err(), "no record of rule a");
        assert_eq!(only_b.take_dropped(), 0);
        assert_eq!(stuck.records.try_recv().expect("first").rule(), Some("a"));
    }

    #[test]
    fn readers_are_bounded_and_leave_on_drop() {
        let feed = Arc::new(Feed::default());
        let readers: Vec<_> = (0..MAX_SUBSCRIBERS)
            .map(|_| feed.subscribe(None).expect("subscribe"))
            .collect();
        assert!(feed.subscribe(None).is_err());
        drop(readers);
        assert_eq!(feed.count.load(Ordering::Relaxed), 0);
        let mut built = false;
        feed.publish("a", || {
            built = true;
            record("a", 0)
        });
        assert!(!built, "nothing is built without a reader");
        assert!(feed.subscribe(None).is_ok());
    }
}
