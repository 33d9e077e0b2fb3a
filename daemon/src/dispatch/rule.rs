//! One rule at run time: its counters, its running actions, its queue and debounce timers.
//! Admission (debounce, `max_running`, `on_busy`) and loop prevention live here, so every
//! source gets the same behaviour. A `RuleRuntime` survives a reload when its rule is
//! unchanged, which is what keeps queued events and counters across reloads.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::action::{run_exec, ExecOutcome, Running};
use crate::config::{OnBusy, Rule};
use crate::event::Event;

/// Events waiting for a free slot, per rule; past this they are counted as dropped.
const QUEUE_LIMIT: usize = 65_536;
/// How long a finished action's pid still counts as "this rule's own" for loop prevention:
/// its events may be read after it exited.
const RECENT_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Counters {
    pub matched: AtomicU64,
    pub fired: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub overflowed: AtomicU64,
    pub loops_suppressed: AtomicU64,
}

/// A rule's counters and state, as `triggerctl status` shows them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RuleStatus {
    pub name: String,
    pub kind: String,
    pub subject: String,
    pub events: String,
    pub matched: u64,
    pub fired: u64,
    pub failed: u64,
    pub dropped: u64,
    pub overflowed: u64,
    pub loops_suppressed: u64,
    pub running: u64,
    pub queued: u64,
}

#[derive(Debug, Default)]
struct RunState {
    /// Slots taken by started runs (a run holds its slot before its pid is known).
    slots: usize,
    running: Vec<Running>,
    recent: VecDeque<(i32, Instant)>,
    queue: VecDeque<Event>,
    debounce: HashMap<PathBuf, u64>,
    debounce_seq: u64,
    /// Set when a reload removed or replaced the rule: queued work is abandoned.
    retired: bool,
}

#[derive(Debug)]
pub struct RuleRuntime {
    pub rule: Rule,
    pub counters: Counters,
    state: Mutex<RunState>,
}

