//! One rule at run time: its counters, running actions, queue, debounce timers and rate
//! bucket. Admission (lifecycle, loop prevention, debounce, `max_running`, `on_busy`, `rate`,
//! `queue`/`when_full`) and delivery (`retry`, `dead_letter`) live here, so every source gets
//! the same behaviour and no source loops on its own. A `RuleRuntime` survives a reload when
//! its rule is unchanged, which keeps its queue and counters across reloads.

mod batch;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use super::feed::Record;
use super::lifecycle::RuleState;
use super::queue::{Job, Queue};
use super::RuleContext;
use crate::action::{run_exec, ExecOutcome, Running};
use crate::config::{Action, OnBusy, OnTimeout, Rule, WhenFull};
use crate::event::Event;
use crate::throttle::Throttle;

/// How long a finished action's pid still counts as "this rule's own" for loop prevention:
/// its events may be read after it exited.
const RECENT_WINDOW: Duration = Duration::from_secs(5);

/// How long loop prevention waits for a run being spawned to report its pid; a fork and exec
/// takes far less, so this bound only matters if spawning itself hangs.
const SPAWN_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Counters {
    pub matched: AtomicU64,
    pub fired: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub overflowed: AtomicU64,
    pub loops_suppressed: AtomicU64,
    pub skipped: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub coalesced: AtomicU64,
    /// Batches run early because they reached `max_batch` or their byte bound.
    pub batch_cuts: AtomicU64,
    /// Events fired by a rescan after a queue overflow (`on_overflow = "rescan"`).
    pub rescanned: AtomicU64,
    /// Events refused before admission (a bad webhook signature, a queue over its bytes).
    pub refused: AtomicU64,
    /// Payload bytes of events refused or dropped by `queue_bytes`.
    pub refused_bytes: AtomicU64,
}

/// A rule's counters and state, as `triggerctl status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleStatus {
    pub name: String,
    pub kind: String,
    pub subject: String,
    pub events: String,
    /// `active`, `paused` or `disabled: REASON`.
    pub state: String,
    pub matched: u64,
    pub fired: u64,
    pub failed: u64,
    pub dropped: u64,
    pub overflowed: u64,
    pub loops_suppressed: u64,
    pub skipped: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub coalesced: u64,
    #[serde(default)]
    pub batch_cuts: u64,
    #[serde(default)]
    pub rescanned: u64,
    #[serde(default)]
    pub refused: u64,
    #[serde(default)]
    pub refused_bytes: u64,
    pub running: u64,
    pub queued: u64,
    /// Payload bytes of the queued events (bounded by `queue_bytes`).
    #[serde(default)]
    pub queued_bytes: u64,
    /// Seconds since the Unix epoch of the next scheduled fire (timers).
    pub next_fire: Option<f64>,
    /// How the source watches the rule's subject (`fanotify-inode`, `fanotify-fs`), when it
    /// does (watches).
    #[serde(default)]
    pub backend: Option<String>,
}

/// What a source says of a rule it serves: `active` unless it cannot do its part now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub backend: Option<&'static str>,
    /// `None` while it works; else the state `status` shows instead of `active`
    /// (`waiting: WHY` or `failed: WHY`).
    pub trouble: Option<String>,
}

/// Refills `count` tokens per `per`, one at a time.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The latest ticket per subject waiting out its quiet time.
#[derive(Debug, Default)]
struct Debounce {
    latest: HashMap<PathBuf, u64>,
    seq: u64,
}

impl RunState {
    /// Events held back by debounce, and paths waiting in a batch.
    fn debounced(&self) -> usize {
        self.debounce.as_ref().map_or(0, |d| d.latest.len())
            + self.batch.as_ref().map_or(0, |b| b.len())
    }
}

#[derive(Debug, Default)]
struct RunState {
    /// Slots taken by started runs (a run holds its slot before its pid is known).
    slots: usize,
    /// Runs between fork and the registration of their pid: their events may already be read.
    spawning: usize,
    running: Vec<Running>,
    recent: VecDeque<(i32, Instant)>,
    queue: Queue,
    /// Allocated on the rule's first debounced event: most rules never debounce.
    debounce: Option<Box<Debounce>>,
    /// Allocated on the rule's first batched event (`batch`).
    batch: Option<Box<batch::Pending>>,
    bucket: Option<Bucket>,
    /// A task will start queued jobs when the rate allows.
    pump_pending: bool,
    next_fire: Option<SystemTime>,
    source_state: Option<SourceState>,
    /// Set when a reload removed or replaced the rule: queued work is abandoned.
    retired: bool,
}

