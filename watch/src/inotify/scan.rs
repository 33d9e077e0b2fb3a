//! How the inotify backend follows its trees: listing directories (at start, and each new
//! one once its watch is in place), keeping the tree right as directories are made, moved
//! and removed, and reporting at each drain what the listings found that no real event
//! covered.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, Inotify};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, OwnedFd};

use super::probe::{openness, Openness};
use super::tree::Node;
use super::{Found, InotifyWatcher};
use crate::kinds::EventMask;
use crate::marks::MarkScope;
use crate::watcher::WatchEvent;

/// The queue marker: an unlinked temp file watched for `IN_ATTRIB` (None where the temp
/// filesystem has no `O_TMPFILE`: then a real event racing a report may be reported twice).
pub(super) fn marker(fd: &Inotify) -> Option<(OwnedFd, i32)> {
    let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
    let file = nix::fcntl::open(
        &std::env::temp_dir(),
        flags,
        Mode::from_bits_truncate(0o600),
    )
    .ok()?;
    let wd = fd
        .add_watch(
            &crate::sys::proc_fd_path(file.as_fd()),
            AddWatchFlags::IN_ATTRIB,
        )
        .ok()?;
    Some((file, wd.as_raw()))
}

impl InotifyWatcher {
    /// Watches every directory below `top` not watched yet (same filesystem, no links
    /// followed); with `report`, every entry met is a `Found` to report at the next drain.
    pub(super) fn walk(&mut self, top: i32, report: bool) {
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let Some(path) = self.tree.path_of(dir) else {
                continue;
            };
            // a spec's root may be a link it follows; links below it are never followed
            let is_root = self
                .tree
                .nodes
                .get(&dir)
                .is_some_and(|n| !n.roots.is_empty());
            let mut flags = nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC;
            if !is_root {
                flags |= nix::fcntl::OFlag::O_NOFOLLOW;
            }
            let Ok(mut listing) = nix::dir::Dir::open(&path, flags, nix::sys::stat::Mode::empty())
            else {
                continue;
            };
            let names: Vec<(OsString, Option<nix::dir::Type>)> = listing
                .iter()
                .flatten()
                .map(|e| {
                    (
                        OsStr::from_bytes(e.file_name().to_bytes()).to_owned(),
                        e.file_type(),
                    )
                })
                .filter(|(n, _)| n != "." && n != "..")
                .collect();
            for (name, kind) in names {
                let is_dir = match kind {
                    Some(nix::dir::Type::Directory) => true,
                    Some(_) => false,
                    None => nix::sys::stat::lstat(&path.join(&name))
                        .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR),
                };
                if report {
                    self.found.entry((dir, name.clone())).or_insert(Found {
                        is_dir,
                        seen: EventMask::EMPTY,
                    });
                }
                if is_dir {
                    match self.watch_dir(dir, &path, name) {
                        Some((child, new)) if new || !report => stack.push(child),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Gives the subdirectory `name` of the watched `parent` (spelled `parent_path`) its
    /// watch and links it; returns it, and whether it is new (not linked or walked before).
    fn watch_dir(
        &mut self,
        parent: i32,
        parent_path: &Path,
        name: OsString,
    ) -> Option<(i32, bool)> {
        let path = parent_path.join(&name);
        let dev = self.tree.nodes.get(&parent)?.dev;
        let stat = nix::sys::stat::lstat(&path).ok()?;
        if stat.st_dev != dev || stat.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return None;
        }
        let wd = match self.fd.add_watch(
            &path,
            AddWatchFlags::from_bits_retain(self.mask)
                | AddWatchFlags::IN_ONLYDIR
                | AddWatchFlags::IN_DONT_FOLLOW,
        ) {
            Ok(wd) => wd,
            Err(Errno::ENOSPC) => {
                self.refused += 1;
                for id in self.tree.trees_over(parent) {
                    if let Some(entry) = self.tree.specs.get_mut(&id) {
                        entry.unwatched += 1;
                    }
                }
                return None;
            }
            Err(_) => return None,
        };
        let raw = wd.as_raw();
        if self.tree.is_linked(raw) {
            return Some((raw, false));
        }
        // a spec's recursive root: its own walk listed it
        let walked = self.tree.nodes.get(&raw).is_some_and(|n| n.in_tree);
        self.tree.nodes.entry(raw).or_insert(Node {
            wd,
            parent: None,
            roots: Vec::new(),
            dev,
            in_tree: true,
        });
        self.tree.link(parent, name, raw);
        Some((raw, !walked))
    }

    /// Keeps found entries and the tree right as entries come and go.
    pub(super) fn follow_entry(
        &mut self,
        wd: i32,
        name: &[u8],
        mask: u32,
        cookie: u32,
        kinds: EventMask,
        in_tree: bool,
    ) {
        let name = OsStr::from_bytes(name).to_os_string();
        let key = (wd, name);
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM) != 0
        {
            // made (or gone) after the listing: real events tell its story
            self.found.remove(&key);
        } else if let Some(found) = self.found.get_mut(&key) {
            found.seen |= kinds;
        }
        if mask & libc::IN_ISDIR == 0 || !in_tree {
            return;
        }
        let (wd, name) = key;
        if mask & libc::IN_MOVED_FROM != 0 {
            if let Some(child) = self.tree.unlink_child(wd, &name) {
                self.moved.insert(cookie, child);
            }
        }
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            if let Some(child) = self
                .moved
                .remove(&cookie)
                .filter(|_| mask & libc::IN_MOVED_TO != 0)
            {
                self.tree.link(wd, name, child);
                return;
            }
            let Some(parent_path) = self.tree.path_of(wd) else {
                return;
            };
            // entries already in a directory moved in were not made there: not reported
            let report = mask & libc::IN_CREATE != 0;
            if let Some((child, true)) = self.watch_dir(wd, &parent_path, name) {
                self.walk(child, report);
            }
        }
    }

