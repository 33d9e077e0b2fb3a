//! The notification group: a FID-mode fanotify group (`FAN_REPORT_DFID_NAME|FAN_REPORT_FID`)
//! that reports every notification kind, including create/delete/move, with the directory
//! handle and entry name; its marks; and the read loop that turns records into
//! [`WatchEvent`]s with absolute paths, keeping the directory-path cache right as it goes.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags};

use crate::error::{MarkError, WatchError};
use crate::handover::SessionFile;
use crate::kinds::EventMask;
use crate::marks::{MarkPolicy, MarkScope, MarkSpec, MarkTable, MarkedObject, SpecObject};
use crate::record::{parse_events_buffer, FileId, ParsedEvent};
use crate::resolve::{join_name, Resolver};
use crate::route::{Route, Router};

/// Bytes per read: many records per system call (the kernel returns whole records only).
pub const READ_BUFFER_LEN: usize = 256 * 1024;
/// `read_events` returns after appending this many events, so one call stays short.
const MAX_BATCH: usize = 64 * 1024;

/// One event for one spec, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The id of the spec it belongs to; `None` for an overflow (it concerns every spec).
    pub spec: Option<u64>,
    /// Absolute path in the spec's spelling (the spec's path, or a path below it), from raw
    /// bytes (invalid UTF-8 preserved); empty for an overflow.
    pub path: PathBuf,
    /// Kind bits that the spec asked for, plus `ONDIR` when the object is a directory.
    pub mask: EventMask,
    /// The process (thread group) that caused the event; 0 for an overflow.
    pub pid: i32,
}

impl WatchEvent {
    /// The queue-overflow marker.
    pub(crate) fn overflow() -> Self {
        WatchEvent {
            spec: None,
            path: PathBuf::new(),
            mask: EventMask::OVERFLOW,
            pid: 0,
        }
    }

    /// Whether this is the queue-overflow marker (events were lost before it).
    pub fn is_overflow(&self) -> bool {
        self.mask.contains(EventMask::OVERFLOW)
    }
}

/// The notification group.
#[derive(Debug)]
pub struct Watcher {
    group: Fanotify,
    marks: MarkTable,
    router: Router,
    /// Routers replaced by `set_marks` since the queue was last drained: events queued before
    /// a mark changed are routed by the specs of their time. Emptied when a read finds the
    /// queue empty, since a removed mark can queue nothing more.
    retired: Vec<Router>,
    resolver: Resolver,
    buf: Vec<u8>,
    overflows: u64,
    unresolved: u64,
    malformed: u64,
    marks_stale: bool,
    /// Where the marks are written for a successor (see `handover`).
    session: Option<SessionFile>,
}

/// Kernel masks of the notification group: the asked kinds and flags, plus bookkeeping bits
/// that let the path cache follow directory renames and deletions.
struct NotifyPolicy;

const DIR_RENAMES: u64 = libc::FAN_MOVED_FROM | libc::FAN_MOVE_SELF | libc::FAN_ONDIR;

impl MarkPolicy for NotifyPolicy {
    fn kernel_mask(&self, object: &MarkedObject) -> u64 {
        let user = object.user_mask;
        let asked =
            user.notification_part().difference(EventMask::OVERFLOW) | (user & EventMask::FLAGS);
        let bookkeeping = match (object.scope, object.is_dir, user.is_empty()) {
            // a mount mark carries path events only: no renames, no deletions
            _ if object.mount_only => 0,
            // an ancestor: only its own renames matter
            (_, _, true) => libc::FAN_MOVE_SELF | libc::FAN_ONDIR,
            (MarkScope::Filesystem, _, _) => DIR_RENAMES,
            (MarkScope::Inode, true, _) => DIR_RENAMES | libc::FAN_DELETE_SELF,
            // its moves keep the path reported for its delete_self right
            (MarkScope::Inode, false, _) => libc::FAN_MOVE_SELF | libc::FAN_DELETE_SELF,
        };
        asked.bits() | bookkeeping
    }

    fn mark_ancestors(&self) -> bool {
        true
    }

    fn needs_handle(&self) -> bool {
        true
    }
}

impl Watcher {
    /// Creates the group (`FAN_CLASS_NOTIF`, FID + DFID_NAME, non-blocking, close-on-exec;
    /// the kernel's `max_queued_events` applies, so overflow can happen and is reported).
    pub fn new() -> Result<Self, WatchError> {
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_REPORT_DFID_NAME
            | libc::FAN_REPORT_FID;
        let file_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        let group = Fanotify::init(
            InitFlags::from_bits_retain(flags),
            EventFFlags::from_bits_retain(file_flags),
        )
        .map_err(|errno| WatchError::Init {
            what: "FAN_CLASS_NOTIF|FAN_REPORT_DFID_NAME|FAN_REPORT_FID",
            errno,
        })?;
        Ok(Watcher::with_group(group, MarkTable::default(), None))
    }

