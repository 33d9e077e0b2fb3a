//! Who may say what on the control socket. Every connection's peer is identified by the
//! kernel (`SO_PEERCRED`, `SO_PEERGROUPS`), not by the socket file's mode: root may use every
//! verb; members of `[daemon] control_group` (primary or supplementary) only the verbs that
//! read; anyone else nothing. A widened `control_mode` therefore never grants `fire`.

use std::os::fd::AsRawFd;

use super::Request;

/// What a connected peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// uid 0: every verb.
    Root,
    /// A member of `control_group`: read-only verbs.
    Reader,
    /// Anyone else: refused.
    Stranger,
}

impl Request {
    /// Whether the verb only reads the daemon's state.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            Request::Status
                | Request::Summary { .. }
                | Request::List
                | Request::Show { .. }
                | Request::Events { .. }
        )
    }
}

impl Peer {
    /// Identifies the process at the other end of `stream`.
    pub fn of(stream: &tokio::net::UnixStream, group: Option<u32>) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        if cred.uid() == 0 {
            return Ok(Peer::Root);
        }
        let Some(group) = group else {
            return Ok(Peer::Stranger);
        };
        let member = cred.gid() == group || peer_groups(stream)?.contains(&group);
        Ok(if member { Peer::Reader } else { Peer::Stranger })
    }

    /// Why `request` is refused for this peer, if it is.
    pub fn refusal(self, request: &Request) -> Option<String> {
        match self {
            Peer::Root => None,
            Peer::Reader if request.read_only() => None,
            Peer::Reader => Some(
                "permission denied: only root may change rules or fire them \
                 (control_group grants status, list, show and events)"
                    .into(),
            ),
            Peer::Stranger => Some(
                "permission denied: only root and members of [daemon] control_group \
                 may use the control socket"
                    .into(),
            ),
        }
    }
}

/// Most supplementary groups read for a peer (the kernel's own limit is 65536).
const MAX_PEER_GROUPS: usize = 65_536;

/// The supplementary groups of the peer of a connected Unix socket, as of its connect().
pub fn peer_groups(socket: &impl AsRawFd) -> std::io::Result<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer pointer and `len` describe `groups`, which outlives the call; the
        // kernel writes at most `len` bytes and sets `len` to what it wrote or needs.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) || needed > MAX_PEER_GROUPS {
            return Err(error);
        }
        groups.resize(needed.max(groups.len() + 1), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_groups_of_a_socketpair_are_our_own_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut got = peer_groups(&a).expect("SO_PEERGROUPS");
        let mut want: Vec<libc::gid_t> = nix::unistd::getgroups()
            .expect("getgroups")
            .iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn readers_may_only_read() {
        let fire = Request::Fire {
            rule: "r".into(),
            data: None,
        };
        assert_eq!(Peer::Reader.refusal(&Request::Status), None);
        assert!(Peer::Reader.refusal(&fire).is_some());
        assert_eq!(Peer::Root.refusal(&fire), None);
        assert!(Peer::Stranger.refusal(&Request::List).is_some());
    }
}