#[derive(Debug)]
pub struct RuleRuntime {
    pub rule: Arc<Rule>,
    pub counters: Counters,
    state: Mutex<RunState>,
    /// Signalled when `spawning` drops: a run's pid is registered or its spawn failed.
    spawned: Condvar,
    room: Notify,
    context: Arc<RuleContext>,
    /// Rate-limits the warning about a full queue.
    full_log: Throttle,
}

/// Whether an offered event was taken.
#[derive(Debug)]
pub enum Offer {
    Taken,
    /// The queue is full and the rule says `when_full = "block"`: wait for `room` and retry.
    Full(Event),
}

impl RuleRuntime {
    pub fn new(rule: Arc<Rule>, context: Arc<RuleContext>) -> Arc<Self> {
        Arc::new(Self {
            rule,
            counters: Counters::default(),
            state: Mutex::new(RunState::default()),
            spawned: Condvar::new(),
            room: Notify::new(),
            context,
            full_log: Throttle::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        // The state stays consistent under every early return; a panic elsewhere must not
        // stop the rule.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn lifecycle_state(&self) -> RuleState {
        self.context.lifecycle.get(&self.rule.name)
    }

    /// Resolves when a queue slot may have freed up.
    pub fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.room.notified()
    }

    /// An event matched this rule: count it, apply lifecycle, loop prevention and debounce,
    /// then queue or run it.
    pub fn offer(self: &Arc<Self>, event: Event) -> Offer {
        self.offer_from(event, false)
    }

    /// Like `offer`, for a source whose writer waits and is told when the queue is full
    /// (`waits`): then a full queue answers `Full` whatever `when_full` says.
    pub fn offer_from(self: &Arc<Self>, event: Event, waits: bool) -> Offer {
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        self.published(&event);
        if !self.lifecycle_state().active() {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            return Offer::Taken;
        }
        if !self.rule.def.policy.allow_loop && self.caused_by_own_run(event.pid) {
            self.counters
                .loops_suppressed
                .fetch_add(1, Ordering::Relaxed);
            return Offer::Taken;
        }
        let policy = &self.rule.def.policy;
        match (policy.debounce, policy.batch) {
            (Some(quiet), _) => {
                self.debounce(event, quiet);
                Offer::Taken
            }
            (None, Some(batch)) => {
                self.batch(event, batch);
                Offer::Taken
            }
            (None, None) => self.admit(Job::new(event, waits)),
        }
    }

    /// Runs the rule now for `event`, whatever its lifecycle state (`triggerctl fire`).
    pub fn fire(self: &Arc<Self>, event: Event) -> Offer {
        self.published(&event);
        self.admit(Job::new(event, false))
    }

    /// Re-offers an event that found the queue full, without counting it again.
    pub fn retry_offer(self: &Arc<Self>, event: Event, waits: bool) -> Offer {
        self.admit(Job::new(event, waits))
    }

    /// Whether `pid` is one of this rule's runs, or a process they started. A run's child can
    /// write, and its event be read, before the spawning task records the pid: while a spawn
    /// is in flight the answer waits for it, so a fast action never slips past.
    fn caused_by_own_run(&self, pid: Option<i32>) -> bool {
        let Some(pid) = pid else { return false };
        let deadline = Instant::now() + SPAWN_WAIT;
        let mut state = self.state();
        loop {
            let now = Instant::now();
            while state
                .recent
                .front()
                .is_some_and(|(_, at)| now - *at > RECENT_WINDOW)
            {
                state.recent.pop_front();
            }
            match ownership(&state, pid) {
                Ownership::Own => return true,
                Ownership::Foreign => return false,
                Ownership::Pending if now >= deadline => return false,
                Ownership::Pending => {}
            }
            state = match self.spawned.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Trailing-edge debounce per subject: the run happens once it has been quiet.
    fn debounce(self: &Arc<Self>, event: Event, quiet: Duration) {
        let ticket = {
            let mut state = self.state();
            let debounce = state.debounce.get_or_insert_default();
            debounce.seq += 1;
            debounce.latest.insert(event.subject.clone(), debounce.seq);
            debounce.seq
        };
        let rule = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(quiet).await;
            let latest = {
                let mut state = rule.state();
                let latest = state
                    .debounce
                    .as_mut()
                    .filter(|d| d.latest.get(&event.subject) == Some(&ticket))
                    .map(|d| d.latest.remove(&event.subject))
                    .is_some();
                latest && !state.retired
            };
            if latest {
                // A debounced event has no source left to block: a full queue drops it.
                if let Offer::Full(event) = rule.admit(Job::new(event, false)) {
                    rule.dropped_full(event.payload.len());
                }
            }
        });
    }

    fn admit(self: &Arc<Self>, job: Job) -> Offer {
        let policy = &self.rule.def.policy;
        let mut state = self.state();
        if state.retired {
            return Offer::Taken;
        }
        let busy = state.slots >= policy.max_running;
        if !busy && state.queue.is_empty() && self.take_token(&mut state) {
            state.slots += 1;
            drop(state);
            self.start(job);
            return Offer::Taken;
        }
        if busy {
            match policy.on_busy {
                OnBusy::Drop => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return Offer::Taken;
                }
                OnBusy::Restart => {
                    if let Some(oldest) = state.running.first() {
                        oldest.kill();
                    }
                    state.slots += 1;
                    drop(state);
                    self.start(job);
                    return Offer::Taken;
                }
                OnBusy::Queue => {}
            }
        }
        let offer = self.enqueue(&mut state, job);
        if !busy {
            self.schedule_pump(&mut state);
        }
        offer
    }