    /// A watcher over `group`, whose kernel marks `marks` describes.
    pub(crate) fn with_group(
        group: Fanotify,
        marks: MarkTable,
        session: Option<SessionFile>,
    ) -> Self {
        Watcher {
            group,
            marks,
            router: Router::default(),
            retired: Vec::new(),
            resolver: Resolver::default(),
            buf: vec![0; READ_BUFFER_LEN],
            overflows: 0,
            unresolved: 0,
            malformed: 0,
            marks_stale: false,
            session,
        }
    }

    pub(crate) fn mark_table(&self) -> &MarkTable {
        &self.marks
    }

    pub(crate) fn set_session(&mut self, session: SessionFile) {
        self.session = Some(session);
    }

    /// Makes the kernel marks equal to the union of `desired`, diffing against what is marked
    /// now: only changed bits are added or removed, an object whose mask is unchanged is not
    /// touched (no event is lost across a reload). Objects are keyed by what the kernel marks
    /// ((st_dev, st_ino) for inodes, the fsid for filesystems), so specs on one object OR
    /// their masks. Each spec's path is resolved once (symbolic links followed unless
    /// `follow` is off) and its events are found by the identity of the object it named, so
    /// any spelling of a path (a link, a bind mount) works. Returns one [`MarkError`] per
    /// spec that failed and applies the rest.
    pub fn set_marks(&mut self, desired: &[MarkSpec]) -> Result<Vec<MarkError>, WatchError> {
        let (errors, objects) = self.marks.apply(&self.group, desired, &NotifyPolicy);
        if let Some(session) = &self.session {
            session.save(&self.marks);
        }
        // Queued events on a filesystem no longer marked still resolve until the drain.
        let mut mounts = self.marked_mounts();
        for (fsid, fd) in self.resolver.take_mounts() {
            mounts.entry(fsid).or_insert(fd);
        }
        self.resolver.set_mounts(mounts);
        let router = self.build_router(desired, &objects);
        let previous = std::mem::replace(&mut self.router, router);
        self.retired.push(previous);
        Ok(errors)
    }

    fn build_router(&mut self, desired: &[MarkSpec], objects: &[Option<SpecObject>]) -> Router {
        let mut router = Router::default();
        for object in self.marks.objects.values() {
            if let (MarkScope::Inode, Some((handle_type, handle))) = (object.scope, &object.handle)
            {
                router.pin(&FileId {
                    fsid: object.fsid,
                    handle_type: *handle_type,
                    handle,
                });
            }
        }
        for (spec, object) in desired.iter().zip(objects) {
            let Some(object) = object else { continue };
            let route = Route {
                id: spec.id,
                path: spec.path.clone(),
                mask: spec.mask,
            };
            let id = object.handle.as_ref().map(|(handle_type, handle)| FileId {
                fsid: object.fsid,
                handle_type: *handle_type,
                handle,
            });
            let child_dirs = EventMask::ONDIR | EventMask::EVENT_ON_CHILD;
            match (spec.scope, id) {
                (MarkScope::Inode, Some(id)) => {
                    if spec.mask.contains(child_dirs) {
                        if let Ok(dir) = self.resolver.resolve(&id) {
                            router.add_dir_children(object.fsid, dir, route.clone());
                        }
                    }
                    router.add_object(&id, route);
                }
                (MarkScope::Filesystem, id) => {
                    // the root as events will spell it: resolved through the same mount fd
                    let root = id
                        .and_then(|id| self.resolver.resolve(&id).ok())
                        .or_else(|| object.real.clone());
                    if let Some(root) = root {
                        router.add_tree(object.fsid, root, route);
                    }
                }
                (MarkScope::Inode, None) => {}
            }
        }
        router
    }

    fn marked_mounts(&self) -> HashMap<u64, OwnedFd> {
        self.marks
            .mounts
            .iter()
            .filter_map(|(fsid, fd)| Some((*fsid, fd.try_clone().ok()?)))
            .collect()
    }

    /// The queue is empty: what marks replaced before this point can have nothing left in it.
    fn drained(&mut self) {
        if !self.retired.is_empty() {
            self.retired.clear();
            let mounts = self.marked_mounts();
            self.resolver.set_mounts(mounts);
        }
    }

    /// Reads everything available without blocking and appends the events the specs asked
    /// for. Returns how many were appended; `Ok(0)` means the queue is empty (EAGAIN). After
    /// `Ok(n)` with n > 0, call again until `Ok(0)`.
    pub fn read_events(&mut self, out: &mut Vec<WatchEvent>) -> Result<usize, WatchError> {
        read_all(self, out)
    }

