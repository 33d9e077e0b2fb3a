//! Turning writes into messages: the per-trigger runtime (counters, last reply), the per-open
//! file handle (partial line, read snapshot), line splitting, and the bounded hand-off to the
//! [`MessageSink`] that counts what it refuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::{Message, MessageSink, Split, TriggerStats};

/// A partial line longer than this is emitted as a message of its own rather than grown
/// without bound (a writer that never sends a newline cannot exhaust memory).
pub const MAX_LINE: usize = 1024 * 1024;

/// Locks a mutex, taking the data even if a panicking thread poisoned it: every value under
/// these locks stays consistent after each statement.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// The live side of one trigger; kept (same object) across reloads while its key stays.
pub(crate) struct Trigger {
    pub key: Arc<str>,
    split: AtomicU8,
    /// Cleared when a reload removes the trigger; open handles then look the key up again.
    pub live: AtomicBool,
    reply: Mutex<Arc<[u8]>>,
    writes: AtomicU64,
    bytes: AtomicU64,
    events: AtomicU64,
    drops: AtomicU64,
    /// Second (since `Shared::epoch`) of the last drop warning, to log at most once a second.
    last_drop_log: AtomicU64,
}

impl Trigger {
    pub(crate) fn new(key: Arc<str>, split: Split) -> Self {
        let t = Trigger {
            key,
            split: AtomicU8::new(0),
            live: AtomicBool::new(true),
            reply: Mutex::new(Arc::from(&[][..])),
            writes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            events: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            last_drop_log: AtomicU64::new(u64::MAX),
        };
        t.set_split(split);
        t
    }

    pub(crate) fn set_split(&self, split: Split) {
        let v = match split {
            Split::Write => 0,
            Split::Line => 1,
        };
        self.split.store(v, Ordering::Relaxed);
    }

    fn split(&self) -> Split {
        match self.split.load(Ordering::Relaxed) {
            0 => Split::Write,
            _ => Split::Line,
        }
    }

    pub(crate) fn reply(&self) -> Arc<[u8]> {
        lock(&self.reply).clone()
    }

    pub(crate) fn set_reply(&self, reply: &[u8]) {
        *lock(&self.reply) = Arc::from(reply);
    }

    pub(crate) fn stats(&self) -> TriggerStats {
        TriggerStats {
            trigger: self.key.to_string(),
            writes: self.writes.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
        }
    }
}

/// One open of a trigger file (one FUSE file handle, shared by dup'd and inherited fds).
pub(crate) struct OpenFile {
    trigger: Arc<Trigger>,
    /// Bytes after the last newline, for split = "line".
    partial: Mutex<Vec<u8>>,
    /// The reply as it was at the first read (offset 0), so that a reader paging through it
    /// sees one consistent reply.
    snapshot: Mutex<Option<Arc<[u8]>>>,
}

impl OpenFile {
    pub(crate) fn new(trigger: Arc<Trigger>) -> Self {
        OpenFile {
            trigger,
            partial: Mutex::new(Vec::new()),
            snapshot: Mutex::new(None),
        }
    }

