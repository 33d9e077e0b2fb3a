//! The fanotify source: one notification group (FID mode) for every watch, a second group for
//! permission rules, both read without blocking from the tokio reactor. Marks follow the
//! config as a diff, so a reload never drops the marks of unchanged rules; marks that fail
//! (a path that does not exist yet) are retried until they succeed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};
use triggerd_watch::{
    EventMask, MarkError, MarkScope, MarkSpec, PermissionGate, PermissionRequest, WatchEvent,
    Watcher,
};

use crate::config::{Config, Trigger};
use crate::dispatch::Dispatcher;
use crate::event::{Event, SourceKind};

const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The marks a config asks for: notification marks and permission marks.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub notify: Vec<MarkSpec>,
    pub permission: Vec<MarkSpec>,
}

impl Marks {
    pub fn of(config: &Config) -> Self {
        let mut marks = Marks::default();
        for rule in &config.rules {
            let Trigger::Watch(w) = &rule.def.trigger;
            let mut mask = w.events;
            if w.children && !w.recursive {
                mask = mask.union(EventMask::EVENT_ON_CHILD);
            }
            let spec = MarkSpec {
                path: w.path.clone(),
                scope: if w.recursive {
                    MarkScope::Filesystem
                } else {
                    MarkScope::Inode
                },
                mask,
            };
            if w.is_permission() {
                marks.permission.push(spec);
            } else {
                marks.notify.push(spec);
            }
        }
        marks
    }
}

/// What `status` shows about the source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchStatus {
    pub events: u64,
    pub overflows: u64,
    pub permission_requests: u64,
    /// Paths whose mark failed, with why; retried every few seconds.
    pub failing_marks: BTreeMap<String, String>,
}

/// A running source: send it new marks on reload.
#[derive(Debug, Clone)]
pub struct FanotifyHandle {
    commands: mpsc::Sender<(Marks, oneshot::Sender<()>)>,
    pub status: Arc<Mutex<WatchStatus>>,
}

