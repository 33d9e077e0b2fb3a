//! The FUSE operations: maps each kernel request onto the tree (namespace), the delivery path
//! (write → messages) and the state file, and answers every operation the trigger filesystem
//! does not allow with the errno documented in the crate root.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::delivery::{read, write, Deliverer, OpenFile, Refused, Triggers, Writer};
use crate::handover::{Gate, Session, SessionFile};
use crate::state::StateFile;
use crate::tree::{name_from_os, Attrs, Kind, Node, Tree};
use crate::NamespaceChange;

/// The path of `name` in directory `parent`, relative to the mount.
fn child_path(tree: &Tree, parent: u64, name: &str) -> String {
    match tree.path_of(parent) {
        dir if dir.is_empty() => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

/// How long the kernel may cache names and attributes. Reloads also invalidate explicitly;
/// this bounds what a missed invalidation could leave behind.
const TTL: Duration = Duration::from_secs(1);
/// Entries looked up per readdir call; the kernel's buffer holds fewer, and asks again.
const READDIR_PAGE: usize = 512;

/// Everything the FUSE threads and the owning [`crate::TriggerFs`] share.
pub(crate) struct Shared {
    pub tree: RwLock<Tree>,
    pub triggers: Triggers,
    pub handles: RwLock<HashMap<u64, Arc<OpenFile>>>,
    pub next_fh: AtomicU64,
    pub deliverer: Deliverer,
    pub state_file: StateFile,
    pub reply_limit: usize,
    /// Parks state-changing requests while the process hands the connection over.
    pub gate: Gate,
    pub session: SessionFile,
    /// The connection was taken over from a predecessor: a file handle it does not know was
    /// opened before (a crash lost the table), and is honoured for the inode's trigger.
    pub adopted: bool,
}

impl Shared {
    /// Persists the runtime changes of `tree`; called with the tree locked so that saves
    /// happen in the order of the changes. A failed save is logged: the change stays in
    /// effect for this mount.
    pub(crate) fn persist(&self, tree: &Tree) {
        if let Err(e) = self.state_file.save(&tree.to_state()) {
            tracing::error!("runtime change not persisted: {e}");
        }
        self.save_session(tree, Vec::new());
    }

    /// Writes the session file: the tree's inode numbers, and `handles` (only when handing
    /// over). Called with the tree locked, like [`Shared::persist`].
    pub(crate) fn save_session(&self, tree: &Tree, handles: Vec<crate::handover::KeptHandle>) {
        let session = Session {
            version: crate::handover::VERSION,
            inodes: tree.inodes(),
            next_fh: self.next_fh.load(Ordering::Relaxed),
            handles,
        };
        if let Err(e) = self.session.save(&session) {
            tracing::error!(path = %self.session.path().display(), "session file not written: {e}");
        }
    }

    /// The open file behind `fh`. On an adopted connection a handle the table lacks was
    /// opened by a predecessor that crashed: it gets a fresh entry for the trigger of `ino`
    /// (its partial line, if any, was lost with that process).
    fn handle(&self, ino: INodeNo, fh: FileHandle) -> Option<Arc<OpenFile>> {
        if let Some(file) = read(&self.handles).get(&fh.0) {
            return Some(file.clone());
        }
        if !self.adopted {
            return None;
        }
        let trigger = match read(&self.tree).node(ino.0).map(|n| &n.kind) {
            Some(Kind::Trigger { key }) => self.triggers.get(key)?,
            _ => return None,
        };
        let file = Arc::new(OpenFile::open(trigger)?);
        let mut handles = write(&self.handles);
        Some(handles.entry(fh.0).or_insert(file).clone())
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, size, nlink) = match &node.kind {
            Kind::Dir { .. } => (FileType::Directory, 0, 2),
            Kind::Trigger { key } => {
                let size = self.triggers.get(key).map_or(0, |t| t.reply().len() as u64);
                (FileType::RegularFile, size, 1)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.ctime,
            kind,
            perm: (node.attrs.mode & 0o7777) as u16,
            nlink,
            uid: node.attrs.uid,
            gid: node.attrs.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn entry(&self, tree: &Tree, ino: u64, reply: ReplyEntry) {
        match tree.node(ino) {
            Some(node) => reply.entry(&TTL, &self.attr(ino, node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// The errno a refused write or flush answers (documented in the crate root).
fn errno(why: Refused) -> Errno {
    match why {
        Refused::Gone => Errno::ESTALE,
        Refused::Full => Errno::EAGAIN,
        Refused::NoSpace => Errno::ENOSPC,
    }
}

/// The [`Filesystem`] handed to fuser; a thin handle on [`Shared`].
pub(crate) struct FuseFs(pub Arc<Shared>);

fn who(req: &Request) -> Writer {
    Writer {
        pid: req.pid(),
        uid: req.uid(),
    }
}

impl FuseFs {
    /// Emits a handle's partial line (flush, fsync); a refusal fails the call.
    fn flush_handle(&self, req: &Request, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let _pass = self.0.gate.enter();
        let flushed = match self.0.handle(ino, fh) {
            Some(file) => self.0.deliverer.flush(&file, who(req), &self.0.triggers),
            None => Ok(()),
        };
        match flushed {
            Ok(()) => reply.ok(),
            Err(why) => reply.error(errno(why)),
        }
    }
}

impl Filesystem for FuseFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Ok(name) = name_from_os(name) else {
            return reply.error(Errno::ENOENT);
        };
        let tree = read(&self.0.tree);
        match tree.child(parent.0, name) {
            Some(ino) => self.0.entry(&tree, ino, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let tree = read(&self.0.tree);
        match tree.node(ino.0) {
            Some(node) => reply.attr(&TTL, &self.0.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _pass = self.0.gate.enter();
        if let Some(mode) = mode {
            let path = read(&self.0.tree).path_of(ino.0);
            let change = NamespaceChange::Chmod {
                path,
                mode: mode & 0o7777,
            };
            match self.0.deliverer.sink.namespace(&change) {
                None => {}
                Some(Err(errno)) => return reply.error(Errno::from_i32(errno)),
                Some(Ok(())) => {
                    let tree = read(&self.0.tree);
                    let Some(node) = tree.node(ino.0) else {
                        return reply.error(Errno::ENOENT);
                    };
                    let mut attr = self.0.attr(ino.0, node);
                    attr.perm = (mode & 0o7777) as u16;
                    return reply.attr(&TTL, &attr);
                }
            }
        }
        let mut tree = write(&self.0.tree);
        let Some(node) = tree.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        // Truncation to 0 is what O_TRUNC asks for (`echo x > file`); there is nothing to
        // cut, so it succeeds. Any other size would pretend to store data.
        match (size, &node.kind) {
            (None, _) | (Some(0), Kind::Trigger { .. }) => {}
            (Some(_), Kind::Dir { .. }) => return reply.error(Errno::EISDIR),
            (Some(_), Kind::Trigger { .. }) => return reply.error(Errno::EPERM),
        }
        match tree.set_attrs(ino.0, mode, uid, gid) {
            Ok(true) => self.0.persist(&tree),
            Ok(false) => {}
            Err(e) => return reply.error(e),
        }
        tree.touch(
            ino.0,
            mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
        );
        match tree.node(ino.0) {
            Some(node) => reply.attr(&TTL, &self.0.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _pass = self.0.gate.enter();
        let name = match name_from_os(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let attrs = Attrs {
            mode: mode & !umask & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
        };
        let path = child_path(&read(&self.0.tree), parent.0, name);
        if let Some(Err(errno)) = self
            .0
            .deliverer
            .sink
            .namespace(&NamespaceChange::Mkdir { path })
        {
            return reply.error(Errno::from_i32(errno));
        }
        let mut tree = write(&self.0.tree);
        match tree.mkdir(parent.0, name, attrs) {
            Ok(ino) => {
                self.0.persist(&tree);
                self.0.entry(&tree, ino, reply);
            }
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _pass = self.0.gate.enter();
        let Ok(name) = name_from_os(name) else {
            return reply.error(Errno::ENOENT);
        };
        let mut tree = write(&self.0.tree);
        match tree.rmdir(parent.0, name) {
            Ok(()) => {
                self.0.persist(&tree);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _pass = self.0.gate.enter();
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let (Ok(name), Ok(newname)) = (name_from_os(name), name_from_os(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        let change = {
            let tree = read(&self.0.tree);
            NamespaceChange::Rename {
                from: child_path(&tree, parent.0, name),
                to: child_path(&tree, newparent.0, newname),
            }
        };
        match self.0.deliverer.sink.namespace(&change) {
            None => {}
            Some(Ok(())) => return reply.ok(),
            Some(Err(errno)) => return reply.error(Errno::from_i32(errno)),
        }
        let mut tree = write(&self.0.tree);
        match tree.rename(parent.0, name, newparent.0, newname) {
            Ok(()) => {
                self.0.persist(&tree);
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _pass = self.0.gate.enter();
        let trigger = {
            let tree = read(&self.0.tree);
            match tree.node(ino.0).map(|n| &n.kind) {
                Some(Kind::Trigger { key }) => self.0.triggers.get(key),
                Some(Kind::Dir { .. }) => return reply.error(Errno::EISDIR),
                None => return reply.error(Errno::ENOENT),
            }
        };
        let Some(trigger) = trigger else {
            return reply.error(Errno::ENOENT);
        };
        let Some(file) = OpenFile::open(trigger) else {
            return reply.error(Errno::ENFILE);
        };
        let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
        write(&self.0.handles).insert(fh, Arc::new(file));
        // DIRECT_IO: one write(2) reaches us as one FUSE write (never split at a page
        // boundary, never cached or coalesced).
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.handle(ino, fh) {
            Some(file) => reply.data(&file.read(offset, size, &self.0.triggers)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _pass = self.0.gate.enter();
        let Some(file) = self.0.handle(ino, fh) else {
            return reply.error(Errno::EBADF);
        };
        if u32::try_from(data.len()).is_err() {
            return reply.error(Errno::EFBIG);
        }
        match self
            .0
            .deliverer
            .write(&file, data, who(req), &self.0.triggers)
        {
            // At most `data.len()`, which fits in u32.
            Ok(taken) => reply.written(taken as u32),
            Err(why) => reply.error(errno(why)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.flush_handle(req, ino, fh, reply);
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _pass = self.0.gate.enter();
        let file = write(&self.0.handles).remove(&fh.0);
        if let Some(file) = file {
            // Nobody is left to be told: a refusal is counted by `flush`.
            let _ = self.0.deliverer.flush(&file, who(req), &self.0.triggers);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.flush_handle(req, ino, fh, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = read(&self.0.tree);
        // Offsets count entries: "." and ".." are 0 and 1, children follow.
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let children = match tree.children(ino.0, skip.saturating_sub(2), READDIR_PAGE) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let parent = tree.node(ino.0).map_or(ino.0, |n| n.parent);
        let dots = [
            (ino.0, ".".to_string(), true),
            (parent, "..".to_string(), true),
        ];
        let page = dots.into_iter().skip(skip).chain(children);
        for (i, (child, name, is_dir)) in page.enumerate().map(|(k, e)| (skip + k, e)) {
            let kind = if is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, r: ReplyXattr) {
        // ENOSYS once makes the kernel stop asking (security.capability before writes).
        r.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EPERM);
    }
}