    /// The bytes a read at `offset` of at most `size` returns.
    pub(crate) fn read(&self, offset: u64, size: u32, triggers: &Triggers) -> Vec<u8> {
        let mut snap = lock(&self.snapshot);
        let reply = match (&*snap, offset) {
            (Some(reply), o) if o > 0 => reply.clone(),
            _ => {
                let current = triggers
                    .current(&self.trigger)
                    .map_or_else(|| Arc::from(&[][..]), |t| t.reply());
                *snap = Some(current.clone());
                current
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(reply.len());
        let end = start.saturating_add(size as usize).min(reply.len());
        reply[start..end].to_vec()
    }
}

/// The live triggers by key.
#[derive(Default)]
pub(crate) struct Triggers {
    by_key: RwLock<HashMap<Arc<str>, Arc<Trigger>>>,
}

impl Triggers {
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Trigger>> {
        read(&self.by_key).get(key).cloned()
    }

    /// The trigger an open handle writes into: its own while live, else the one that now has
    /// the same key (removed and added back by later reloads).
    fn current(&self, trigger: &Arc<Trigger>) -> Option<Arc<Trigger>> {
        if trigger.live.load(Ordering::Acquire) {
            Some(trigger.clone())
        } else {
            self.get(&trigger.key)
        }
    }

    /// Makes the live set exactly `wanted` (key, split), keeping the objects of kept keys.
    pub(crate) fn replace(&self, wanted: &[(Arc<str>, Split)]) {
        let mut map = write(&self.by_key);
        let mut next = HashMap::with_capacity(wanted.len());
        for (key, split) in wanted {
            let trigger = match map.remove(key) {
                Some(t) => t,
                None => Arc::new(Trigger::new(key.clone(), *split)),
            };
            trigger.set_split(*split);
            next.insert(key.clone(), trigger);
        }
        for gone in map.values() {
            gone.live.store(false, Ordering::Release);
        }
        *map = next;
    }

    pub(crate) fn stats(&self) -> Vec<TriggerStats> {
        let mut all: Vec<_> = read(&self.by_key).values().map(|t| t.stats()).collect();
        all.sort_by(|a, b| a.trigger.cmp(&b.trigger));
        all
    }
}

/// Hands messages to the sink, with the per-write deadline that bounds back-pressure.
pub(crate) struct Deliverer {
    pub sink: Arc<dyn MessageSink>,
    pub queue_wait: Duration,
    pub epoch: Instant,
}

/// Who wrote: the FUSE request's pid and uid.
#[derive(Clone, Copy)]
pub(crate) struct Writer {
    pub pid: u32,
    pub uid: u32,
}

/// A write to a trigger whose key no longer exists.
#[derive(Debug)]
pub(crate) struct Gone;

impl Deliverer {
    /// Turns one write into messages and offers them; returns once each one was accepted or
    /// counted as dropped.
    pub(crate) fn write(
        &self,
        file: &OpenFile,
        data: &[u8],
        who: Writer,
        triggers: &Triggers,
    ) -> Result<(), Gone> {
        let trigger = triggers.current(&file.trigger).ok_or(Gone)?;
        trigger.writes.fetch_add(1, Ordering::Relaxed);
        trigger
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let deadline = Instant::now() + self.queue_wait;
        match trigger.split() {
            Split::Write => self.offer(&trigger, data.to_vec(), who, deadline),
            Split::Line => {
                let lines = split_lines(&mut lock(&file.partial), data, MAX_LINE);
                for line in lines {
                    self.offer(&trigger, line, who, deadline);
                }
            }
        }
        Ok(())
    }

    /// Emits the partial line of `file` (on flush, fsync and release).
    pub(crate) fn flush(&self, file: &OpenFile, who: Writer, triggers: &Triggers) {
        let rest = std::mem::take(&mut *lock(&file.partial));
        if rest.is_empty() {
            return;
        }
        if let Some(trigger) = triggers.current(&file.trigger) {
            self.offer(&trigger, rest, who, Instant::now() + self.queue_wait);
        }
    }

    fn offer(&self, trigger: &Trigger, payload: Vec<u8>, who: Writer, deadline: Instant) {
        let msg = Message {
            trigger: trigger.key.clone(),
            payload,
            pid: who.pid,
            uid: who.uid,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        if self.sink.offer(msg, wait) {
            trigger.events.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let drops = trigger.drops.fetch_add(1, Ordering::Relaxed) + 1;
        let second = self.epoch.elapsed().as_secs();
        if trigger.last_drop_log.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(
                trigger = %trigger.key,
                drops,
                "queue full after {:?}: message dropped",
                self.queue_wait
            );
        }
    }
}

/// Appends `data` to the partial line and takes out every complete line (without its
/// newline). A partial line that reaches `max_line` bytes is taken out as it is.
pub(crate) fn split_lines(partial: &mut Vec<u8>, data: &[u8], max_line: usize) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(nl);
        if partial.is_empty() {
            lines.push(line.to_vec());
        } else {
            partial.extend_from_slice(line);
            lines.push(std::mem::take(partial));
        }
        rest = after.get(1..).unwrap_or(&[]);
    }
    partial.extend_from_slice(rest);
    while partial.len() >= max_line {
        let tail = partial.split_off(max_line);
        lines.push(std::mem::replace(partial, tail));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_partials_kept() {
        let mut partial = Vec::new();
        let out = split_lines(&mut partial, b"a\nbc\nde", 100);
        assert_eq!(out, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(partial, b"de");
        let out = split_lines(&mut partial, b"f\n\n", 100);
        assert_eq!(out, vec![b"def".to_vec(), Vec::new()]);
        assert!(partial.is_empty());
    }

    #[test]
    fn an_endless_line_is_cut_at_the_bound() {
        let mut partial = Vec::new();
        let out = split_lines(&mut partial, &[b'x'; 25], 10);
        assert_eq!(out, vec![vec![b'x'; 10], vec![b'x'; 10]]);
        assert_eq!(partial.len(), 5);
    }

    #[test]
    fn a_removed_trigger_is_found_again_by_key() {
        let triggers = Triggers::default();
        let key: Arc<str> = Arc::from("a/b");
        triggers.replace(&[(key.clone(), Split::Line)]);
        let first = triggers.get("a/b").expect("live");
        triggers.replace(&[]);
        assert!(triggers.current(&first).is_none());
        triggers.replace(&[(key, Split::Write)]);
        let again = triggers.current(&first).expect("back");
        assert_eq!(again.split(), Split::Write);
    }
}
