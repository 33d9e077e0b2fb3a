//! The fanotify source's notification groups across a restart. Each group's fd goes to
//! systemd's fd store when it is made (`FDNAME=fanotify`, `fanotify-mount` for the group of
//! `mount_only` rules) and is kept across `triggerctl reexec`; a successor adopts it with
//! the marks its session file (`session/fanotify.session.json` beside the control socket,
//! 0600, in a 0700 directory) names,
//! so the kernel's marks and the events it queued while no process read the group survive a
//! restart, a crash and an upgrade. The permission group is never handed over (see
//! `triggerd_watch`'s handover module): when triggerd dies, the kernel closes it and allows
//! the opens that waited.

use std::os::fd::AsFd;
use std::path::Path;

use triggerd_watch::{WatchError, Watcher};

use crate::{handover, systemd};

/// The fd-store name of the notification group.
pub(super) const NOTIFY: &str = "fanotify";
/// The fd-store name of the group of `mount_only` rules.
pub(super) const MOUNT: &str = "fanotify-mount";

/// The group a predecessor handed over as `name`, or a new one; either way its marks are
/// written to its session file in `dir` and its fd is in the service manager's store.
pub(super) fn open(name: &str, dir: &Path) -> Result<Watcher, WatchError> {
    if let Err(e) = triggerd_support::private_dir(dir) {
        tracing::warn!(dir = %dir.display(), "cannot make the session directory: {e}");
    }
    let session = dir.join(format!("{name}.session.json"));
    let watcher = match handover::take(name).map(|fd| Watcher::adopt(fd, session.clone())) {
        Some(Ok(watcher)) => {
            tracing::info!(
                group = name,
                "fanotify group taken over from the previous process"
            );
            watcher
        }
        other => {
            if let Some(Err(e)) = other {
                tracing::warn!(group = name, "handed-over fanotify group not adopted: {e}");
            }
            let mut watcher = Watcher::new()?;
            watcher.keep_session(session);
            watcher
        }
    };
    systemd::store_fd(name, watcher.as_fd());
    Ok(watcher)
}

/// Whether a predecessor handed over a group named `name` (the mount group is otherwise
/// made only when the first `mount_only` rule is bound).
pub(super) fn inherited(name: &str) -> bool {
    handover::has(name)
}

/// On a hand-over (re-exec or restart): leaves the group to the successor.
pub(super) fn keep(name: &str, watcher: &Watcher) {
    match watcher.as_fd().try_clone_to_owned() {
        Ok(fd) => handover::keep(name, fd),
        Err(e) => tracing::error!(group = name, "fanotify group not kept: {e}"),
    }
}
