//! Handle to path resolution: `open_by_handle_at(mount_fd, handle, O_PATH)` and the path the
//! kernel shows for the fd, with a cache of directory handle to path so the hot path is one
//! hash lookup. Invariant: a cached path is the directory's path as of the last event
//! processed; the watcher purges entries when it sees a directory renamed, deleted, an
//! ancestor moved, or a queue overflow (which may have hidden such an event).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::record::FileId;
use crate::sys;

/// Bound on cached directories; past it the cache starts over (entries of deleted
/// directories are never hit again, since handles carry a generation).
const MAX_CACHED_DIRS: usize = 1 << 16;

/// The key of a file id: fsid, handle type and handle bytes, as one byte string.
pub(crate) fn id_key_into(id: &FileId<'_>, key: &mut Vec<u8>) {
    key.clear();
    key.extend_from_slice(&id.fsid.to_ne_bytes());
    key.extend_from_slice(&id.handle_type.to_ne_bytes());
    key.extend_from_slice(id.handle);
}

#[derive(Debug, Default)]
pub(crate) struct Resolver {
    /// One fd per marked filesystem, by fsid: the mount through which handles are opened.
    mounts: HashMap<u64, OwnedFd>,
    dirs: HashMap<Box<[u8]>, PathBuf>,
    key: Vec<u8>,
}

impl Resolver {
    /// Hands back the mount fds in use (none are left).
    pub(crate) fn take_mounts(&mut self) -> HashMap<u64, OwnedFd> {
        std::mem::take(&mut self.mounts)
    }

    /// Replaces the mount fds (one per fsid marked, or with events still queued).
    pub(crate) fn set_mounts(&mut self, mounts: HashMap<u64, OwnedFd>) {
        self.mounts = mounts;
    }

    /// Calls `f` with the path of directory `id`, from the cache or resolved and cached.
    pub(crate) fn with_dir<R>(
        &mut self,
        id: &FileId<'_>,
        f: impl FnOnce(&Path) -> R,
    ) -> Result<R, Errno> {
        id_key_into(id, &mut self.key);
        if let Some(path) = self.dirs.get(self.key.as_slice()) {
            return Ok(f(path));
        }
        let path = self.resolve(id)?;
        let out = f(&path);
        if self.dirs.len() >= MAX_CACHED_DIRS {
            self.dirs.clear();
        }
        self.dirs.insert(self.key.clone().into_boxed_slice(), path);
        Ok(out)
    }

    /// The cached path of directory `id`, if any.
    pub(crate) fn cached_dir(&mut self, id: &FileId<'_>) -> Option<&Path> {
        id_key_into(id, &mut self.key);
        self.dirs.get(self.key.as_slice()).map(PathBuf::as_path)
    }

    /// Resolves `id` without caching (objects that are not directories).
    pub(crate) fn resolve(&self, id: &FileId<'_>) -> Result<PathBuf, Errno> {
        let mount = self.mounts.get(&id.fsid).ok_or(Errno::ENODEV)?;
        let fd = sys::open_by_handle(
            mount.as_fd(),
            id.handle_type,
            id.handle,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
        )?;
        sys::path_of_fd(fd.as_fd())
    }

    /// Forgets directory `id` (it was deleted).
    pub(crate) fn forget_dir(&mut self, id: &FileId<'_>) {
        id_key_into(id, &mut self.key);
        self.dirs.remove(self.key.as_slice());
    }

    /// Forgets `dir` and every cached directory below it (it was renamed).
    pub(crate) fn forget_tree(&mut self, dir: &Path) {
        self.dirs.retain(|_, path| !path.starts_with(dir));
    }

    pub(crate) fn clear(&mut self) {
        self.dirs.clear();
    }

    #[cfg(test)]
    pub(crate) fn cached_len(&self) -> usize {
        self.dirs.len()
    }
}

/// `dir` + "/" + `name` as raw bytes (no UTF-8 assumption), "." meaning `dir` itself.
pub(crate) fn join_name(dir: &Path, name: &[u8]) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    if name == b"." {
        return dir.to_path_buf();
    }
    let dir = dir.as_os_str().as_bytes();
    let mut bytes = Vec::with_capacity(dir.len() + 1 + name.len());
    bytes.extend_from_slice(dir);
    if bytes.last() != Some(&b'/') {
        bytes.push(b'/');
    }
    bytes.extend_from_slice(name);
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn join_keeps_raw_bytes() {
        assert_eq!(
            join_name(Path::new("/a"), b"b\xffc").as_os_str().as_bytes(),
            b"/a/b\xffc"
        );
        assert_eq!(join_name(Path::new("/"), b"x"), Path::new("/x"));
        assert_eq!(join_name(Path::new("/a"), b"."), Path::new("/a"));
    }

    #[test]
    fn cache_resolves_once_and_forgets_trees() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let fd = sys::open_path(&sub, true).unwrap();
        let (handle_type, handle) = sys::handle_of(fd.as_fd()).unwrap();
        let fsid = sys::fsid_of(fd.as_fd()).unwrap();
        let id = FileId {
            fsid,
            handle_type,
            handle: &handle,
        };
        let mut resolver = Resolver::default();
        assert_eq!(
            resolver.with_dir(&id, Path::to_path_buf),
            Err(Errno::ENODEV)
        );
        let mut mounts = HashMap::new();
        let dir_fd = sys::open_path(dir.path(), true).unwrap();
        mounts.insert(fsid, sys::mount_fd_for(dir_fd.as_fd(), true).unwrap());
        resolver.set_mounts(mounts);
        let real = sub.canonicalize().unwrap();
        assert_eq!(resolver.with_dir(&id, Path::to_path_buf), Ok(real.clone()));
        assert_eq!(resolver.cached_len(), 1);
        let renamed = dir.path().join("renamed");
        std::fs::rename(&sub, &renamed).unwrap();
        // still cached: the watcher is who purges, on the rename event
        assert_eq!(resolver.with_dir(&id, Path::to_path_buf), Ok(real.clone()));
        resolver.forget_tree(real.parent().unwrap());
        assert_eq!(resolver.cached_len(), 0);
        assert_eq!(
            resolver.with_dir(&id, Path::to_path_buf),
            Ok(renamed.canonicalize().unwrap())
        );
    }
}