    fn enqueue(&self, state: &mut RunState, job: Job) -> Offer {
        let policy = &self.rule.def.policy;
        if state.queue.fits(&job, policy.queue, policy.queue_bytes) {
            state.queue.push(job);
            return Offer::Taken;
        }
        let job = match policy.when_full {
            WhenFull::Block => return Offer::Full(job.event),
            WhenFull::DropNewest if job.waits => return Offer::Full(job.event),
            WhenFull::Coalesce => match state.queue.coalesce(job, policy.queue_bytes) {
                None => {
                    self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    return Offer::Taken;
                }
                Some(job) => job,
            },
            WhenFull::DropNewest => job,
        };
        self.dropped_full(job.bytes());
        Offer::Taken
    }

    /// Counts an event the full queue dropped (or its writer gave up on), and warns at most
    /// once a second.
    pub fn dropped_full(&self, bytes: usize) {
        let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let refused = self
            .counters
            .refused_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed)
            + bytes as u64;
        if self.full_log.ready() {
            let policy = &self.rule.def.policy;
            tracing::warn!(
                rule = %self.rule.name,
                dropped,
                refused_bytes = refused,
                "queue full ({} events or {} bytes): event dropped",
                policy.queue,
                policy.queue_bytes
            );
        }
    }

    /// Takes a rate token if the rule has a rate; true when a run may start now.
    fn take_token(&self, state: &mut RunState) -> bool {
        let Some(rate) = self.rule.def.policy.rate else {
            return true;
        };
        let capacity = f64::from(rate.count);
        let now = Instant::now();
        let bucket = state.bucket.get_or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refill =
            now.duration_since(bucket.updated).as_secs_f64() / rate.per.as_secs_f64() * capacity;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When queued jobs wait only for a rate token, start them once one is due.
    fn schedule_pump(self: &Arc<Self>, state: &mut RunState) {
        let Some(rate) = self.rule.def.policy.rate else {
            return;
        };
        if state.pump_pending || state.queue.is_empty() {
            return;
        }
        state.pump_pending = true;
        let wait = rate.per.div_f64(f64::from(rate.count));
        let rule = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            rule.state().pump_pending = false;
            rule.pump();
        });
    }

    /// Starts queued jobs while slots and rate allow.
    fn pump(self: &Arc<Self>) {
        loop {
            let job = {
                let mut state = self.state();
                if state.retired
                    || state.queue.is_empty()
                    || state.slots >= self.rule.def.policy.max_running
                {
                    return;
                }
                if !self.take_token(&mut state) {
                    self.schedule_pump(&mut state);
                    return;
                }
                let Some(job) = state.queue.pop() else {
                    return;
                };
                state.slots += 1;
                job
            };
            self.room.notify_waiters();
            self.start(job);
        }
    }

    /// Runs the action for `job` in a task; the caller has taken a slot for it.
    fn start(self: &Arc<Self>, job: Job) {
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let rule = Arc::clone(self);
        tokio::spawn(async move {
            // Waiting for a turn keeps the rule's slot, so the rule's own limits still hold.
            let _turn = action_turns().acquire().await;
            let began = Instant::now();
            let mut pid = None;
            let outcome = match &rule.rule.def.action {
                Action::Exec(exec) => {
                    // No await point lies between this and the fork inside `run_exec`.
                    let spawn = SpawnInFlight::begin(&rule);
                    let (outcome, stdout) = run_exec(
                        &rule.rule.name,
                        exec,
                        rule.rule.def.policy.timeout,
                        &job.event,
                        |running| {
                            pid = Some(running.pgid);
                            spawn.started(running);
                        },
                    )
                    .await;
                    if let Some(reply) = &job.event.reply {
                        (reply.0)(&stdout);
                    }
                    outcome
                }
                Action::Send(send) => rule.send(send, &job.event),
            };
            let name = &rule.rule.name;
            rule.context.feed.publish(name, || {
                Record::run(name, &job.event, &outcome, began.elapsed(), job.attempt)
            });
            rule.finished(pid, job, &outcome);
        });
    }

    /// Hands the event to the outbox (the spool to the broker): queued durably, or failed.
    fn send(&self, send: &crate::config::SendAction, event: &Event) -> ExecOutcome {
        let queued = match self.context.outbox() {
            Some(outbox) => outbox.submit(&send.service, send.plugin.as_deref(), event),
            None => Err("no [broker] configured".into()),
        };
        match queued {
            Ok(()) => ExecOutcome::Exited(0),
            Err(e) => {
                tracing::warn!(rule = %self.rule.name, service = %send.service, "not sent: {e}");
                ExecOutcome::SpawnFailed(e)
            }
        }
    }

    fn finished(self: &Arc<Self>, pid: Option<i32>, job: Job, outcome: &ExecOutcome) {
        {
            let mut state = self.state();
            state.slots = state.slots.saturating_sub(1);
            if let Some(pid) = pid {
                state.running.retain(|r| r.pgid != pid);
                self.context.run_ended(pid);
                state.recent.push_back((pid, Instant::now()));
            }
        }
        if !outcome.success() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            self.failed(job);
        }
        self.pump();
        self.room.notify_waiters();
    }

    /// A run failed: retry it after back-off, or hand it to the dead-letter action.
    fn failed(self: &Arc<Self>, job: Job) {
        let policy = &self.rule.def.policy;
        if let Some(retry) = &policy.retry {
            if job.attempt + 1 < retry.attempts {
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                let delay = backoff(retry, job.attempt, &self.rule.name, job.event.id);
                tracing::info!(rule = %self.rule.name, attempt = job.attempt + 2, "retrying in {delay:?}");
                let rule = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let next = Job {
                        attempt: job.attempt + 1,
                        ..Job::new(job.event, false)
                    };
                    if let Offer::Full(_) = rule.admit(next) {
                        rule.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                });
                return;
            }
        }
        if let Some(dead_letter) = policy.dead_letter.clone() {
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(rule = %self.rule.name, "all runs failed; running dead_letter");
            let name = format!("{}.dead_letter", self.rule.name);
            tokio::spawn(async move {
                let _turn = action_turns().acquire().await;
                run_exec(&name, &dead_letter, None, &job.event, |_| {}).await;
            });
        }
    }

    /// Runs the action for a permission request and says whether it allows the access.
    pub async fn decide(self: &Arc<Self>, event: Event) -> bool {
        self.counters.matched.fetch_add(1, Ordering::Relaxed);
        self.published(&event);
        if !self.lifecycle_state().active() {
            self.counters.skipped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let Action::Exec(exec) = &self.rule.def.action else {
            // Validation keeps `send` off permission rules; allow rather than wedge a process.
            return true;
        };
        let policy = &self.rule.def.policy;
        {
            // Past `max_running` a gate answers at once, as if it had timed out: a crowd of
            // openers must not make root run one command each.
            let mut state = self.state();
            if state.slots >= policy.max_running {
                drop(state);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                return policy.on_timeout == OnTimeout::Allow;
            }
            state.slots += 1;
        }
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let mut pid = None;
        let (outcome, _) = run_exec(
            &self.rule.name,
            exec,
            self.rule.def.policy.timeout,
            &event,
            |running| {
                pid = Some(running.pgid);
                self.context.run_started(running.pgid);
                self.state().running.push(running);
            },
        )
        .await;
        let name = &self.rule.name;
        self.context.feed.publish(name, || {
            Record::run(name, &event, &outcome, began.elapsed(), 0)
        });
        {
            let mut state = self.state();
            state.slots = state.slots.saturating_sub(1);
            if let Some(pid) = pid {
                state.running.retain(|r| r.pgid != pid);
                self.context.run_ended(pid);
            }
        }
        if !outcome.success() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            ExecOutcome::TimedOut => self.rule.def.policy.on_timeout == OnTimeout::Allow,
            other => other.success(),
        }
    }

    /// Offers the feed the event this rule was just offered.
    fn published(&self, event: &Event) {
        let name = &self.rule.name;
        self.context
            .feed
            .publish(name, || Record::event(name, event));
    }

    /// Counts a queue overflow against this rule (events may have been lost for it).
    pub fn overflowed(&self) {
        self.counters.overflowed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_next_fire(&self, at: Option<SystemTime>) {
        self.state().next_fire = at;
    }

    pub fn set_source_state(&self, source_state: SourceState) {
        self.state().source_state = Some(source_state);
    }

    pub fn running_count(&self) -> usize {
        self.state().slots
    }

    /// A reload removed or replaced this rule: queued and debounced events are abandoned,
    /// running actions finish on their own.
    pub fn retire(&self) {
        let mut state = self.state();
        state.retired = true;
        let abandoned = state.queue.len() + state.debounced();
        state.queue.clear();
        state.debounce = None;
        state.batch = None;
        drop(state);
        self.room.notify_waiters();
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
        let lifecycle = self.lifecycle_state();
        let state = self.state();
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RuleStatus {
            name: self.rule.name.clone(),
            kind: self.rule.def.trigger.kind().to_string(),
            subject: self.rule.def.trigger.subject(),
            events: self.rule.def.trigger.events(),
            state: match (&lifecycle.disabled, lifecycle.paused) {
                (Some(d), _) => format!("disabled: {}", d.reason),
                (None, true) => "paused".into(),
                (None, false) => state
                    .source_state
                    .as_ref()
                    .and_then(|s| s.trouble.clone())
                    .unwrap_or_else(|| "active".into()),
            },
            matched: load(&c.matched),
            fired: load(&c.fired),
            failed: load(&c.failed),
            dropped: load(&c.dropped),
            overflowed: load(&c.overflowed),
            loops_suppressed: load(&c.loops_suppressed),
            skipped: load(&c.skipped),
            retried: load(&c.retried),
            dead_lettered: load(&c.dead_lettered),
            coalesced: load(&c.coalesced),
            batch_cuts: load(&c.batch_cuts),
            rescanned: load(&c.rescanned),
            refused: load(&c.refused),
            refused_bytes: load(&c.refused_bytes),
            running: state.slots as u64,
            queued: (state.queue.len() + state.debounced()) as u64,
            queued_bytes: state.queue.bytes() as u64,
            next_fire: state
                .next_fire
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
            backend: state
                .source_state
                .as_ref()
                .and_then(|s| s.backend)
                .map(str::to_string),
        }
    }
}

