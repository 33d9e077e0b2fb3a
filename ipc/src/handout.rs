//! How a publisher gets a channel's memory: the daemon keeps the region in a sealed memfd
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, so no holder of the fd can resize it and the
//! consumer's mapping never loses pages: no SIGBUS) and listens on a Unix stream socket at
//! `/dev/shm/triggerd.<name>`. The socket file carries the channel's owner, group and mode;
//! connect(2) needs write permission on it, so who may connect is who may publish. Each client
//! gets the memfd once with `SCM_RIGHTS` and the connection is closed at once: a client can make
//! the daemon hold nothing.

use crate::error::IpcError;
use crate::region::os;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The seals every channel memfd carries; a publisher refuses a region without the first two.
pub(crate) const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// Connections waiting to be accepted (each is served in microseconds).
const BACKLOG: i32 = 128;
/// How long a publisher waits for the daemon's answer.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket path of a channel (`/dev/shm/triggerd.<name>`); `object` is `/triggerd.<name>`.
pub(crate) fn socket_path(object: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm{object}"))
}

/// Serves a channel's memfd on its socket until dropped; then removes the socket.
pub(crate) struct Handout {
    stop: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Handout {
    /// Binds the socket (replacing a stale file of that name), gives it `uid:gid` and `mode`
    /// before it listens (so nobody connects through looser permissions), and serves `memfd`.
    pub(crate) fn start(
        channel: &str,
        path: PathBuf,
        memfd: Arc<OwnedFd>,
        (uid, gid, mode): (u32, u32, u32),
    ) -> Result<Self, IpcError> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(os(channel, "socket"))?;
        let addr = UnixAddr::new(&path).map_err(os(channel, "socket path"))?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(IpcError::Os {
                    channel: channel.to_owned(),
                    op: "remove stale channel",
                    source: e,
                })
            }
            _ => {}
        }
        socket::bind(fd.as_raw_fd(), &addr).map_err(os(channel, "bind"))?;
        let io = |op| {
            move |source| IpcError::Os {
                channel: channel.to_owned(),
                op,
                source,
            }
        };
        let setup = || -> Result<(), IpcError> {
            // The file is ours until removed: /dev/shm is sticky, so nobody else may replace it.
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io("chown"))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o777))
                .map_err(io("chmod"))?;
            socket::listen(
                &fd,
                socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN),
            )
            .map_err(os(channel, "listen"))
        };
        setup().inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        let listener = Arc::new(UnixListener::from(fd));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&listener), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("channel-handout".into())
            .spawn(move || serve(&l, &memfd, &s))
            .map_err(io("spawn thread"))?;
        Ok(Self {
            stop,
            listener,
            thread: Some(thread),
            path,
        })
    }
}

impl Drop for Handout {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
        // Shutting a listening socket down makes a blocked accept(2) return (EINVAL).
        let _ = socket::shutdown(self.listener.as_raw_fd(), socket::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &UnixListener, memfd: &OwnedFd, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // Non-blocking: a client that never reads cannot hold this thread.
                let _ = send_fd(&stream, memfd.as_fd());
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            // EMFILE and the like: back off briefly instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn send_fd(stream: &UnixStream, fd: BorrowedFd<'_>) -> nix::Result<usize> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [socket::ControlMessage::ScmRights(&fds)];
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(b"T")],
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
}

/// Connects to the channel's socket and receives its memfd, checking it is sealed against
/// resizing. This is what any permitted publisher gets (tools and tests use it directly).
pub(crate) fn receive(channel: &str, path: &std::path::Path) -> Result<OwnedFd, IpcError> {
    let stream = UnixStream::connect(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTSOCK) => {
            IpcError::NoSuchChannel {
                channel: channel.to_owned(),
            }
        }
        Some(libc::EACCES) | Some(libc::EPERM) => IpcError::PermissionDenied {
            channel: channel.to_owned(),
        },
        _ => IpcError::Os {
            channel: channel.to_owned(),
            op: "connect",
            source: e,
        },
    })?;
    let bad = |why| IpcError::BadRegion {
        channel: channel.to_owned(),
        why,
    };
    stream
        .set_read_timeout(Some(RECEIVE_TIMEOUT))
        .map_err(|source| IpcError::Os {
            channel: channel.to_owned(),
            op: "set timeout",
            source,
        })?;
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(os(channel, "recvmsg"))?;
    let mut received = None;
    for cmsg in msg.cmsgs().map_err(os(channel, "recvmsg"))? {
        if let socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: SCM_RIGHTS installed `raw` in this process for us alone; wrapping it
                // at once makes it closed exactly once, also when it is not the one we keep.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                received.get_or_insert(fd);
            }
        }
    }
    let fd = received.ok_or_else(|| bad("the channel socket sent no region"))?;
    let seals =
        fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|_| bad("region is not a sealed memfd"))?;
    let seals = SealFlag::from_bits_truncate(seals);
    if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
        return Err(bad("region is not sealed against resizing"));
    }
    Ok(fd)
}