impl FanotifyHandle {
    /// Applies new marks; returns once they are in place (or recorded as failing).
    pub async fn set_marks(&self, marks: Marks) {
        let (done, wait) = oneshot::channel();
        if self.commands.send((marks, done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Source {
    notify: AsyncFd<Watcher>,
    permission: Option<AsyncFd<PermissionGate>>,
    events: Delivery,
    marks: Marks,
    failing: bool,
}

/// Turns what the groups read into dispatcher calls (apart from the groups, so both can be
/// borrowed at once).
struct Delivery {
    dispatcher: Arc<Dispatcher>,
    status: Arc<Mutex<WatchStatus>>,
    next_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Watch(#[from] triggerd_watch::WatchError),
    #[error("cannot register the fanotify group with the reactor: {0}")]
    Reactor(std::io::Error),
}

/// The fanotify groups own their fd for their whole life and never swap it.
trait OwnsGroupFd: std::os::fd::AsRawFd {}
impl OwnsGroupFd for Watcher {}
impl OwnsGroupFd for PermissionGate {}

fn register<T: OwnsGroupFd>(group: T) -> Result<AsyncFd<T>, SourceError> {
    // SAFETY: `OwnsGroupFd` types hold their fd open, unchanged, until they are dropped, and
    // the AsyncFd owns the group, so the fd outlives the registration.
    unsafe { AsyncFd::register_with_interest(group, Interest::READABLE) }
        .map_err(|e| SourceError::Reactor(e.into_parts().1))
}

/// Creates the groups and applies `marks`; the returned future reads events until `shutdown`.
pub fn start(
    dispatcher: Arc<Dispatcher>,
    marks: Marks,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(FanotifyHandle, impl std::future::Future<Output = ()>), SourceError> {
    let notify = register(Watcher::new()?)?;
    let permission = match PermissionGate::new()
        .map_err(SourceError::from)
        .and_then(register)
    {
        Ok(gate) => Some(gate),
        Err(e) => {
            tracing::warn!("permission events unavailable: {e}");
            None
        }
    };
    let status = Arc::new(Mutex::new(WatchStatus::default()));
    let (commands, mut incoming) = mpsc::channel::<(Marks, oneshot::Sender<()>)>(4);
    let mut source = Source {
        notify,
        permission,
        events: Delivery {
            dispatcher,
            status: Arc::clone(&status),
            next_id: 0,
        },
        marks: Marks::default(),
        failing: false,
    };
    source.apply(marks);
    let handle = FanotifyHandle { commands, status };
    let run = async move {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut events = Vec::with_capacity(1024);
        let mut requests = Vec::new();
        loop {
            tokio::select! {
                ready = source.notify.readable_mut() => match ready {
                    Ok(mut guard) => {
                        let drained = source.events.read_notify(guard.get_inner_mut(), &mut events);
                        if drained {
                            guard.clear_ready();
                        }
                    }
                    Err(e) => tracing::error!("fanotify: {e}"),
                },
                ready = readable(&mut source.permission) => match ready {
                    Ok(mut guard) => {
                        let drained = source.events.read_permission(guard.get_inner_mut(), &mut requests);
                        if drained {
                            guard.clear_ready();
                        }
                    }
                    Err(e) => tracing::error!("fanotify permission group: {e}"),
                },
                Some((marks, done)) = incoming.recv() => {
                    source.apply(marks);
                    let _ = done.send(());
                }
                _ = retry.tick(), if source.failing => {
                    let marks = source.marks.clone();
                    source.apply(marks);
                }
                _ = shutdown.changed() => break,
            }
        }
    };
    Ok((handle, run))
}

async fn readable(
    gate: &mut Option<AsyncFd<PermissionGate>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, PermissionGate>> {
    match gate {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

impl Delivery {
    /// Reads a bounded batch; true when the group had nothing more to give.
    fn read_notify(&mut self, watcher: &mut Watcher, events: &mut Vec<WatchEvent>) -> bool {
        events.clear();
        let drained = match watcher.read_events(events) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!("fanotify read: {e}");
                true
            }
        };
        let overflows = watcher.overflows();
        let count = events.len() as u64;
        for event in events.drain(..) {
            tracing::trace!(path = ?event.path, mask = %event.mask, pid = event.pid, "fanotify event");
            self.next_id += 1;
            self.dispatcher.dispatch(Event {
                id: self.next_id,
                source: SourceKind::Fanotify,
                subject: event.path,
                mask: event.mask,
                pid: Some(event.pid),
                time: SystemTime::now(),
                payload: Vec::new(),
            });
        }
        let mut status = lock(&self.status);
        status.events += count;
        status.overflows = overflows;
        drained
    }

    fn read_permission(
        &mut self,
        gate: &mut PermissionGate,
        out: &mut Vec<PermissionRequest>,
    ) -> bool {
        out.clear();
        let drained = match gate.read_requests(out) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::error!("fanotify permission read: {e}");
                true
            }
        };
        lock(&self.status).permission_requests += out.len() as u64;
        for request in out.drain(..) {
            self.next_id += 1;
            let event = Event {
                id: self.next_id,
                source: SourceKind::Fanotify,
                subject: request.path.clone(),
                mask: request.mask,
                pid: Some(request.pid),
                time: SystemTime::now(),
                payload: Vec::new(),
            };
            self.dispatcher.decide_permission(request, event);
        }
        drained
    }
}

impl Source {
    fn apply(&mut self, marks: Marks) {
        let mut errors: Vec<(PathBuf, String)> = Vec::new();
        let mut collect = |result: Result<Vec<MarkError>, triggerd_watch::WatchError>,
                           specs: &[MarkSpec]| {
            match result {
                Ok(failed) => {
                    errors.extend(failed.into_iter().map(|e| (e.path, e.error.to_string())))
                }
                Err(e) => errors.extend(specs.iter().map(|s| (s.path.clone(), e.to_string()))),
            }
        };
        collect(
            self.notify.get_mut().set_marks(&marks.notify),
            &marks.notify,
        );
        match &mut self.permission {
            Some(gate) => collect(
                gate.get_mut().set_marks(&marks.permission),
                &marks.permission,
            ),
            None => collect(Ok(Vec::new()), &[]),
        }
        if self.permission.is_none() {
            let why = "permission events are unavailable on this host".to_string();
            errors.extend(
                marks
                    .permission
                    .iter()
                    .map(|s| (s.path.clone(), why.clone())),
            );
        }
        let mut status = lock(&self.events.status);
        let mut failing = BTreeMap::new();
        for (path, why) in errors {
            let path = path.display().to_string();
            if status.failing_marks.get(&path) != Some(&why) {
                tracing::warn!(path = %path, "cannot watch yet (retrying): {why}");
            }
            failing.insert(path, why);
        }
        for path in status
            .failing_marks
            .keys()
            .filter(|p| !failing.contains_key(*p))
        {
            tracing::info!(path = %path, "now watched");
        }
        self.failing = !failing.is_empty();
        status.failing_marks = failing;
        self.marks = marks;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
