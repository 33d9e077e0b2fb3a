//! The trigger filesystem: a FUSE mount whose files are "trigger files"; every write to one
//! becomes a [`Message`] handed to a [`MessageSink`], and reading one returns the last reply
//! set with [`TriggerFs::set_reply`].
//!
//! Semantics (the contract the daemon and users rely on):
//! - Mounted with `allow_other` and `default_permissions` (the kernel enforces mode bits and
//!   ownership), served by several threads. A stale mount left by a crash (the mountpoint
//!   answers ENOTCONN) is detached before mounting.
//! - Trigger files are opened with FOPEN_DIRECT_IO, so one `write(2)` is one FUSE write.
//!   Writes have append semantics whatever the offset or O_APPEND.
//! - `split = "write"`: one message per write, payload = the written bytes exactly. (The
//!   kernel cuts a write(2) larger than its FUSE request limit, 1 MiB by default,
//!   `fs.fuse.max_pages_limit`, into several writes: several messages.)
//!   `split = "line"`: one message per line, payload = the line WITHOUT its trailing `\n`;
//!   a partial line is buffered per open file handle and emitted on flush (every close),
//!   fsync and release. A partial line reaching [`MAX_LINE`] bytes is emitted as it is.
//! - Back-pressure: a write is answered once each of its messages was accepted by the sink.
//!   If the sink still refuses one after `queue_wait` (one deadline per write), the write
//!   fails with **EAGAIN** (or, if earlier lines of it were taken, returns the short count
//!   up to the end of the last line taken); a partial line refused at close makes close(2)
//!   fail with EAGAIN. Never a silent success: refused messages count as `drops`, their bytes
//!   as `refused_bytes`, and a warning is logged at most once a second per trigger.
//! - Bounds per trigger ([`TriggerLimits`]): at most `max_open` open handles (an open past
//!   it fails with **ENFILE**, counted as `refused_opens`), and at most `partial_bytes` of
//!   partial lines over all its handles (a write that would pass it fails with **ENOSPC**,
//!   its bytes counted as `refused_bytes`).
//! - Reading returns the last reply (bounded by `reply_limit`); `stat` shows a regular file
//!   whose size is the reply's length.
//! - Allowed: `mkdir`, `rmdir` of an empty directory, `rename` of trigger files and
//!   directories (never replacing: EEXIST if the target exists), `chmod`/`chown` of trigger
//!   files and directories, truncation of a trigger file to size 0 (what O_TRUNC asks), and
//!   setting timestamps. Runtime changes are persisted in `STATE_DIR/fs-state.json` and
//!   survive [`TriggerFs::update`] and a new mount with the same state directory. A persisted
//!   chmod/chown yields to the config once the config's own mode or owner changes.
//! - Refused with **EPERM**: creating files (`open(O_CREAT)` of an unknown name, `mknod`),
//!   `unlink`, `symlink`, `link`, truncation to a size other than 0. Extended attributes:
//!   ENOSYS. A write through a handle whose trigger was removed by a reload: ESTALE (it
//!   works again if a later reload brings the same `file` key back).
//! - Directories that hold no trigger and were not made or changed at runtime vanish at the
//!   next reload; a reload that removes a trigger makes its file disappear at once (the
//!   kernel's cached entry is invalidated) and forgets that trigger's runtime changes.
//! - [`MessageSink::offer`] must not call [`TriggerFs::update`] (it runs on a FUSE thread,
//!   and the kernel invalidations that `update` sends may wait for FUSE threads).

mod adopt;
mod delivery;
mod fs;
mod handover;
mod mount;
mod state;
mod tree;
mod trigger;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, SessionACL};

pub use delivery::MAX_LINE;
pub use handover::Resent;
pub use state::STATE_FILE;
pub use tree::check_trigger_path;

use delivery::{write, Deliverer, Triggers};
use fs::{FuseFs, Shared};
use handover::SessionFile;
use state::StateFile;
use tree::{Inodes, Tree};

