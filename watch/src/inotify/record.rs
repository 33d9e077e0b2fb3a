//! The inotify wire format and its kinds: a pure parser of the records `read(2)` returns
//! (`struct inotify_event` + a NUL-padded name), bounds-checked against a hostile or truncated
//! buffer, and the mapping between fanotify kinds (what rules ask for) and inotify bits.

use crate::kinds::EventMask;

/// `sizeof(struct inotify_event)`: wd, mask, cookie, len.
pub(crate) const HEADER_LEN: usize = 16;

/// One record as the kernel wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEvent<'a> {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
    /// The entry's name for events on a watched directory's entries.
    pub name: Option<&'a [u8]>,
}

/// The records in `buf`, in order; stops at the first record that does not fit (a malformed
/// buffer yields what came before it and one `Err`).
pub(crate) fn parse(buf: &[u8]) -> impl Iterator<Item = Result<RawEvent<'_>, ()>> + '_ {
    let mut at = 0usize;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || at >= buf.len() {
            return None;
        }
        let Some(header) = buf.get(at..at + HEADER_LEN) else {
            broken = true;
            return Some(Err(()));
        };
        let word = |i: usize| [header[i], header[i + 1], header[i + 2], header[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let cookie = u32::from_ne_bytes(word(8));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let Some(name) = buf.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
            broken = true;
            return Some(Err(()));
        };
        at += HEADER_LEN + len;
        let name = name.split(|b| *b == 0).next().filter(|n| !n.is_empty());
        Some(Ok(RawEvent {
            wd,
            mask,
            cookie,
            name,
        }))
    })
}

/// Kinds inotify reports with the same meaning (and, by design of fanotify, the same bit
/// values): access .. move_self.
const SHARED: EventMask = EventMask::ALL_NOTIFICATIONS.difference(EventMask::OPEN_EXEC);

/// The fanotify kinds that inotify cannot report: `open_exec` (an exec is an `IN_OPEN` like
/// any other) and every permission kind (inotify only notifies, after the fact).
pub fn inotify_lacks(mask: EventMask) -> EventMask {
    (mask & (EventMask::OPEN_EXEC | EventMask::ALL_PERMISSIONS)).difference(EventMask::FLAGS)
}

/// The inotify bits for the fanotify kinds in `mask` (kinds it lacks are left out).
pub(crate) fn to_inotify(mask: EventMask) -> u32 {
    (mask & SHARED).bits() as u32
}

/// The fanotify kinds (plus `ONDIR` for a directory, `OVERFLOW`) of an inotify mask.
pub(crate) fn from_inotify(mask: u32) -> EventMask {
    let mut kinds = EventMask::from_bits_truncate(u64::from(mask)) & SHARED;
    if mask & libc::IN_ISDIR != 0 {
        kinds |= EventMask::ONDIR;
    }
    if mask & libc::IN_Q_OVERFLOW != 0 {
        kinds |= EventMask::OVERFLOW;
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, cookie: u32, name: &[u8], pad: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&wd.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&cookie.to_ne_bytes());
        let len = if name.is_empty() { 0 } else { name.len() + pad };
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        if len > 0 {
            out.extend_from_slice(name);
            out.resize(out.len() + pad, 0);
        }
        out
    }

    #[test]
    fn records_parse_with_padded_names_and_without() {
        let mut buf = record(3, libc::IN_CLOSE_WRITE, 0, b"file", 12);
        buf.extend(record(1, libc::IN_DELETE_SELF, 0, b"", 0));
        buf.extend(record(2, libc::IN_MOVED_TO | libc::IN_ISDIR, 9, b"d", 3));
        let events: Vec<_> = parse(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].name, Some(&b"file"[..]));
        assert_eq!((events[1].wd, events[1].name), (1, None));
        assert_eq!((events[2].cookie, events[2].name), (9, Some(&b"d"[..])));
    }

    #[test]
    fn a_record_running_past_the_buffer_is_refused_not_read() {
        let mut buf = record(3, libc::IN_CREATE, 0, b"ok", 2);
        let mut bad = record(4, libc::IN_CREATE, 0, b"name", 4);
        bad[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        buf.extend(bad);
        let events: Vec<_> = parse(&buf).collect();
        assert_eq!(events.len(), 2);
        assert!(events[0].is_ok());
        assert!(events[1].is_err());
        assert_eq!(parse(&[0u8; 7]).collect::<Vec<_>>(), vec![Err(())]);
    }

    #[test]
    fn kinds_map_both_ways_and_the_missing_ones_are_named() {
        let asked = EventMask::CLOSE_WRITE | EventMask::CREATE | EventMask::MOVED_TO;
        let bits = to_inotify(asked);
        assert_eq!(
            bits,
            libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_MOVED_TO
        );
        assert_eq!(
            from_inotify(bits | libc::IN_ISDIR),
            asked | EventMask::ONDIR
        );
        assert_eq!(from_inotify(libc::IN_Q_OVERFLOW), EventMask::OVERFLOW);
        assert_eq!(inotify_lacks(asked), EventMask::EMPTY);
        assert_eq!(
            inotify_lacks(EventMask::OPEN_EXEC | EventMask::OPEN),
            EventMask::OPEN_EXEC
        );
        assert_eq!(to_inotify(EventMask::OPEN_EXEC), 0);
        assert_eq!(inotify_lacks(EventMask::OPEN_PERM), EventMask::OPEN_PERM);
    }
}
