//! How every child of triggerd and of its workers starts: exec actions, dead letters,
//! permission-gate commands, command and external plugins all go through [`prepare`], so a
//! child sees only what is listed here, whatever the parent holds (libzmq's epoll fds, the
//! daemon's environment, root's groups):
//! - file descriptors 0, 1 and 2 only (every other fd is marked close-on-exec: in the child,
//!   or in the parent when the child starts without a fork, see [`Start`]);
//! - an explicit environment: [`BASE_PATH`] as `PATH`, [`BASE_LANG`] as `LANG`, `HOME`,
//!   `USER`, `LOGNAME` and `SHELL` of the user it runs as, then the caller's variables
//!   (a rule's `env` table, the `TRIGGERD_*` details); nothing inherited;
//! - when it runs as another user, that user's supplementary groups (as `initgroups` gives
//!   them), its gid and uid;
//! - umask [`UMASK`] and a working directory (`/` unless the caller names one), entered
//!   after the switch to the user so the user's own permissions apply.
//!
//! Once started, every such child is supervised by [`supervise`] (process group, bounded
//! output lines, deadline, reaping), so the daemon and the workers report runs alike.

#![warn(missing_docs, unreachable_pub)]

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;

mod child;
mod supervise;

pub use supervise::{
    supervise, supervise_blocking, Exit, Group, Run, Stream, MAX_LINE, TIMED_OUT_STATUS,
};

/// `PATH` every child starts with (a rule's `env` may replace it).
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` every child starts with (a rule's `env` may replace it).
pub const BASE_LANG: &str = "C.UTF-8";
/// The file-creation mask every child starts with.
pub const UMASK: u32 = 0o022;

/// What a child is started with, beyond its argv and stdio.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Run as this uid and gid (the parent must be root); `None` keeps the parent's identity.
    pub user: Option<(u32, u32)>,
    /// Variables set after the base ones, in order (later ones win).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; `/` when `None`.
    pub chdir: Option<PathBuf>,
}

/// Why a child cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The supplementary groups of the target user could not be read.
    #[error("cannot read the groups of uid {uid}: {source}")]
    Groups {
        /// The user.
        uid: u32,
        /// The lookup's error.
        source: nix::Error,
    },
    /// A working directory containing a NUL byte.
    #[error("working directory {0:?} contains a NUL byte")]
    Chdir(PathBuf),
}

/// How a prepared command will start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With no step left for the child (same user, the parent's umask is [`UMASK`]): std
    /// starts it with `posix_spawn`, which shares the parent's memory until the exec instead
    /// of copying its page tables, so starting costs the same however large the parent is.
    /// The parent's own fds past 2 were marked close-on-exec instead.
    Spawn,
    /// Forked, with the child-side steps (another user, or another umask) run before exec.
    Fork,
}

/// Sets up `command` to start clean as `spec` says: clears its environment and fills in the
/// base, and arranges for the rest (groups, gid, uid, umask, cwd, fds): in the child between
/// fork and exec, or, when nothing needs the child's own steps, without a fork (see
/// [`Start`]). Call it just before spawning; the caller may add more variables afterwards; it
/// must not call `uid`, `gid`, `current_dir` or `pre_exec`.
pub fn prepare(command: &mut Command, spec: &Spec) -> Result<Start, SpawnError> {
    let uid = spec
        .user
        .map_or_else(|| nix::unistd::geteuid().as_raw(), |(uid, _)| uid);
    let account = nix::unistd::User::from_uid(uid.into()).ok().flatten();
    let credentials = match spec.user {
        None => None,
        Some((uid, gid)) => Some(child::Credentials {
            uid,
            gid,
            groups: groups_of(uid, gid, account.as_ref())?,
        }),
    };
    let dir = spec.chdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| SpawnError::Chdir(dir))?;

    command
        .env_clear()
        .env("PATH", BASE_PATH)
        .env("LANG", BASE_LANG);
    let (name, home, shell) = match &account {
        Some(user) => (user.name.clone(), user.dir.clone(), user.shell.clone()),
        None => (
            uid.to_string(),
            PathBuf::from("/"),
            PathBuf::from("/bin/sh"),
        ),
    };
    command
        .env("HOME", &home)
        .env("USER", &name)
        .env("LOGNAME", &name)
        .env("SHELL", &shell);
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if credentials.is_none() && process_umask() == Some(UMASK) {
        // The same steps, done where no fork is needed: the umask is inherited as it is, std
        // enters the directory, and no fd past 2 survives the exec. An fd opened by another
        // thread between this and the spawn is close-on-exec too: everything the daemon and
        // its libraries open is (std, tokio, fanotify groups, libzmq's sockets).
        command.current_dir(std::ffi::OsStr::from_bytes(dir.as_bytes()));
        if child::cloexec_from(3).is_ok() {
            return Ok(Start::Spawn);
        }
    }
    child::install(command, credentials, dir);
    Ok(Start::Fork)
}

/// This process's file-creation mask, from /proc (reading it with umask(2) would change it).
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

/// The supplementary groups `initgroups` would give: the user's entries in the group
/// database plus its primary `gid`. A uid with no account gets `gid` alone.
fn groups_of(
    uid: u32,
    gid: u32,
    account: Option<&nix::unistd::User>,
) -> Result<Vec<libc::gid_t>, SpawnError> {
    let Some(user) = account else {
        return Ok(vec![gid]);
    };
    let name = CString::new(user.name.as_bytes()).map_err(|_| SpawnError::Groups {
        uid,
        source: nix::Error::EINVAL,
    })?;
    let groups = nix::unistd::getgrouplist(&name, gid.into())
        .map_err(|source| SpawnError::Groups { uid, source })?;
    Ok(groups.into_iter().map(|g| g.as_raw()).collect())
}
