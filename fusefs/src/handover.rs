//! Handing the FUSE connection to a successor process: the session file (what the kernel
//! already holds numbers for: inode numbers per trigger key and directory, open file handles
//! and their partial lines), the gate that parks every state-changing request while the
//! process hands over, and what the successor tells the kernel (`FUSE_NOTIFY_RESEND`, or an
//! abort of the connection where the kernel does not know it).
//!
//! Invariants: the session file always holds the inode numbers of the current tree (it is
//! written whenever the tree changes, so a crash leaves it right); it holds handles only
//! between a [`Gate::close`] and the successor's first read, which removes them again, so a
//! later crash never brings back partial lines twice.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::delivery::lock;
use crate::tree::Inodes;

/// Version of the session file's layout; a file of another version is ignored (the successor
/// then serves with fresh numbers, as after a mount).
pub(crate) const VERSION: u32 = 1;
/// A session file larger than this is not read.
const MAX_SESSION_BYTES: u64 = 256 * 1024 * 1024;
/// `FUSE_NOTIFY_RESEND` (Linux 6.9): requests read but not answered go back to the queue.
const FUSE_NOTIFY_RESEND: i32 = 7;

/// One open file handle kept for the successor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeptHandle {
    pub fh: u64,
    pub trigger: String,
    /// The partial line (split = "line") the handle held.
    pub partial: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Session {
    pub version: u32,
    pub inodes: Inodes,
    /// File handles are never reused on one connection: the next one to hand out.
    pub next_fh: u64,
    #[serde(default)]
    pub handles: Vec<KeptHandle>,
}

/// The session file (root's alone, 0600). It lives next to the mountpoint (under /run: it
/// means nothing once the connection is gone), written without fsync for the same reason.
pub(crate) struct SessionFile {
    path: PathBuf,
}

impl SessionFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        SessionFile { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the session a predecessor left; `None` (logged) if missing, too large, unreadable
    /// or of another version.
    pub(crate) fn load(&self) -> Option<Session> {
        let read = fs::metadata(&self.path).and_then(|m| {
            if m.len() > MAX_SESSION_BYTES {
                Err(io::Error::other("session file too large"))
            } else {
                fs::read(&self.path)
            }
        });
        let parsed = read.and_then(|b| {
            serde_json::from_slice::<Session>(&b).map_err(|e| io::Error::other(e.to_string()))
        });
        match parsed {
            Ok(s) if s.version == VERSION => Some(s),
            Ok(s) => {
                tracing::warn!(path = %self.path.display(), version = s.version, "session file of another version ignored");
                None
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "session file not read: {e}");
                None
            }
        }
    }

    pub(crate) fn save(&self, session: &Session) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let json = serde_json::to_vec(session).map_err(|e| io::Error::other(e.to_string()))?;
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&json)?;
        fs::rename(&tmp, &self.path)
    }

    pub(crate) fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Counts the state-changing requests in progress; once closed, every new one parks its FUSE
/// thread for good (the process is about to be replaced: the kernel keeps the request, and
/// the successor gets it again through the resend).
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<(bool, usize)>,
    idle: Condvar,
}

pub(crate) struct Pass<'a>(&'a Gate);

impl Gate {
    pub(crate) fn enter(&self) -> Pass<'_> {
        let mut state = lock(&self.state);
        if state.0 {
            drop(state);
            loop {
                std::thread::park();
            }
        }
        state.1 += 1;
        Pass(self)
    }

    /// Closes the gate and waits (at most `wait`) for the requests in progress to finish;
    /// returns whether they all did.
    pub(crate) fn close(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = lock(&self.state);
        state.0 = true;
        while state.1 > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.1 -= 1;
        if state.1 == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// How the successor took over the requests its predecessor had read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resent {
    /// The kernel queued them again.
    Resent,
    /// The kernel does not know `FUSE_NOTIFY_RESEND`: the connection was aborted (its writers
    /// get ENOTCONN rather than wait forever); mount again.
    Aborted,
}

/// Sends `FUSE_NOTIFY_RESEND` on `device`; where the kernel refuses it, aborts the connection
/// mounted at `mountpoint` through /sys/fs/fuse/connections/N/abort.
pub(crate) fn resend_or_abort(
    device: BorrowedFd<'_>,
    mountpoint: &Path,
    simulate_refusal: bool,
) -> io::Result<Resent> {
    let refused = if simulate_refusal {
        Err(nix::errno::Errno::EINVAL)
    } else {
        // fuse_out_header: len, error (the notify code), unique 0 (a notification).
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&16u32.to_ne_bytes());
        header[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
        nix::unistd::write(device.as_fd(), &header).map(drop)
    };
    match refused {
        Ok(()) => Ok(Resent::Resent),
        Err(e) => {
            tracing::error!(
                mount = %mountpoint.display(),
                "the kernel refused FUSE_NOTIFY_RESEND ({e}; it needs Linux 6.9): aborting the \
                 connection so that requests the previous process had read fail instead of hanging"
            );
            abort(mountpoint)?;
            Ok(Resent::Aborted)
        }
    }
}

/// Ends the connection mounted at `mountpoint`: every request fails, the mount answers
/// ENOTCONN until it is detached.
pub(crate) fn abort(mountpoint: &Path) -> io::Result<()> {
    let id = connection_id(mountpoint)?;
    let control = Path::new("/sys/fs/fuse/connections");
    if !control.join(id.to_string()).exists() {
        // The fuse control filesystem is not mounted everywhere (containers, minimal roots).
        nix::mount::mount(
            Some("fusectl"),
            control,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    fs::write(control.join(format!("{id}/abort")), b"1")
}

/// The FUSE connection number of the mount at `mountpoint` (the minor of its device), read
/// from /proc/self/mountinfo: a stat would ask the filesystem itself.
fn connection_id(mountpoint: &Path) -> io::Result<u32> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.to_string_lossy();
    // The last mount on a path is the one that shows there.
    info.lines()
        .rev()
        .find_map(|line| {
            let mut f = line.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            (unescape(point) == want).then_some(dev)
        })
        .and_then(|dev| dev.split_once(':')?.1.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{want} is not mounted")))
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_and_another_version_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = SessionFile::new(dir.path().join("s.json"));
        assert!(file.load().is_none());
        let mut session = Session {
            version: VERSION,
            next_fh: 9,
            ..Session::default()
        };
        session.inodes.triggers.insert("a/b".into(), 3);
        session.handles.push(KeptHandle {
            fh: 8,
            trigger: "a/b".into(),
            partial: b"half".to_vec(),
        });
        file.save(&session).expect("save");
        let mode = fs::metadata(file.path()).expect("meta");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert_eq!(file.load(), Some(session.clone()));
        session.version = VERSION + 1;
        file.save(&session).expect("save");
        assert!(file.load().is_none());
    }

    #[test]
    fn a_closed_gate_waits_for_requests_in_progress() {
        let gate = std::sync::Arc::new(Gate::default());
        let pass = gate.enter();
        assert!(
            !gate.close(Duration::from_millis(20)),
            "one request in progress"
        );
        drop(pass);
        assert!(gate.close(Duration::from_millis(20)));
    }

    #[test]
    fn the_root_mount_has_a_device_number() {
        assert!(connection_id(Path::new("/")).is_ok());
        assert!(connection_id(Path::new("/no/such/mount")).is_err());
        assert_eq!(unescape("a\\040b"), "a b");
    }
}
