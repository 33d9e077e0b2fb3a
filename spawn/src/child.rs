//! The steps that run in the child between fork and exec. Only async-signal-safe calls
//! happen there (plain syscalls on data prepared in the parent, no allocation), because the
//! parent is multi-threaded.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The identity a child switches to.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

/// Installs the child-side steps on `command`: groups, gid, uid (in that order, while still
/// root), umask, working directory (as the new user), then close-on-exec on every fd past 2.
pub(crate) fn install(command: &mut Command, credentials: Option<Credentials>, dir: CString) {
    let step = move || -> std::io::Result<()> {
        if let Some(c) = &credentials {
            switch_user(c)?;
        }
        set_umask();
        enter(&dir)?;
        cloexec_from(3)
    };
    // SAFETY: `step` only makes async-signal-safe syscalls on memory it owns (moved in before
    // the fork), allocates nothing and takes no locks, as a pre_exec hook must in a child of a
    // multi-threaded process.
    unsafe {
        command.pre_exec(step);
    }
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// setgroups, setgid, setuid: each checked, so a child never runs with root's groups or uid.
fn switch_user(c: &Credentials) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `c.groups`, alive for the call.
    check(unsafe { libc::setgroups(c.groups.len(), c.groups.as_ptr()) })?;
    // SAFETY: plain syscall on an integer.
    check(unsafe { libc::setgid(c.gid) })?;
    // SAFETY: plain syscall on an integer.
    check(unsafe { libc::setuid(c.uid) })
}

fn set_umask() {
    // SAFETY: plain syscall on an integer; it cannot fail.
    unsafe {
        libc::umask(crate::UMASK as libc::mode_t);
    }
}

fn enter(dir: &CString) -> std::io::Result<()> {
    // SAFETY: `dir` is a NUL-terminated string alive for the call.
    check(unsafe { libc::chdir(dir.as_ptr()) })
}

/// Marks every fd from `first` on close-on-exec: exec then closes them, while the pipe std
/// uses to report a failed exec (itself close-on-exec) keeps working until then. Called in a
/// forked child, or in the parent itself before a spawn without fork.
pub(crate) fn cloexec_from(first: u32) -> std::io::Result<()> {
    // SAFETY: close_range only changes fd flags of this process; no memory is passed.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    // Kernels before 5.11: set the flag on each possible fd.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let last = limit.rlim_cur.min(1 << 20) as libc::c_int;
    for fd in first as libc::c_int..last {
        // SAFETY: F_SETFD on any integer is harmless; EBADF for unused numbers is ignored.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}