    pub(super) fn mark_stale(&mut self) {
        self.stale = true;
        self.rebuild = true;
    }

    /// The queue was found empty: every event queued before any listing made so far has
    /// been read, so what the listings found and no real event covered is reported now.
    pub(super) fn report_found(&mut self, out: &mut Vec<WatchEvent>) {
        for (_, child) in std::mem::take(&mut self.moved) {
            // moved out of every watched tree: its watches go
            for wd in self.tree.subtree(child) {
                if let Some(node) = self.tree.nodes.get(&wd) {
                    if node.roots.is_empty() {
                        let _ = self.fd.rm_watch(node.wd);
                        self.tree.remove(wd);
                    }
                }
            }
        }
        if std::mem::take(&mut self.resync) {
            let roots: Vec<i32> = self
                .tree
                .specs
                .values()
                .filter(|e| e.spec.scope == MarkScope::Filesystem)
                .filter_map(|e| e.root)
                .collect();
            for root in roots {
                self.walk(root, false);
            }
        }
        let probe_quietly = self.mask & (libc::IN_OPEN | libc::IN_CLOSE_NOWRITE) == 0;
        let wants_close = self.mask & libc::IN_CLOSE_WRITE != 0;
        for ((wd, name), found) in std::mem::take(&mut self.found) {
            let mut kinds = EventMask::CREATE;
            if found.is_dir {
                kinds |= EventMask::ONDIR;
            } else if wants_close && !found.seen.contains(EventMask::CLOSE_WRITE) {
                let done = match self.tree.path_of(wd) {
                    Some(dir) if probe_quietly => openness(&dir, name.as_bytes()),
                    _ => Openness::Untold,
                };
                if matches!(done, Openness::Closed | Openness::Untold) {
                    kinds |= EventMask::CLOSE_WRITE;
                }
            }
            let kinds = kinds.difference(found.seen.difference(EventMask::ONDIR));
            self.tree.route(wd, Some(name.as_bytes()), kinds, out);
            if self.marker.is_some() {
                self.reported
                    .insert((wd, name), kinds.difference(EventMask::ONDIR));
            }
        }
        if let (Some((marker, _)), false) = (&self.marker, self.reported.is_empty()) {
            // IN_ATTRIB, queued after every event the probes could have raced
            let _ = nix::sys::stat::fchmod(marker.as_fd(), Mode::from_bits_truncate(0o600));
        }
    }
}