/// A running action holds about four of the daemon's descriptors (its stdin, stdout and stderr
/// pipes and a pidfd). A burst across many rules (ten thousand timers due at once) must not
/// run the daemon out of them, or actions fail to start with EMFILE and are lost: at most this
/// many actions run at once daemon-wide, the others wait for a turn. Permission gates are not
/// counted: they are bounded by the kernel's queue, and must never wait behind slow actions.
fn action_turns() -> &'static Semaphore {
    static TURNS: OnceLock<Semaphore> = OnceLock::new();
    TURNS.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        let turns = concurrent_actions(soft);
        tracing::debug!(turns, nofile = soft, "actions running at once, daemon-wide");
        Semaphore::new(turns)
    })
}

/// How many actions may run at once with `nofile` descriptors: what is left after a reserve
/// for the daemon itself (sockets, webhook connections, fanotify, logs), four per action.
pub fn concurrent_actions(nofile: u64) -> usize {
    const RESERVED: u64 = 512;
    const PER_ACTION: u64 = 4;
    (nofile.saturating_sub(RESERVED) / PER_ACTION).clamp(16, 65_536) as usize
}

/// `backoff × 2^attempt`, capped, with a jitter of up to half of it derived from the event so
/// that retries of different events spread out.
fn backoff(retry: &crate::config::Retry, attempt: u32, rule: &str, event_id: u64) -> Duration {
    let base = retry
        .backoff
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(retry.max_backoff);
    if !retry.jitter {
        return base;
    }
    let spread = crate::schedule::jitter_for(&format!("{rule}#{event_id}#{attempt}"), base / 2);
    base / 2 + spread
}

