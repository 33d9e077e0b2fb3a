//! The permission group: a `FAN_CLASS_CONTENT` group (fd-based, since FID groups cannot take
//! permission events) whose requests block the accessing process until answered. Invariant:
//! every request is answered exactly once — by `allow`/`deny`, or ALLOW when dropped — and
//! the daemon's own accesses are allowed inside `read_requests`, so no process (the daemon
//! least of all) can stay blocked forever.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags};

use crate::error::{MarkError, WatchError};
use crate::kinds::EventMask;
use crate::marks::{MarkPolicy, MarkScope, MarkSpec, MarkTable, MarkedObject};
use crate::record::parse_events_buffer;
use crate::sys;

const READ_BUFFER_LEN: usize = 64 * 1024;

/// The permission group.
#[derive(Debug)]
pub struct PermissionGate {
    group: Arc<OwnedFd>,
    /// The same group fd, for marking through nix.
    marker: Fanotify,
    marks: MarkTable,
    routes: Routes,
    own_pid: i32,
    exempt_descendants: bool,
    buf: Vec<u8>,
    unreadable: u64,
}

/// One blocked access waiting for an answer. Dropping it answers ALLOW.
#[derive(Debug)]
pub struct PermissionRequest {
    /// The file's path as the kernel shows it.
    pub path: PathBuf,
    /// The permission kinds asked for (`*_PERM` bits only, never empty).
    pub mask: EventMask,
    /// The specs it concerns, by id, each with the path in that spec's spelling.
    pub specs: Vec<(u64, PathBuf)>,
    /// The process (thread group) whose access is blocked; never the daemon itself, whose
    /// own accesses (and, if set, its descendants') are allowed without being reported.
    pub pid: i32,
    group: Arc<OwnedFd>,
    /// The event fd; `None` once answered.
    fd: Option<OwnedFd>,
}

struct PermissionPolicy;

impl MarkPolicy for PermissionPolicy {
    fn kernel_mask(&self, object: &MarkedObject) -> u64 {
        let perm = object.user_mask.permission_part();
        if perm.is_empty() {
            return 0;
        }
        (perm | (object.user_mask & EventMask::FLAGS)).bits()
    }

    fn mark_ancestors(&self) -> bool {
        false
    }

    fn needs_handle(&self) -> bool {
        false
    }
}

impl PermissionGate {
    /// Creates the group (`FAN_CLASS_CONTENT`, non-blocking, close-on-exec; event fds are
    /// opened read-only and close-on-exec).
    pub fn new() -> Result<Self, WatchError> {
        let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let file_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        let marker = Fanotify::init(
            InitFlags::from_bits_retain(flags),
            EventFFlags::from_bits_retain(file_flags),
        )
        .map_err(|errno| WatchError::Init {
            what: "FAN_CLASS_CONTENT",
            errno,
        })?;
        let group = OwnedFd::from(marker);
        let shared = group.try_clone().map_err(|e| WatchError::Group {
            syscall: "dup",
            errno: io_errno(&e),
        })?;
        let marker = fanotify_from(shared);
        Ok(PermissionGate {
            group: Arc::new(group),
            marker,
            marks: MarkTable::default(),
            routes: Routes::default(),
            own_pid: std::process::id() as i32,
            exempt_descendants: false,
            buf: vec![0; READ_BUFFER_LEN],
            unreadable: 0,
        })
    }

    /// When on, requests of any descendant of this process (the daemon's actions and what
    /// they start) are also allowed inside `read_requests`, so a gated action can never wait
    /// on itself. A process that left the tree (double fork, reparented) is gated again.
    pub fn set_exempt_descendants(&mut self, on: bool) {
        self.exempt_descendants = on;
    }

    fn is_exempt(&self, pid: i32) -> bool {
        pid == self.own_pid || (self.exempt_descendants && sys::is_descendant(pid, self.own_pid))
    }

    /// Same diff semantics as `Watcher::set_marks`; only the `*_PERM` bits (with `ondir` and
    /// `event_on_child`) of each spec are marked here.
    pub fn set_marks(&mut self, desired: &[MarkSpec]) -> Result<Vec<MarkError>, WatchError> {
        let (errors, objects) = self.marks.apply(&self.marker, desired, &PermissionPolicy);
        let mut routes = Routes::default();
        for (spec, object) in desired.iter().zip(objects) {
            if let Some(object) = object {
                let table = match spec.scope {
                    MarkScope::Inode => &mut routes.objects,
                    MarkScope::Filesystem => &mut routes.trees,
                };
                table.entry(object.dev_ino).or_default().push(spec.clone());
            }
        }
        self.routes = routes;
        Ok(errors)
    }

