//! The inotify backend's table of watches: one node per watch descriptor, linked to its
//! parent directory (by descriptor and entry name) inside recursive trees, so a path is never
//! stored, only rebuilt from the spec's own spelling and the names below it (a renamed
//! subdirectory is one relink). Routing walks from the event's node to the roots above it
//! (O(depth)) and reports each event once per spec, as the fanotify router does.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::sys::inotify::WatchDescriptor;

use crate::kinds::EventMask;
use crate::marks::{MarkScope, MarkSpec};
use crate::watcher::WatchEvent;

/// Entry changes, reported to the directory they happen in.
const DIRENT: EventMask = EventMask::DIRENT;
/// What an object's own watch reports.
const OWN: EventMask = EventMask::ALL_NOTIFICATIONS.difference(DIRENT);
/// A subdirectory's own events that its parent's watch does not also report.
const SELF_ONLY: EventMask = EventMask::DELETE_SELF.union(EventMask::MOVE_SELF);
/// Deeper than any real tree: a guard against a parent cycle (a bind mount inside a tree).
const MAX_DEPTH: usize = 4096;

#[derive(Debug)]
pub(crate) struct Node {
    pub wd: WatchDescriptor,
    /// The directory this one is an entry of, inside a recursive tree.
    pub parent: Option<(i32, OsString)>,
    /// Ids of the specs whose path names this object.
    pub roots: Vec<u64>,
    /// `st_dev`: recursion stays on the filesystem of the tree's root.
    pub dev: u64,
    /// Covered by a recursive spec (its root or below it): new subdirectories get watches.
    pub in_tree: bool,
}

/// One spec and how far it is watched.
#[derive(Debug)]
pub(crate) struct SpecEntry {
    pub spec: MarkSpec,
    /// The watch on the object its path names, once placed.
    pub root: Option<i32>,
    /// Directories below it that got no watch because `max_user_watches` was reached.
    pub unwatched: u64,
    /// Why its own object has no watch.
    pub failure: Option<nix::errno::Errno>,
}

#[derive(Debug, Default)]
pub(crate) struct Tree {
    pub nodes: HashMap<i32, Node>,
    pub specs: HashMap<u64, SpecEntry>,
    children: HashMap<(i32, OsString), i32>,
}

impl Tree {
    pub(super) fn link(&mut self, parent: i32, name: OsString, child: i32) {
        if let Some(node) = self.nodes.get_mut(&child) {
            node.parent = Some((parent, name.clone()));
            node.in_tree = true;
            self.children.insert((parent, name), child);
        }
    }

    pub(super) fn is_linked(&self, wd: i32) -> bool {
        self.nodes.get(&wd).is_some_and(|n| n.parent.is_some())
    }

    /// Detaches the subdirectory `name` of `parent` (moved away); its node stays.
    pub(super) fn unlink_child(&mut self, parent: i32, name: &OsStr) -> Option<i32> {
        let child = self.children.remove(&(parent, name.to_os_string()))?;
        if let Some(node) = self.nodes.get_mut(&child) {
            node.parent = None;
        }
        Some(child)
    }

    /// Forgets a watch the kernel dropped (or that is being removed).
    pub(super) fn remove(&mut self, wd: i32) -> Option<Node> {
        let node = self.nodes.remove(&wd)?;
        if let Some(link) = node.parent.clone() {
            if self.children.get(&link) == Some(&wd) {
                self.children.remove(&link);
            }
        }
        Some(node)
    }

    /// `wd` and the linked nodes below it.
    pub(super) fn subtree(&self, wd: i32) -> Vec<i32> {
        self.nodes
            .keys()
            .copied()
            .filter(|&at| self.ancestors(at).any(|a| a == wd))
            .collect()
    }

