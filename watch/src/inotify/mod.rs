//! The inotify backend, for specs fanotify refuses (overlayfs, a btrfs subvolume's tree):
//! one inotify instance, a watch per watched object and, for a recursive spec, per directory
//! of its tree on the root's filesystem. It yields the same [`WatchEvent`]s as [`Watcher`]:
//! spec id, path in the spec's spelling, fanotify kind bits; `pid` is 0, since inotify does
//! not say who caused an event.
//!
//! A directory that appears in a tree gets its watch at once and is then listed: entries
//! already in it were made before the watch landed, and each is reported once (`create`, and
//! `close_write` for a regular file nobody has open for writing any more: see `probe`) at the
//! next point where the queue is drained, unless a real event for it came first. A queue
//! overflow is reported like fanotify's (an `OVERFLOW` event) and the trees are walked again
//! for directories whose creation was lost. When `fs.inotify.max_user_watches` runs out,
//! the directories left without a watch are counted per spec and reported by `set_specs`.
//!
//! [`Watcher`]: crate::Watcher

mod probe;
mod record;
mod scan;
mod tree;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::error::{MarkError, WatchError};
use crate::kinds::EventMask;
use crate::marks::{MarkScope, MarkSpec};
use crate::watcher::{read_all, Batches, WatchEvent, READ_BUFFER_LEN};
pub use record::inotify_lacks;
use tree::{Node, SpecEntry, Tree};

/// Bits every watch carries besides the asked kinds: how trees follow their directories and
/// how a spec notices its object went away.
const BOOKKEEPING: u32 = libc::IN_CREATE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// An entry found by listing a new directory, reported at the next drain unless real
/// events covered it first.
#[derive(Debug, Default)]
struct Found {
    is_dir: bool,
    /// Kinds already reported for it by real events since it was found.
    seen: EventMask,
}

/// The inotify backend, for specs fanotify refuses (overlayfs and other filesystems without
/// file handles): one inotify instance whose watches follow each spec's directory tree,
/// yielding the same [`WatchEvent`]s as a [`Watcher`](crate::Watcher). It has no
/// `open_exec` or permission kinds.
#[derive(Debug)]
pub struct InotifyWatcher {
    fd: Inotify,
    tree: Tree,
    wanted: Vec<MarkSpec>,
    /// Asked kinds of every spec plus `BOOKKEEPING`: one mask for every watch.
    mask: u32,
    found: HashMap<(i32, OsString), Found>,
    /// Directories moved out of a watched directory, by cookie, until their `moved_to`.
    moved: HashMap<u32, i32>,
    /// Kinds reported for found entries at the last drain: a real event of the same kind read
    /// before `marker`'s is the one the report stood for (it was queued before the probe).
    reported: HashMap<(i32, OsString), EventMask>,
    /// An unlinked file watched for `IN_ATTRIB`, touched after each report: its event marks
    /// the point in the queue after which events on reported entries are new ones.
    marker: Option<(OwnedFd, i32)>,
    buf: Vec<u8>,
    overflows: u64,
    malformed: u64,
    refused: u64,
    stale: bool,
    rebuild: bool,
    resync: bool,
}

