//! `[[syslog]]` tables: a Unix datagram socket (`socket`, with the file's `owner`, `group`
//! and `mode`) or a UDP address (`listen`, loopback unless `allow_remote`), exactly one of the
//! two, and an optional receive buffer size.

use std::path::PathBuf;

use super::super::raw::RawRule;
use super::super::{Problem, SyslogListen, SyslogTrigger, Trigger};
use super::action::{number, object_access};
use super::webhook::listen_address;
use super::Table;

/// Anyone may send, as to `/dev/log`; `mode` narrows it.
const DEFAULT_MODE: u32 = 0o666;
/// What `buffer` may be: the kernel doubles it and caps it at `net.core.rmem_max` (a root
/// daemon sets it with `SO_RCVBUFFORCE`, so the cap is this one).
const BUFFERS: std::ops::RangeInclusive<i64> = 4096..=(1 << 30);

pub(super) fn trigger(
    table: &Table<'_>,
    raw: &RawRule,
    problems: &mut Vec<Problem>,
) -> Option<Trigger> {
    let before = problems.len();
    let listen = match (raw.socket.as_deref(), raw.listen.as_deref()) {
        (Some(path), None) => {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.file_name().is_none() {
                problems.push(table.problem(
                    "socket",
                    format!(
                        "`{}` must be an absolute path to a socket file",
                        path.display()
                    ),
                ));
            }
            Some(SyslogListen::Unix(path))
        }
        (None, Some(addr)) => {
            listen_address(table, addr, raw.allow_remote, problems).map(SyslogListen::Udp)
        }
        (Some(_), Some(_)) => {
            problems.push(table.problem("listen", "either `socket` or `listen`, not both"));
            None
        }
        (None, None) => {
            problems.push(table.problem(
                "socket",
                "missing (a Unix socket path, e.g. \"/run/triggerd/log.sock\"; or `listen` = a UDP address)",
            ));
            None
        }
    };
    if matches!(listen, Some(SyslogListen::Udp(_))) {
        let given = [
            ("owner", raw.owner.is_some()),
            ("group", raw.group.is_some()),
            ("mode", raw.mode.is_some()),
        ];
        for (key, _) in given.into_iter().filter(|(_, given)| *given) {
            problems.push(table.problem(key, "only for a Unix `socket`"));
        }
    }
    let (uid, gid, mode) = object_access(table, raw, DEFAULT_MODE, problems);
    let buffer = number(table, "buffer", raw.buffer, BUFFERS, problems).map(|b| b as usize);
    if problems.len() > before {
        return None;
    }
    Some(Trigger::Syslog(SyslogTrigger {
        listen: listen?,
        uid,
        gid,
        mode,
        buffer,
    }))
}
