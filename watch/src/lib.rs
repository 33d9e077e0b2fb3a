//! fanotify for triggerd: notification groups in FID mode (create/delete/move included) and
//! permission groups, their marks (diffed on every reload so unchanged marks are never
//! touched), the parser of the kernel's event and info records, handle to path resolution
//! with a directory cache, event kinds and their names (`FAN_*`, `IN_*`, short), overflow.
//!
//! A notification group can outlive its process ([`Watcher::adopt`], [`Watcher::keep_session`]).
//!
//! Entry points: [`Watcher`] (notifications), [`InotifyWatcher`] (the inotify backend for
//! places fanotify refuses), [`PermissionGate`] (permission requests),
//! [`parse_events`] (event expressions from configs), [`parse_events_buffer`] (the pure parser).
//!
//! How the daemon drives a [`Watcher`] (same shape for a [`PermissionGate`]):
//!
//! ```text
//! let mut watcher = Watcher::new()?;
//! for failed in watcher.set_marks(&specs)? { log + retry later }   // again on every reload
//! let fd = tokio::io::unix::AsyncFd::new(watcher)?;
//! loop {
//!     let mut guard = fd.readable_mut().await?;
//!     let n = guard.get_inner_mut().read_events(&mut batch)?;  // drains until EAGAIN
//!     if n == 0 { guard.clear_ready(); }                       // Ok(0) = queue empty
//!     dispatch(batch.drain(..));                               // match rules by path
//! }
//! ```
//!
//! Every event names the spec it belongs to (`WatchEvent::spec`), found by the identity of
//! the marked object (fsid and file handle), and is spelled as that spec spells its path: a
//! spec on a symbolic link, under a linked parent or on a bind mount sees what inotify would.
//! Recursive watches are one `MarkScope::Filesystem` mark whose events are kept when their
//! directory lies below the spec's root: a directory created later, at any depth, is covered
//! at once. An event queued before a rename of a directory that was never resolved before
//! reports the directory's new path.

#![warn(missing_docs, unreachable_pub)]

mod error;
mod expr;
mod handover;
mod inotify;
mod kinds;
mod marks;
mod permission;
mod record;
mod resolve;
mod route;
mod sys;
mod watcher;

pub use error::{MarkError, WatchError};
pub use expr::parse_events;
pub use inotify::{inotify_lacks, InotifyWatcher};
pub use kinds::EventMask;
pub use marks::{MarkScope, MarkSpec};
pub use permission::{PermissionGate, PermissionRequest};
pub use record::{parse_events_buffer, EventRecords, FileId, ParseError, ParsedEvent};
pub use watcher::{WatchEvent, Watcher, READ_BUFFER_LEN};