    /// `wd`, its parent, its parent's parent, ...
    fn ancestors(&self, wd: i32) -> impl Iterator<Item = i32> + '_ {
        let mut at = Some(wd);
        std::iter::from_fn(move || {
            let now = at?;
            at = self
                .nodes
                .get(&now)
                .and_then(|n| n.parent.as_ref().map(|(p, _)| *p));
            Some(now)
        })
        .take(MAX_DEPTH)
    }

    /// A path that names the node now, spelled from the first root found above it.
    pub(super) fn path_of(&self, wd: i32) -> Option<PathBuf> {
        let mut below: Vec<&OsStr> = Vec::new();
        for at in self.ancestors(wd) {
            let node = self.nodes.get(&at)?;
            if let Some(entry) = node.roots.iter().find_map(|id| self.specs.get(id)) {
                let mut path = entry.spec.path.clone();
                below.iter().rev().for_each(|part| path.push(part));
                return Some(path);
            }
            below.push(node.parent.as_ref().map(|(_, n)| n.as_os_str())?);
        }
        None
    }

    /// Ids of the recursive specs covering `wd`.
    pub(super) fn trees_over(&self, wd: i32) -> Vec<u64> {
        self.ancestors(wd)
            .filter_map(|at| self.nodes.get(&at))
            .flat_map(|node| node.roots.iter().copied())
            .filter(|id| {
                self.specs
                    .get(id)
                    .is_some_and(|e| e.spec.scope == MarkScope::Filesystem)
            })
            .collect()
    }

    /// Appends one event per spec that an event on `wd` (about its entry `name`, if any)
    /// concerns, with the kinds that spec asked for (plus `ONDIR`). Returns how many.
    pub(super) fn route(
        &self,
        wd: i32,
        name: Option<&[u8]>,
        kinds: EventMask,
        out: &mut Vec<WatchEvent>,
    ) -> usize {
        let start = out.len();
        let flag = kinds & EventMask::ONDIR;
        let kinds = kinds & EventMask::ALL_NOTIFICATIONS;
        let mut below: Vec<&OsStr> = Vec::new();
        for (depth, at) in self.ancestors(wd).enumerate() {
            let Some(node) = self.nodes.get(&at) else {
                break;
            };
            for id in &node.roots {
                let Some(entry) = self.specs.get(id) else {
                    continue;
                };
                let spec = &entry.spec;
                let recursive = spec.scope == MarkScope::Filesystem;
                let allowed = match (depth, name.is_some()) {
                    (0, false) => OWN,
                    (0, true) if !recursive && !spec.mask.contains(EventMask::EVENT_ON_CHILD) => {
                        DIRENT
                    }
                    (0, true) => EventMask::ALL_NOTIFICATIONS,
                    _ if !recursive => continue,
                    // the parent's watch reports the rest of a subdirectory's own events
                    (_, false) => SELF_ONLY,
                    (_, true) => EventMask::ALL_NOTIFICATIONS,
                };
                let wanted = kinds & spec.mask & allowed;
                if wanted.is_empty() {
                    continue;
                }
                let mut path = spec.path.clone();
                below.iter().rev().for_each(|part| path.push(part));
                if let Some(name) = name {
                    path.push(OsStr::from_bytes(name));
                }
                out.push(WatchEvent {
                    spec: Some(*id),
                    path,
                    mask: wanted | flag,
                    pid: 0,
                });
            }
            match &node.parent {
                Some((_, part)) => below.push(part),
                None => break,
            }
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    /// Real descriptors (nix has no constructor): watches on three directories.
    fn tree_of_three(dir: &std::path::Path) -> (Inotify, Tree, [i32; 3]) {
        let fd = Inotify::init(InitFlags::IN_CLOEXEC).unwrap();
        let mut tree = Tree::default();
        let mut wds = [0; 3];
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            std::fs::create_dir(dir.join(name)).unwrap();
            let wd = fd
                .add_watch(&dir.join(name), AddWatchFlags::IN_CREATE)
                .unwrap();
            wds[i] = wd.as_raw();
            tree.nodes.insert(
                wd.as_raw(),
                Node {
                    wd,
                    parent: None,
                    roots: Vec::new(),
                    dev: 0,
                    in_tree: false,
                },
            );
        }
        (fd, tree, wds)
    }

    fn spec(tree: &mut Tree, id: u64, path: &str, scope: MarkScope, mask: EventMask, at: i32) {
        let spec = MarkSpec::new(id, path, scope, mask);
        tree.specs.insert(
            id,
            SpecEntry {
                spec,
                root: Some(at),
                unwatched: 0,
                failure: None,
            },
        );
        tree.nodes.get_mut(&at).unwrap().roots.push(id);
    }

    #[test]
    fn events_below_a_root_are_spelled_from_it_and_follow_relinks() {
        let dir = tempfile::tempdir().unwrap();
        let (_fd, mut tree, [a, b, c]) = tree_of_three(dir.path());
        let kinds = EventMask::CLOSE_WRITE | EventMask::CREATE;
        spec(&mut tree, 1, "/link/top", MarkScope::Filesystem, kinds, a);
        spec(
            &mut tree,
            2,
            "/plain",
            MarkScope::Inode,
            EventMask::CREATE,
            b,
        );
        tree.link(a, "sub".into(), b);
        tree.link(b, "deep".into(), c);
        let mut out = Vec::new();
        tree.route(c, Some(b"f"), EventMask::CLOSE_WRITE, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, PathBuf::from("/link/top/sub/deep/f"));
        out.clear();
        // a create in `b` concerns both: the plain spec on it and the tree above it
        tree.route(b, Some(b"g"), EventMask::CREATE, &mut out);
        let paths: Vec<_> = out.iter().map(|e| (e.spec, e.path.clone())).collect();
        assert_eq!(
            paths,
            [
                (Some(2), PathBuf::from("/plain/g")),
                (Some(1), PathBuf::from("/link/top/sub/g"))
            ]
        );
        assert_eq!(tree.path_of(c), Some(PathBuf::from("/plain/deep")));
        assert_eq!(tree.trees_over(c), [1]);
        // `sub` renamed to `moved`
        assert_eq!(tree.unlink_child(a, OsStr::new("sub")), Some(b));
        tree.link(a, "moved".into(), b);
        out.clear();
        tree.route(c, Some(b"f"), EventMask::CLOSE_WRITE, &mut out);
        assert_eq!(out[0].path, PathBuf::from("/link/top/moved/deep/f"));
        let mut below = tree.subtree(b);
        below.sort();
        assert_eq!(below, [b, c]);
    }

    #[test]
    fn plain_specs_see_children_only_when_asked_and_subdirs_own_events_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_fd, mut tree, [a, b, _]) = tree_of_three(dir.path());
        let all = EventMask::CLOSE_WRITE | EventMask::CREATE | EventMask::ATTRIB;
        spec(&mut tree, 1, "/d", MarkScope::Inode, all, a);
        let mut out = Vec::new();
        tree.route(a, Some(b"f"), EventMask::CLOSE_WRITE, &mut out);
        assert!(out.is_empty(), "no event_on_child: {out:?}");
        tree.route(a, Some(b"f"), EventMask::CREATE, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        spec(&mut tree, 2, "/t", MarkScope::Filesystem, all, a);
        tree.link(a, "s".into(), b);
        // the subdirectory's own attrib is also reported by its parent: only that one counts
        tree.route(b, None, EventMask::ATTRIB | EventMask::ONDIR, &mut out);
        assert!(out.is_empty(), "{out:?}");
        tree.route(
            a,
            Some(b"s"),
            EventMask::ATTRIB | EventMask::ONDIR,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].mask, EventMask::ATTRIB | EventMask::ONDIR);
    }
}
