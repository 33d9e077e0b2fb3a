//! Shared helpers for the benchmark programs: guards that put the machine back as it was
//! (children killed, the fanotify queue sysctl restored, files removed) even when a benchmark
//! fails half-way.

use std::fs::File;
use std::path::PathBuf;
use std::process::Child;

use nix::fcntl::{Flock, FlockArg};

const MAX_QUEUED: &str = "/proc/sys/fs/fanotify/max_queued_events";
/// Shared with the test suites, which change the same global sysctl.
const SYSCTL_LOCK: &str = "/tmp/triggerd-fanotify-sysctl.lock";

/// A child process killed and reaped on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file removed on drop.
pub struct Removed(pub PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Raises `max_queued_events` (for fanotify groups created while it lives, under the tests'
/// exclusive lock) and restores it on drop.
pub struct QueueLimit {
    old: String,
    _lock: Flock<File>,
}

impl QueueLimit {
    pub fn raise(value: usize) -> std::io::Result<QueueLimit> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SYSCTL_LOCK)?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))?;
        let old = std::fs::read_to_string(MAX_QUEUED)?;
        std::fs::write(MAX_QUEUED, value.to_string())?;
        Ok(QueueLimit { old, _lock: lock })
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_QUEUED, self.old.trim());
    }
}
