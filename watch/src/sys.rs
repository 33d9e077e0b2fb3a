//! The few system calls nix does not wrap for us (file handles, statfs fsid, fds handed out
//! by fanotify), each behind a small safe function; everything else goes through nix.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::record::MAX_HANDLE_LEN;

/// `struct file_handle` with room for the largest handle, 4-byte aligned as the kernel wants.
#[repr(C)]
struct HandleBuf {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_LEN],
}

/// Opens the object behind a file handle (needs CAP_DAC_READ_SEARCH); `mount` is any fd on
/// the handle's filesystem.
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    if handle.len() > MAX_HANDLE_LEN {
        return Err(Errno::EINVAL);
    }
    let mut buf = HandleBuf {
        handle_bytes: handle.len() as u32,
        handle_type,
        f_handle: [0; MAX_HANDLE_LEN],
    };
    buf.f_handle[..handle.len()].copy_from_slice(handle);
    let ptr = (&mut buf as *mut HandleBuf).cast::<libc::file_handle>();
    // SAFETY: `buf` is a live, properly aligned `struct file_handle` whose `handle_bytes`
    // does not exceed the space that follows it; the kernel only reads it.
    let fd = unsafe { libc::open_by_handle_at(mount.as_raw_fd(), ptr, flags.bits()) };
    owned_from_syscall(fd)
}

/// The file handle of the object `fd` refers to (as fanotify reports it): (type, bytes).
pub(crate) fn handle_of(fd: BorrowedFd<'_>) -> Result<(i32, Vec<u8>), Errno> {
    let mut buf = HandleBuf {
        handle_bytes: MAX_HANDLE_LEN as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_LEN],
    };
    let mut mount_id: libc::c_int = 0;
    let ptr = (&mut buf as *mut HandleBuf).cast::<libc::file_handle>();
    // SAFETY: the path is a NUL-terminated empty string (AT_EMPTY_PATH names `fd` itself);
    // `buf` announces exactly the space it has, and `mount_id` is a valid out pointer.
    let rc = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            ptr,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    Errno::result(rc)?;
    let len = (buf.handle_bytes as usize).min(MAX_HANDLE_LEN);
    Ok((buf.handle_type, buf.f_handle[..len].to_vec()))
}

/// The filesystem id (`statfs.f_fsid`) of the filesystem holding `fd`, as fanotify reports it.
pub(crate) fn fsid_of(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let stat = nix::sys::statfs::fstatfs(fd)?;
    let fsid = stat.filesystem_id();
    // SAFETY: `fsid_t` is `struct { int val[2]; }` (8 bytes, no padding) and any bit
    // pattern is a valid `[i32; 2]`.
    let words: [i32; 2] = unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(fsid) };
    Ok(u64::from(words[0] as u32) | (u64::from(words[1] as u32) << 32))
}

/// The absolute path the kernel shows for `fd`; a deleted object loses the " (deleted)"
/// suffix (checked by its link count, so a file really named "x (deleted)" keeps it).
pub(crate) fn path_of_fd(fd: BorrowedFd<'_>) -> Result<PathBuf, Errno> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let target = nix::fcntl::readlink(link.as_str())?;
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        // "anon_inode:..." or a path outside our root: not a usable path
        return Err(Errno::ENOENT);
    }
    const DELETED: &[u8] = b" (deleted)";
    if bytes.ends_with(DELETED)
        && nix::sys::stat::fstat(fd)
            .map(|s| s.st_nlink == 0)
            .unwrap_or(false)
    {
        let kept = bytes[..bytes.len() - DELETED.len()].to_vec();
        return Ok(PathBuf::from(OsString::from_vec(kept)));
    }
    Ok(PathBuf::from(target))
}

/// The id of the mount `fd` is on (`mnt_id` in /proc/self/fdinfo), which FAN_MARK_MOUNT marks.
pub(crate) fn mount_id_of(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(Errno::EINVAL)
}

/// A `/proc/self/fd/N` path naming the object `fd` refers to; fanotify_mark follows it to
/// the object (O_PATH fds cannot be passed as the dirfd with a NULL path).
pub(crate) fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Takes ownership of an fd the kernel just installed in our table for us.
///
/// Returns `None` for negative values (`FAN_NOFD`).
pub(crate) fn adopt_event_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: called once per fanotify event record right after the read that created the
    // fd: the kernel installed it for this process and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn owned_from_syscall(fd: libc::c_int) -> Result<OwnedFd, Errno> {
    let fd = Errno::result(fd)?;
    // SAFETY: a successful open-like call returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes `struct fanotify_response { fd, response }` to a permission group.
