//! Typed errors of the crate: every variant says what failed, on which path or system call,
//! and with which errno, so the daemon can log one line that needs no further context.

use std::path::PathBuf;

use nix::errno::Errno;

/// An error from fanotify set-up, marking, reading, resolution or event-name parsing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// `fanotify_init` failed (no CAP_SYS_ADMIN, kernel without FID support, ...).
    #[error("fanotify_init({what}) failed: {errno}")]
    Init {
        /// The call and its flags, e.g. "FAN_CLASS_CONTENT" or "inotify_init1".
        what: &'static str,
        /// Why the kernel refused.
        errno: Errno,
    },
    /// A system call on a given path failed (open, stat, statfs, fanotify_mark, ...).
    #[error("{syscall} on {path:?} failed: {errno}")]
    Path {
        /// The call that failed, e.g. "fanotify_mark(ADD)".
        syscall: &'static str,
        /// The path it was given, in the caller's spelling.
        path: PathBuf,
        /// Why the kernel refused.
        errno: Errno,
    },
    /// A system call on the fanotify group itself failed (read, write of a response).
    #[error("{syscall} on the fanotify group failed: {errno}")]
    Group {
        /// The call that failed, e.g. "read" or "write(fanotify_response)".
        syscall: &'static str,
        /// Why the kernel refused.
        errno: Errno,
    },
    /// An event expression could not be parsed; `message` says why and what is accepted.
    #[error("invalid event expression {expr:?}: {message}")]
    Events {
        /// The expression as written in the config.
        expr: String,
        /// What is wrong with it and which names are accepted.
        message: String,
    },
    /// inotify cannot report some kinds a spec asks for (`open_exec`, permission kinds).
    #[error("inotify has no equivalent of {kinds}")]
    NoInotifyEquivalent {
        /// The kinds inotify lacks, in the text form ("open_exec|open_perm").
        kinds: String,
    },
    /// `fs.inotify.max_user_watches` is used up: some directories of a spec got no watch.
    #[error(
        "inotify watch limit reached (fs.inotify.max_user_watches = {limit}): {unwatched} \
         directories at or below {path:?} are not watched"
    )]
    WatchLimit {
        /// The spec's path, in the caller's spelling.
        path: PathBuf,
        /// The current `fs.inotify.max_user_watches`.
        limit: u64,
        /// Directories of the spec left without a watch (at least 1).
        unwatched: u64,
    },
}

impl WatchError {
    pub(crate) fn path(syscall: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Self::Path {
            syscall,
            path: path.into(),
            errno,
        }
    }

    /// The errno behind this error, if it came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Init { errno, .. } | Self::Path { errno, .. } | Self::Group { errno, .. } => {
                Some(*errno)
            }
            Self::WatchLimit { .. } => Some(Errno::ENOSPC),
            Self::Events { .. } | Self::NoInotifyEquivalent { .. } => None,
        }
    }
}

/// One mark specification that could not be applied; the daemon retries it later, or
/// watches it another way when the kernel refuses fanotify there for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkError {
    /// The spec's id.
    pub spec: u64,
    /// The spec's path, in the caller's spelling.
    pub path: PathBuf,
    /// Why the mark (or watch) could not be set.
    pub error: WatchError,
}

impl MarkError {
    pub(crate) fn of(spec: &crate::MarkSpec, error: WatchError) -> Self {
        Self {
            spec: spec.id,
            path: spec.path.clone(),
            error,
        }
    }

    /// The path exists but fanotify cannot mark it on this filesystem (no file handles,
    /// as on overlayfs; or a filesystem fanotify does not support): retrying will not help,
    /// another backend (inotify) may.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            &self.error,
            WatchError::Path { syscall, errno, .. }
                if (syscall.starts_with("fanotify_mark") || *syscall == "name_to_handle_at")
                    && matches!(errno, Errno::EOPNOTSUPP | Errno::ENODEV | Errno::EXDEV)
        )
    }
}

impl MarkError {
    /// No backend can watch this spec as asked: retrying will not help.
    pub fn is_permanent(&self) -> bool {
        matches!(self.error, WatchError::NoInotifyEquivalent { .. })
    }
}

impl std::fmt::Display for MarkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot mark {:?}: {}", self.path, self.error)
    }
}

impl std::error::Error for MarkError {}