/// How writes to a trigger file are cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// One message per write(2), payload = the bytes written.
    #[default]
    Write,
    /// One message per line, payload = the line without its `\n`.
    Line,
}

impl std::str::FromStr for Split {
    type Err = String;

    /// Parses the config's `split` value: `"write"` or `"line"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "write" => Ok(Split::Write),
            "line" => Ok(Split::Line),
            other => Err(format!(
                "split must be \"write\" or \"line\", not {other:?}"
            )),
        }
    }
}

/// One configured trigger file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// Path relative to the mount ("dir/name"); also the trigger's key, stable across `mv`.
    pub file: String,
    pub split: Split,
    /// Permission bits (e.g. 0o620).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub limits: TriggerLimits,
}

/// What one trigger's writers may make the filesystem hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerLimits {
    /// Open handles at once.
    pub max_open: usize,
    /// Bytes of partial lines over all open handles (`split = "line"`).
    pub partial_bytes: usize,
    /// How long a write waits for the sink; `None`: the mount's `queue_wait`.
    pub queue_wait: Option<Duration>,
}

impl Default for TriggerLimits {
    /// 64 handles, 16 MiB of partial lines, the mount's wait.
    fn default() -> Self {
        TriggerLimits {
            max_open: 64,
            partial_bytes: 16 << 20,
            queue_wait: None,
        }
    }
}

/// One event made by a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The spec's `file` key (not the current path: it does not change with `mv`).
    pub trigger: Arc<str>,
    pub payload: Vec<u8>,
    /// Process and user that wrote (as reported by the kernel).
    pub pid: u32,
    pub uid: u32,
}

/// Where messages go. `offer` is called on a FUSE thread: it must return quickly when there
/// is room, may wait up to `wait` when the queue is full, and returns whether it accepted the
/// message. A refused message is counted as dropped and logged by the filesystem.
pub trait MessageSink: Send + Sync + 'static {
    fn offer(&self, msg: Message, wait: Duration) -> bool;

    /// Asked before a namespace change is applied to the tree, on a FUSE thread (no tree
    /// lock held). `None`: the tree applies it as usual. `Some(Ok(()))`: it was applied
    /// elsewhere (the owner of the specs will update the tree); a mkdir still makes the
    /// directory here. `Some(Err(errno))`: refused with that errno, nothing changes.
    fn namespace(&self, _change: &NamespaceChange) -> Option<Result<(), i32>> {
        None
    }
}

/// A namespace change asked for in the mount, by paths relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceChange {
    Mkdir { path: String },
    Rename { from: String, to: String },
    Chmod { path: String, mode: u32 },
}

/// How and where to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// Directory of the state file ([`STATE_FILE`]); created if missing.
    pub state_dir: PathBuf,
    /// FUSE threads (at least 1). The kernel wakes idle threads in FIFO order, so every
    /// thread beyond what is needed makes each request land on a colder thread; a second
    /// thread keeps lookups and stats answered while a write waits for the queue.
    pub threads: usize,
    /// Longest time one write waits for the sink before its messages count as dropped.
    pub queue_wait: Duration,
    /// Longest reply kept per trigger (longer replies are cut).
    pub reply_limit: usize,
    /// The session file: what a successor process on the same FUSE connection needs (inode
    /// numbers, and the open handles when handing over). Its place should not outlive the
    /// connection (under /run).
    pub session_file: PathBuf,
    /// Test hook: an adoption behaves as on a kernel without `FUSE_NOTIFY_RESEND` (< 6.9).
    pub simulate_no_resend: bool,
}

impl MountOptions {
    /// Defaults: 2 threads, 1 s queue wait, 64 KiB replies.
    /// The session file is `fs-session.json` in the state directory.
    pub fn new(mountpoint: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        MountOptions {
            mountpoint: mountpoint.into(),
            session_file: state_dir.join("fs-session.json"),
            state_dir,
            threads: 2,
            queue_wait: Duration::from_secs(1),
            reply_limit: 64 * 1024,
            simulate_no_resend: false,
        }
    }
}