pub(crate) fn write_response(
    group: BorrowedFd<'_>,
    event_fd: RawFd,
    allow: bool,
) -> Result<(), Errno> {
    let response = if allow {
        libc::FAN_ALLOW
    } else {
        libc::FAN_DENY
    };
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&event_fd.to_ne_bytes());
    bytes[4..].copy_from_slice(&response.to_ne_bytes());
    loop {
        match nix::unistd::write(group, &bytes) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// An fd that open_by_handle_at accepts as its mount fd (it refuses O_PATH fds) on the
/// filesystem of the O_PATH fd `object`: the directory itself, or a file's parent directory.
/// Opening a directory read-only has no effect beyond an `open` event on it.
pub(crate) fn mount_fd_for(object: BorrowedFd<'_>, is_dir: bool) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::empty();
    let fd = if is_dir {
        nix::fcntl::open(&proc_fd_path(object), flags, mode)?
    } else {
        let path = path_of_fd(object)?;
        let parent = path.parent().ok_or(Errno::ENOENT)?;
        nix::fcntl::open(parent, flags, mode)?
    };
    if fsid_of(fd.as_fd())? != fsid_of(object)? {
        return Err(Errno::EXDEV);
    }
    Ok(fd)
}

/// The parent of process `pid` (from /proc/PID/stat; the command name may hold spaces and
/// parentheses, so fields are read after its last ')').
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(after + 1..)?).ok()?;
    // " S PPID ..." : state, then the parent pid
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is `ancestor` or one of its descendants (bounded walk up the parents).
pub(crate) fn is_descendant(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..256 {
        if at == ancestor {
            return true;
        }
        match parent_of(at) {
            Some(parent) if parent > 0 && parent != at => at = parent,
            _ => return false,
        }
    }
    false
}

/// Opens `path` as an O_PATH fd, following a symbolic link at its end when `follow` (links
/// in its parents are always followed, as by every path lookup).
pub(crate) fn open_path(path: &std::path::Path, follow: bool) -> Result<OwnedFd, Errno> {
    let nofollow = if follow {
        OFlag::empty()
    } else {
        OFlag::O_NOFOLLOW
    };
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_CLOEXEC | nofollow,
        nix::sys::stat::Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_round_trips_to_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f x");
        std::fs::write(&file, b"x").unwrap();
        let fd = open_path(&file, true).unwrap();
        let (kind, handle) = handle_of(fd.as_fd()).unwrap();
        let dir_fd = open_path(dir.path(), true).unwrap();
        assert_eq!(mount_fd_for(fd.as_fd(), false).map(|_| ()), Ok(()));
        let mount = mount_fd_for(dir_fd.as_fd(), true).unwrap();
        let back = open_by_handle(mount.as_fd(), kind, &handle, OFlag::O_PATH).unwrap();
        assert_eq!(
            path_of_fd(back.as_fd()).unwrap(),
            file.canonicalize().unwrap()
        );
        assert_eq!(
            open_by_handle(mount.as_fd(), kind, &[0; 200], OFlag::O_PATH).err(),
            Some(Errno::EINVAL)
        );
        let fsid = fsid_of(fd.as_fd()).unwrap();
        assert_eq!(fsid, fsid_of(mount.as_fd()).unwrap());
    }

    #[test]
    fn descendants_are_found_through_proc() {
        let me = std::process::id() as i32;
        assert!(is_descendant(me, me));
        assert!(is_descendant(me, 1));
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(parent_of(pid), Some(me));
        assert!(is_descendant(pid, me));
        assert!(!is_descendant(me, pid));
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(parent_of(-5), None);
    }

    #[test]
    fn deleted_files_keep_their_last_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().canonicalize().unwrap().join("gone (deleted)");
        std::fs::write(&file, b"x").unwrap();
        let fd = open_path(&file, true).unwrap();
        assert_eq!(path_of_fd(fd.as_fd()).unwrap(), file);
        std::fs::remove_file(&file).unwrap();
        assert_eq!(path_of_fd(fd.as_fd()).unwrap(), file);
        assert!(adopt_event_fd(-1).is_none());
    }
}
