//! Whether a regular file is open for writing by anyone, asked the one way the kernel answers
//! it without scanning every process: a read lease (`F_SETLEASE`, `F_RDLCK`) is refused with
//! `EAGAIN` while any writer has the file open. The lease is dropped at once. Its break
//! signal is set to SIGURG (ignored by default) before it is taken, so a writer opening the
//! file in the microseconds it is held costs the daemon nothing (that writer waits until the
//! lease is dropped; one opening with `O_NONBLOCK` gets `EWOULDBLOCK`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode};

/// What a probe of one directory entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Openness {
    /// A regular file nobody has open for writing: its writes are done.
    Closed,
    /// A regular file some process has open for writing: its close is still to come.
    Writing,
    /// A regular file on a filesystem without leases: taken as closed.
    Untold,
    /// Not a regular file, or gone.
    Unknown,
}

/// Probes the entry `name` of the directory `dir` (never follows a link, never opens
/// anything but a regular file: the object is pinned with `O_PATH` and checked first).
pub(crate) fn openness(dir: &Path, name: &[u8]) -> Openness {
    if name.is_empty() || name.contains(&b'/') {
        return Openness::Unknown;
    }
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(dir) = nix::fcntl::open(dir, dir_flags, Mode::empty()) else {
        return Openness::Unknown;
    };
    let name = Path::new(std::ffi::OsStr::from_bytes(name));
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(pinned) = openat(dir.as_fd(), name, flags, Mode::empty()) else {
        return Openness::Unknown;
    };
    match fstat(pinned.as_fd()) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
        _ => return Openness::Unknown,
    }
    let reopen = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(reopen.as_str(), flags, Mode::empty()) {
        Ok(file) => lease_answer(&file),
        Err(_) => Openness::Untold,
    }
}

/// `F_SETSIG` from Linux's <asm-generic/fcntl.h>; the libc crate does not export it.
const F_SETSIG: libc::c_int = 10;

fn lease_answer(file: &OwnedFd) -> Openness {
    if set_break_signal(file.as_fd(), libc::SIGURG).is_err() {
        return Openness::Untold;
    }
    match set_lease(file.as_fd(), libc::F_RDLCK) {
        Ok(()) => {
            let _ = set_lease(file.as_fd(), libc::F_UNLCK);
            Openness::Closed
        }
        Err(Errno::EAGAIN) => Openness::Writing,
        Err(_) => Openness::Untold,
    }
}

/// `fcntl(fd, F_SETSIG, signal)`: the signal a lease break sends instead of SIGIO.
fn set_break_signal(fd: BorrowedFd<'_>, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: F_SETSIG takes an int argument and touches only the open file's owner record.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG, signal) };
    Errno::result(rc).map(drop)
}

/// `fcntl(fd, F_SETLEASE, kind)`.
fn set_lease(fd: BorrowedFd<'_>, kind: libc::c_int) -> Result<(), Errno> {
    // SAFETY: F_SETLEASE takes an int argument (F_RDLCK / F_UNLCK) and no pointer.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, kind) };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_open_for_writing_is_told_apart_from_a_closed_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("done"), b"x").unwrap();
        let writer = std::fs::File::create(dir.path().join("busy")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("done", dir.path().join("link")).unwrap();
        assert_eq!(openness(dir.path(), b"done"), Openness::Closed);
        assert_eq!(openness(dir.path(), b"busy"), Openness::Writing);
        assert_eq!(openness(dir.path(), b"sub"), Openness::Unknown);
        assert_eq!(openness(dir.path(), b"link"), Openness::Unknown);
        assert_eq!(openness(dir.path(), b"gone"), Openness::Unknown);
        drop(writer);
        assert_eq!(openness(dir.path(), b"busy"), Openness::Closed);
    }
}