/// The process group of a live process, if it still exists.
#[derive(Debug, PartialEq, Eq)]
enum Ownership {
    /// A running or recently finished run of the rule, or in a running one's process group.
    Own,
    Foreign,
    /// Not known yet: a run being spawned may turn out to have this pid.
    Pending,
}

fn ownership(state: &RunState, pid: i32) -> Ownership {
    if state.recent.iter().any(|(p, _)| *p == pid) {
        return Ownership::Own;
    }
    if !state.running.is_empty() {
        let group = process_group_of(pid);
        if state
            .running
            .iter()
            .any(|r| r.pgid == pid || Some(r.pgid) == group)
        {
            return Ownership::Own;
        }
    }
    if state.spawning > 0 {
        Ownership::Pending
    } else {
        Ownership::Foreign
    }
}

/// A run between its fork and the registration of its pid; dropping it (registered or not)
/// wakes loop prevention waiting on it.
struct SpawnInFlight<'a> {
    rule: &'a RuleRuntime,
}

impl<'a> SpawnInFlight<'a> {
    fn begin(rule: &'a RuleRuntime) -> Self {
        rule.state().spawning += 1;
        Self { rule }
    }

    fn started(self, running: Running) {
        self.rule.context.run_started(running.pgid);
        self.rule.state().running.push(running);
    }
}