impl InotifyWatcher {
    /// Creates the instance (non-blocking, close-on-exec).
    pub fn new() -> Result<Self, WatchError> {
        let fd =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|errno| {
                WatchError::Init {
                    what: "inotify_init1",
                    errno,
                }
            })?;
        let marker = scan::marker(&fd);
        Ok(Self {
            marker,
            reported: HashMap::new(),
            fd,
            tree: Tree::default(),
            wanted: Vec::new(),
            mask: 0,
            found: HashMap::new(),
            moved: HashMap::new(),
            buf: vec![0; READ_BUFFER_LEN],
            overflows: 0,
            malformed: 0,
            refused: 0,
            stale: false,
            rebuild: false,
            resync: false,
        })
    }

    /// Watches exactly `desired` (the full set, again on every reload or retry). Unchanged
    /// specs keep their watches (the kernel hands back the same descriptor for an object
    /// already watched, so nothing is lost while the table is rebuilt). Returns one error
    /// per spec not fully watched: its path cannot be watched (yet), inotify lacks a kind it
    /// asks for (`is_permanent`), or the watch limit left directories of its tree unwatched.
    pub fn set_specs(&mut self, desired: &[MarkSpec]) -> Vec<MarkError> {
        let mask = desired
            .iter()
            .fold(BOOKKEEPING, |m, s| m | record::to_inotify(s.mask));
        if desired != self.wanted.as_slice() || mask != self.mask || self.rebuild {
            self.rebuild_for(desired, mask);
        } else {
            self.retry();
        }
        self.errors()
    }

    fn rebuild_for(&mut self, desired: &[MarkSpec], mask: u32) {
        let old = std::mem::take(&mut self.tree);
        self.mask = mask;
        self.wanted = desired.to_vec();
        self.rebuild = false;
        for spec in desired {
            let entry = SpecEntry {
                spec: spec.clone(),
                root: None,
                unwatched: 0,
                failure: None,
            };
            self.tree.specs.insert(spec.id, entry);
            self.attach(spec.id);
        }
        for (wd, node) in old.nodes {
            if !self.tree.nodes.contains_key(&wd) {
                // EINVAL: the kernel dropped it already
                let _ = self.fd.rm_watch(node.wd);
            }
        }
    }

    /// Places what is missing: roots not watched yet, directories the limit left out.
    fn retry(&mut self) {
        let ids: Vec<u64> = self.tree.specs.keys().copied().collect();
        for id in ids {
            let Some(entry) = self.tree.specs.get_mut(&id) else {
                continue;
            };
            match (entry.root, entry.unwatched) {
                (None, _) => self.attach(id),
                (Some(root), n) if n > 0 => {
                    entry.unwatched = 0;
                    self.walk(root, false);
                }
                _ => {}
            }
        }
    }

    fn errors(&self) -> Vec<MarkError> {
        let mut errors = Vec::new();
        for spec in &self.wanted {
            let Some(entry) = self.tree.specs.get(&spec.id) else {
                continue;
            };
            let lacking = inotify_lacks(spec.mask);
            let error = if !lacking.is_empty() {
                WatchError::NoInotifyEquivalent {
                    kinds: lacking.to_string(),
                }
            } else if entry.root.is_none() || entry.unwatched > 0 {
                match entry.failure {
                    Some(errno) if errno != Errno::ENOSPC => {
                        WatchError::path("inotify_add_watch", &spec.path, errno)
                    }
                    _ => WatchError::WatchLimit {
                        path: spec.path.clone(),
                        limit: watch_limit(),
                        unwatched: entry.unwatched.max(1),
                    },
                }
            } else {
                continue;
            };
            errors.push(MarkError::of(spec, error));
        }
        errors
    }

    /// Watches a spec's own object and, for a recursive spec, its tree.
    fn attach(&mut self, id: u64) {
        let Some(spec) = self.tree.specs.get(&id).map(|e| e.spec.clone()) else {
            return;
        };
        if !inotify_lacks(spec.mask).is_empty() {
            return;
        }
        let stat = if spec.follow {
            nix::sys::stat::stat(&spec.path)
        } else {
            nix::sys::stat::lstat(&spec.path)
        };
        let stat = match stat {
            Ok(stat) => stat,
            Err(errno) => return self.failed(id, errno),
        };
        let mut flags = AddWatchFlags::from_bits_retain(self.mask);
        if !spec.follow {
            flags |= AddWatchFlags::IN_DONT_FOLLOW;
        }
        let wd = match self.fd.add_watch(&spec.path, flags) {
            Ok(wd) => wd,
            Err(errno) => {
                self.refused += u64::from(errno == Errno::ENOSPC);
                return self.failed(id, errno);
            }
        };
        let recursive =
            spec.scope == MarkScope::Filesystem && stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let node = self.tree.nodes.entry(wd.as_raw()).or_insert(Node {
            wd,
            parent: None,
            roots: Vec::new(),
            dev: stat.st_dev,
            in_tree: false,
        });
        node.roots.push(id);
        node.in_tree |= recursive;
        if let Some(entry) = self.tree.specs.get_mut(&id) {
            entry.root = Some(wd.as_raw());
            entry.failure = None;
        }
        if recursive {
            self.walk(wd.as_raw(), false);
        }
    }

    fn failed(&mut self, id: u64, errno: Errno) {
        if let Some(entry) = self.tree.specs.get_mut(&id) {
            entry.failure = Some(errno);
        }
    }

    /// Reads everything available without blocking and appends the events the specs asked
    /// for; `Ok(0)` means the queue is empty. Entries found in new directories are
    /// appended when the queue is found empty.
    pub fn read_events(&mut self, out: &mut Vec<WatchEvent>) -> Result<usize, WatchError> {
        read_all(self, out)
    }

    /// True (once) after a spec's object was deleted or moved: call `set_specs` again.
    pub fn marks_stale(&mut self) -> bool {
        std::mem::take(&mut self.stale)
    }

    /// Queue overflows seen (each also returned as an `OVERFLOW` event).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Watches refused because `fs.inotify.max_user_watches` was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Watches held now.
    pub fn watches(&self) -> usize {
        self.tree.nodes.len()
    }

    /// Records skipped because they were malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// `fs.inotify.max_user_watches`, for messages (0 if unreadable).
fn watch_limit() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Records are turned into events here; entries the listings found are reported at each
/// drain (`scan.rs`).
impl Batches for InotifyWatcher {
    const READ: &'static str = "read(inotify)";

    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn process(&mut self, buf: &[u8], out: &mut Vec<WatchEvent>) {
        for event in record::parse(buf) {
            let Ok(event) = event else {
                self.malformed += 1;
                continue;
            };
            let mask = event.mask;
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.overflows += 1;
                self.resync = true;
                out.push(WatchEvent::overflow());
                continue;
            }
            let wd = event.wd;
            if self.marker.as_ref().is_some_and(|(_, m)| *m == wd) {
                self.reported.clear();
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                if let Some(node) = self.tree.remove(wd) {
                    for id in &node.roots {
                        if let Some(entry) = self.tree.specs.get_mut(id) {
                            entry.root = None;
                        }
                    }
                    if !node.roots.is_empty() {
                        self.mark_stale();
                    }
                }
                continue;
            }
            let Some(node) = self.tree.nodes.get(&wd) else {
                continue;
            };
            let (in_tree, is_root) = (node.in_tree, !node.roots.is_empty());
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 && is_root {
                self.mark_stale();
            }
            let mut kinds = record::from_inotify(mask);
            if let (Some(name), false) = (event.name, self.reported.is_empty()) {
                let key = (wd, OsStr::from_bytes(name).to_os_string());
                if let Some(done) = self.reported.get_mut(&key) {
                    let again = kinds & *done;
                    kinds = kinds.difference(again.difference(EventMask::ONDIR));
                    *done = done.difference(again);
                }
            }
            if let Some(name) = event.name {
                self.follow_entry(wd, name, mask, event.cookie, kinds, in_tree);
            }
            self.tree.route(wd, event.name, kinds, out);
        }
    }

    fn drained(&mut self, out: &mut Vec<WatchEvent>) {
        self.report_found(out);
    }
}

impl AsFd for InotifyWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
