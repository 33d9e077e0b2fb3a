//! Which kinds of an event the specs asked for. The watcher marks more than the specs ask
//! (directory renames for its path cache, ancestors, `ondir`), and several specs share one
//! group, so each event is checked against the masks of the marks that could have produced
//! it: the filesystem mark of its fsid, the inode mark of the object, and the inode mark of
//! its parent directory when that one asked for `event_on_child`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::kinds::EventMask;
use crate::marks::{MarkScope, MarkTable};
use crate::record::{FileId, ParsedEvent};
use crate::resolve::id_key_into;

#[derive(Debug, Default)]
pub(crate) struct Filter {
    /// Masks of filesystem marks, and of inode marks whose handle could not be taken, by fsid.
    by_fsid: HashMap<u64, EventMask>,
    /// Masks of inode marks with `ondir|event_on_child` by fsid: a directory's own events
    /// carry no parent id, so they are matched against these.
    child_dirs_by_fsid: HashMap<u64, EventMask>,
    /// Inode marks by handle key: the asked mask and the marked path (the last resort for an
    /// object whose handle no longer opens).
    inodes: HashMap<Box<[u8]>, (EventMask, PathBuf)>,
    /// Handles of every inode-marked object, ancestors included: when one of them moves or
    /// is deleted, spec paths may now name other objects.
    pinned: HashSet<Box<[u8]>>,
    key: Vec<u8>,
}

impl Filter {
    pub fn from_marks(table: &MarkTable) -> Filter {
        let mut filter = Filter::default();
        for object in table.objects.values() {
            if let (MarkScope::Inode, Some((handle_type, handle))) = (object.scope, &object.handle)
            {
                let id = FileId {
                    fsid: object.fsid,
                    handle_type: *handle_type,
                    handle,
                };
                id_key_into(&id, &mut filter.key);
                filter.pinned.insert(filter.key.clone().into_boxed_slice());
            }
            let mask = object.user_mask;
            if mask.is_empty() {
                continue;
            }
            let handle = match object.scope {
                MarkScope::Filesystem => None,
                MarkScope::Inode => object.handle.clone(),
            };
            match handle {
                Some((handle_type, handle)) => {
                    let id = FileId {
                        fsid: object.fsid,
                        handle_type,
                        handle: &handle,
                    };
                    id_key_into(&id, &mut filter.key);
                    let entry = filter
                        .inodes
                        .entry(filter.key.clone().into_boxed_slice())
                        .or_insert((EventMask::EMPTY, object.path.clone()));
                    entry.0 |= mask;
                    if mask.contains(EventMask::ONDIR | EventMask::EVENT_ON_CHILD) {
                        *filter.child_dirs_by_fsid.entry(object.fsid).or_default() |= mask;
                    }
                }
                None => *filter.by_fsid.entry(object.fsid).or_default() |= mask,
            }
        }
        filter
    }

    fn inode(&mut self, id: Option<&FileId<'_>>) -> EventMask {
        let Some(id) = id else {
            return EventMask::EMPTY;
        };
        if self.inodes.is_empty() {
            return EventMask::EMPTY;
        }
        id_key_into(id, &mut self.key);
        self.inodes
            .get(self.key.as_slice())
            .map_or(EventMask::EMPTY, |(mask, _)| *mask)
    }

    /// Whether `id` is an inode-marked object, ancestors included.
    pub fn is_pinned(&mut self, id: &FileId<'_>) -> bool {
        if self.pinned.is_empty() {
            return false;
        }
        id_key_into(id, &mut self.key);
        self.pinned.contains(self.key.as_slice())
    }

    /// Whether `id` is an inode-marked object that a spec asked events of.
    pub fn is_marked(&mut self, id: &FileId<'_>) -> bool {
        if self.inodes.is_empty() {
            return false;
        }
        id_key_into(id, &mut self.key);
        self.inodes.contains_key(self.key.as_slice())
    }

    /// Records where an inode-marked object is now (after it moved), if `id` is one.
    pub fn moved(&mut self, id: &FileId<'_>, path: &std::path::Path) {
        id_key_into(id, &mut self.key);
        if let Some((_, marked)) = self.inodes.get_mut(self.key.as_slice()) {
            path.clone_into(marked);
        }
    }

    /// The marked path of an inode-marked object, if `id` is one.
    pub fn marked_path(&mut self, id: &FileId<'_>) -> Option<PathBuf> {
        id_key_into(id, &mut self.key);
        self.inodes
            .get(self.key.as_slice())
            .map(|(_, path)| path.clone())
    }

    /// The bits of `event` to return: asked-for kinds, plus `ondir` when the object is a
    /// directory; empty when nothing was asked for.
    pub fn wanted(&mut self, event: &ParsedEvent<'_>) -> EventMask {
        let kinds = EventMask::from_bits_truncate(event.mask) & EventMask::ALL_NOTIFICATIONS;
        let ondir = event.mask & EventMask::ONDIR.bits() != 0;
        let dirent = kinds & EventMask::DIRENT;
        let other = kinds.difference(EventMask::DIRENT);
        let mut kept = EventMask::EMPTY;
        if !dirent.is_empty() {
            if let Some(dir) = event.dir.as_ref() {
                let want = self.fs_mask(dir.fsid) | self.inode(Some(dir));
                kept |= dirent & want;
            }
        }
        if !other.is_empty() {
            let Some(fsid) = event.object.or(event.dir).map(|id| id.fsid) else {
                return kept;
            };
            let own = self.inode(event.subject());
            let mut want = self.fs_mask(fsid) | own;
            if ondir {
                want |= self
                    .child_dirs_by_fsid
                    .get(&fsid)
                    .copied()
                    .unwrap_or_default();
            } else {
                let parent = self.inode(event.parent());
                if parent.contains(EventMask::EVENT_ON_CHILD) {
                    want |= parent;
                }
            }
            if !ondir || want.contains(EventMask::ONDIR) {
                kept |= other & want;
            } else {
                // a directory marked for its own delete_self/move_self gets them without ondir
                kept |= other & own & (EventMask::DELETE_SELF | EventMask::MOVE_SELF);
            }
        }
        if ondir && !kept.is_empty() {
            kept |= EventMask::ONDIR;
        }
        kept
    }

