//! Batching (`batch`): a rule's events gather while its tree is busy, and once no event has
//! come for the settle time (or `batch_max_wait` after the batch's first event) one run gets
//! every changed path, each once. A rule holds at most one pending batch, allocated with its
//! first batched event (most rules never batch). A batch is bounded in paths (`max_batch`) and
//! in bytes (`MAX_BATCH_BYTES`): one that reaches either is cut — it runs at once, marked
//! `cut`, counted in `batch_cuts` — and the paths that follow start the next one, so nothing
//! is lost to the bound. One timer task serves a pending batch, however many events it takes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Job, Offer, RuleRuntime};
use crate::config::{BatchPolicy, Trigger};
use crate::event::{Batch, BatchEntry, Event, SourceKind};

/// The paths' bytes one batch may hold (with `max_batch`, the bound on what a burst can make
/// the daemon keep per rule before a run takes it).
pub(super) const MAX_BATCH_BYTES: usize = 8 << 20;

/// A batch being gathered.
#[derive(Debug, Default)]
pub(super) struct Pending {
    entries: Vec<BatchEntry>,
    /// Where each path's entry is, so that a path changed twice is listed once.
    index: HashMap<PathBuf, usize>,
    bytes: usize,
    /// When the batch's first and latest events came.
    opened: Option<Instant>,
    latest: Option<Instant>,
    /// The newest id among the batch's events (the batched run's id).
    last_id: u64,
    /// A timer task is running for this rule's batches.
    timer: bool,
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `event`'s path, merging it with the entry already there for it. A new path that
    /// would pass a bound first cuts the batch, which is given back to run at once.
    fn add(&mut self, event: Event, max_paths: usize, now: Instant) -> Option<Batch> {
        self.latest = Some(now);
        self.last_id = event.id;
        if let Some(&at) = self.index.get(&event.subject) {
            let entry = &mut self.entries[at];
            entry.mask = entry.mask.union(event.mask);
            entry.pid = event.pid;
            entry.time = event.time;
            return None;
        }
        let entry = BatchEntry {
            path: event.subject,
            mask: event.mask,
            pid: event.pid,
            time: event.time,
        };
        // The index holds a second copy of the path.
        let bytes = entry.bytes() + entry.path.as_os_str().len();
        let full = self.entries.len() >= max_paths || self.bytes + bytes > MAX_BATCH_BYTES;
        let cut = (full && !self.entries.is_empty()).then(|| self.take(true));
        self.opened.get_or_insert(now);
        self.latest = Some(now);
        self.bytes += bytes;
        self.index.insert(entry.path.clone(), self.entries.len());
        self.entries.push(entry);
        cut
    }

    /// Empties the pending batch into one to run.
    fn take(&mut self, cut: bool) -> Batch {
        self.index.clear();
        self.bytes = 0;
        self.opened = None;
        self.latest = None;
        Batch {
            entries: std::mem::take(&mut self.entries),
            cut,
        }
    }

    /// When the pending batch is due: `settle` after its latest event, or `max_wait` after
    /// its first, whichever is sooner.
    fn due(&self, policy: &BatchPolicy) -> Option<Instant> {
        let opened = self.opened?;
        let latest = self.latest.unwrap_or(opened);
        Some((latest + policy.settle).min(opened + policy.max_wait))
    }
}

impl RuleRuntime {
    /// Adds an admitted event to the rule's pending batch (see the module's note).
    pub(super) fn batch(self: &Arc<Self>, event: Event, policy: BatchPolicy) {
        let (cut, start_timer, id) = {
            let mut state = self.state();
            if state.retired {
                return;
            }
            let pending = state.batch.get_or_insert_default();
            let cut = pending.add(event, policy.max_paths, Instant::now());
            let start_timer = !pending.timer;
            pending.timer = true;
            (cut, start_timer, pending.last_id)
        };
        if let Some(batch) = cut {
            let cuts = self.counters.batch_cuts.fetch_add(1, Ordering::Relaxed) + 1;
            if self.full_log.ready() {
                tracing::info!(
                    rule = %self.rule.name,
                    paths = batch.entries.len(),
                    cuts,
                    "batch cut at its bound (max_batch = {}); the rest follows in the next run",
                    policy.max_paths
                );
            }
            self.run_batch(batch, id);
        }
        if start_timer {
            let rule = Arc::clone(self);
            tokio::spawn(async move { rule.settle(policy).await });
        }
    }

