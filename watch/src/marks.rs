//! Mark bookkeeping shared by both groups: what the kernel has marked now, keyed by the
//! object the kernel marks ((st_dev, st_ino) for inodes, the fsid for filesystems), and the
//! diff that turns it into a desired set with FAN_MARK_ADD / FAN_MARK_REMOVE of changed bits
//! only, so an object whose mask is unchanged is never touched and no event is lost.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::fanotify::{Fanotify, MarkFlags, MaskFlags};

use crate::error::{MarkError, WatchError};
use crate::kinds::EventMask;
use crate::sys;

/// What one mark covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MarkScope {
    /// The object at the path (and, with `event_on_child`, a directory's direct children).
    Inode,
    /// The whole filesystem holding the path (one `FAN_MARK_FILESYSTEM`): every directory at
    /// any depth, including ones created later; the caller filters by path.
    Filesystem,
}

/// One wanted mark: the daemon passes the full set to `set_marks` on every (re)load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarkSpec {
    /// The caller's name for the spec: every event it produces carries it.
    pub id: u64,
    /// As the caller spells it; events under it are reported in this spelling.
    pub path: PathBuf,
    /// Whether the object alone (with its direct children) or its whole filesystem is marked.
    pub scope: MarkScope,
    /// The kinds the caller wants, plus the flags `ondir` and `event_on_child`; the group
    /// keeps only its own part (notification or permission kinds).
    pub mask: EventMask,
    /// Follow a symbolic link at `path` itself, as inotify does (else the link is marked).
    pub follow: bool,
    /// Mark the mount `path` is on (`FAN_MARK_MOUNT`) instead of the object or filesystem:
    /// only changes made through this mount are reported, and only the kinds a mount mark
    /// can carry (access, modify, open, open_exec, close_write, close_nowrite); `scope`
    /// still says whether entries below the path's directories count.
    pub mount_only: bool,
}

impl MarkSpec {
    /// A spec that follows symbolic links.
    pub fn new(id: u64, path: impl Into<PathBuf>, scope: MarkScope, mask: EventMask) -> Self {
        Self {
            id,
            path: path.into(),
            scope,
            mask,
            follow: true,
            mount_only: false,
        }
    }
}

/// What a spec's path named when its mark was applied.
#[derive(Debug, Clone)]
pub(crate) struct SpecObject {
    pub fsid: u64,
    pub dev_ino: (u64, u64),
    pub handle: Option<(i32, Vec<u8>)>,
    /// The path the kernel shows for it (symbolic links resolved).
    pub real: Option<PathBuf>,
}

/// The kernel object a mark is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum MarkKey {
    Inode { dev: u64, ino: u64 },
    Filesystem { fsid: u64 },
    Mount { id: u64 },
}

/// One marked (or to-be-marked) object. No fd on it is kept once it is marked: an open fd
/// pins the dentry and would delay its `delete_self` until the fd is closed.
#[derive(Debug)]
pub(crate) struct MarkedObject {
    /// The first spec path that named it (or the ancestor's path).
    pub path: PathBuf,
    /// An O_PATH fd while the object is being (re)marked; `None` once stored.
    pub fd: Option<OwnedFd>,
    /// The object's file handle (type, bytes): how a later unmark finds the very object
    /// marked, even after its path was renamed or reused.
    pub handle: Option<(i32, Vec<u8>)>,
    pub fsid: u64,
    /// (st_dev, st_ino) of the object.
    pub dev_ino: (u64, u64),
    pub is_dir: bool,
    /// The object is a symbolic link marked as itself.
    pub is_link: bool,
    pub scope: MarkScope,
    /// Marked as its mount (`FAN_MARK_MOUNT`).
    pub mount_only: bool,
    /// The union of the masks the specs asked for (empty for bookkeeping-only ancestors).
    pub user_mask: EventMask,
    /// The bits currently applied in the kernel.
    pub kernel_mask: u64,
}

