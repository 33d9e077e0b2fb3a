//! The provider source (`[[provider]]` and `[[source]]`): event sources written in any
//! language, as separate programs speaking the JSON-lines protocol of `docs/providers.md`.
//! This module follows the bindings: it runs one supervisor per provider that has rules,
//! and tells it which rules are active (paused and disabled ones are `remove`d from the
//! provider, resumed and enabled ones `add`ed again). Supervision, restarts and the messages
//! are in `supervisor`; the process and its bounded output in `process`; the asking of
//! `validate` before a config is accepted in `validate`.

mod process;
mod protocol;
mod supervisor;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Bindings, BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::Trigger;
pub use supervisor::ProviderStatus;
use supervisor::{Desired, Supervisor};
pub use validate::{unchanged, validate};

/// Each configured provider's status, shared with the control socket.
pub type Providers = Arc<Mutex<BTreeMap<String, ProviderStatus>>>;

/// Where a provider keeps state across restarts (`state_dir` in `init`).
pub fn state_dir(daemon_state: &Path, provider: &str) -> PathBuf {
    daemon_state.join("providers").join(provider)
}

pub struct ProviderSource {
    status: Providers,
}

impl ProviderSource {
    pub fn new(status: Providers) -> Self {
        Self { status }
    }
}

impl EventSource for ProviderSource {
    fn kind(&self) -> &'static str {
        "source"
    }

    fn describe(&self) -> &'static str {
        "rules fired by provider programs written in any language (JSON lines over stdio)"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx, self.status))
    }
}

async fn run(mut ctx: SourceContext, status: Providers) {
    let mut lifecycle = ctx.emitter.lifecycle_changes();
    let mut running: HashMap<String, (watch::Sender<Option<Desired>>, JoinHandle<()>)> =
        HashMap::new();
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        lifecycle.borrow_and_update();
        let mut desired = desired(&bindings, &ctx.emitter);
        list_idle(&bindings, &desired, &status);
        running.retain(|name, (orders, _)| {
            let keep = desired.contains_key(name);
            if !keep {
                orders.send_replace(None);
            }
            keep
        });
        for (name, want) in desired.drain() {
            if let Some((orders, _)) = running.get(&name) {
                orders.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&want);
                    *current = Some(want);
                    changed
                });
                continue;
            }
            let (orders, receiver) = watch::channel(Some(want));
            let supervisor = Supervisor::new(
                name.clone(),
                ctx.emitter.clone(),
                Arc::clone(&status),
                ctx.state_dir.clone(),
            );
            let task = tokio::spawn(supervisor.run(receiver, ctx.shutdown.clone()));
            running.insert(name, (orders, task));
        }
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            changed = lifecycle.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    for (_, (orders, task)) in running {
        orders.send_replace(None);
        let _ = task.await;
    }
}

/// Per provider with at least one rule: its settings and the rules it should serve now.
fn desired(bindings: &Bindings, emitter: &Emitter) -> HashMap<String, Desired> {
    let mut desired: HashMap<String, Desired> = HashMap::new();
    for rule in bindings.rules.iter() {
        let Trigger::Provider(t) = &rule.def.trigger else {
            continue;
        };
        let Some(settings) = bindings.providers.iter().find(|p| p.name == t.provider) else {
            continue;
        };
        let entry = desired
            .entry(t.provider.clone())
            .or_insert_with(|| Desired {
                settings: settings.clone(),
                rules: BTreeMap::new(),
                bound: 0,
            });
        entry.bound += 1;
        let active = emitter
            .rule(&rule.name)
            .is_none_or(|r| r.lifecycle_state().active());
        if active {
            entry.rules.insert(rule.name.clone(), t.params.clone());
        }
    }
    desired
}

/// Providers without rules are listed as idle; removed ones disappear from the list.
fn list_idle(bindings: &Bindings, desired: &HashMap<String, Desired>, status: &Providers) {
    let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
    status.retain(|name, _| bindings.providers.iter().any(|p| &p.name == name));
    for provider in bindings.providers.iter() {
        if !desired.contains_key(&provider.name) {
            status.insert(provider.name.clone(), ProviderStatus::idle());
        }
    }
}