impl Drop for SpawnInFlight<'_> {
    fn drop(&mut self) {
        self.rule.state().spawning -= 1;
        self.rule.spawned.notify_all();
    }
}

pub fn process_group_of(pid: i32) -> Option<i32> {
    nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
        .ok()
        .map(|p| p.as_raw())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::{concurrent_actions, ownership, Ownership, RuleRuntime, SpawnInFlight};
    use crate::action::Running;
    use crate::dispatch::Dispatcher;

    fn rule_runtime(state_dir: &Path) -> Arc<RuleRuntime> {
        let text = "[[watch]]\nname = \"r\"\npath = \"/tmp\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n";
        let config = crate::config::parse(Path::new("test.conf"), text).unwrap();
        let dispatcher = Dispatcher::new(state_dir);
        RuleRuntime::new(config.rules[0].clone(), Arc::clone(&dispatcher.context))
    }

    #[test]
    fn a_spawn_in_flight_leaves_ownership_pending_until_its_pid_is_known() {
        let dir = std::env::temp_dir().join(format!("triggerd-rule-{}", std::process::id()));
        let rule = rule_runtime(&dir);
        // Any pid will do: it is matched against registered runs only.
        let child_pid = 424_242;
        assert_eq!(ownership(&rule.state(), child_pid), Ownership::Foreign);

        let spawn = SpawnInFlight::begin(&rule);
        assert_eq!(ownership(&rule.state(), child_pid), Ownership::Pending);
        std::thread::scope(|scope| {
            // Whether this runs before or after `started`, the answer is the same.
            let verdict = scope.spawn(|| rule.caused_by_own_run(Some(child_pid)));
            spawn.started(Running::new(child_pid));
            assert!(verdict.join().unwrap());
        });
        assert_eq!(ownership(&rule.state(), child_pid), Ownership::Own);
        assert!(!rule.caused_by_own_run(Some(child_pid + 1)));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn concurrent_actions_leave_room_for_the_daemon() {
        assert_eq!(concurrent_actions(1024), 128);
        assert_eq!(concurrent_actions(20_000), 4_872);
        // Never below a useful floor, nor unbounded with an unlimited table.
        assert_eq!(concurrent_actions(200), 16);
        assert_eq!(concurrent_actions(u64::MAX), 65_536);
    }
}