impl RuleRuntime {
    pub fn new(rule: Rule) -> Arc<Self> {
        Arc::new(Self {
            rule,
            counters: Counters::default(),
            state: Mutex::new(RunState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters more than stopping the rule: keep going with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An event matched this rule: count it, apply loop prevention and debounce, admit it.
    pub fn accept(self: &Arc<Self>, event: Event) {
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        if !self.rule.def.policy.allow_loop && self.caused_by_own_run(event.pid) {
            self.counters
                .loops_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.rule.def.policy.debounce {
            Some(quiet) => self.debounce(event, quiet),
            None => self.admit(event),
        }
    }

    /// Whether `pid` is one of this rule's runs, or a process they started.
    fn caused_by_own_run(&self, pid: Option<i32>) -> bool {
        let Some(pid) = pid else { return false };
        let mut state = self.state();
        let now = Instant::now();
        while state
            .recent
            .front()
            .is_some_and(|(_, at)| now - *at > RECENT_WINDOW)
        {
            state.recent.pop_front();
        }
        if state.running.is_empty() && state.recent.is_empty() {
            return false;
        }
        if state.recent.iter().any(|(p, _)| *p == pid) {
            return true;
        }
        let group = process_group_of(pid);
        state
            .running
            .iter()
            .any(|r| r.pgid == pid || Some(r.pgid) == group)
    }

    /// Trailing-edge debounce per path: the run happens once the path has been quiet.
    fn debounce(self: &Arc<Self>, event: Event, quiet: Duration) {
        let ticket = {
            let mut state = self.state();
            state.debounce_seq += 1;
            let ticket = state.debounce_seq;
            state.debounce.insert(event.subject.clone(), ticket);
            ticket
        };
        let rule = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(quiet).await;
            let latest = {
                let mut state = rule.state();
                let latest = state.debounce.get(&event.subject) == Some(&ticket);
                if latest {
                    state.debounce.remove(&event.subject);
                }
                latest && !state.retired
            };
            if latest {
                rule.admit(event);
            }
        });
    }

    fn admit(self: &Arc<Self>, event: Event) {
        let policy = &self.rule.def.policy;
        let mut state = self.state();
        if state.retired {
            return;
        }
        if state.slots < policy.max_running {
            state.slots += 1;
            drop(state);
            self.start(event);
            return;
        }
        match policy.on_busy {
            OnBusy::Queue if state.queue.len() < QUEUE_LIMIT => state.queue.push_back(event),
            OnBusy::Queue | OnBusy::Drop => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(rule = %self.rule.name, "busy: event dropped");
            }
            OnBusy::Restart => {
                if let Some(oldest) = state.running.first() {
                    oldest.kill();
                }
                state.slots += 1;
                drop(state);
                self.start(event);
            }
        }
    }

    /// Runs the action for `event` in a task; the caller has taken a slot for it.
    fn start(self: &Arc<Self>, event: Event) {
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let rule = Arc::clone(self);
        tokio::spawn(async move {
            let mut pid = None;
            let (outcome, _stdout) = run_exec(
                &rule.rule.name,
                &rule.rule.def.action,
                rule.rule.def.policy.timeout,
                &event,
                |running| {
                    pid = Some(running.pgid);
                    rule.state().running.push(running);
                },
            )
            .await;
            rule.finished(pid, &outcome);
        });
    }

    fn finished(self: &Arc<Self>, pid: Option<i32>, outcome: &ExecOutcome) {
        if !outcome.success() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        let next = {
            let mut state = self.state();
            state.slots = state.slots.saturating_sub(1);
            if let Some(pid) = pid {
                state.running.retain(|r| r.pgid != pid);
                state.recent.push_back((pid, Instant::now()));
            }
            let free = state.slots < self.rule.def.policy.max_running;
            match (free && !state.retired)
                .then(|| state.queue.pop_front())
                .flatten()
            {
                Some(event) => {
                    state.slots += 1;
                    Some(event)
                }
                None => None,
            }
        };
        if let Some(event) = next {
            self.start(event);
        }
    }

    /// Runs the action for a permission request and says whether it allows the access.
    pub async fn decide(self: &Arc<Self>, event: Event) -> bool {
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        self.state().slots += 1;
        let mut pid = None;
        let (outcome, _) = run_exec(
            &self.rule.name,
            &self.rule.def.action,
            self.rule.def.policy.timeout,
            &event,
            |running| {
                pid = Some(running.pgid);
                self.state().running.push(running);
            },
        )
        .await;
        {
            let mut state = self.state();
            state.slots = state.slots.saturating_sub(1);
            if let Some(pid) = pid {
                state.running.retain(|r| r.pgid != pid);
            }
        }
        if !outcome.success() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            ExecOutcome::TimedOut => {
                self.rule.def.policy.on_timeout == crate::config::OnTimeout::Allow
            }
            other => other.success(),
        }
    }

    /// Counts a queue overflow against this rule (events may have been lost for it).
    pub fn overflowed(&self) {
        self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
    }

    /// Process groups of the runs in progress.
    pub fn running_groups(&self) -> Vec<i32> {
        self.state().running.iter().map(|r| r.pgid).collect()
    }

    pub fn running_count(&self) -> usize {
        self.state().slots
    }

    /// A reload removed or replaced this rule: queued and debounced events are abandoned,
    /// running actions finish on their own.
    pub fn retire(&self) {
        let mut state = self.state();
        state.retired = true;
        let abandoned = state.queue.len() + state.debounce.len();
        state.queue.clear();
        state.debounce.clear();
        if abandoned > 0 {
            self.counters
                .dropped
                .fetch_add(abandoned as u64, Ordering::Relaxed);
            tracing::warn!(rule = %self.rule.name, abandoned, "rule removed by reload; queued events dropped");
        }
    }

    pub fn kill_all(&self) {
        for running in &self.state().running {
            running.kill();
        }
    }

    pub fn status(&self) -> RuleStatus {
        let state = self.state();
        let c = &self.counters;
        let events = match &self.rule.def.trigger {
            crate::config::Trigger::Watch(w) => w.events.to_string(),
        };
        RuleStatus {
            name: self.rule.name.clone(),
            kind: self.rule.def.trigger.kind().to_string(),
            subject: self.rule.def.trigger.subject(),
            events,
            matched: c.matched.load(Ordering::Relaxed),
            fired: c.fired.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            loops_suppressed: c.loops_suppressed.load(Ordering::Relaxed),
            running: state.slots as u64,
            queued: (state.queue.len() + state.debounce.len()) as u64,
        }
    }
}

/// The process group of a live process, if it still exists.
pub fn process_group_of(pid: i32) -> Option<i32> {
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .ok()
        .map(|p| p.as_raw())
}
