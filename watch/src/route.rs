//! Which specs an event belongs to, found by the identity of what the event carries, never
//! by comparing a path rebuilt from a handle with the text a spec was given: an inode spec is
//! found by the file handle of its object (its own events) or of its directory (the entries
//! in it); a tree spec by its root's path as the same mount fd spells it, among the
//! ancestors of the event's directory (O(depth) lookups, whatever the number of specs).
//! Every event is reported once per spec, under the spec's own spelling of the path.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::kinds::EventMask;
use crate::permission::join_below;
use crate::record::{FileId, ParsedEvent};
use crate::resolve::{id_key_into, join_name, Resolver};
use crate::watcher::WatchEvent;

/// One spec, as the router reports it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub id: u64,
    /// The path as the spec spells it.
    pub path: PathBuf,
    pub mask: EventMask,
}

/// Entry changes: reported to the directory they happen in, never as the entry's own event.
const DIRENT: EventMask = EventMask::DIRENT;
/// What an object's own mark reports.
const OWN: EventMask = EventMask::ALL_NOTIFICATIONS.difference(DIRENT);

#[derive(Debug, Default)]
pub(crate) struct Router {
    /// Inode specs by the handle key of the object they marked.
    objects: HashMap<Box<[u8]>, Vec<Route>>,
    /// Tree specs by fsid, then by their root's path as resolved through that fsid's mount.
    trees: HashMap<u64, HashMap<PathBuf, Vec<Route>>>,
    /// Inode specs on directories that asked for their subdirectories' own events, by fsid
    /// and resolved path: the kernel reports such an event with the subdirectory as its
    /// directory and no parent, so the parent is found through the resolved path.
    dir_children: HashMap<u64, HashMap<PathBuf, Vec<Route>>>,
    /// Handles of every inode-marked object, ancestors included: when one of them moves or
    /// is deleted, spec paths may now name other objects.
    pinned: HashSet<Box<[u8]>>,
    key: Vec<u8>,
}

/// What routing one event found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routed {
    pub events: usize,
    /// A tree spec could have wanted it but its directory could not be resolved.
    pub unresolved: bool,
}

impl Router {
    pub(crate) fn add_object(&mut self, id: &FileId<'_>, route: Route) {
        id_key_into(id, &mut self.key);
        let key = self.key.clone().into_boxed_slice();
        self.objects.entry(key).or_default().push(route);
    }

    pub(crate) fn add_tree(&mut self, fsid: u64, root: PathBuf, route: Route) {
        self.trees
            .entry(fsid)
            .or_default()
            .entry(root)
            .or_default()
            .push(route);
    }

    pub(crate) fn add_dir_children(&mut self, fsid: u64, dir: PathBuf, route: Route) {
        self.dir_children
            .entry(fsid)
            .or_default()
            .entry(dir)
            .or_default()
            .push(route);
    }

    pub(crate) fn pin(&mut self, id: &FileId<'_>) {
        id_key_into(id, &mut self.key);
        self.pinned.insert(self.key.clone().into_boxed_slice());
    }

    /// Whether `id` is an inode-marked object, ancestors included.
    pub(crate) fn is_pinned(&mut self, id: &FileId<'_>) -> bool {
        if self.pinned.is_empty() {
            return false;
        }
        id_key_into(id, &mut self.key);
        self.pinned.contains(self.key.as_slice())
    }

    fn objects_of(&mut self, id: Option<&FileId<'_>>) -> Option<&[Route]> {
        let id = id?;
        if self.objects.is_empty() {
            return None;
        }
        id_key_into(id, &mut self.key);
        self.objects.get(self.key.as_slice()).map(Vec::as_slice)
    }

    /// Appends one event per spec that `event` concerns, with the kinds that spec asked for
    /// (plus `ONDIR` for a directory).
    pub(crate) fn route(
        &mut self,
        event: &ParsedEvent<'_>,
        resolver: &mut Resolver,
        out: &mut Vec<WatchEvent>,
    ) -> Routed {
        let kinds = EventMask::from_bits_truncate(event.mask) & EventMask::ALL_NOTIFICATIONS;
        let ondir = event.mask & libc::FAN_ONDIR != 0;
        let start = out.len();
        let mut push = |route: &Route, path: PathBuf, allowed: EventMask| {
            let wanted = kinds & route.mask & allowed;
            if !wanted.is_empty() {
                let flag = if ondir {
                    EventMask::ONDIR
                } else {
                    EventMask::EMPTY
                };
                out.push(WatchEvent {
                    spec: Some(route.id),
                    path,
                    mask: wanted | flag,
                    pid: event.pid,
                });
            }
        };
        if let Some(routes) = self.objects_of(event.subject()) {
            for route in routes {
                push(route, route.path.clone(), OWN);
            }
        }
        if let (Some(name), Some(routes)) = (event.name, self.objects_of(event.parent())) {
            for route in routes {
                let allowed = if route.mask.contains(EventMask::EVENT_ON_CHILD) {
                    EventMask::ALL_NOTIFICATIONS
                } else {
                    DIRENT
                };
                push(route, join_name(&route.path, name), allowed);
            }
        }
        let mut routed = Routed::default();
        let fsid = event.dir.or(event.object).map(|id| id.fsid);
        let parents = fsid.and_then(|fsid| self.dir_children.get(&fsid));
        if let (true, None, Some(dir), Some(parents)) = (ondir, event.parent(), event.dir, parents)
        {
            if let Ok(Some((parent, name))) = resolver.with_dir(&dir, |path| {
                Some((
                    path.parent()?.to_path_buf(),
                    path.file_name()?.to_os_string(),
                ))
            }) {
                for route in parents.get(&parent).into_iter().flatten() {
                    push(route, route.path.join(&name), OWN);
                }
            }
        }
        if let Some(roots) = fsid.and_then(|fsid| self.trees.get(&fsid)) {
            match locate(event, resolver) {
                Some(location) => {
                    for (root, routes) in roots_above(roots, &location) {
                        let below = location.strip_prefix(root).unwrap_or(Path::new(""));
                        for route in routes {
                            let path = join_below(&route.path, below);
                            push(route, path, EventMask::ALL_NOTIFICATIONS);
                        }
                    }
                }
                None => routed.unresolved = true,
            }
        }
        routed.events = out.len() - start;
        routed
    }
}

