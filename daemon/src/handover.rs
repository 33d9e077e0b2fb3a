//! What outlives one triggerd process: the kernel objects it hands to its successor (the FUSE
//! connection today) and the re-exec that replaces the process in place. Under systemd the
//! objects sit in the fd store and come back as `LISTEN_FDS`/`LISTEN_FDNAMES`; across
//! `triggerctl reexec` they stay open through `execve` and are named in `TRIGGERD_FDS`
//! (`name=fd,...`). Either way a source takes its object once with [`take`]; what nobody
//! takes is closed when the sources have started ([`close_untaken`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// Names of the descriptors handed over across `execve`.
const FDS_ENV: &str = "TRIGGERD_FDS";
/// How many times this process was re-executed (shown by `status`; `triggerctl reexec`
/// waits for it to grow).
const EXECS_ENV: &str = "TRIGGERD_EXECS";
/// At most this many descriptors are taken from the environment.
const MAX_FDS: usize = 64;

/// The name of the FUSE connection's descriptor.
pub const FUSE: &str = "fuse";

struct Start {
    fds: Mutex<HashMap<String, OwnedFd>>,
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    execs: u64,
}

static START: OnceLock<Start> = OnceLock::new();

/// Reads (and removes from the environment) what a predecessor handed over. Call it first
/// in `main`, before any thread exists: it changes the environment.
pub fn take_inherited() {
    let mut fds = HashMap::new();
    // SAFETY: called before any other thread runs (see above), so nothing reads the
    // environment while it changes.
    let listened = unsafe { sd_notify::listen_fds_with_names_and_unset_env() };
    match listened {
        Ok(listened) => {
            for (fd, name) in listened.take(MAX_FDS) {
                // SAFETY: systemd passed `fd` to this process for it to own.
                fds.insert(name, unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(e) => tracing::warn!("LISTEN_FDS ignored: {e}"),
    }
    if let Some(list) = std::env::var_os(FDS_ENV) {
        for (name, fd) in parse_fds(&list.to_string_lossy()) {
            if is_open(fd) {
                // SAFETY: the predecessor (this same process before execve) left `fd` open
                // for us and named it; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(fd.as_raw_fd());
                fds.insert(name, fd);
            }
        }
    }
    let execs = std::env::var(EXECS_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for name in [FDS_ENV, EXECS_ENV] {
        // SAFETY: as above, no other thread yet.
        unsafe { std::env::remove_var(name) };
    }
    if !fds.is_empty() {
        let names: Vec<&str> = fds.keys().map(String::as_str).collect();
        tracing::info!(?names, "taking over descriptors of the previous process");
    }
    let _ = START.set(Start {
        fds: Mutex::new(fds),
        exe: std::env::current_exe().ok(),
        args: std::env::args_os().collect(),
        execs,
    });
}

/// `name=fd,...`; bad entries are skipped, at most [`MAX_FDS`].
fn parse_fds(list: &str) -> Vec<(String, RawFd)> {
    list.split(',')
        .filter_map(|entry| {
            let (name, fd) = entry.split_once('=')?;
            let fd: RawFd = fd.parse().ok()?;
            (fd > 2 && !name.is_empty()).then(|| (name.to_string(), fd))
        })
        .take(MAX_FDS)
        .collect()
}

fn is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(
        // SAFETY: only queried; a closed number makes fcntl fail with EBADF.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: `fd` is open and owned by the caller for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
}

/// The descriptor a predecessor handed over as `name`, once.
pub fn take(name: &str) -> Option<OwnedFd> {
    let start = START.get()?;
    let mut fds = start.fds.lock().unwrap_or_else(|p| p.into_inner());
    fds.remove(name)
}

/// Whether a predecessor handed over a descriptor named `name` (not yet taken).
pub fn has(name: &str) -> bool {
    START.get().is_some_and(|start| {
        start
            .fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    })
}

/// Closes what no source took (e.g. a trigger mount the new config no longer has) and asks
/// the service manager to drop its copy too: such an object then ends as a stop would end
/// it, instead of living on in the fd store (a fanotify group there would keep its marks and
/// queue events for nobody).
pub fn close_untaken() {
    if let Some(start) = START.get() {
        let mut fds = start.fds.lock().unwrap_or_else(|p| p.into_inner());
        for name in fds.keys() {
            tracing::info!(
                name,
                "handed-over descriptor not used by this config: closed"
            );
            crate::systemd::remove_fd(name);
        }
        fds.clear();
    }
}

/// Set once the process is to be re-executed: sources hand their objects over instead of
/// ending them.
static HANDING_OVER: AtomicBool = AtomicBool::new(false);
/// What the sources left for the successor.
static KEPT: Mutex<Vec<(String, OwnedFd)>> = Mutex::new(Vec::new());

/// From now on, sources that stop keep their kernel objects for the successor.
pub fn prepare_reexec() {
    HANDING_OVER.store(true, Ordering::SeqCst);
}

/// Whether the stopping sources hand over (a re-exec) rather than end (a stop).
pub fn handing_over() -> bool {
    HANDING_OVER.load(Ordering::SeqCst)
}

/// Leaves `fd` to the successor as `name`.
pub fn keep(name: &str, fd: OwnedFd) {
    KEPT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((name.to_string(), fd));
}

/// Re-executes with what the sources kept; returns only on failure.
pub fn reexec_now() -> std::io::Error {
    let kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    let fds: Vec<(&str, BorrowedFd<'_>)> = kept
        .iter()
        .map(|(name, fd)| (name.as_str(), std::os::fd::AsFd::as_fd(fd)))
        .collect();
    reexec(&fds)
}

/// Times this process image was re-executed.
pub fn execs() -> u64 {
    START.get().map_or(0, |s| s.execs)
}

/// Replaces the process image with the binary on disk (same pid, same arguments), keeping
/// `fds` open across `execve` under their names. Returns only on failure.
fn reexec(fds: &[(&str, BorrowedFd<'_>)]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let Some(start) = START.get() else {
        return std::io::Error::other("handover::take_inherited was not called");
    };
    let Some(exe) = &start.exe else {
        return std::io::Error::other("the binary's path is unknown");
    };
    let mut named = Vec::new();
    for (name, fd) in fds {
        // A duplicate without close-on-exec: the original keeps its flag.
        match nix::unistd::dup(fd) {
            Ok(dup) => {
                named.push(format!("{name}={}", dup.as_raw_fd()));
                // Left open on purpose: it is the successor's.
                std::mem::forget(dup);
            }
            Err(e) => return e.into(),
        }
    }
    // The binary on disk, not /proc/self/exe: an upgrade replaced the file.
    let exe = exe
        .to_str()
        .and_then(|p| p.strip_suffix(" (deleted)"))
        .map_or_else(|| exe.clone(), PathBuf::from);
    tracing::info!(exe = %exe.display(), "re-executing");
    std::process::Command::new(&exe)
        .args(start.args.iter().skip(1))
        .env(FDS_ENV, named.join(","))
        .env(EXECS_ENV, (start.execs + 1).to_string())
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_lists_keep_good_entries_only() {
        assert_eq!(
            parse_fds("fuse=7,bad,=9,low=2,x=y,ok=12"),
            [("fuse".to_string(), 7), ("ok".to_string(), 12)]
        );
        assert_eq!(parse_fds(&"a=5,".repeat(100)).len(), MAX_FDS);
    }

    #[test]
    fn an_open_descriptor_is_seen_and_a_closed_one_not() {
        let file = std::fs::File::open("/proc/self/status").expect("open");
        assert!(is_open(file.as_raw_fd()));
        assert!(!is_open(1 << 20));
    }
}