/// How a group turns an object's wanted mask into the kernel mask it applies.
pub(crate) trait MarkPolicy {
    /// Kernel mask for `object` (0 = no mark wanted).
    fn kernel_mask(&self, object: &MarkedObject) -> u64;
    /// Whether every ancestor directory of an inode-scope spec gets a bookkeeping mark.
    fn mark_ancestors(&self) -> bool;
    /// Whether events are routed by file handle, so an object without one cannot be watched.
    fn needs_handle(&self) -> bool;
}

/// The objects currently marked in one group, and one mount fd per marked filesystem.
#[derive(Debug, Default)]
pub(crate) struct MarkTable {
    pub objects: HashMap<MarkKey, MarkedObject>,
    /// By fsid: an fd on the root of the mount a marked path is on (pins nothing that can
    /// be deleted); open_by_handle_at opens handles through it.
    pub mounts: HashMap<u64, OwnedFd>,
}

impl MarkTable {
    /// Makes the kernel marks equal to `desired` (see `Watcher::set_marks`). Returns the
    /// specs that failed and, by spec index, the object each of the others marked.
    pub(crate) fn apply(
        &mut self,
        group: &Fanotify,
        desired: &[MarkSpec],
        policy: &dyn MarkPolicy,
    ) -> (Vec<MarkError>, Vec<Option<SpecObject>>) {
        let mut errors = Vec::new();
        let mut wanted: HashMap<MarkKey, MarkedObject> = HashMap::new();
        let mut specs_of: HashMap<MarkKey, Vec<usize>> = HashMap::new();
        let mut objects: Vec<Option<SpecObject>> = vec![None; desired.len()];
        let mut mounts = HashMap::new();
        for (index, spec) in desired.iter().enumerate() {
            let described = describe(&spec.path, spec.scope, spec.follow, spec.mount_only)
                .and_then(|found| {
                    match (policy.needs_handle(), &found.1.handle) {
                        // overlayfs without `index`/`nfs_export`: marks are taken, events
                        // cannot be told apart
                        (true, None) => Err(WatchError::path(
                            "name_to_handle_at",
                            &spec.path,
                            Errno::EOPNOTSUPP,
                        )),
                        _ => Ok(found),
                    }
                });
            match described {
                Ok((key, mut object)) => {
                    objects[index] = Some(SpecObject {
                        fsid: object.fsid,
                        dev_ino: object.dev_ino,
                        handle: object.handle.clone(),
                        real: object
                            .fd
                            .as_ref()
                            .and_then(|fd| sys::path_of_fd(fd.as_fd()).ok()),
                    });
                    self.keep_mount(&mut mounts, &object);
                    release_fd(&mut object, &mounts);
                    specs_of.entry(key).or_default().push(index);
                    wanted.entry(key).or_insert(object).user_mask |= spec.mask;
                }
                Err(error) => errors.push(MarkError::of(spec, error)),
            }
        }
        if policy.mark_ancestors() {
            add_ancestors(&mut wanted, &objects);
        }
        for object in wanted.values() {
            self.keep_mount(&mut mounts, object);
        }
        let mut next: HashMap<MarkKey, MarkedObject> = HashMap::new();
        // Specs' own objects before bookkeeping ancestors: where the kernel accepts only one
        // fsid per filesystem in a group (btrfs subvolumes share a superblock, not an fsid),
        // the object a spec names must win over an ancestor on another subvolume.
        let mut wanted: Vec<(MarkKey, MarkedObject)> = wanted.into_iter().collect();
        wanted.sort_by_key(|(_, object)| object.user_mask.is_empty());
        for (key, mut object) in wanted {
            let new_mask = policy.kernel_mask(&object);
            let old = self.objects.remove(&key);
            let old_mask = old.as_ref().map_or(0, |o| o.kernel_mask);
            if old_mask != new_mask && object.fd.is_none() {
                object.fd = reopen(&mounts, &object);
            }
            match change(group, &object, old_mask, new_mask) {
                Ok(()) => {
                    object.fd = None;
                    object.kernel_mask = new_mask;
                    if new_mask != 0 {
                        next.insert(key, object);
                    }
                }
                Err(error) => {
                    for index in specs_of.remove(&key).unwrap_or_default() {
                        objects[index] = None;
                        errors.push(MarkError::of(&desired[index], error.clone()));
                    }
                    if let Some(old) = old {
                        next.insert(key, old);
                    }
                }
            }
        }
        for (_, mut stale) in self.objects.drain() {
            // a handle that no longer opens: the object is gone and the kernel dropped its mark
            stale.fd = reopen(&self.mounts, &stale)
                .or_else(|| reopen(&mounts, &stale))
                .or_else(|| open_same(&stale));
            if stale.fd.is_some() {
                // ENOENT: the kernel already dropped the mark; nothing else can be done
                let _ = change(group, &stale, stale.kernel_mask, 0);
            }
        }
        // keep mount fds of objects that failed to re-mark but are still marked
        for object in next.values() {
            if let Entry::Vacant(slot) = mounts.entry(object.fsid) {
                if let Some(fd) = self.mounts.remove(&object.fsid) {
                    slot.insert(fd);
                }
            }
        }
        self.objects = next;
        self.mounts = mounts;
        (errors, objects)
    }