    /// Reads every pending request without blocking and appends those of other processes;
    /// the daemon's own (and, if set, its descendants') are allowed at once, never returned.
    /// `Ok(0)` when none was pending.
    pub fn read_requests(&mut self, out: &mut Vec<PermissionRequest>) -> Result<usize, WatchError> {
        let start = out.len();
        loop {
            let n = match nix::unistd::read(self.group.as_fd(), &mut self.buf) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => n.min(self.buf.len()),
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(WatchError::Group {
                        syscall: "read",
                        errno,
                    })
                }
            };
            for record in parse_events_buffer(&self.buf[..n]) {
                let Ok(event) = record else {
                    // metadata unusable: the fds of the rest of this buffer cannot be found
                    self.unreadable += 1;
                    break;
                };
                let Some(fd) = sys::adopt_event_fd(event.fd) else {
                    continue; // overflow or other fd-less record
                };
                let request = PermissionRequest {
                    path: PathBuf::new(),
                    mask: EventMask::from_bits_truncate(event.mask).permission_part(),
                    specs: Vec::new(),
                    pid: event.pid,
                    group: Arc::clone(&self.group),
                    fd: Some(fd),
                };
                if request.mask.is_empty() || self.is_exempt(event.pid) {
                    request.allow();
                    continue;
                }
                let mut request = request;
                match request.fd.as_ref().map(|fd| sys::path_of_fd(fd.as_fd())) {
                    Some(Ok(path)) => request.path = path,
                    _ => self.unreadable += 1,
                }
                if let Some(fd) = request.fd.as_ref() {
                    request.specs = self.routes.find(fd.as_fd(), &request.path, request.mask);
                }
                if request.specs.is_empty() {
                    request.allow();
                    continue;
                }
                out.push(request);
            }
        }
        Ok(out.len() - start)
    }

    /// Requests whose record or path could not be read (answered or returned with no path).
    pub fn unreadable(&self) -> u64 {
        self.unreadable
    }
}

/// Permission specs by the identity ((st_dev, st_ino)) of the object they marked: the
/// gate's events carry an fd, not a handle, so the opened file, its directory and (for
/// trees) its ancestors are found by `stat`, never by comparing path text.
#[derive(Debug, Default)]
struct Routes {
    objects: HashMap<(u64, u64), Vec<MarkSpec>>,
    trees: HashMap<(u64, u64), Vec<MarkSpec>>,
}

impl Routes {
    /// The specs the access to `file` (at `path`) concerns, each with the path spelled as
    /// the spec spells it.
    fn find(&self, file: BorrowedFd<'_>, path: &Path, mask: EventMask) -> Vec<(u64, PathBuf)> {
        let mut found = Vec::new();
        let mut push = |spec: &MarkSpec, path: PathBuf| {
            if spec.mask.intersects(mask) {
                found.push((spec.id, path));
            }
        };
        let identity = |stat: nix::sys::stat::FileStat| (stat.st_dev, stat.st_ino);
        let own = nix::sys::stat::fstat(file).ok().map(identity);
        if let Some(specs) = own.and_then(|own| self.objects.get(&own)) {
            specs.iter().for_each(|s| push(s, s.path.clone()));
        }
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let dir = nix::sys::stat::stat(parent).ok().map(identity);
            for spec in dir
                .and_then(|dir| self.objects.get(&dir))
                .into_iter()
                .flatten()
            {
                if spec.mask.contains(EventMask::EVENT_ON_CHILD) {
                    push(spec, spec.path.join(name));
                }
            }
        }
        if !self.trees.is_empty() {
            for at in path.ancestors() {
                let id = if at == path {
                    own
                } else {
                    nix::sys::stat::stat(at).ok().map(identity)
                };
                if let Some(specs) = id.and_then(|id| self.trees.get(&id)) {
                    let below = path.strip_prefix(at).unwrap_or(Path::new(""));
                    for spec in specs {
                        push(spec, join_below(&spec.path, below));
                    }
                }
            }
        }
        found
    }
}

/// `root` with `below` appended (no trailing separator when `below` is empty).
pub(crate) fn join_below(root: &Path, below: &Path) -> PathBuf {
    if below.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(below)
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn fanotify_from(fd: OwnedFd) -> Fanotify {
    // SAFETY: `fd` is a dup of a fanotify group fd that this value will own alone.
    unsafe { Fanotify::from_owned_fd(fd) }
}

impl PermissionRequest {
    /// The file being accessed, opened read-only by the kernel for this request (reading it
    /// does not trigger the gate); valid until the request is answered.
    pub fn file(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Lets the access proceed.
    pub fn allow(mut self) {
        // refused only for a request the kernel no longer holds: nothing is left blocked
        let _ = self.answer(true);
    }

    /// Makes the access fail with EPERM.
    pub fn deny(mut self) {
        let _ = self.answer(false);
    }

    /// Answers and reports whether the kernel took the answer (it refuses answers to
    /// requests it no longer holds, e.g. after the group was closed).
    pub fn respond(mut self, allow: bool) -> Result<(), WatchError> {
        self.answer(allow)
    }

    fn answer(&mut self, allow: bool) -> Result<(), WatchError> {
        let Some(fd) = self.fd.take() else {
            return Ok(());
        };
        let result =
            sys::write_response(self.group.as_fd(), fd.as_raw_fd(), allow).map_err(|errno| {
                WatchError::Group {
                    syscall: "write(fanotify_response)",
                    errno,
                }
            });
        drop(fd);
        result
    }
}

impl Drop for PermissionRequest {
    fn drop(&mut self) {
        let _ = self.answer(true);
    }
}

impl AsFd for PermissionGate {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

impl AsRawFd for PermissionGate {
    fn as_raw_fd(&self) -> RawFd {
        self.group.as_raw_fd()
    }
}