    /// Waits until the pending batch is due and runs it; ends when there is none left.
    async fn settle(self: Arc<Self>, policy: BatchPolicy) {
        loop {
            let due = {
                let mut state = self.state();
                let retired = state.retired;
                let Some(pending) = state.batch.as_mut() else {
                    return;
                };
                match pending.due(&policy) {
                    None => {
                        pending.timer = false;
                        return;
                    }
                    Some(_) if retired => return,
                    Some(due) if due <= Instant::now() => {
                        let id = pending.last_id;
                        let batch = pending.take(false);
                        drop(state);
                        self.run_batch(batch, id);
                        continue;
                    }
                    Some(due) => due,
                }
            };
            tokio::time::sleep_until(due).await;
        }
    }

    /// One run for a whole batch: its event is about the watched path, with the kinds of all.
    fn run_batch(self: &Arc<Self>, batch: Batch, id: u64) {
        let subject = match &self.rule.def.trigger {
            Trigger::Watch(w) => w.path.clone(),
            other => PathBuf::from(other.subject()),
        };
        let mask = batch
            .entries
            .iter()
            .fold(triggerd_watch::EventMask::EMPTY, |m, e| m.union(e.mask));
        let time = batch
            .entries
            .iter()
            .map(|e| e.time)
            .max()
            .unwrap_or_else(std::time::SystemTime::now);
        let event = Event {
            id,
            source: SourceKind::Fanotify,
            subject,
            mask,
            pid: None,
            time,
            payload: Vec::new(),
            reply: None,
            fields: Vec::new(),
            batch: Some(Arc::new(batch)),
        };
        // A batch has no source left to block: a full queue drops it, counted.
        if let Offer::Full(event) = self.admit(Job::new(event, false)) {
            self.dropped_full(Job::new(event, false).bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use triggerd_watch::EventMask;

    use super::*;

    fn event(id: u64, path: &str, mask: EventMask) -> Event {
        Event {
            id,
            ..Event::for_test(path, mask)
        }
    }

    #[test]
    fn a_path_is_listed_once_and_a_full_batch_is_cut_without_losing_a_path() {
        let now = Instant::now();
        let mut pending = Pending::default();
        assert!(pending
            .add(event(1, "/w/a", EventMask::CREATE), 2, now)
            .is_none());
        assert!(pending
            .add(event(2, "/w/a", EventMask::CLOSE_WRITE), 2, now)
            .is_none());
        assert!(pending
            .add(event(3, "/w/b", EventMask::CLOSE_WRITE), 2, now)
            .is_none());
        assert_eq!(pending.len(), 2);
        let cut = pending
            .add(event(4, "/w/c", EventMask::CLOSE_WRITE), 2, now)
            .expect("the third path cuts a batch of two");
        assert!(cut.cut);
        let paths: Vec<_> = cut.entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("/w/a"), PathBuf::from("/w/b")]);
        assert_eq!(
            cut.entries[0].mask,
            EventMask::CREATE.union(EventMask::CLOSE_WRITE)
        );
        // The path that did not fit opens the next batch.
        assert_eq!(pending.len(), 1);
        assert_eq!(pending.last_id, 4);
        let rest = pending.take(false);
        assert_eq!(rest.entries[0].path, PathBuf::from("/w/c"));
        assert_eq!(
            (pending.len(), pending.bytes, pending.index.len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_batch_is_due_after_quiet_or_at_its_longest_wait() {
        let policy = BatchPolicy {
            settle: Duration::from_millis(200),
            max_wait: Duration::from_secs(1),
            max_paths: 100,
        };
        let start = Instant::now();
        let mut pending = Pending::default();
        assert_eq!(pending.due(&policy), None);
        pending.add(event(1, "/w/a", EventMask::CLOSE_WRITE), 100, start);
        assert_eq!(pending.due(&policy), Some(start + policy.settle));
        let later = start + Duration::from_millis(900);
        pending.add(event(2, "/w/b", EventMask::CLOSE_WRITE), 100, later);
        assert_eq!(pending.due(&policy), Some(start + policy.max_wait));
    }
}