    fn fs_mask(&self, fsid: u64) -> EventMask {
        self.by_fsid.get(&fsid).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marks::{MarkKey, MarkedObject};

    const FSID: u64 = 7;

    fn object(scope: MarkScope, handle: &[u8], mask: EventMask) -> MarkedObject {
        MarkedObject {
            path: PathBuf::from(format!("/marked/{}", handle.len())),
            fd: None,
            handle: Some((1, handle.to_vec())),
            fsid: FSID,
            is_dir: true,
            scope,
            user_mask: mask,
            kernel_mask: 1,
        }
    }

    fn filter(objects: Vec<MarkedObject>) -> Filter {
        let mut table = MarkTable::default();
        for (ino, o) in objects.into_iter().enumerate() {
            table.objects.insert(
                MarkKey::Inode {
                    dev: 1,
                    ino: ino as u64,
                },
                o,
            );
        }
        Filter::from_marks(&table)
    }

    fn id(handle: &[u8]) -> FileId<'_> {
        FileId {
            fsid: FSID,
            handle_type: 1,
            handle,
        }
    }

    fn event<'a>(
        mask: EventMask,
        dir: Option<&'a [u8]>,
        name: Option<&'a [u8]>,
        object: Option<&'a [u8]>,
    ) -> ParsedEvent<'a> {
        ParsedEvent {
            mask: mask.bits(),
            fd: -1,
            pid: 1,
            object: object.map(id),
            dir: dir.map(id),
            name,
            info_error: None,
        }
    }

    #[test]
    fn children_need_event_on_child_on_the_parent() {
        let mut with = filter(vec![object(
            MarkScope::Inode,
            b"dir",
            EventMask::CLOSE_WRITE | EventMask::EVENT_ON_CHILD,
        )]);
        let mut without = filter(vec![object(
            MarkScope::Inode,
            b"dir",
            EventMask::CLOSE_WRITE,
        )]);
        let write = event(
            EventMask::CLOSE_WRITE,
            Some(b"dir"),
            Some(b"f"),
            Some(b"file"),
        );
        assert_eq!(with.wanted(&write), EventMask::CLOSE_WRITE);
        assert_eq!(without.wanted(&write), EventMask::EMPTY);
        // the directory's own event ("." name, no FID record)
        let own = event(
            EventMask::CLOSE_WRITE | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"."),
            None,
        );
        assert_eq!(
            without.wanted(&own),
            EventMask::EMPTY,
            "directory events need ondir"
        );
        let mut gone = filter(vec![object(
            MarkScope::Inode,
            b"dir",
            EventMask::DELETE_SELF,
        )]);
        let deleted = event(
            EventMask::DELETE_SELF | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"."),
            None,
        );
        assert_eq!(
            gone.wanted(&deleted),
            EventMask::DELETE_SELF | EventMask::ONDIR
        );
    }

    #[test]
    fn entry_changes_of_directories_come_with_ondir() {
        let mut f = filter(vec![object(MarkScope::Inode, b"dir", EventMask::CREATE)]);
        let mkdir = event(
            EventMask::CREATE | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"sub"),
            None,
        );
        assert_eq!(f.wanted(&mkdir), EventMask::CREATE | EventMask::ONDIR);
        // bookkeeping bits the spec did not ask for are dropped
        let rename = event(
            EventMask::MOVED_FROM | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"sub"),
            None,
        );
        assert_eq!(f.wanted(&rename), EventMask::EMPTY);
        let elsewhere = event(EventMask::CREATE, Some(b"other"), Some(b"x"), Some(b"x"));
        assert_eq!(f.wanted(&elsewhere), EventMask::EMPTY);
    }

    #[test]
    fn filesystem_masks_cover_every_object_of_their_fsid() {
        let mut f = filter(vec![object(
            MarkScope::Filesystem,
            b"root",
            EventMask::ATTRIB | EventMask::ONDIR,
        )]);
        let attrib = event(
            EventMask::ATTRIB | EventMask::ONDIR,
            Some(b"any"),
            Some(b"."),
            None,
        );
        assert_eq!(f.wanted(&attrib), EventMask::ATTRIB | EventMask::ONDIR);
        let mut other_fs = attrib;
        other_fs.dir = Some(FileId {
            fsid: FSID + 1,
            handle_type: 1,
            handle: b"any",
        });
        assert_eq!(f.wanted(&other_fs), EventMask::EMPTY);
        assert!(!f.is_marked(&id(b"root")));
    }

    #[test]
    fn moved_objects_keep_their_new_path() {
        let mut f = filter(vec![object(
            MarkScope::Inode,
            b"file",
            EventMask::DELETE_SELF,
        )]);
        assert!(f.is_marked(&id(b"file")));
        f.moved(&id(b"file"), std::path::Path::new("/new"));
        assert_eq!(f.marked_path(&id(b"file")), Some(PathBuf::from("/new")));
        assert_eq!(f.marked_path(&id(b"nope")), None);
    }
}
