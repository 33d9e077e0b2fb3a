//! The dispatcher: the one place every source hands its events to. It owns the rule set at run
//! time, matches each event against it, and applies a new config as a diff, keeping the
//! runtime (counters, queues, running actions) of every rule the reload did not change.

mod rule;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use triggerd_watch::{EventMask, PermissionRequest};

use crate::config::{Config, Rule, Trigger};
use crate::event::Event;
pub use rule::{process_group_of, RuleRuntime, RuleStatus};

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub kept: usize,
    pub added: usize,
    pub removed: usize,
}

#[derive(Debug, Default)]
pub struct Dispatcher {
    rules: RwLock<Arc<Vec<Arc<RuleRuntime>>>>,
}

impl Dispatcher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn rules(&self) -> Arc<Vec<Arc<RuleRuntime>>> {
        Arc::clone(&self.rules.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes the rule set equal to `config`'s. A rule with the same name and definition keeps
    /// its runtime; others start fresh; removed ones are retired.
    pub fn apply(&self, config: &Config) -> Applied {
        let old = self.rules();
        let mut applied = Applied::default();
        let mut next = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
            match old.iter().find(|r| same_rule(&r.rule, rule)) {
                Some(existing) => {
                    applied.kept += 1;
                    next.push(Arc::clone(existing));
                }
                None => {
                    applied.added += 1;
                    next.push(RuleRuntime::new(rule.clone()));
                }
            }
        }
        for gone in old
            .iter()
            .filter(|r| !next.iter().any(|n| Arc::ptr_eq(n, r)))
        {
            applied.removed += 1;
            gone.retire();
        }
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        applied
    }

    /// Hands a notification event to every rule it concerns.
    pub fn dispatch(&self, event: Event) {
        let rules = self.rules();
        if event.mask.contains(EventMask::OVERFLOW) {
            self.overflow(&rules, event);
            return;
        }
        let mut matching = rules.iter().filter(|r| match &r.rule.def.trigger {
            Trigger::Watch(w) => !w.is_permission() && w.matches(&event.subject, event.mask),
        });
        // Most events concern one rule: hand the event over without a copy then.
        let Some(first) = matching.next() else { return };
        for other in matching {
            other.accept(event.clone());
        }
        first.accept(event);
    }

    /// The kernel queue overflowed: events may be lost for every watch. Count it for each and
    /// fire the rules that asked for `overflow`.
    fn overflow(&self, rules: &[Arc<RuleRuntime>], event: Event) {
        tracing::warn!("fanotify queue overflow: events were lost");
        for rule in rules {
            let Trigger::Watch(w) = &rule.rule.def.trigger;
            rule.overflowed();
            if w.events.contains(EventMask::OVERFLOW) {
                rule.accept(event.clone());
            }
        }
    }

    /// Answers a permission request: allowed at once when the daemon or one of its actions
    /// made it (a gate must never deadlock the host), otherwise by every matching rule's
    /// action (all must allow). Runs in its own task so a slow gate never blocks others.
    pub fn decide_permission(self: &Arc<Self>, request: PermissionRequest, event: Event) {
        if self.is_own_process(request.pid) {
            request.allow();
            return;
        }
        let rules: Vec<_> = self
            .rules()
            .iter()
            .filter(|r| match &r.rule.def.trigger {
                Trigger::Watch(w) => w.is_permission() && w.matches(&event.subject, event.mask),
            })
            .cloned()
            .collect();
        if rules.is_empty() {
            request.allow();
            return;
        }
        tokio::spawn(async move {
            let mut allowed = true;
            for rule in rules {
                allowed &= rule.decide(event.clone()).await;
            }
            if allowed {
                request.allow();
            } else {
                request.deny();
            }
        });
    }

    /// The daemon itself, a direct child of it, or any process in a running action's group.
    fn is_own_process(&self, pid: i32) -> bool {
        let own = std::process::id() as i32;
        if pid == own || parent_of(pid) == Some(own) {
            return true;
        }
        let group = process_group_of(pid);
        self.rules().iter().any(|r| {
            r.running_groups()
                .iter()
                .any(|g| *g == pid || Some(*g) == group)
        })
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
