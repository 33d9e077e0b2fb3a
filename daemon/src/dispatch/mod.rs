//! The dispatcher: the one place every source hands its events to. It owns the rule set at run
//! time, matches each event against it (or hands it to the rule a source names), applies a new
//! config as a diff that keeps the runtime (counters, queues, running actions) of every rule
//! the reload did not change, and carries the lifecycle verbs (pause, resume, disable, fire).

pub mod feed;
mod lifecycle;
mod queue;
mod rule;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use triggerd_watch::PermissionRequest;

use crate::config::{Config, Rule};
use crate::event::Event;
pub use lifecycle::{unix_now, Disabled, Lifecycle, RuleState};
pub use rule::{process_group_of, Offer, RuleRuntime, RuleStatus, SourceState};

/// What became of an event a waiting source handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Taken,
    /// The daemon is stopping: nobody took the event (the source tells its sender so).
    Stopped,
    /// The rule's queue stayed full for the whole wait.
    Full,
    /// No rule of that name now.
    NoRule,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kept: usize,
    pub added: usize,
    pub removed: usize,
    /// Rules just created (new or changed) that ask for `run_at_start`.
    pub run_at_start: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no rule named `{0}`")]
    NoSuchRule(String),
    #[error(transparent)]
    Save(#[from] lifecycle::SaveError),
}

/// Where `send` actions hand their events (the durable spool to the broker).
pub trait Outbox: Send + Sync {
    /// Queues the event for `service`; an error means it was not queued (the run failed).
    fn submit(&self, service: &str, plugin: Option<&str>, event: &Event) -> Result<(), String>;
}

/// What every rule's runtime shares.
#[derive(Default)]
pub struct RuleContext {
    pub lifecycle: Lifecycle,
    outbox: RwLock<Option<Arc<dyn Outbox>>>,
    /// Process groups of every rule's runs in progress (with how many runs lead each): a
    /// permission request asks whether its pid is the daemon's own without visiting rules.
    running: Mutex<HashMap<i32, usize>>,
    /// Events and runs for `triggerctl events`.
    pub feed: Arc<feed::Feed>,
}

