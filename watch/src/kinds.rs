//! Event kinds: `EventMask`, a set of the kernel's `FAN_*` bits with short lower-case names
//! ("close_write"), its text form ("close_write|moved_to", used for `$%` and logs), and the
//! split between notification kinds and permission kinds (which need separate groups).

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign};

/// A set of fanotify event bits; the bit values are exactly the kernel's `FAN_*` values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventMask(u64);

impl EventMask {
    /// No kind at all; the identity of `|`.
    pub const EMPTY: EventMask = EventMask(0);
    /// A file was read (`access`).
    pub const ACCESS: EventMask = EventMask(libc::FAN_ACCESS);
    /// A file was written (`modify`).
    pub const MODIFY: EventMask = EventMask(libc::FAN_MODIFY);
    /// Metadata changed: mode, owner, timestamps, link count, xattrs (`attrib`).
    pub const ATTRIB: EventMask = EventMask(libc::FAN_ATTRIB);
    /// A file opened for writing was closed (`close_write`).
    pub const CLOSE_WRITE: EventMask = EventMask(libc::FAN_CLOSE_WRITE);
    /// A file opened read-only was closed (`close_nowrite`).
    pub const CLOSE_NOWRITE: EventMask = EventMask(libc::FAN_CLOSE_NOWRITE);
    /// A file or directory was opened (`open`).
    pub const OPEN: EventMask = EventMask(libc::FAN_OPEN);
    /// An entry was renamed out of the marked directory (`moved_from`).
    pub const MOVED_FROM: EventMask = EventMask(libc::FAN_MOVED_FROM);
    /// An entry was renamed into the marked directory (`moved_to`).
    pub const MOVED_TO: EventMask = EventMask(libc::FAN_MOVED_TO);
    /// An entry was created in the marked directory (`create`).
    pub const CREATE: EventMask = EventMask(libc::FAN_CREATE);
    /// An entry was removed from the marked directory (`delete`).
    pub const DELETE: EventMask = EventMask(libc::FAN_DELETE);
    /// The marked object itself was deleted (`delete_self`).
    pub const DELETE_SELF: EventMask = EventMask(libc::FAN_DELETE_SELF);
    /// The marked object itself was renamed (`move_self`).
    pub const MOVE_SELF: EventMask = EventMask(libc::FAN_MOVE_SELF);
    /// A file was opened to be executed (`open_exec`); fanotify only, inotify has none.
    pub const OPEN_EXEC: EventMask = EventMask(libc::FAN_OPEN_EXEC);
    /// The kernel's queue overflowed and events were dropped (`overflow`); never marked, only reported.
    pub const OVERFLOW: EventMask = EventMask(libc::FAN_Q_OVERFLOW);
    /// Permission kind: an open waits for the gate's answer (`open_perm`).
    pub const OPEN_PERM: EventMask = EventMask(libc::FAN_OPEN_PERM);
    /// Permission kind: a read waits for the gate's answer (`access_perm`).
    pub const ACCESS_PERM: EventMask = EventMask(libc::FAN_ACCESS_PERM);
    /// Permission kind: an open for execution waits for the gate's answer (`open_exec_perm`).
    pub const OPEN_EXEC_PERM: EventMask = EventMask(libc::FAN_OPEN_EXEC_PERM);
    /// Mark flag: a directory's mark also reports events on its direct children (`event_on_child`).
    pub const EVENT_ON_CHILD: EventMask = EventMask(libc::FAN_EVENT_ON_CHILD);
    /// Mark flag: report events on directories too; in an event, the object is a directory (`ondir`).
    pub const ONDIR: EventMask = EventMask(libc::FAN_ONDIR);

    /// `close_write|close_nowrite`.
    pub const CLOSE: EventMask = EventMask(libc::FAN_CLOSE_WRITE | libc::FAN_CLOSE_NOWRITE);
    /// `moved_from|moved_to`.
    pub const MOVE: EventMask = EventMask(libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO);
    /// Kinds that change a directory entry: reported on the directory, with the entry's name.
    pub const DIRENT: EventMask =
        EventMask(libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO);
    /// Every notification kind (what a FID group can be marked for), without flags.
    pub const ALL_NOTIFICATIONS: EventMask = EventMask(
        libc::FAN_ACCESS
            | libc::FAN_MODIFY
            | libc::FAN_ATTRIB
            | libc::FAN_CLOSE_WRITE
            | libc::FAN_CLOSE_NOWRITE
            | libc::FAN_OPEN
            | libc::FAN_MOVED_FROM
            | libc::FAN_MOVED_TO
            | libc::FAN_CREATE
            | libc::FAN_DELETE
            | libc::FAN_DELETE_SELF
            | libc::FAN_MOVE_SELF
            | libc::FAN_OPEN_EXEC,
    );
    /// Every permission kind (needs a `FAN_CLASS_CONTENT` group).
    pub const ALL_PERMISSIONS: EventMask =
        EventMask(libc::FAN_OPEN_PERM | libc::FAN_ACCESS_PERM | libc::FAN_OPEN_EXEC_PERM);
    /// The mark flags that travel in the mask: `ondir` and `event_on_child`.
    pub const FLAGS: EventMask = EventMask(libc::FAN_ONDIR | libc::FAN_EVENT_ON_CHILD);

    const KNOWN: u64 =
        Self::ALL_NOTIFICATIONS.0 | Self::ALL_PERMISSIONS.0 | Self::FLAGS.0 | libc::FAN_Q_OVERFLOW;

