//! A rule's queue of waiting jobs, bounded in count (`queue`) and in payload bytes
//! (`queue_bytes`): the bytes are tracked on every push, pop and replacement, so what a queue
//! holds never exceeds its budget whatever the sizes of the events offered.

use std::collections::VecDeque;

use crate::event::Event;

/// An event on its way to a run, with how many runs it already had.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub event: Event,
    pub attempt: u32,
    /// The source can wait and tell its writer (a trigger file): a full queue answers
    /// `Full` even under `when_full = "drop_newest"`, so the write fails instead of
    /// succeeding while its event is dropped.
    pub waits: bool,
}

impl Job {
    pub fn new(event: Event, waits: bool) -> Self {
        Self {
            event,
            attempt: 0,
            waits,
        }
    }

    /// What the job holds from outside: its payload, its fields and a batch's paths.
    pub fn bytes(&self) -> usize {
        let fields: usize = self
            .event
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let batch: usize = self
            .event
            .batch
            .as_ref()
            .map_or(0, |b| b.entries.iter().map(|e| e.bytes()).sum());
        self.event.payload.len() + fields + batch
    }
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    jobs: VecDeque<Job>,
    bytes: usize,
}

impl Queue {
    /// Whether `job` fits in `count` jobs and `bytes` bytes. An empty queue takes any one
    /// job: an event larger than the byte budget still runs, one at a time.
    pub fn fits(&self, job: &Job, count: usize, bytes: usize) -> bool {
        self.jobs.is_empty()
            || (self.jobs.len() < count && self.bytes.saturating_add(job.bytes()) <= bytes)
    }

    pub fn push(&mut self, job: Job) {
        self.bytes += job.bytes();
        self.jobs.push_back(job);
    }

    pub fn pop(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.bytes -= job.bytes();
        Some(job)
    }

    /// Replaces the queued job for the same subject, if its bytes fit; gives the job back if
    /// there is none or it would not fit.
    pub fn coalesce(&mut self, job: Job, bytes: usize) -> Option<Job> {
        let total = self.bytes;
        let Some(queued) = self
            .jobs
            .iter_mut()
            .find(|q| q.event.subject == job.event.subject)
        else {
            return Some(job);
        };
        let after = total - queued.bytes() + job.bytes();
        if after > bytes {
            return Some(job);
        }
        *queued = job;
        self.bytes = after;
        None
    }

    pub fn clear(&mut self) {
        self.jobs.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn job(subject: &str, len: usize) -> Job {
        let event = Event {
            id: 1,
            source: crate::event::SourceKind::Timer,
            subject: PathBuf::from(subject),
            mask: triggerd_watch::EventMask::EMPTY,
            pid: None,
            time: std::time::SystemTime::now(),
            payload: vec![0; len],
            reply: None,
            fields: Vec::new(),
            batch: None,
        };
        Job::new(event, false)
    }

    #[test]
    fn bytes_bound_the_queue_and_are_given_back() {
        let mut q = Queue::default();
        assert!(
            q.fits(&job("a", 100), 10, 10),
            "an empty queue takes one job"
        );
        q.push(job("a", 6));
        assert!(!q.fits(&job("b", 5), 10, 10));
        assert!(q.fits(&job("b", 4), 10, 10));
        q.push(job("b", 4));
        assert_eq!(q.bytes(), 10);
        assert!(
            q.coalesce(job("a", 7), 10).is_some(),
            "would exceed the bytes"
        );
        assert!(q.coalesce(job("a", 2), 10).is_none());
        assert_eq!(q.bytes(), 6);
        assert_eq!(q.pop().map(|j| j.bytes()), Some(2));
        assert_eq!(q.bytes(), 4);
        q.clear();
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }
}