    /// Moves (or opens) the mount fd of `object`'s filesystem into `mounts`, while the
    /// object's own fd is still open to find it.
    fn keep_mount(&mut self, mounts: &mut HashMap<u64, OwnedFd>, object: &MarkedObject) {
        if let Entry::Vacant(slot) = mounts.entry(object.fsid) {
            let fd = self
                .mounts
                .remove(&object.fsid)
                .or_else(|| mount_root(object).ok());
            if let Some(fd) = fd {
                slot.insert(fd);
            }
        }
    }
}

/// Closes `object`'s fd when its handle can reopen it through its mount: no fd is held per
/// spec while the rest are described, so 50,000 specs never need 50,000 fds at once. A
/// mount mark keeps its fd: it marks the mount the fd was opened through, and a handle
/// reopens through the filesystem's mount fd, which may be another mount of it (a bind).
fn release_fd(object: &mut MarkedObject, mounts: &HashMap<u64, OwnedFd>) {
    if !object.mount_only && object.handle.is_some() && mounts.contains_key(&object.fsid) {
        object.fd = None;
    }
}

/// An O_PATH fd on the very object `object` describes, through its handle (`None` when the
/// object is gone or has no handle).
fn reopen(mounts: &HashMap<u64, OwnedFd>, object: &MarkedObject) -> Option<OwnedFd> {
    let mount = mounts.get(&object.fsid)?;
    let (handle_type, handle) = object.handle.as_ref()?;
    sys::open_by_handle(
        mount.as_fd(),
        *handle_type,
        handle,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
    )
    .ok()
}

/// An O_PATH fd on `object` through its path, if the path still names the same object (a
/// mark a predecessor made, whose filesystem no spec names any more: no mount fd is open).
fn open_same(object: &MarkedObject) -> Option<OwnedFd> {
    let fd = sys::open_path(&object.path, !object.is_link).ok()?;
    let stat = nix::sys::stat::fstat(fd.as_fd()).ok()?;
    ((stat.st_dev, stat.st_ino) == object.dev_ino).then_some(fd)
}

/// Opens and identifies the object a spec names.
fn describe(
    path: &Path,
    scope: MarkScope,
    follow: bool,
    mount_only: bool,
) -> Result<(MarkKey, MarkedObject), WatchError> {
    let fd = sys::open_path(path, follow).map_err(|e| WatchError::path("open", path, e))?;
    let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| WatchError::path("fstat", path, e))?;
    let fsid = sys::fsid_of(fd.as_fd()).map_err(|e| WatchError::path("fstatfs", path, e))?;
    let handle = sys::handle_of(fd.as_fd()).ok();
    let key = match scope {
        _ if mount_only => MarkKey::Mount {
            id: sys::mount_id_of(fd.as_fd()).map_err(|e| WatchError::path("fdinfo", path, e))?,
        },
        MarkScope::Inode => MarkKey::Inode {
            dev: stat.st_dev,
            ino: stat.st_ino,
        },
        MarkScope::Filesystem => MarkKey::Filesystem { fsid },
    };
    let object = MarkedObject {
        path: path.to_path_buf(),
        fd: Some(fd),
        handle,
        fsid,
        dev_ino: (stat.st_dev, stat.st_ino),
        is_dir: stat.st_mode & libc::S_IFMT == libc::S_IFDIR,
        is_link: stat.st_mode & libc::S_IFMT == libc::S_IFLNK,
        scope,
        mount_only,
        user_mask: EventMask::EMPTY,
        kernel_mask: 0,
    };
    Ok((key, object))
}