    /// The raw `FAN_*` bits, as the kernel takes them in `fanotify_mark`.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Keeps only the bits this crate knows (see [`EventMask::names`]).
    pub const fn from_bits_truncate(bits: u64) -> Self {
        Self(bits & Self::KNOWN)
    }

    /// Whether `bits` holds only known bits.
    pub const fn is_known(bits: u64) -> bool {
        bits & !Self::KNOWN == 0
    }

    /// Whether every bit of `other` is in `self` (true for an empty `other`).
    pub const fn contains(self, other: EventMask) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share at least one bit.
    pub const fn intersects(self, other: EventMask) -> bool {
        self.0 & other.0 != 0
    }

    /// The bits in either mask (`|`, usable in `const`).
    pub const fn union(self, other: EventMask) -> EventMask {
        EventMask(self.0 | other.0)
    }

    /// The bits in both masks (`&`, usable in `const`).
    pub const fn intersection(self, other: EventMask) -> EventMask {
        EventMask(self.0 & other.0)
    }

    /// The bits of `self` that are not in `other`.
    pub const fn difference(self, other: EventMask) -> EventMask {
        EventMask(self.0 & !other.0)
    }

    /// Whether no bit at all is set (flags included).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The `*_PERM` bits.
    pub const fn permission_part(self) -> EventMask {
        self.intersection(Self::ALL_PERMISSIONS)
    }

    /// Every other event bit (notification kinds and overflow), without `ondir`/`event_on_child`.
    pub const fn notification_part(self) -> EventMask {
        EventMask(self.0 & (Self::ALL_NOTIFICATIONS.0 | libc::FAN_Q_OVERFLOW))
    }

    /// The short names of the known bits, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| self.contains(*bit))
            .map(|(_, name)| *name)
            .collect()
    }

    /// The short name of one single-bit mask, if it is a known bit.
    pub fn name_of_bit(bit: EventMask) -> Option<&'static str> {
        NAMES.iter().find(|(b, _)| *b == bit).map(|(_, name)| *name)
    }
}

/// Single bits and their short names, in bit order (the order of the text form).
pub(crate) const NAMES: &[(EventMask, &str)] = &[
    (EventMask::ACCESS, "access"),
    (EventMask::MODIFY, "modify"),
    (EventMask::ATTRIB, "attrib"),
    (EventMask::CLOSE_WRITE, "close_write"),
    (EventMask::CLOSE_NOWRITE, "close_nowrite"),
    (EventMask::OPEN, "open"),
    (EventMask::MOVED_FROM, "moved_from"),
    (EventMask::MOVED_TO, "moved_to"),
    (EventMask::CREATE, "create"),
    (EventMask::DELETE, "delete"),
    (EventMask::DELETE_SELF, "delete_self"),
    (EventMask::MOVE_SELF, "move_self"),
    (EventMask::OPEN_EXEC, "open_exec"),
    (EventMask::OVERFLOW, "overflow"),
    (EventMask::OPEN_PERM, "open_perm"),
    (EventMask::ACCESS_PERM, "access_perm"),
    (EventMask::OPEN_EXEC_PERM, "open_exec_perm"),
    (EventMask::EVENT_ON_CHILD, "event_on_child"),
    (EventMask::ONDIR, "ondir"),
];

impl BitOr for EventMask {
    type Output = EventMask;
    fn bitor(self, rhs: EventMask) -> EventMask {
        self.union(rhs)
    }
}

impl BitOrAssign for EventMask {
    fn bitor_assign(&mut self, rhs: EventMask) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for EventMask {
    type Output = EventMask;
    fn bitand(self, rhs: EventMask) -> EventMask {
        self.intersection(rhs)
    }
}

/// `close_write|moved_to`; bits without a name are appended as one hexadecimal number.
impl fmt::Display for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for name in self.names() {
            if !first {
                f.write_str("|")?;
            }
            f.write_str(name)?;
            first = false;
        }
        let unknown = self.0 & !Self::KNOWN;
        if unknown != 0 {
            if !first {
                f.write_str("|")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventMask({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_lists_names_in_bit_order() {
        let mask = EventMask::MOVED_TO | EventMask::CLOSE_WRITE;
        assert_eq!(mask.to_string(), "close_write|moved_to");
        assert_eq!(mask.names(), vec!["close_write", "moved_to"]);
        assert_eq!(EventMask::EMPTY.to_string(), "");
        assert_eq!(EventMask(1 << 50 | 1).to_string(), "access|0x4000000000000");
    }

    #[test]
    fn parts_split_permission_from_notification() {
        let mask = EventMask::OPEN_PERM | EventMask::CLOSE_WRITE | EventMask::ONDIR;
        assert_eq!(mask.permission_part(), EventMask::OPEN_PERM);
        assert_eq!(mask.notification_part(), EventMask::CLOSE_WRITE);
        assert!(mask.contains(EventMask::ONDIR));
        assert!(!mask.contains(EventMask::CLOSE));
        assert!(mask.intersects(EventMask::CLOSE));
        assert_eq!(
            EventMask::from_bits_truncate(u64::MAX).bits() & (1 << 40),
            0
        );
    }

    #[test]
    fn every_named_bit_is_single_and_distinct() {
        let mut seen = 0u64;
        for (bit, _) in NAMES {
            assert_eq!(bit.bits().count_ones(), 1);
            assert_eq!(seen & bit.bits(), 0);
            seen |= bit.bits();
        }
        assert_eq!(seen, EventMask::KNOWN);
    }
}