impl std::fmt::Debug for RuleContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleContext")
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl RuleContext {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i32, usize>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run with process group `pgid` started.
    pub(crate) fn run_started(&self, pgid: i32) {
        *self.running().entry(pgid).or_default() += 1;
    }

    /// A run with process group `pgid` ended.
    pub(crate) fn run_ended(&self, pgid: i32) {
        let mut running = self.running();
        if let Some(n) = running.get_mut(&pgid) {
            *n -= 1;
            if *n == 0 {
                running.remove(&pgid);
            }
        }
    }

    /// Whether some rule's run in progress has process group `pgid`.
    fn runs_group(&self, pgid: i32) -> bool {
        self.running().contains_key(&pgid)
    }

    pub fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The rules in config order, indexed by name (sources that address a rule by name look it up
/// per event: thousands of timers firing at once must not scan the list each time).
#[derive(Debug, Default)]
pub struct RuleSet {
    list: Vec<Arc<RuleRuntime>>,
    by_name: HashMap<String, Arc<RuleRuntime>>,
}

impl RuleSet {
    fn new(list: Vec<Arc<RuleRuntime>>) -> Self {
        let by_name = list
            .iter()
            .map(|r| (r.rule.name.clone(), Arc::clone(r)))
            .collect();
        Self { list, by_name }
    }
}

impl std::ops::Deref for RuleSet {
    type Target = [Arc<RuleRuntime>];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

#[derive(Debug)]
pub struct Dispatcher {
    rules: RwLock<Arc<RuleSet>>,
    context: Arc<RuleContext>,
    /// Bumped on every pause, resume, disable or enable, for sources that must act on them.
    lifecycle_changes: tokio::sync::watch::Sender<u64>,
}

impl Dispatcher {
    /// A dispatcher whose pause/disable states live in `state_dir`.
    pub fn new(state_dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            rules: RwLock::default(),
            context: Arc::new(RuleContext {
                lifecycle: Lifecycle::load(state_dir),
                outbox: RwLock::default(),
                running: Mutex::default(),
                feed: Arc::default(),
            }),
            lifecycle_changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The live feed of events and runs (`triggerctl events`).
    pub fn feed(&self) -> &Arc<feed::Feed> {
        &self.context.feed
    }

    /// Sets where `send` actions go (none: they fail, counted).
    pub fn set_outbox(&self, outbox: Option<Arc<dyn Outbox>>) {
        *self
            .context
            .outbox
            .write()
            .unwrap_or_else(|p| p.into_inner()) = outbox;
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.rules.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn rule(&self, name: &str) -> Option<Arc<RuleRuntime>> {
        self.rules().by_name.get(name).cloned()
    }

    /// Makes the rule set equal to `config`'s. A rule with the same name and definition keeps
    /// its runtime; others start fresh; removed ones are retired.
    pub fn apply(&self, config: &Config) -> Applied {
        let old = self.rules();
        let mut applied = Applied::default();
        let mut next = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            match old
                .by_name
                .get(&rule.name)
                .filter(|r| same_rule(&r.rule, rule))
            {
                Some(existing) => {
                    applied.kept += 1;
                    next.push(Arc::clone(existing));
                }
                None => {
                    applied.added += 1;
                    if rule.def.policy.run_at_start {
                        applied.run_at_start.push(rule.name.clone());
                    }
                    next.push(RuleRuntime::new(
                        Arc::clone(rule),
                        Arc::clone(&self.context),
                    ));
                }
            }
        }
        let next = RuleSet::new(next);
        for gone in old.iter().filter(|r| {
            !next
                .by_name
                .get(&r.rule.name)
                .is_some_and(|n| Arc::ptr_eq(n, r))
        }) {
            applied.removed += 1;
            gone.retire();
        }
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        applied
    }

    /// Hands an event to the rule a source addresses by name (timers, webhooks): `Taken`
    /// (queued, or dropped as the rule's `when_full` says, counted there) or `NoRule`.
    pub async fn deliver_to(&self, name: &str, event: Event) -> Delivery {
        match self.rule(name) {
            Some(rule) => {
                deliver(&rule, event, false).await;
                Delivery::Taken
            }
            None => Delivery::NoRule,
        }
    }

    /// Like `deliver_to` for a source whose writer waits for room and is told when there is
    /// none (trigger files): waits up to `wait` whatever `when_full` says, and counts what
    /// the writer is refused against the rule.
    pub async fn deliver_waiting(&self, name: &str, event: Event, wait: Duration) -> Delivery {
        let Some(rule) = self.rule(name) else {
            return Delivery::NoRule;
        };
        let bytes = event.payload.len() as u64;
        match tokio::time::timeout(wait, deliver(&rule, event, true)).await {
            Ok(()) => Delivery::Taken,
            Err(_) => {
                use std::sync::atomic::Ordering::Relaxed;
                rule.counters.refused.fetch_add(1, Relaxed);
                rule.counters.refused_bytes.fetch_add(bytes, Relaxed);
                Delivery::Full
            }
        }
    }

    /// Answers a permission request: allowed at once when the daemon or one of its actions
    /// made it (a gate must never deadlock the host), otherwise by the action of every rule
    /// the source found it concerns (all must allow). Runs in its own task so a slow gate
    /// never blocks others.
    pub fn decide_permission(
        self: &Arc<Self>,
        request: PermissionRequest,
        targets: Vec<(String, Event)>,
    ) {
        if self.is_own_process(request.pid) {
            request.allow();
            return;
        }
        let rules: Vec<_> = targets
            .into_iter()
            .filter_map(|(name, event)| Some((self.rule(&name)?, event)))
            .collect();
        if rules.is_empty() {
            request.allow();
            return;
        }
        tokio::spawn(async move {
            let mut allowed = true;
            for (rule, event) in rules {
                allowed &= rule.decide(event).await;
            }
            if allowed {
                request.allow();
            } else {
                request.deny();
            }
        });
    }

    /// The daemon itself, a direct child of it, or any process in a running action's group
    /// (looked up, whatever the number of rules).
    fn is_own_process(&self, pid: i32) -> bool {
        let own = std::process::id() as i32;
        if pid == own || parent_of(pid) == Some(own) {
            return true;
        }
        self.context.runs_group(pid)
            || process_group_of(pid).is_some_and(|g| self.context.runs_group(g))
    }

    /// Runs a rule now with `event` (`triggerctl fire`), whatever its state.
    pub fn fire(&self, name: &str, event: Event) -> Result<(), LifecycleError> {
        let rule = self
            .rule(name)
            .ok_or_else(|| LifecycleError::NoSuchRule(name.into()))?;
        if let Offer::Full(_) = rule.fire(event) {
            rule.counters
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Changes a rule's lifecycle state; persisted at once.
    pub fn set_state(
        &self,
        name: &str,
        change: impl FnOnce(&mut RuleState),
    ) -> Result<RuleState, LifecycleError> {
        if self.rule(name).is_none() {
            return Err(LifecycleError::NoSuchRule(name.into()));
        }
        let state = self.context.lifecycle.update(name, change)?;
        tracing::info!(rule = name, ?state, "rule state changed");
        self.lifecycle_changes.send_modify(|n| *n += 1);
        Ok(state)
    }

    /// Changes whenever a rule is paused, resumed, disabled or enabled.
    pub fn lifecycle_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lifecycle_changes.subscribe()
    }

    pub fn status(&self) -> Vec<RuleStatus> {
        self.rules().iter().map(|r| r.status()).collect()
    }

    /// Waits up to `grace` for running actions, then kills what is left.
    pub async fn drain(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let busy = || self.rules().iter().any(|r| r.running_count() > 0);
        while busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if busy() {
            tracing::warn!("shutdown: killing actions still running after {grace:?}");
            for rule in self.rules().iter() {
                rule.kill_all();
            }
        }
    }
}

/// Offers `event` to `rule`, waiting for room while its queue is full and says `block`.
async fn deliver(rule: &Arc<RuleRuntime>, event: Event, waits: bool) {
    let mut offer = rule.offer_from(event, waits);
    while let Offer::Full(event) = offer {
        // Register for the wake-up before re-checking, so a slot freed in between is seen.
        let room = rule.room();
        tokio::pin!(room);
        room.as_mut().enable();
        offer = rule.retry_offer(event, waits);
        if let Offer::Full(event) = offer {
            room.await;
            offer = rule.retry_offer(event, waits);
        }
    }
}

fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.name == b.name && a.def == b.def
}

/// The parent pid of a live process, from /proc.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
