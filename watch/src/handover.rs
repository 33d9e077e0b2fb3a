//! A notification group outliving its process. The group's fd goes to a successor (systemd's
//! fd store, or across `execve`); the kernel keeps its marks and queues events while no
//! process reads it. What the kernel does not tell back — which objects are marked, with
//! which bits, and their file handles — is kept in a small versioned session file (0600),
//! written whenever the marks change, so that a crash leaves it right. The successor
//! [`Watcher::adopt`]s the group with it: its first `set_marks` diffs against the marks the
//! kernel really has, so marks that still match the config are not touched and the others
//! are removed.
//!
//! Permission groups are never handed over: an event the dead process had read can only be
//! answered through the fd number it got, so its group must close (the kernel then allows
//! what waits) rather than live on.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sys::fanotify::Fanotify;
use serde::{Deserialize, Serialize};

use crate::error::WatchError;
use crate::kinds::EventMask;
use crate::marks::{MarkKey, MarkScope, MarkTable, MarkedObject};
use crate::watcher::Watcher;

/// Layout version of the session file; another version is ignored (the successor then marks
/// afresh on top of what the kernel has: kept marks stay, stale ones are not removed).
const VERSION: u32 = 1;
/// A session file larger than this is not read.
const MAX_SESSION_BYTES: u64 = 256 * 1024 * 1024;

/// One marked object as the session file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptObject {
    key: MarkKey,
    path: PathBuf,
    handle: Option<(i32, Vec<u8>)>,
    fsid: u64,
    dev_ino: (u64, u64),
    is_dir: bool,
    is_link: bool,
    scope: MarkScope,
    mount_only: bool,
    kernel_mask: u64,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Session {
    version: u32,
    objects: Vec<KeptObject>,
}

/// Where a group's marks are written, and the writing.
#[derive(Debug)]
pub(crate) struct SessionFile(PathBuf);

impl SessionFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        SessionFile(path)
    }

    /// Writes the marks of `table` (logged on failure: a successor then keeps stale marks).
    pub(crate) fn save(&self, table: &MarkTable) {
        let session = Session {
            version: VERSION,
            objects: table
                .objects
                .iter()
                .map(|(key, o)| KeptObject {
                    key: *key,
                    path: o.path.clone(),
                    handle: o.handle.clone(),
                    fsid: o.fsid,
                    dev_ino: o.dev_ino,
                    is_dir: o.is_dir,
                    is_link: o.is_link,
                    scope: o.scope,
                    mount_only: o.mount_only,
                    kernel_mask: o.kernel_mask,
                })
                .collect(),
        };
        let written = serde_json::to_vec(&session)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = self.0.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                triggerd_support::write_atomically(&self.0, &bytes)
            });
        if let Err(e) = written {
            tracing::warn!(path = %self.0.display(), "fanotify session file not written: {e}");
        }
    }

    /// The marks a predecessor left (empty if missing, too large, bad or of another version).
    fn load(&self) -> Vec<KeptObject> {
        let read = std::fs::metadata(&self.0).and_then(|m| {
            if m.len() > MAX_SESSION_BYTES {
                Err(std::io::Error::other("too large"))
            } else {
                std::fs::read(&self.0)
            }
        });
        match read.map(|b| serde_json::from_slice::<Session>(&b)) {
            Ok(Ok(s)) if s.version == VERSION => s.objects,
            Ok(Ok(s)) => {
                tracing::warn!(path = %self.0.display(), version = s.version, "fanotify session file of another version ignored");
                Vec::new()
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %self.0.display(), "fanotify session file not read: {e}");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(path = %self.0.display(), "fanotify session file not read: {e}");
                Vec::new()
            }
        }
    }
}

/// Wraps `fd` as a fanotify group after checking that it is one.
fn group_of(fd: OwnedFd) -> Result<Fanotify, WatchError> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !link.is_ok_and(|l| l.as_os_str() == "anon_inode:[fanotify]") {
        return Err(WatchError::Group {
            syscall: "adopt (not a fanotify group)",
            errno: nix::errno::Errno::EBADF,
        });
    }
    // SAFETY: the kernel says `fd` is a fanotify group (its anon inode's name), and we own it.
    Ok(unsafe { Fanotify::from_owned_fd(fd) })
}

impl Watcher {
    /// Takes over the notification group `fd` a predecessor left, with the marks its session
    /// file `session` names; from now on marks are written there. Events the group queued
    /// while no process read it are read as usual once `set_marks` has routed the specs.
    /// Fails (and the caller makes a new group) if `fd` is not a fanotify group.
    pub fn adopt(fd: OwnedFd, session: PathBuf) -> Result<Self, WatchError> {
        let group = group_of(fd)?;
        let session = SessionFile::new(session);
        let mut table = MarkTable::default();
        for kept in session.load() {
            table.objects.insert(
                kept.key,
                MarkedObject {
                    path: kept.path,
                    fd: None,
                    handle: kept.handle,
                    fsid: kept.fsid,
                    dev_ino: kept.dev_ino,
                    is_dir: kept.is_dir,
                    is_link: kept.is_link,
                    scope: kept.scope,
                    mount_only: kept.mount_only,
                    user_mask: EventMask::EMPTY,
                    kernel_mask: kept.kernel_mask,
                },
            );
        }
        Ok(Watcher::with_group(group, table, Some(session)))
    }

    /// From now on the marks are written to `session` whenever they change (see the module).
    pub fn keep_session(&mut self, session: PathBuf) {
        let file = SessionFile::new(session);
        file.save(self.mark_table());
        self.set_session(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn only_a_fanotify_group_is_adopted() {
        let file = std::fs::File::open("/proc/self/status").expect("open");
        let dir = tempfile::tempdir().expect("tempdir");
        let session = dir.path().join("s.json");
        assert!(Watcher::adopt(OwnedFd::from(file), session.clone()).is_err());
        // Needs CAP_SYS_ADMIN (the daemon's tests run as root).
        let watcher = Watcher::new().expect("a fanotify group");
        let fd = watcher.as_fd().try_clone_to_owned().expect("dup");
        assert!(Watcher::adopt(fd, session).is_ok());
    }

    #[test]
    fn marks_round_trip_through_the_session_file_and_another_version_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SessionFile::new(dir.path().join("run/s.json"));
        let mut table = MarkTable::default();
        table.objects.insert(
            MarkKey::Filesystem { fsid: 7 },
            MarkedObject {
                path: "/srv".into(),
                fd: None,
                handle: Some((1, vec![1, 2, 3])),
                fsid: 7,
                dev_ino: (8, 9),
                is_dir: true,
                is_link: false,
                scope: MarkScope::Filesystem,
                mount_only: false,
                user_mask: EventMask::EMPTY,
                kernel_mask: 0x8,
            },
        );
        file.save(&table);
        let mode = std::fs::metadata(&file.0).expect("saved").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let kept = file.load();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].fsid, kept[0].kernel_mask), (7, 0x8));
        std::fs::write(&file.0, br#"{"version":99,"objects":[]}"#).expect("write");
        assert!(file.load().is_empty());
    }
}
