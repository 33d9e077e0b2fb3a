//! The inotify side of the watch source: where fanotify refuses a path for good
//! (`MarkError::is_unsupported`: overlayfs, a btrfs subvolume's tree) a `backend = "auto"`
//! rule is watched by one inotify instance instead, and a `backend = "inotify"` rule always
//! is. Its events go through the same `Delivery` as fanotify's, so the dispatcher sees the
//! same events, tokens and debounce. inotify does not say which process caused an event, so
//! loop prevention, which goes by the pid of the writer, cannot work there: events reach the
//! dispatcher without a pid, and a command that writes into the tree its rule watches fires
//! the rule again (README: bound it with `debounce`/`rate`, or write elsewhere). Guessing
//! by time instead would drop other writers' events whenever a run is busy.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::io::unix::AsyncFd;
use triggerd_watch::{InotifyWatcher, MarkError, MarkSpec, WatchEvent};

use super::fanotify::{register, Delivery, OwnsGroupFd, WatchStatus};
use triggerd_support::lock;

/// What inotify gives up against fanotify, for `triggerd check` and logs.
pub const GIVES_UP: &str = "inotify sees only changes made through this host's view of the \
    filesystem (on overlayfs, not changes made to a lower layer directly), carries no pid (so \
    no loop prevention: a command writing into the watched tree fires the rule again) and \
    needs a watch per directory (fs.inotify.max_user_watches)";

/// The instance, registered with the reactor; its fd stays open as long as it lives.
pub struct InotifyGroup(pub InotifyWatcher, RawFd);

impl AsRawFd for InotifyGroup {
    fn as_raw_fd(&self) -> RawFd {
        self.1
    }
}

impl OwnsGroupFd for InotifyGroup {}

/// A failed or partial watch, as the source reports it: (spec id, path, why, retrying helps).
pub type Trouble = (u64, PathBuf, String, bool);

/// The instance (made when the first rule needs it) and the specs it watches now.
#[derive(Default)]
pub struct InotifySide {
    pub group: Option<AsyncFd<InotifyGroup>>,
    pub ids: HashSet<u64>,
}

impl InotifySide {
    /// Watches exactly `specs`; `fell_back` holds, by spec id, why fanotify refused the ones
    /// it got from the fanotify side.
    pub fn apply(
        &mut self,
        specs: &[MarkSpec],
        fell_back: &HashMap<u64, String>,
        status: &Mutex<WatchStatus>,
    ) -> Vec<Trouble> {
        let ids: HashSet<u64> = specs.iter().map(|s| s.id).collect();
        for spec in specs.iter().filter(|s| !self.ids.contains(&s.id)) {
            let why = fell_back
                .get(&spec.id)
                .map_or("backend = \"inotify\"", String::as_str);
            tracing::info!(path = %spec.path.display(), "watched with inotify ({why}): {GIVES_UP}");
        }
        self.ids = ids;
        if !specs.is_empty() && self.group.is_none() {
            match open() {
                Ok(group) => self.group = Some(group),
                Err(e) => {
                    return specs
                        .iter()
                        .map(|s| {
                            let why = format!("fanotify refused; inotify unavailable: {e}");
                            (s.id, s.path.clone(), why, true)
                        })
                        .collect()
                }
            }
        }
        let Some(group) = &mut self.group else {
            return Vec::new();
        };
        let troubles = group
            .get_mut()
            .0
            .set_specs(specs)
            .into_iter()
            .map(|e| trouble(e, fell_back))
            .collect();
        let watcher = &group.get_ref().0;
        let mut status = lock(status);
        status.inotify_watches = watcher.watches() as u64;
        status.inotify_refused = watcher.refused();
        troubles
    }
}

fn open() -> Result<AsyncFd<InotifyGroup>, String> {
    let watcher = InotifyWatcher::new().map_err(|e| e.to_string())?;
    let fd = watcher.as_fd().as_raw_fd();
    register(InotifyGroup(watcher, fd)).map_err(|e| format!("inotify: {e}"))
}

fn trouble(e: MarkError, fell_back: &HashMap<u64, String>) -> Trouble {
    let why = match fell_back.get(&e.spec) {
        Some(fanotify) => format!("fanotify refused ({fanotify}); inotify: {}", e.error),
        None => e.error.to_string(),
    };
    let transient = !e.is_permanent();
    (e.spec, e.path, why, transient)
}

/// Reads a bounded batch and delivers it; returns (drained, a spec's object went away).
pub async fn read(
    group: &mut InotifyGroup,
    delivery: &mut Delivery,
    ids: &HashSet<u64>,
    events: &mut Vec<WatchEvent>,
) -> (bool, bool) {
    let watcher = &mut group.0;
    events.clear();
    let drained = match watcher.read_events(events) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            tracing::error!("inotify read: {e}");
            true
        }
    };
    {
        let mut status = lock(&delivery.status);
        status.inotify_events += events.len() as u64;
        status.inotify_overflows = watcher.overflows();
        status.inotify_watches = watcher.watches() as u64;
        status.inotify_refused = watcher.refused();
    }
    for event in events.drain(..) {
        let Some(id) = event.spec else {
            delivery
                .overflow(|spec| ids.contains(&spec), "inotify")
                .await;
            continue;
        };
        delivery.deliver(id, event, None).await;
    }
    (drained, watcher.marks_stale())
}

/// `triggerd check`: what a rule fanotify refused gets from inotify (a throwaway instance).
pub fn probe(spec: &MarkSpec, fanotify: &str) -> String {
    let errors = InotifyWatcher::new().map(|mut w| w.set_specs(std::slice::from_ref(spec)));
    match errors.as_deref() {
        Ok([]) => format!("will use inotify (fanotify refused: {fanotify}): {GIVES_UP}"),
        Ok([e, ..]) => format!(
            "cannot be watched: fanotify refused ({fanotify}); inotify: {}",
            e.error
        ),
        Err(e) => format!("cannot be watched: fanotify refused ({fanotify}); {e}"),
    }
}
