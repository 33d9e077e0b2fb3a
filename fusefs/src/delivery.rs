//! Turning writes into messages: the per-open file handle (partial line, read snapshot), the
//! live triggers by key, line splitting, and the bounded hand-off to the [`MessageSink`]. What the sink refuses, and what a trigger's bounds refuse
//! (opens past `max_open`, partial lines past `partial_bytes`), fails the writer's call and is
//! counted, bytes included.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

pub(crate) use crate::trigger::Trigger;
use crate::{Message, MessageSink, Split, TriggerLimits, TriggerStats};

/// A partial line longer than this is emitted as a message of its own rather than grown
/// without bound (a writer that never sends a newline cannot exhaust memory).
pub const MAX_LINE: usize = 1024 * 1024;

pub(crate) use triggerd_support::lock;

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
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
    /// A handle on `trigger`, if its `max_open` allows one more (else counted and `None`).
    pub(crate) fn open(trigger: Arc<Trigger>) -> Option<Self> {
        trigger.take_handle().then(|| OpenFile {
            trigger,
            partial: Mutex::new(Vec::new()),
            snapshot: Mutex::new(None),
        })
    }

    /// A handle a predecessor on the same connection kept, with its partial line (counted in
    /// the trigger's budget like any other; `None` past `max_open`).
    pub(crate) fn restore(trigger: Arc<Trigger>, partial: Vec<u8>) -> Option<Self> {
        let file = OpenFile::open(trigger)?;
        file.trigger
            .partial
            .fetch_add(partial.len(), Ordering::AcqRel);
        *lock(&file.partial) = partial;
        Some(file)
    }

    /// What a successor needs to go on with this handle as `fh`.
    pub(crate) fn kept(&self, fh: u64) -> crate::handover::KeptHandle {
        crate::handover::KeptHandle {
            fh,
            trigger: self.trigger.key.to_string(),
            partial: lock(&self.partial).clone(),
        }
    }

    /// Empties the partial line, giving its bytes back to the trigger's budget.
    fn take_partial(&self, partial: &mut Vec<u8>) -> Vec<u8> {
        self.trigger
            .partial
            .fetch_sub(partial.len(), Ordering::AcqRel);
        std::mem::take(partial)
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

impl Drop for OpenFile {
    fn drop(&mut self) {
        let held = self
            .partial
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        self.trigger.partial.fetch_sub(held.len(), Ordering::AcqRel);
        self.trigger.open.fetch_sub(1, Ordering::AcqRel);
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

    /// Makes the live set exactly `wanted` (key, split, limits), keeping the objects of kept
    /// keys.
    pub(crate) fn replace(&self, wanted: &[(Arc<str>, Split, TriggerLimits)]) {
        let mut map = write(&self.by_key);
        let mut next = HashMap::with_capacity(wanted.len());
        for (key, split, limits) in wanted {
            let trigger = match map.remove(key) {
                Some(t) => t,
                None => Arc::new(Trigger::new(key.clone(), *split, *limits)),
            };
            trigger.set_split(*split);
            trigger.set_limits(*limits);
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

/// Why a write (or the flush of a partial line) was not taken; each maps to an errno.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The trigger's key no longer exists (ESTALE).
    Gone,
    /// The sink stayed full for the whole wait (EAGAIN).
    Full,
    /// The trigger's partial lines would pass `partial_bytes` (ENOSPC).
    NoSpace,
}

impl Deliverer {
    /// Turns one write into messages and offers them. Returns how many leading bytes were
    /// taken (all of them, or up to the end of the last line taken before a refusal), or
    /// why none were; the bytes not taken are counted as refused.
    pub(crate) fn write(
        &self,
        file: &OpenFile,
        data: &[u8],
        who: Writer,
        triggers: &Triggers,
    ) -> Result<usize, Refused> {
        let trigger = triggers.current(&file.trigger).ok_or(Refused::Gone)?;
        trigger.writes.fetch_add(1, Ordering::Relaxed);
        trigger
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let deadline = Instant::now() + trigger.queue_wait(self.queue_wait);
        let taken = match trigger.split() {
            Split::Write => match self.offer(&trigger, data.to_vec(), who, deadline) {
                true => Ok(data.len()),
                false => Err(Refused::Full),
            },
            Split::Line => self.write_lines(file, &trigger, data, who, deadline),
        };
        let refused = taken.as_ref().map_or(data.len(), |n| data.len() - n);
        if refused > 0 {
            trigger
                .refused_bytes
                .fetch_add(refused as u64, Ordering::Relaxed);
            if let Err(Refused::NoSpace) = taken {
                if trigger.log_ready(self.epoch) {
                    tracing::warn!(trigger = %trigger.key, "partial lines over partial_bytes: write refused");
                }
            }
        }
        taken
    }

    /// Offers each complete line (and each `MAX_LINE` piece of an endless one), then keeps
    /// the rest as the partial line if the trigger's budget allows. A line is built from a
    /// copy of the partial, so a refused one leaves the handle as it was.
    fn write_lines(
        &self,
        file: &OpenFile,
        trigger: &Trigger,
        data: &[u8],
        who: Writer,
        deadline: Instant,
    ) -> Result<usize, Refused> {
        let mut partial = lock(&file.partial);
        let mut pos = 0;
        let outcome = loop {
            let rest = &data[pos..];
            let cut = match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => Some((nl, nl + 1)),
                None if partial.len() + rest.len() >= MAX_LINE => {
                    let take = MAX_LINE - partial.len();
                    Some((take, take))
                }
                None => None,
            };
            if let Some((end, next)) = cut {
                let mut line = Vec::with_capacity(partial.len() + end);
                line.extend_from_slice(&partial);
                line.extend_from_slice(&rest[..end]);
                if !self.offer(trigger, line, who, deadline) {
                    break Err(Refused::Full);
                }
                file.take_partial(&mut partial);
                pos += next;
                continue;
            }
            if !rest.is_empty() {
                if !file.trigger.reserve_partial(rest.len()) {
                    break Err(Refused::NoSpace);
                }
                partial.extend_from_slice(rest);
            }
            break Ok(());
        };
        match outcome {
            Ok(()) => Ok(data.len()),
            Err(_) if pos > 0 => Ok(pos),
            Err(why) => Err(why),
        }
    }

    /// Emits the partial line of `file` (on flush, fsync and release); `Err(Full)` if the
    /// sink refused it (then it is counted as refused and gone).
    pub(crate) fn flush(
        &self,
        file: &OpenFile,
        who: Writer,
        triggers: &Triggers,
    ) -> Result<(), Refused> {
        let rest = file.take_partial(&mut lock(&file.partial));
        if rest.is_empty() {
            return Ok(());
        }
        let Some(trigger) = triggers.current(&file.trigger) else {
            return Err(Refused::Gone);
        };
        let len = rest.len() as u64;
        let deadline = Instant::now() + trigger.queue_wait(self.queue_wait);
        if self.offer(&trigger, rest, who, deadline) {
            return Ok(());
        }
        trigger.refused_bytes.fetch_add(len, Ordering::Relaxed);
        Err(Refused::Full)
    }

    fn offer(&self, trigger: &Trigger, payload: Vec<u8>, who: Writer, deadline: Instant) -> bool {
        let msg = Message {
            trigger: trigger.key.clone(),
            payload,
            pid: who.pid,
            uid: who.uid,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        if self.sink.offer(msg, wait) {
            trigger.events.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let drops = trigger.drops.fetch_add(1, Ordering::Relaxed) + 1;
        if trigger.log_ready(self.epoch) {
            tracing::warn!(
                trigger = %trigger.key,
                drops,
                "queue full after {:?}: write refused (EAGAIN)",
                trigger.queue_wait(self.queue_wait)
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_trigger_is_found_again_by_key() {
        let triggers = Triggers::default();
        let key: Arc<str> = Arc::from("a/b");
        triggers.replace(&[(key.clone(), Split::Line, TriggerLimits::default())]);
        let first = triggers.get("a/b").expect("live");
        triggers.replace(&[]);
        assert!(triggers.current(&first).is_none());
        triggers.replace(&[(key, Split::Write, TriggerLimits::default())]);
        let again = triggers.current(&first).expect("back");
        assert_eq!(again.split(), Split::Write);
    }
}
