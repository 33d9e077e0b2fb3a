//! The daemon's half of `sync_triggers`: at start the cached catalog is merged into the
//! config before the sources start (so the mount shows the last known tree even without the
//! broker), the sync thread is started once the control socket is up, and each change it
//! reports becomes a config apply like a reload's: the file's rules as they run, with the
//! synced rules replaced. Unchanged rules keep their runtimes, queues and counters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{apply_loaded, sources, validate_with, Bound, Command, State};
use crate::config::{Action, Config, Trigger};
use crate::remote::catalog::{CatalogShared, CatalogStatus, SyncedTrigger};
use crate::remote::catalog_change::{self, MergedPaths};
use crate::remote::catalog_sync::CatalogSync;
use crate::remote::Credentials;
use triggerd_support::lock;

/// The cached catalog, when the config asks for one; merged into `config`.
pub(super) fn open(config: &mut Config) -> Option<Arc<CatalogShared>> {
    config.broker.as_ref().filter(|b| b.sync_triggers)?;
    if let Err(e) = triggerd_support::private_dir(&config.daemon.state_dir) {
        tracing::warn!("state_dir: {e}");
    }
    let shared = CatalogShared::load(&config.daemon.state_dir);
    merge_into(&shared, config);
    Some(shared)
}

fn merge_into(shared: &CatalogShared, config: &mut Config) {
    let merged = config.merge_catalog(&shared.entries());
    let mut paths = MergedPaths::default();
    for rule in &config.rules {
        if let Trigger::File(f) = &rule.def.trigger {
            match rule.is_synced() {
                true => paths.synced.insert(f.file.clone()),
                false => paths.local.insert(f.file.clone()),
            };
        }
    }
    shared.set_merged(paths);
    shared
        .collisions
        .store(merged.collisions.len() as u64, Ordering::Relaxed);
    if !merged.collisions.is_empty() {
        let shown: Vec<&str> = merged
            .collisions
            .iter()
            .take(8)
            .map(String::as_str)
            .collect();
        tracing::warn!(
            count = merged.collisions.len(),
            paths = ?shown,
            "synced triggers left out: a local [[trigger]] holds these paths (local wins)"
        );
    }
    if merged.invalid > 0 {
        tracing::warn!(count = merged.invalid, "malformed synced triggers left out");
    }
}

/// Merges the current catalog into a config read from the file (a reload).
pub(super) fn merge(state: &State, config: &mut Config) {
    if let Some(shared) = &state.catalog {
        merge_into(shared, config);
    }
}

/// Starts following the broker's catalog; each change is a `Command::Catalog`.
pub(super) fn follow(
    state: &State,
    commands: mpsc::UnboundedSender<Command>,
) -> Option<CatalogSync> {
    let shared = Arc::clone(state.catalog.as_ref()?);
    let broker = lock(&state.config).broker.clone()?;
    let credentials = match Credentials::load(&broker) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("trigger catalog not synced: [broker] {e}");
            return None;
        }
    };
    let changed = Box::new(move || {
        let _ = commands.send(Command::Catalog);
    });
    let options = credentials.client_options();
    crate::sources::file::set_namespace_hook(catalog_change::hook(
        Arc::clone(&shared),
        broker.endpoint.clone(),
        options,
    ));
    match CatalogSync::start(
        shared,
        broker.endpoint,
        credentials.client_options(),
        changed,
    ) {
        Ok(sync) => Some(sync),
        Err(e) => {
            tracing::error!("trigger catalog not synced: {e}");
            None
        }
    }
}

/// Applies the catalog as it is now to the running config.
pub(super) async fn changed(state: &State, bound: &mut [Bound], generation: u64) {
    let mut new = lock(&state.config).clone();
    merge(state, &mut new);
    let validators = sources(&state.shared, &new);
    let checked = validate_with(&validators, &new).map(|()| new);
    apply_loaded(state, bound, generation, checked, false).await;
}

/// The catalog's part of `status`: its counters and one row per synced trigger.
pub(super) fn status(
    state: &State,
    rules: &[crate::dispatch::RuleStatus],
) -> Option<CatalogStatus> {
    let shared = state.catalog.as_ref()?;
    let mut status = shared.status();
    let config = lock(&state.config);
    let counters: HashMap<&str, &crate::dispatch::RuleStatus> =
        rules.iter().map(|r| (r.name.as_str(), r)).collect();
    let files = crate::sources::file::trigger_status(&state.shared.triggers);
    let answers = state.remote.answers();
    for rule in config.rules.iter().filter(|r| r.is_synced()) {
        let (Trigger::File(file), Action::Send(send)) = (&rule.def.trigger, &rule.def.action)
        else {
            continue;
        };
        let counted = counters.get(rule.name.as_str());
        let answer = answers.get(&file.file);
        status.triggers.push(SyncedTrigger {
            path: file.file.clone(),
            origin: "broker catalog".into(),
            service: send.service.clone(),
            writes: files.get(&file.file).map_or(0, |t| t.writes),
            sends: counted.map_or(0, |r| r.fired),
            failures: counted.map_or(0, |r| r.failed) + answer.map_or(0, |a| a.failures),
            last_reply: answer.map(|a| a.last),
        });
    }
    Some(status)
}
