//! Helpers shared by the fanotify tests: the lock that serialises changes of the global
//! `max_queued_events` sysctl against group creation, temp dirs, and polling with a deadline.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use triggerd_watch::{EventMask, MarkScope, MarkSpec, WatchEvent, Watcher};

const SYSCTL_LOCK: &str = "/tmp/triggerd-fanotify-sysctl.lock";
pub const MAX_QUEUED: &str = "/proc/sys/fs/fanotify/max_queued_events";
pub const DEADLINE: Duration = Duration::from_secs(10);

fn lock(kind: FlockArg) -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(SYSCTL_LOCK)
        .unwrap();
    Flock::lock(file, kind).map_err(|(_, e)| e).unwrap()
}

/// Held while a group is created: the queue size is taken from the sysctl at that moment.
pub fn shared_sysctl_lock() -> Flock<File> {
    lock(FlockArg::LockShared)
}

/// Sets `max_queued_events` while held (exclusively); restores the old value on drop.
pub struct QueueLimit {
    old: String,
    _lock: Flock<File>,
}

impl QueueLimit {
    pub fn set(value: u64) -> QueueLimit {
        let lock = lock(FlockArg::LockExclusive);
        let old = std::fs::read_to_string(MAX_QUEUED).unwrap();
        std::fs::write(MAX_QUEUED, value.to_string()).unwrap();
        QueueLimit { old, _lock: lock }
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_QUEUED, self.old.trim());
    }
}

pub fn new_watcher() -> Watcher {
    let _lock = shared_sysctl_lock();
    Watcher::new().unwrap()
}

/// A temp dir on the default temp filesystem, canonical (fanotify reports real paths).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("triggerd-watch")
        .tempdir()
        .unwrap();
    let real = dir.path().canonicalize().unwrap();
    (dir, real)
}

/// A spec whose id is a hash of its path, so specs on different paths never share one.
pub fn spec(path: &Path, scope: MarkScope, mask: EventMask) -> MarkSpec {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    MarkSpec::new(hasher.finish(), path, scope, mask)
}

pub fn mark(watcher: &mut Watcher, specs: &[MarkSpec]) {
    let errors = watcher.set_marks(specs).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
}

/// A queue the tests read: the fanotify group or the inotify backend.
pub trait Queue: AsFd {
    fn read_into(&mut self, events: &mut Vec<WatchEvent>);
}

impl Queue for Watcher {
    fn read_into(&mut self, events: &mut Vec<WatchEvent>) {
        self.read_events(events).unwrap();
    }
}

impl Queue for triggerd_watch::InotifyWatcher {
    fn read_into(&mut self, events: &mut Vec<WatchEvent>) {
        self.read_events(events).unwrap();
    }
}

/// Reads events (waiting on the fd, never sleeping) until `done` holds or the deadline.
pub fn read_until<Q: Queue>(
    watcher: &mut Q,
    events: &mut Vec<WatchEvent>,
    mut done: impl FnMut(&[WatchEvent]) -> bool,
) -> bool {
    let deadline = Instant::now() + DEADLINE;
    loop {
        watcher.read_into(events);
        if done(events) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        wait_readable(watcher, left.min(Duration::from_millis(200)));
    }
}

/// Waits (in poll, not asleep) until the group has events or `limit` passed.
pub fn wait_readable(watcher: &impl AsFd, limit: Duration) {
    let mut fds = [PollFd::new(watcher.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::try_from(limit).unwrap());
}

/// The union of the masks of the events on `path`.
pub fn mask_of(events: &[WatchEvent], path: &Path) -> EventMask {
    events
        .iter()
        .filter(|e| e.path == path)
        .fold(EventMask::EMPTY, |m, e| m | e.mask)
}

/// Waits until the events on `path` include every bit of `want`.
pub fn expect(watcher: &mut Watcher, events: &mut Vec<WatchEvent>, path: &Path, want: EventMask) {
    let ok = read_until(watcher, events, |evs| mask_of(evs, path).contains(want));
    assert!(ok, "no {want} on {path:?}; got {:#?}", events);
}