/// An fd on the root directory of the mount `object` is on (walking up while the device
/// stays the same), usable as open_by_handle_at's mount fd.
fn mount_root(object: &MarkedObject) -> Result<OwnedFd, Errno> {
    let fd = object.fd.as_ref().ok_or(Errno::EBADF)?;
    let real = sys::path_of_fd(fd.as_fd())?;
    let dev = nix::sys::stat::fstat(fd.as_fd())?.st_dev;
    let mut root = real.as_path();
    for dir in real.ancestors().skip(1) {
        match nix::sys::stat::stat(dir) {
            Ok(stat) if stat.st_dev == dev => root = dir,
            _ => break,
        }
    }
    let root_fd = sys::open_path(root, true)?;
    sys::mount_fd_for(root_fd.as_fd(), root != real.as_path() || object.is_dir)
}

/// Adds every ancestor directory of the specs' objects (bookkeeping marks: a rename of any
/// ancestor must be seen to keep cached directory paths right).
fn add_ancestors(wanted: &mut HashMap<MarkKey, MarkedObject>, objects: &[Option<SpecObject>]) {
    let mut paths: Vec<PathBuf> = Vec::new();
    for real in objects.iter().flatten().filter_map(|o| o.real.as_ref()) {
        let mut at = real.parent();
        while let Some(dir) = at {
            paths.push(dir.to_path_buf());
            at = dir.parent();
        }
    }
    paths.sort();
    paths.dedup();
    for path in paths {
        if let Ok((key, object)) = describe(&path, MarkScope::Inode, true, false) {
            wanted.entry(key).or_insert(object);
        }
    }
}

/// Moves one object's kernel mask from `old` to `new`: adds the new bits before removing the
/// dropped ones, so bits present in both never stop being reported.
fn change(group: &Fanotify, object: &MarkedObject, old: u64, new: u64) -> Result<(), WatchError> {
    let scope_flag = match object.scope {
        _ if object.mount_only => MarkFlags::FAN_MARK_MOUNT,
        MarkScope::Inode => MarkFlags::FAN_MARK_INODE,
        MarkScope::Filesystem => MarkFlags::FAN_MARK_FILESYSTEM,
    };
    if old == new {
        return Ok(());
    }
    let Some(fd) = object.fd.as_ref() else {
        return Err(WatchError::path("open", &object.path, Errno::EBADF));
    };
    let target = sys::proc_fd_path(fd.as_fd());
    let link_flag = if object.is_link {
        MarkFlags::FAN_MARK_DONT_FOLLOW
    } else {
        MarkFlags::empty()
    };
    let mark = |flag: MarkFlags, bits: u64| -> Result<(), Errno> {
        group.mark(
            flag | scope_flag | link_flag,
            MaskFlags::from_bits_retain(bits),
            nix::fcntl::AT_FDCWD,
            Some(target.as_path()),
        )
    };
    let added = new & !old;
    if added != 0 {
        mark(MarkFlags::FAN_MARK_ADD, added)
            .map_err(|e| WatchError::path("fanotify_mark(ADD)", &object.path, e))?;
    }
    let removed = old & !new;
    if removed != 0 {
        let result = if new == 0 {
            mark(MarkFlags::FAN_MARK_REMOVE, old)
        } else {
            mark(MarkFlags::FAN_MARK_REMOVE, removed)
        };
        match result {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(WatchError::path("fanotify_mark(REMOVE)", &object.path, e)),
        }
    }
    Ok(())
}
