//! The syslog source (`[[syslog]]`): every datagram a syslog sender (nginx's `access_log
//! syslog:server=unix:…`, syslog(3), logger(1), rsyslog forwarding) sends to the rule's socket
//! fires the rule, the message as payload and its header as fields (`parse`). One socket per
//! rule: a Unix datagram socket whose file the source creates with the rule's owner, group
//! and mode (bound under a temporary name and renamed into place, so it is never reachable
//! with looser permissions), or a UDP address.
//!
//! Bounds and loss: a datagram is at most [`MAX_DATAGRAM`] bytes (a longer one is cut and
//! counted); a Unix sender's pid and uid come from the kernel (`SO_PASSCRED`), so loop
//! prevention knows the rule's own runs; the socket's receive buffer is the only queue in
//! front of the rule. When the rule's queue is full and `when_full = "block"`, the source
//! stops reading: a Unix socket's buffer fills and the kernel makes senders wait (or, for a
//! non-blocking sender such as nginx, fail with EAGAIN, which nginx logs); otherwise the
//! event is dropped and counted as the queue says. UDP drops in the kernel are read from its
//! own counter (`SO_RXQ_OVFL`) and counted as the rule's `overflowed`.

mod parse;

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::task::JoinHandle;
use triggerd_watch::EventMask;

use super::{BoxFuture, Emitter, EventSource, SourceContext};
use crate::config::{SyslogListen, SyslogTrigger, Trigger};
use crate::dispatch::SourceState;
use crate::throttle::Throttle;

/// Longest datagram taken whole; longer ones are cut to this.
pub const MAX_DATAGRAM: usize = 64 * 1024;

#[derive(Default)]
pub struct SyslogSource;

impl EventSource for SyslogSource {
    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn describe(&self) -> &'static str {
        "syslog messages on a Unix datagram socket or UDP address fire the rule"
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture {
        Box::pin(run(ctx))
    }
}

/// A rule's bound socket: what it was bound for, and the task reading it.
struct Bound {
    trigger: SyslogTrigger,
    task: JoinHandle<()>,
    /// The socket file this rule created (removed when the rule goes).
    _file: Option<SocketFile>,
}

