//! The live side of one trigger: its split, limits (`max_open`, `partial_bytes`,
//! `queue_wait`), counters, open handles and partial-line bytes, and its last reply.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::lock;
use crate::{Split, TriggerLimits, TriggerStats};

/// The live side of one trigger; kept (same object) across reloads while its key stays.
pub(crate) struct Trigger {
    pub key: Arc<str>,
    pub(crate) split: AtomicU8,
    /// Cleared when a reload removes the trigger; open handles then look the key up again.
    pub live: AtomicBool,
    pub(crate) reply: Mutex<Arc<[u8]>>,
    pub(crate) writes: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) drops: AtomicU64,
    pub(crate) refused_bytes: AtomicU64,
    pub(crate) refused_opens: AtomicU64,
    /// Open handles of this trigger, and the bytes of partial lines they hold.
    pub(crate) open: AtomicUsize,
    pub(crate) partial: AtomicUsize,
    pub(crate) max_open: AtomicUsize,
    pub(crate) partial_bytes: AtomicUsize,
    /// How long a write waits for the sink, in milliseconds (`u64::MAX`: the mount's).
    pub(crate) queue_wait_ms: AtomicU64,
    /// Second (since `Shared::epoch`) of the last warning, to log at most once a second.
    pub(crate) last_drop_log: AtomicU64,
}

impl Trigger {
    pub(crate) fn new(key: Arc<str>, split: Split, limits: TriggerLimits) -> Self {
        let t = Trigger {
            key,
            split: AtomicU8::new(0),
            live: AtomicBool::new(true),
            reply: Mutex::new(Arc::from(&[][..])),
            writes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            events: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            refused_bytes: AtomicU64::new(0),
            refused_opens: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            partial: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            partial_bytes: AtomicUsize::new(0),
            queue_wait_ms: AtomicU64::new(u64::MAX),
            last_drop_log: AtomicU64::new(u64::MAX),
        };
        t.set_split(split);
        t.set_limits(limits);
        t
    }

    pub(crate) fn set_limits(&self, limits: TriggerLimits) {
        self.max_open.store(limits.max_open, Ordering::Relaxed);
        self.partial_bytes
            .store(limits.partial_bytes, Ordering::Relaxed);
        let wait = limits.queue_wait.map_or(u64::MAX, |w| {
            u64::try_from(w.as_millis()).unwrap_or(u64::MAX - 1)
        });
        self.queue_wait_ms.store(wait, Ordering::Relaxed);
    }

    pub(crate) fn queue_wait(&self, mount: Duration) -> Duration {
        match self.queue_wait_ms.load(Ordering::Relaxed) {
            u64::MAX => mount,
            ms => Duration::from_millis(ms),
        }
    }

    /// Takes one of the trigger's open handles; false past `max_open` (counted).
    pub(crate) fn take_handle(&self) -> bool {
        let max = self.max_open.load(Ordering::Relaxed);
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.refused_opens.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Reserves `n` bytes of partial lines; false if that would pass `partial_bytes`.
    pub(crate) fn reserve_partial(&self, n: usize) -> bool {
        let max = self.partial_bytes.load(Ordering::Relaxed);
        self.partial
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= max)
            })
            .is_ok()
    }

    /// Warns at most once a second (per trigger).
    pub(crate) fn log_ready(&self, epoch: Instant) -> bool {
        let second = epoch.elapsed().as_secs();
        self.last_drop_log.swap(second, Ordering::Relaxed) != second
    }

    pub(crate) fn set_split(&self, split: Split) {
        let v = match split {
            Split::Write => 0,
            Split::Line => 1,
        };
        self.split.store(v, Ordering::Relaxed);
    }

    pub(crate) fn split(&self) -> Split {
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
            refused_bytes: self.refused_bytes.load(Ordering::Relaxed),
            refused_opens: self.refused_opens.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed) as u64,
            partial_bytes: self.partial.load(Ordering::Relaxed) as u64,
        }
    }
}
