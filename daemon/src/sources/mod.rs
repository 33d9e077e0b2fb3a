//! Event sources and the one interface they share. A source describes itself, may check a
//! rule's parameters beyond what the config parser knows, and runs until shutdown following
//! the set of rules bound to it (`SourceContext::bindings`, re-published on every reload, to
//! which it answers with `applied`). It emits through an `Emitter` the core owns, so retries,
//! rate limits, queues, pause and disable are the core's business, never the source's.
//!
//! A new source is a type implementing `EventSource` plus one line in `daemon::sources()`;
//! `webhook.rs` is a complete example in about 150 lines.

pub mod channel;
mod fallback;
pub mod fanotify;
pub mod file;
mod poll;
pub mod provider;
mod rescan;
pub mod syslog;
pub mod timer;
mod tree;
mod watch_groups;
pub mod webhook;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use triggerd_watch::{EventMask, PermissionRequest};

use crate::config::Rule;
use crate::dispatch::{Delivery, Dispatcher};
use crate::event::{Event, SourceKind};

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The rules bound to one source, numbered so the core can wait until they are applied.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    pub generation: u64,
    pub rules: Arc<Vec<Arc<Rule>>>,
    /// The `[[provider]]` tables (what the provider source runs).
    pub providers: Arc<Vec<crate::config::ProviderSettings>>,
}

pub trait EventSource: Send + 'static {
    /// The rule table it serves (`watch`, `timer`, `webhook`): `Trigger::kind()`.
    fn kind(&self) -> &'static str;
    /// One line for logs and docs.
    fn describe(&self) -> &'static str;
    /// Checks a rule before a config that contains it is accepted (pure; no side effects).
    fn validate(&self, _rule: &Rule) -> Result<(), String> {
        Ok(())
    }
    /// Acquires what the source cannot run without (called once, before `run`); an error here
    /// stops the daemon from starting.
    fn prepare(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Runs until `ctx.shutdown`, following `ctx.bindings`.
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture;
}

/// What a running source gets from the core.
pub struct SourceContext {
    pub bindings: watch::Receiver<Bindings>,
    pub emitter: Emitter,
    pub shutdown: watch::Receiver<bool>,
    pub state_dir: PathBuf,
    applied: watch::Sender<u64>,
}

impl SourceContext {
    pub fn new(
        bindings: watch::Receiver<Bindings>,
        emitter: Emitter,
        shutdown: watch::Receiver<bool>,
        state_dir: PathBuf,
    ) -> (Self, watch::Receiver<u64>) {
        let (applied, acks) = watch::channel(0);
        let ctx = Self {
            bindings,
            emitter: emitter.stopping_on(shutdown.clone()),
            shutdown,
            state_dir,
            applied,
        };
        (ctx, acks)
    }

    /// Tells the core that bindings of `generation` are in effect.
    pub fn applied(&self, generation: u64) {
        self.applied.send_replace(generation);
    }
}

/// How sources hand events to the core.
#[derive(Debug, Clone)]
pub struct Emitter {
    dispatcher: Arc<Dispatcher>,
    ids: Arc<AtomicU64>,
    kind: SourceKind,
    /// Once this reads true a delivery waiting for queue room gives up: a source blocked on a
    /// full queue must not hold up shutdown.
    stopped: Option<watch::Receiver<bool>>,
}

impl Emitter {
    pub fn new(dispatcher: Arc<Dispatcher>, ids: Arc<AtomicU64>, kind: SourceKind) -> Self {
        Self {
            dispatcher,
            ids,
            kind,
            stopped: None,
        }
    }

    fn stopping_on(mut self, stopped: watch::Receiver<bool>) -> Self {
        self.stopped = Some(stopped);
        self
    }

    /// Runs `delivery` unless the daemon stops first (then `None`: the event is abandoned).
    async fn unless_stopped<T>(&self, delivery: impl Future<Output = T>) -> Option<T> {
        let Some(mut stopped) = self.stopped.clone() else {
            return Some(delivery.await);
        };
        // Biased: a delivery that is taken at once is never dropped because the stop was
        // already set (a batch read just before a hand-over would lose events at random).
        tokio::select! {
            biased;
            done = delivery => Some(done),
            _ = stopped.wait_for(|stop| *stop) => None,
        }
    }

    /// A new event from this source, numbered in the daemon-wide order.
    pub fn event(
        &self,
        subject: PathBuf,
        mask: EventMask,
        pid: Option<i32>,
        payload: Vec<u8>,
    ) -> Event {
        Event {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            source: self.kind,
            subject,
            mask,
            pid,
            time: SystemTime::now(),
            payload,
            reply: None,
            fields: Vec::new(),
            batch: None,
        }
    }

    /// To one named rule (rule-addressed sources): `Taken`, `NoRule` when there is no such
    /// rule now, or `Stopped` when the daemon stopped before the rule took it (a source whose
    /// sender waits for an answer tells it so).
    pub async fn fire(&self, rule: &str, event: Event) -> Delivery {
        self.unless_stopped(self.dispatcher.deliver_to(rule, event))
            .await
            .unwrap_or(Delivery::Stopped)
    }

    /// To one named rule, waiting up to `wait` for room whatever its `when_full` (trigger
    /// files, whose writer is told): `Full` past the wait, `Stopped` when the daemon stopped
    /// first, so that a writer is never told "written" for an event nobody took.
    pub async fn fire_waiting(
        &self,
        rule: &str,
        event: Event,
        wait: std::time::Duration,
    ) -> Delivery {
        self.unless_stopped(self.dispatcher.deliver_waiting(rule, event, wait))
            .await
            .unwrap_or(Delivery::Stopped)
    }

    /// Has the named rules' actions answer `request`, each with its own event.
    pub fn decide_permission(&self, request: PermissionRequest, targets: Vec<(String, Event)>) {
        self.dispatcher.decide_permission(request, targets);
    }

    /// Counts a lost-events overflow against a rule.
    pub fn overflowed(&self, rule: &str) {
        if let Some(r) = self.dispatcher.rule(rule) {
            r.overflowed();
        }
    }

    /// Shown by `status`: how the source serves the rule, and whether it can now.
    pub fn set_source_state(&self, rule: &str, state: crate::dispatch::SourceState) {
        if let Some(r) = self.dispatcher.rule(rule) {
            r.set_source_state(state);
        }
    }

    /// The rule named `name` now, to count what a source refused on its behalf.
    pub fn rule(&self, name: &str) -> Option<Arc<crate::dispatch::RuleRuntime>> {
        self.dispatcher.rule(name)
    }

    /// Changes whenever a rule is paused, resumed, disabled or enabled.
    pub fn lifecycle_changes(&self) -> watch::Receiver<u64> {
        self.dispatcher.lifecycle_changes()
    }

    /// Disables a rule on the source's word (a provider's `disable`), with its reason.
    pub fn disable(&self, rule: &str, reason: String) {
        let since = crate::dispatch::unix_now();
        let disabled = crate::dispatch::Disabled { reason, since };
        if let Err(e) = self
            .dispatcher
            .set_state(rule, |s| s.disabled = Some(disabled))
        {
            tracing::warn!(rule, "cannot disable: {e}");
        }
    }

    /// Shown by `status` (timers).
    pub fn set_next_fire(&self, rule: &str, at: Option<SystemTime>) {
        if let Some(r) = self.dispatcher.rule(rule) {
            r.set_next_fire(at);
        }
    }
}