async fn run(mut ctx: SourceContext) {
    let mut bound: HashMap<String, Bound> = HashMap::new();
    loop {
        let bindings = ctx.bindings.borrow_and_update().clone();
        let wanted: HashMap<&str, &SyslogTrigger> = bindings
            .rules
            .iter()
            .filter_map(|r| match &r.def.trigger {
                Trigger::Syslog(s) => Some((r.name.as_str(), s)),
                _ => None,
            })
            .collect();
        // A rule that went, or whose socket changed, lets its socket go first: its
        // successor may want the same path or address.
        let gone: Vec<String> = bound
            .iter()
            .filter(|(name, b)| wanted.get(name.as_str()) != Some(&&b.trigger))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(b) = bound.remove(&name) {
                b.task.abort();
                // The socket closes when the task is dropped: wait for it, so that a UDP
                // address is free again for the rule's new socket.
                let _ = b.task.await;
            }
        }
        for (name, trigger) in wanted {
            if bound.contains_key(name) {
                continue;
            }
            match open(trigger) {
                Ok((socket, file)) => {
                    tracing::info!(rule = name, listen = %trigger.listen, "syslog listening");
                    ctx.emitter.set_source_state(
                        name,
                        SourceState {
                            backend: Some(socket.kind()),
                            trouble: None,
                        },
                    );
                    let reader = Reader {
                        rule: name.to_owned(),
                        subject: PathBuf::from(trigger.listen.to_string()),
                        emitter: ctx.emitter.clone(),
                    };
                    let task = tokio::spawn(reader.read(socket));
                    let trigger = trigger.clone();
                    bound.insert(
                        name.to_owned(),
                        Bound {
                            trigger,
                            task,
                            _file: file,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(rule = name, listen = %trigger.listen, "syslog cannot listen: {e}");
                    ctx.emitter.set_source_state(
                        name,
                        SourceState {
                            backend: None,
                            trouble: Some(format!("failed: {e}")),
                        },
                    );
                }
            }
        }
        ctx.applied(bindings.generation);
        tokio::select! {
            changed = ctx.bindings.changed() => if changed.is_err() { break },
            _ = ctx.shutdown.changed() => break,
        }
    }
    for (_, b) in bound {
        b.task.abort();
    }
}

/// A socket file this source created, identified by its inode so that a file someone else
/// put there later is never removed.
struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Socket {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// One datagram as received.
struct Received {
    len: usize,
    truncated: bool,
    /// The sender's pid and uid, from the kernel (Unix sockets).
    sender: Option<(i32, u32)>,
    /// The kernel's count of datagrams dropped on this socket so far (UDP).
    dropped: Option<u32>,
}

impl Socket {
    fn kind(&self) -> &'static str {
        match self {
            Socket::Unix(_) => "unix",
            Socket::Udp(_) => "udp",
        }
    }

    async fn receive(&self, buf: &mut [u8], cmsg: &mut Vec<u8>) -> std::io::Result<Received> {
        match self {
            Socket::Unix(s) => s.async_io(Interest::READABLE, || recv(s, buf, cmsg)).await,
            Socket::Udp(s) => s.async_io(Interest::READABLE, || recv(s, buf, cmsg)).await,
        }
    }
}

/// One `recvmsg(2)`, with the control messages the socket was set up to carry.
#[allow(clippy::ptr_arg)] // nix's recvmsg takes the control buffer as a Vec.
fn recv(fd: &impl AsRawFd, buf: &mut [u8], cmsg: &mut Vec<u8>) -> std::io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let mut received = Received {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        sender: None,
        dropped: None,
    };
    for message in msg.cmsgs()? {
        match message {
            ControlMessageOwned::ScmCredentials(c) => received.sender = Some((c.pid(), c.uid())),
            ControlMessageOwned::RxqOvfl(n) => received.dropped = Some(n),
            _ => {}
        }
    }
    Ok(received)
}

/// Binds the rule's socket.
fn open(trigger: &SyslogTrigger) -> std::io::Result<(Socket, Option<SocketFile>)> {
    match &trigger.listen {
        SyslogListen::Unix(path) => {
            let (socket, file) = bind_unix(path, trigger)?;
            set_buffer(&socket, trigger.buffer);
            socket::setsockopt(&socket, sockopt::PassCred, &true)?;
            socket.set_nonblocking(true)?;
            Ok((Socket::Unix(UnixDatagram::from_std(socket)?), Some(file)))
        }
        SyslogListen::Udp(addr) => {
            let socket = std::net::UdpSocket::bind(addr)?;
            set_buffer(&socket, trigger.buffer);
            socket::setsockopt(&socket, sockopt::RxqOvfl, &1)?;
            socket.set_nonblocking(true)?;
            Ok((Socket::Udp(UdpSocket::from_std(socket)?), None))
        }
    }
}

/// Binds a Unix datagram socket at `path` with the rule's owner and mode: under a temporary
/// name first (the daemon's umask leaves it to root), then renamed over `path`. What is at
/// `path` already is replaced only if it is a socket (a stale one from an earlier run).
fn bind_unix(
    path: &Path,
    trigger: &SyslogTrigger,
) -> std::io::Result<(std::os::unix::net::UnixDatagram, SocketFile)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let socket = std::os::unix::net::UnixDatagram::bind(&temporary)?;
    let placed = std::os::unix::fs::chown(&temporary, Some(trigger.uid), Some(trigger.gid))
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(trigger.mode))
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    let ino = std::fs::symlink_metadata(path)?.ino();
    let file = SocketFile {
        path: path.to_path_buf(),
        ino,
    };
    Ok((socket, file))
}

