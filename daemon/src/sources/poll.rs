//! Watches the kernel cannot serve: `poll = "2s"` rules are compared `stat` snapshot to
//! snapshot (`tree::Snapshot`) on a timer of their own, with no mark, and fire the same
//! events and tokens as a marked watch (a new file is `create` and `close_write`, a changed
//! size or mtime `modify` and `close_write`, a changed ctime only `attrib`, a gone file
//! `delete`; each as far as the rule asks for it). And the warning for a marked watch on a
//! filesystem where other hosts' changes never reach fanotify (NFS, CIFS, FUSE, ...), which
//! names `poll`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use triggerd_support::lock;
use triggerd_watch::EventMask;

use super::tree::{Change, Snapshot};
use super::Emitter;
use crate::config::{Rule, Trigger, WatchTrigger};
use crate::dispatch::SourceState;

/// A polled rule and the task that polls it.
type Poller = (Arc<Rule>, tokio::task::JoinHandle<()>);

/// The polled rules by name, and the rules already warned about.
#[derive(Debug, Clone, Default)]
pub(super) struct Polls {
    running: Arc<Mutex<HashMap<String, Poller>>>,
    warned: Arc<Mutex<HashSet<String>>>,
}

impl Polls {
    /// Follows the bound rules: starts a poller for each new or changed polled rule, stops
    /// those of rules gone, and warns about marked watches on remote filesystems.
    pub fn bind(&self, rules: &[Arc<Rule>], emitter: &Emitter) {
        let mut running = lock(&self.running);
        let mut keep = HashMap::new();
        for rule in rules {
            let Trigger::Watch(w) = &rule.def.trigger else {
                continue;
            };
            let Some(every) = w.poll else {
                self.warn_if_remote(&rule.name, w);
                continue;
            };
            let entry = match running.remove(&rule.name) {
                Some((old, task)) if old.def == rule.def => (old, task),
                old => {
                    if let Some((_, task)) = old {
                        task.abort();
                    }
                    let task = tokio::spawn(poll(Arc::clone(rule), every, emitter.clone()));
                    (Arc::clone(rule), task)
                }
            };
            emitter.set_source_state(
                &rule.name,
                SourceState {
                    backend: Some("poll"),
                    trouble: None,
                },
            );
            keep.insert(rule.name.clone(), entry);
        }
        for (_, task) in running.values() {
            task.abort();
        }
        *running = keep;
    }

    /// Logs once per rule name that the path is on a filesystem whose remote changes
    /// fanotify does not see.
    fn warn_if_remote(&self, name: &str, w: &WatchTrigger) {
        let Some(kind) = remote_kind(&w.path) else {
            return;
        };
        if lock(&self.warned).insert(name.to_string()) {
            tracing::warn!(
                rule = %name,
                path = %w.path.display(),
                "{} is on {kind}: changes made by other hosts or by the filesystem's server are \
                 not reported by fanotify; set `poll = \"2s\"` on this watch to see them",
                w.path.display()
            );
        }
    }
}

/// The filesystem `path` is on, when it is one whose changes may come from elsewhere.
pub fn remote_kind(path: &Path) -> Option<&'static str> {
    let fs = nix::sys::statfs::statfs(path).ok()?;
    let magic = fs.filesystem_type().0 as u64;
    REMOTE
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// `f_type` values (`linux/magic.h`, and the filesystems' own headers) of network and FUSE
/// filesystems.
const REMOTE: &[(u64, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x6573_5546, "FUSE"),
    (0x00C3_6400, "CephFS"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x0102_1997, "9p"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x0BD0_0BD0, "Lustre"),
];

/// Polls one rule until its task is aborted.
async fn poll(rule: Arc<Rule>, every: std::time::Duration, emitter: Emitter) {
    let Trigger::Watch(w) = &rule.def.trigger else {
        return;
    };
    let take = |w: WatchTrigger| async move {
        tokio::task::spawn_blocking(move || Snapshot::take(&w))
            .await
            .unwrap_or_default()
    };
    let mut last = take(w.clone()).await;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = take(w.clone()).await;
        for (path, change) in now.changes(&last) {
            let mask = kinds(change).intersection(w.events);
            if mask.is_empty() {
                continue;
            }
            let event = emitter.event(path, mask, None, Vec::new());
            emitter.fire(&rule.name, event).await;
        }
        last = now;
    }
}

/// The events a change stands for.
fn kinds(change: Change) -> EventMask {
    match change {
        Change::New => EventMask::CREATE.union(EventMask::CLOSE_WRITE),
        Change::Content => EventMask::MODIFY.union(EventMask::CLOSE_WRITE),
        Change::Attrib => EventMask::ATTRIB,
        Change::Removed => EventMask::DELETE,
    }
}