/// Counters of one trigger since it was first configured in this mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerStats {
    pub trigger: String,
    /// write(2) calls and their bytes.
    pub writes: u64,
    pub bytes: u64,
    /// Messages accepted by the sink, and messages it refused (dropped).
    pub events: u64,
    pub drops: u64,
    /// Bytes of writes that failed (EAGAIN, ENOSPC) or were cut short, and of partial lines
    /// refused at close.
    pub refused_bytes: u64,
    /// Opens refused past `max_open` (ENFILE).
    pub refused_opens: u64,
    /// Open handles now, and the bytes of partial lines they hold.
    pub open: u64,
    pub partial_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("trigger file {file:?}: {reason}")]
    InvalidSpec { file: String, reason: String },
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mount on {path}: {source}")]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unmount of {path}: {source}")]
    Unmount {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The inherited connection could not be taken over; it was aborted (its writers get an
    /// error, never a hang) and the place can be mounted again.
    #[error("taking over the FUSE connection on {path}: {reason}")]
    Adopt { path: PathBuf, reason: String },
}

/// A mounted trigger filesystem. Dropping it unmounts (lazily if files are still open).
pub struct TriggerFs {
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    notifier: Notifier,
    mountpoint: PathBuf,
    /// The connection's /dev/fuse descriptor (a duplicate, close-on-exec): what a successor
    /// takes over (systemd's fd store, `execve`).
    device: std::os::fd::OwnedFd,
}

impl TriggerFs {
    /// Mounts the tree for `specs` (plus the runtime changes kept in the state directory).
    pub fn mount(
        opts: MountOptions,
        specs: Vec<TriggerSpec>,
        sink: Arc<dyn MessageSink>,
    ) -> Result<Self, FsError> {
        let mount_err = |source| FsError::Mount {
            path: opts.mountpoint.clone(),
            source,
        };
        let shared = build_shared(&opts, &specs, sink, Inodes::default(), false)?;
        mount::prepare_mountpoint(&opts.mountpoint).map_err(mount_err)?;
        // Unmounting later must name the same place even if the working directory changed.
        let mountpoint = opts.mountpoint.canonicalize().map_err(mount_err)?;
        let mut config = fuse_config(opts.threads);
        config.mount_options = vec![
            MountOption::FSName("triggerd".into()),
            MountOption::Subtype("triggerd".into()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::RW,
        ];
        let session =
            fuser::Session::new(FuseFs(shared.clone()), &mountpoint, &config).map_err(mount_err)?;
        let device = std::os::fd::AsFd::as_fd(&session)
            .try_clone_to_owned()
            .map_err(mount_err)?;
        let notifier = session.notifier();
        let session = session.spawn().map_err(mount_err)?;
        Ok(TriggerFs {
            shared,
            session: Some(session),
            notifier,
            mountpoint,
            device,
        })
    }

    /// Applies a reload: the tree follows `specs` without remounting. Open handles keep
    /// writing into their trigger (by key); runtime changes are kept. On error nothing changes.
    pub fn update(&self, specs: Vec<TriggerSpec>) -> Result<(), FsError> {
        let (stale_entries, stale_inodes) = {
            let mut tree = write(&self.shared.tree);
            let (new, warnings) = Tree::build(&specs, &tree.to_state(), Some(&tree))?;
            for w in &warnings {
                tracing::warn!("{w}");
            }
            let stale = tree.stale_against(&new);
            *tree = new;
            self.shared.triggers.replace(&wanted(&specs));
            self.shared.persist(&tree);
            stale
        };
        // Outside the tree lock: the kernel may hold a directory lock while it waits for a
        // FUSE thread that needs the tree.
        for entry in stale_entries {
            let r = self
                .notifier
                .inval_entry(INodeNo(entry.parent), entry.name.as_ref());
            if let Err(e) = r {
                tracing::debug!("inval_entry {}: {e}", entry.name);
            }
        }
        for ino in stale_inodes {
            if let Err(e) = self.notifier.inval_inode(INodeNo(ino), 0, 0) {
                tracing::debug!("inval_inode {ino}: {e}");
            }
        }
        Ok(())
    }

    /// Sets what reading `trigger`'s file returns (cut to `reply_limit`). Unknown keys are
    /// ignored.
    pub fn set_reply(&self, trigger: &str, reply: &[u8]) {
        if let Some(t) = self.shared.triggers.get(trigger) {
            t.set_reply(&reply[..reply.len().min(self.shared.reply_limit)]);
        }
    }

    /// Per-trigger counters, sorted by key.
    pub fn stats(&self) -> Vec<TriggerStats> {
        self.shared.triggers.stats()
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &std::path::Path {
        &self.mountpoint
    }

    /// Unmounts. If files are still open the mount is detached lazily and its threads serve
    /// those files until they are closed.
    pub fn unmount(mut self) -> Result<(), FsError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), FsError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let err = |source| FsError::Unmount {
            path: self.mountpoint.clone(),
            source,
        };
        // The connection ends with the mount: nothing is left to hand over.
        self.shared.session.remove();
        match mount::unmount(&self.mountpoint).map_err(err)? {
            mount::Unmounted::Clean | mount::Unmounted::Already => session.join().map_err(err),
            mount::Unmounted::Lazily => {
                tracing::warn!(
                    path = %self.mountpoint.display(),
                    "files still open: mount detached lazily"
                );
                drop(session);
                Ok(())
            }
        }
    }
}

impl Drop for TriggerFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::error!("{e}");
        }
    }
}

