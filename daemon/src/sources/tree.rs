//! A watched tree as `stat` sees it: each regular file's size, mtime and ctime, taken by a walk
//! that covers what the watch covers (the path itself if it is a file, a directory's entries,
//! with `recursive` the whole tree on the path's filesystem; symbolic links are not followed,
//! unreadable parts are skipped) and that its filter admits. Rescans after an overflow
//! (`rescan.rs`) and polling (`poll.rs`) compare two of these.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::WatchTrigger;

/// Files whose state one rule keeps; past it a file is `untracked`.
const MAX_TRACKED: usize = 1_000_000;

/// Size, mtime and ctime (nanoseconds since the epoch).
pub(super) type FileState = (u64, i128, i128);

#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub files: HashMap<PathBuf, FileState>,
    /// Files seen past `MAX_TRACKED`: a comparison counts them as new every time.
    pub untracked: Vec<PathBuf>,
    /// When the walk started (nanoseconds since the epoch).
    pub started: i128,
}

/// How a file differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    New,
    /// Size or mtime.
    Content,
    /// Only ctime (mode, owner, links, extended attributes).
    Attrib,
    Removed,
}

impl Snapshot {
    pub fn take(w: &WatchTrigger) -> Self {
        let mut snapshot = Snapshot {
            started: nanos(SystemTime::now()),
            ..Default::default()
        };
        visit(w, &mut |path, state| {
            if snapshot.files.len() < MAX_TRACKED {
                snapshot.files.insert(path, state);
            } else {
                snapshot.untracked.push(path);
            }
        });
        snapshot
    }

    /// What changed since `old`, file by file.
    pub fn changes(&self, old: &Snapshot) -> Vec<(PathBuf, Change)> {
        let mut changes: Vec<(PathBuf, Change)> = self
            .files
            .iter()
            .filter_map(|(path, &(size, mtime, ctime))| {
                let change = match old.files.get(path) {
                    None => Change::New,
                    Some(&(s, m, _)) if s != size || m != mtime => Change::Content,
                    Some(&(_, _, c)) if c != ctime => Change::Attrib,
                    Some(_) => return None,
                };
                Some((path.clone(), change))
            })
            .collect();
        changes.extend(self.untracked.iter().map(|p| (p.clone(), Change::New)));
        changes.extend(
            old.files
                .keys()
                .filter(|p| !self.files.contains_key(*p))
                .map(|p| (p.clone(), Change::Removed)),
        );
        changes
    }
}

fn visit(w: &WatchTrigger, found: &mut dyn FnMut(PathBuf, FileState)) {
    let Ok(root) = std::fs::metadata(&w.path) else {
        return;
    };
    if !root.is_dir() {
        if root.is_file() {
            found(w.path.clone(), state(&root));
        }
        return;
    }
    let mut dirs = vec![w.path.clone()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() && w.recursive && meta.dev() == root.dev() {
                dirs.push(path);
            } else if meta.is_file() && w.filter.admits(&w.path, &path) {
                found(path, state(&meta));
            }
        }
    }
}

fn state(meta: &std::fs::Metadata) -> FileState {
    let at = |secs: i64, nsecs: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsecs);
    (
        meta.size(),
        at(meta.mtime(), meta.mtime_nsec()),
        at(meta.ctime(), meta.ctime_nsec()),
    )
}

pub(super) fn nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}