/// `SO_RCVBUFFORCE` (root may pass `net.core.rmem_max`), else `SO_RCVBUF`.
fn set_buffer(socket: &impl std::os::fd::AsFd, bytes: Option<usize>) {
    let Some(bytes) = bytes else {
        return;
    };
    if socket::setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        if let Err(e) = socket::setsockopt(socket, sockopt::RcvBuf, &bytes) {
            tracing::warn!("syslog: cannot set the receive buffer to {bytes} bytes: {e}");
        }
    }
}

/// Reads one rule's socket and fires the rule for each message.
struct Reader {
    rule: String,
    subject: PathBuf,
    emitter: Emitter,
}

impl Reader {
    async fn read(self, socket: Socket) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut cmsg = nix::cmsg_space!(libc::ucred, u32);
        let mut dropped_before = 0u32;
        let mut truncated = 0u64;
        let log = Throttle::default();
        loop {
            let received = match socket.receive(&mut buf, &mut cmsg).await {
                Ok(r) => r,
                Err(e) => {
                    if log.ready() {
                        tracing::warn!(rule = %self.rule, "syslog receive: {e}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Some(total) = received.dropped {
                self.count_kernel_drops(total.wrapping_sub(dropped_before));
                dropped_before = total;
            }
            let mut len = received.len.min(buf.len());
            if received.truncated || len > MAX_DATAGRAM {
                len = len.min(MAX_DATAGRAM);
                truncated += 1;
                if log.ready() {
                    tracing::warn!(rule = %self.rule, truncated,
                        "syslog: a datagram over {MAX_DATAGRAM} bytes was cut");
                }
            }
            self.fire(&buf[..len], received.sender).await;
        }
    }

    async fn fire(&self, datagram: &[u8], sender: Option<(i32, u32)>) {
        let message = parse::parse(datagram);
        let pid = sender.map(|(pid, _)| pid);
        let mut event =
            self.emitter
                .event(self.subject.clone(), EventMask::EMPTY, pid, message.body);
        event.fields = message
            .fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if let Some((_, uid)) = sender {
            event.fields.push(("sender_uid".into(), uid.to_string()));
        }
        self.emitter.fire(&self.rule, event).await;
    }

    fn count_kernel_drops(&self, dropped: u32) {
        if dropped == 0 {
            return;
        }
        if let Some(rule) = self.emitter.rule(&self.rule) {
            rule.counters
                .overflowed
                .fetch_add(u64::from(dropped), Ordering::Relaxed);
        }
        tracing::warn!(rule = %self.rule, dropped, "syslog: the kernel dropped datagrams (socket buffer full)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_trigger(path: &Path, mode: u32) -> SyslogTrigger {
        SyslogTrigger {
            listen: SyslogListen::Unix(path.to_path_buf()),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode,
            buffer: Some(1 << 20),
        }
    }

    #[tokio::test]
    async fn a_unix_socket_gets_its_mode_and_the_senders_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.sock");
        let (socket, file) = open(&unix_trigger(&path, 0o620)).expect("open");
        let meta = std::fs::symlink_metadata(&path).expect("socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o620);
        let sender = std::os::unix::net::UnixDatagram::unbound().expect("sender");
        sender.send_to(b"<14>tag: hi", &path).expect("send");
        let mut buf = vec![0; 64];
        let mut cmsg = nix::cmsg_space!(libc::ucred, u32);
        let received = socket.receive(&mut buf, &mut cmsg).await.expect("receive");
        assert_eq!(&buf[..received.len], b"<14>tag: hi");
        assert_eq!(
            received.sender.map(|s| s.0),
            Some(std::process::id() as i32)
        );
        drop(file);
        assert!(!path.exists(), "the socket file goes with its rule");
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.sock");
        std::fs::write(&path, b"keep me").expect("write");
        assert!(open(&unix_trigger(&path, 0o666)).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"keep me");
    }
}