/// The event's path as the resolver spells it: its directory + name, else its object.
fn locate(event: &ParsedEvent<'_>, resolver: &mut Resolver) -> Option<PathBuf> {
    if let Some(dir) = event.dir.as_ref() {
        let name = event.name.unwrap_or(b".");
        if let Ok(path) = resolver.with_dir(dir, |d| join_name(d, name)) {
            return Some(path);
        }
    }
    let object = event.object.as_ref()?;
    if event.mask & libc::FAN_ONDIR != 0 {
        resolver.with_dir(object, Path::to_path_buf).ok()
    } else {
        resolver.resolve(object).ok()
    }
}

/// The roots among `location` and its ancestors, nearest first.
fn roots_above<'a>(
    roots: &'a HashMap<PathBuf, Vec<Route>>,
    location: &'a Path,
) -> impl Iterator<Item = (&'a Path, &'a [Route])> {
    location
        .ancestors()
        .filter_map(move |at| roots.get_key_value(at))
        .map(|(root, routes)| (root.as_path(), routes.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FSID: u64 = 7;

    fn id(handle: &[u8]) -> FileId<'_> {
        FileId {
            fsid: FSID,
            handle_type: 1,
            handle,
        }
    }

    fn route(id: u64, path: &str, mask: EventMask) -> Route {
        Route {
            id,
            path: PathBuf::from(path),
            mask,
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

    fn routed(router: &mut Router, event: &ParsedEvent<'_>) -> Vec<(u64, PathBuf, EventMask)> {
        let mut out = Vec::new();
        router.route(event, &mut Resolver::default(), &mut out);
        out.into_iter()
            .map(|e| (e.spec.unwrap(), e.path, e.mask))
            .collect()
    }

    #[test]
    fn children_are_reported_under_the_spec_spelling() {
        let mut router = Router::default();
        let on_child = EventMask::CLOSE_WRITE | EventMask::EVENT_ON_CHILD;
        router.add_object(&id(b"dir"), route(1, "/link/to/dir", on_child));
        router.add_object(&id(b"dir"), route(2, "/real/dir", EventMask::CLOSE_WRITE));
        let write = event(
            EventMask::CLOSE_WRITE,
            Some(b"dir"),
            Some(b"f"),
            Some(b"file"),
        );
        assert_eq!(
            routed(&mut router, &write),
            [(1, PathBuf::from("/link/to/dir/f"), EventMask::CLOSE_WRITE)],
            "only the spec that asked for its children"
        );
        let own = event(
            EventMask::CLOSE_WRITE | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"."),
            None,
        );
        let own_events = routed(&mut router, &own);
        assert_eq!(own_events.len(), 2);
        assert_eq!(own_events[1].1, PathBuf::from("/real/dir"));
        assert_eq!(own_events[1].2, EventMask::CLOSE_WRITE | EventMask::ONDIR);
    }

    #[test]
    fn entry_changes_belong_to_the_directory_not_the_entry() {
        let mut router = Router::default();
        router.add_object(&id(b"dir"), route(1, "/d", EventMask::CREATE));
        router.add_object(
            &id(b"sub"),
            route(2, "/d/sub", EventMask::CREATE | EventMask::ATTRIB),
        );
        let mkdir = event(
            EventMask::CREATE | EventMask::ONDIR,
            Some(b"dir"),
            Some(b"sub"),
            Some(b"sub"),
        );
        assert_eq!(
            routed(&mut router, &mkdir),
            [(
                1,
                PathBuf::from("/d/sub"),
                EventMask::CREATE | EventMask::ONDIR
            )]
        );
        let elsewhere = event(EventMask::CREATE, Some(b"other"), Some(b"x"), Some(b"x"));
        assert!(routed(&mut router, &elsewhere).is_empty());
        // bookkeeping kinds no spec asked for are dropped
        let rename = event(EventMask::MOVED_FROM, Some(b"dir"), Some(b"x"), None);
        assert!(routed(&mut router, &rename).is_empty());
    }

    #[test]
    fn pinned_objects_are_known_by_handle() {
        let mut router = Router::default();
        router.pin(&id(b"ancestor"));
        assert!(router.is_pinned(&id(b"ancestor")));
        assert!(!router.is_pinned(&id(b"other")));
    }

    #[test]
    fn nearest_roots_come_first() {
        let mut roots = HashMap::new();
        roots.insert(PathBuf::from("/a"), vec![route(1, "/x", EventMask::CREATE)]);
        roots.insert(
            PathBuf::from("/a/b"),
            vec![route(2, "/y", EventMask::CREATE)],
        );
        let found: Vec<_> = roots_above(&roots, Path::new("/a/b/c"))
            .map(|(root, _)| root.to_path_buf())
            .collect();
        assert_eq!(found, [PathBuf::from("/a/b"), PathBuf::from("/a")]);
        assert_eq!(roots_above(&roots, Path::new("/ab")).count(), 0);
    }
}