/// The shared half of a mount: the tree for `specs` (with `inodes` kept), the live triggers,
/// the state and session files written.
fn build_shared(
    opts: &MountOptions,
    specs: &[TriggerSpec],
    sink: Arc<dyn MessageSink>,
    inodes: Inodes,
    adopted: bool,
) -> Result<Arc<Shared>, FsError> {
    let state_file = StateFile::new(&opts.state_dir);
    let state = state_file.load()?;
    let (tree, warnings) = Tree::build_numbered(specs, &state, inodes)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // Handles are never reused on a connection, even across a crash that lost the count:
    // start past the wall clock's nanoseconds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let shared = Arc::new(Shared {
        tree: RwLock::new(tree),
        triggers: Triggers::default(),
        handles: RwLock::new(HashMap::new()),
        next_fh: AtomicU64::new(now),
        deliverer: Deliverer {
            sink,
            queue_wait: opts.queue_wait,
            epoch: Instant::now(),
        },
        state_file,
        reply_limit: opts.reply_limit,
        gate: Default::default(),
        session: SessionFile::new(opts.session_file.clone()),
        adopted,
    });
    shared.triggers.replace(&wanted(specs));
    let tree = delivery::read(&shared.tree);
    if tree.to_state() != state {
        shared.persist(&tree);
    } else {
        shared.save_session(&tree, Vec::new());
    }
    drop(tree);
    Ok(shared)
}

/// Session settings shared by a mount and an adoption. One device fd for every thread
/// (no `clone_fd`): a request a thread had read when the process died stays on the device
/// the successor inherits, so `FUSE_NOTIFY_RESEND` brings it back; a cloned fd closed with
/// the process would fail such requests with ECONNABORTED.
fn fuse_config(threads: usize) -> Config {
    let mut config = Config::default();
    config.acl = SessionACL::All;
    config.n_threads = Some(threads.max(1));
    config.clone_fd = false;
    config
}

fn wanted(specs: &[TriggerSpec]) -> Vec<(Arc<str>, Split, TriggerLimits)> {
    specs
        .iter()
        .map(|s| (Arc::from(s.file.as_str()), s.split, s.limits))
        .collect()
}

#[cfg(test)]
mod tests {
    /// The daemon shares the handle between its reload path and its control socket.
    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::TriggerFs>();
        shared::<super::TriggerStats>();
    }

    #[test]
    fn split_parses_the_config_words_only() {
        assert_eq!("line".parse(), Ok(super::Split::Line));
        assert_eq!("write".parse(), Ok(super::Split::Write));
        assert!("Line".parse::<super::Split>().is_err());
    }
}