    /// True (once) after a marked object, or an ancestor directory of one, was moved or
    /// deleted: spec paths may now name other objects (an editor replaced a file, a tree was
    /// renamed), so the caller should call `set_marks` again with its specs. The cleared
    /// flag is set again by the next such event.
    pub fn marks_stale(&mut self) -> bool {
        std::mem::take(&mut self.marks_stale)
    }

    /// Queue overflows seen (each also returned as an `OVERFLOW` event).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Events skipped because no path could be found for them (stale handles).
    pub fn unresolved(&self) -> u64 {
        self.unresolved
    }

    /// Records skipped because they were malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn process(&mut self, buf: &[u8], out: &mut Vec<WatchEvent>) {
        for record in parse_events_buffer(buf) {
            let event = match record {
                Ok(event) if event.info_error.is_none() => event,
                _ => {
                    self.malformed += 1;
                    continue;
                }
            };
            if event.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.overflows += 1;
                // a rename may have been lost with the dropped events
                self.resolver.clear();
                out.push(WatchEvent::overflow());
                continue;
            }
            if event.mask & (libc::FAN_MOVE_SELF | libc::FAN_DELETE_SELF) != 0
                && event.subject().is_some_and(|id| self.router.is_pinned(id))
            {
                self.marks_stale = true;
            }
            self.follow_renames(&event);
            let mut routed = self.router.route(&event, &mut self.resolver, out);
            for router in self.retired.iter_mut().rev() {
                if routed.events > 0 {
                    break;
                }
                let older = router.route(&event, &mut self.resolver, out);
                routed.events += older.events;
                routed.unresolved |= older.unresolved;
            }
            if routed.events == 0 && routed.unresolved {
                self.unresolved += 1;
            }
            self.follow_deletes(&event);
        }
    }

    /// Keeps the directory cache true: a renamed directory's subtree is forgotten before the
    /// event is resolved (so its `move_self` reports where it went), and resolved again on
    /// next use.
    fn follow_renames(&mut self, event: &ParsedEvent<'_>) {
        if event.mask & libc::FAN_ONDIR == 0 {
            return;
        }
        if event.mask & libc::FAN_MOVED_FROM != 0 {
            let old = match (event.dir.as_ref(), event.name) {
                (Some(dir), Some(name)) => {
                    self.resolver.cached_dir(dir).map(|d| join_name(d, name))
                }
                _ => None,
            };
            self.forget_tree(old);
        }
        if event.mask & libc::FAN_MOVE_SELF != 0 {
            let old = event
                .subject()
                .and_then(|id| self.resolver.cached_dir(id).map(Path::to_path_buf));
            self.forget_tree(old);
        }
    }

    /// A deleted directory is forgotten after its last event was resolved.
    fn follow_deletes(&mut self, event: &ParsedEvent<'_>) {
        if event.mask & libc::FAN_ONDIR == 0 {
            return;
        }
        if event.mask & libc::FAN_DELETE_SELF != 0 {
            if let Some(id) = event.subject() {
                self.resolver.forget_dir(id);
            }
        }
    }

    fn forget_tree(&mut self, old: Option<PathBuf>) {
        match old {
            Some(old) => self.resolver.forget_tree(&old),
            // where it was is unknown, so any cached path may be below it
            None => self.resolver.clear(),
        }
    }
}

/// A non-blocking event queue read in bounded batches of whole records.
pub(crate) trait Batches: AsFd {
    const READ: &'static str;
    fn buffer(&mut self) -> &mut Vec<u8>;
    fn process(&mut self, buf: &[u8], out: &mut Vec<WatchEvent>);
    /// The queue was found empty.
    fn drained(&mut self, out: &mut Vec<WatchEvent>);
}

/// Reads until the queue is empty (`drained`) or `MAX_BATCH` events were appended; returns
/// how many were.
pub(crate) fn read_all<Q: Batches>(
    q: &mut Q,
    out: &mut Vec<WatchEvent>,
) -> Result<usize, WatchError> {
    let start = out.len();
    let mut buf = std::mem::take(q.buffer());
    let result = loop {
        if out.len() - start >= MAX_BATCH {
            break Ok(());
        }
        match nix::unistd::read(q.as_fd(), &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => {
                q.drained(out);
                break Ok(());
            }
            Ok(n) => q.process(&buf[..n.min(buf.len())], out),
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                break Err(WatchError::Group {
                    syscall: Q::READ,
                    errno,
                })
            }
        }
    };
    *q.buffer() = buf;
    result.map(|()| out.len() - start)
}

impl Batches for Watcher {
    const READ: &'static str = "read";
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
    fn process(&mut self, buf: &[u8], out: &mut Vec<WatchEvent>) {
        Watcher::process(self, buf, out);
    }
    fn drained(&mut self, _out: &mut Vec<WatchEvent>) {
        Watcher::drained(self);
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.group.as_fd().as_raw_fd()
    }
}
