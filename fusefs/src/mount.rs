//! The mountpoint's lifecycle around fuser: clearing a stale mount left by a crashed process
//! (its path answers ENOTCONN), and unmounting, lazily when files are still open.

use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

/// Makes `path` usable as a mountpoint: creates it if missing and detaches a dead FUSE mount
/// (ENOTCONN: its daemon died). Returns whether a stale mount was removed.
pub(crate) fn prepare_mountpoint(path: &Path) -> io::Result<bool> {
    // Opening the directory reaches the filesystem's daemon; a stat may be answered from the
    // kernel's attribute cache even after the daemon died.
    match std::fs::read_dir(path).map(drop) {
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
            tracing::warn!(path = %path.display(), "removed a stale mount left by a crash");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// How an unmount went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unmounted {
    /// Gone; the FUSE threads end now.
    Clean,
    /// Files were still open: detached from the namespace; the FUSE threads serve those open
    /// files until they are closed.
    Lazily,
    /// Somebody else already unmounted it.
    Already,
}

pub(crate) fn unmount(path: &Path) -> io::Result<Unmounted> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(Unmounted::Clean),
        Err(Errno::EBUSY) => {
            umount2(path, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
            Ok(Unmounted::Lazily)
        }
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(Unmounted::Already),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_left_alone_and_a_missing_one_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!prepare_mountpoint(dir.path()).expect("plain dir"));
        let missing = dir.path().join("a/b");
        assert!(!prepare_mountpoint(&missing).expect("missing dir"));
        assert!(missing.is_dir());
        assert_eq!(unmount(&missing).expect("not mounted"), Unmounted::Already);
    }
}
