//! The namespace of the mount: an inode tree of directories and trigger files, built from the
//! trigger specs plus the persisted runtime changes, and mutated by mkdir, rmdir, rename and
//! setattr. The tree owns inode numbering (stable for a key or a directory path across
//! rebuilds, never reused within one mount) and derives the state that is persisted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::Errno;

use crate::state::{AttrOverride, State, TriggerState};
use crate::{FsError, TriggerSpec};

/// Inode number of the mount's root directory (fixed by FUSE).
pub(crate) const ROOT: u64 = 1;
/// Longest name of one path component, as on most Linux filesystems.
const NAME_MAX: usize = 255;
/// Longest relative path accepted for a trigger or a directory.
const PATH_MAX: usize = 4096;
/// Attributes of a directory that exists only because a trigger or a kept directory lies
/// below it.
const IMPLICIT_DIR: Attrs = Attrs {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Permission bits and ownership of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attrs {
    pub(crate) fn of_spec(spec: &TriggerSpec) -> Self {
        Attrs {
            mode: spec.mode & 0o7777,
            uid: spec.uid,
            gid: spec.gid,
        }
    }
}

pub(crate) enum Kind {
    /// `kept` directories were made or changed at runtime and are persisted; the others exist
    /// only as parents and vanish on the next rebuild once nothing lies below them.
    Dir {
        children: BTreeMap<String, u64>,
        kept: bool,
    },
    Trigger {
        key: Arc<str>,
    },
}

pub(crate) struct Node {
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    pub attrs: Attrs,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// A cached directory entry the kernel must forget after a rebuild.
pub(crate) struct StaleEntry {
    pub parent: u64,
    pub name: String,
}

pub(crate) struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    specs: BTreeMap<Arc<str>, TriggerSpec>,
}

/// Checks that `path` is a relative path of plain components ("dir/name") and splits it.
pub(crate) fn split_path(path: &str) -> Result<Vec<&str>, &'static str> {
    if path.is_empty() || path.len() > PATH_MAX {
        return Err("path must be 1..=4096 bytes");
    }
    if path.starts_with('/') {
        return Err("path must be relative to the mount");
    }
    path.split('/')
        .map(|part| check_name(part).map(|()| part))
        .collect()
}

/// Checks a trigger path the way the tree will when it is mounted, so that a config can be
/// refused before it reaches the mount.
pub fn check_trigger_path(path: &str) -> Result<(), &'static str> {
    split_path(path).map(drop)
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("empty, '.' or '..' path component");
    }
    if name.len() > NAME_MAX {
        return Err("path component longer than 255 bytes");
    }
    if name.contains('\0') || name.contains('/') {
        return Err("NUL or '/' in a name");
    }
    Ok(())
}

/// Maps a name given by the kernel to a name the tree accepts.
pub(crate) fn name_from_os(name: &std::ffi::OsStr) -> Result<&str, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    check_name(name).map_err(|_| Errno::EINVAL)?;
    Ok(name)
}

impl Tree {
    fn empty(next_ino: u64) -> Self {
        let now = SystemTime::now();
        let root = Node {
            parent: ROOT,
            name: String::new(),
            kind: Kind::Dir {
                children: BTreeMap::new(),
                kept: false,
            },
            attrs: IMPLICIT_DIR,
            mtime: now,
            ctime: now,
        };
        Tree {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: next_ino.max(ROOT + 1),
            specs: BTreeMap::new(),
        }
    }

    /// Builds the tree for `specs`, applying the runtime changes in `state` that still fit.
    /// Inode numbers of `previous` (a tree of this mount, or the numbers a predecessor on the
    /// same connection handed out) are kept for the same trigger key or directory path.
    /// Returns the tree and the warnings about parts of the state that were ignored.
    pub(crate) fn build(
        specs: &[TriggerSpec],
        state: &State,
        previous: Option<&Tree>,
    ) -> Result<(Tree, Vec<String>), FsError> {
        Tree::build_numbered(specs, state, previous.map(Tree::inodes).unwrap_or_default())
    }

    /// [`Tree::build`] with the inode numbers to keep given explicitly.
    pub(crate) fn build_numbered(
        specs: &[TriggerSpec],
        state: &State,
        mut reuse: Inodes,
    ) -> Result<(Tree, Vec<String>), FsError> {
        let mut tree = Tree::empty(reuse.next);
        let mut warnings = Vec::new();

        for spec in specs {
            split_path(&spec.file).map_err(|reason| FsError::InvalidSpec {
                file: spec.file.clone(),
                reason: reason.to_string(),
            })?;
            let key: Arc<str> = Arc::from(spec.file.as_str());
            if tree.specs.insert(key, spec.clone()).is_some() {
                return Err(FsError::InvalidSpec {
                    file: spec.file.clone(),
                    reason: "two triggers with the same file".to_string(),
                });
            }
        }
        // Config paths first, so that a persisted move can never displace a configured file.
        let (moved, in_place): (Vec<&TriggerSpec>, Vec<&TriggerSpec>) =
            specs.iter().partition(|s| {
                state
                    .triggers
                    .get(&s.file)
                    .and_then(|t| t.path.as_ref())
                    .is_some_and(|p| *p != s.file)
            });
        for spec in in_place {
            let attrs = state_attrs(state, spec);
            tree.place_trigger(&spec.file, spec, attrs, &mut reuse)
                .map_err(|reason| FsError::InvalidSpec {
                    file: spec.file.clone(),
                    reason: reason.to_string(),
                })?;
        }
        for (path, attrs) in &state.dirs {
            match tree.ensure_dirs(path, &mut reuse) {
                Ok(ino) => {
                    if let Some(node) = tree.nodes.get_mut(&ino) {
                        node.attrs = *attrs;
                        if let Kind::Dir { kept, .. } = &mut node.kind {
                            *kept = true;
                        }
                    }
                }
                Err(why) => warnings.push(format!("state: directory {path:?} ignored: {why}")),
            }
        }
        for spec in moved {
            let attrs = state_attrs(state, spec);
            let target = state
                .triggers
                .get(&spec.file)
                .and_then(|t| t.path.as_deref());
            let placed = target.map(|path| tree.place_trigger(path, spec, attrs, &mut reuse));
            if let Some(Err(why)) = placed {
                warnings.push(format!(
                    "state: move of trigger {:?} to {target:?} ignored: {why}",
                    spec.file
                ));
                if let Err(why) = tree.place_trigger(&spec.file, spec, attrs, &mut reuse) {
                    warnings.push(format!("trigger {:?} has no file: {why}", spec.file));
                }
            }
        }
        Ok((tree, warnings))
    }

    fn alloc_ino(&mut self, reused: Option<u64>) -> u64 {
        match reused {
            Some(ino) if !self.nodes.contains_key(&ino) => ino,
            _ => {
                let ino = self.next_ino;
                self.next_ino += 1;
                ino
            }
        }
    }

    /// Makes sure every directory of `path` exists; returns the inode of the last one.
    fn ensure_dirs(&mut self, path: &str, reuse: &mut Inodes) -> Result<u64, &'static str> {
        let mut dir = ROOT;
        let mut walked = String::new();
        for part in split_path(path)? {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            dir = match self.child(dir, part) {
                Some(ino) if self.is_dir(ino) => ino,
                Some(_) => return Err("a trigger file is in the way"),
                None => {
                    let ino = self.alloc_ino(reuse.dirs.remove(&walked));
                    let kind = Kind::Dir {
                        children: BTreeMap::new(),
                        kept: false,
                    };
                    self.attach(dir, part, ino, kind, IMPLICIT_DIR);
                    ino
                }
            };
        }
        Ok(dir)
    }

    fn place_trigger(
        &mut self,
        path: &str,
        spec: &TriggerSpec,
        attrs: Attrs,
        reuse: &mut Inodes,
    ) -> Result<u64, &'static str> {
        let (dir_path, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (Some(dir), name),
            None => (None, path),
        };
        check_name(name)?;
        let parent = match dir_path {
            Some(dir) => self.ensure_dirs(dir, reuse)?,
            None => ROOT,
        };
        if self.child(parent, name).is_some() {
            return Err("the path is already taken");
        }
        let key: Arc<str> = Arc::from(spec.file.as_str());
        let ino = self.alloc_ino(reuse.triggers.remove(&*key));
        self.attach(parent, name, ino, Kind::Trigger { key }, attrs);
        Ok(ino)
    }

    fn attach(&mut self, parent: u64, name: &str, ino: u64, kind: Kind, attrs: Attrs) {
        let now = SystemTime::now();
        if let Some(Node {
            kind: Kind::Dir { children, .. },
            mtime,
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.insert(name.to_string(), ino);
            *mtime = now;
        }
        let node = Node {
            parent,
            name: name.to_string(),
            kind,
            attrs,
            mtime: now,
            ctime: now,
        };
        self.nodes.insert(ino, node);
    }

    pub(crate) fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.kind),
            Some(Kind::Dir { .. })
        )
    }

    pub(crate) fn child(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.nodes.get(&parent)?.kind {
            Kind::Dir { children, .. } => children.get(name).copied(),
            Kind::Trigger { .. } => None,
        }
    }

    /// At most `limit` entries of directory `ino` from the `skip`th on, in a stable order: a
    /// readdir page costs its own entries, not a copy of a directory of 50,000 files.
    pub(crate) fn children(
        &self,
        ino: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(u64, String, bool)>, Errno> {
        match &self.nodes.get(&ino).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir { children, .. } => Ok(children
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(name, &child)| (child, name.clone(), self.is_dir(child)))
                .collect()),
            Kind::Trigger { .. } => Err(Errno::ENOTDIR),
        }
    }

    /// The path of `ino` relative to the mount ("" for the root).
    pub(crate) fn path_of(&self, mut ino: u64) -> String {
        let mut parts = Vec::new();
        while ino != ROOT {
            let Some(node) = self.nodes.get(&ino) else {
                break;
            };
            parts.push(node.name.as_str());
            ino = node.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    pub(crate) fn mkdir(&mut self, parent: u64, name: &str, attrs: Attrs) -> Result<u64, Errno> {
        if !self.is_dir(parent) {
            return Err(Errno::ENOTDIR);
        }
        if self.child(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.alloc_ino(None);
        let kind = Kind::Dir {
            children: BTreeMap::new(),
            kept: true,
        };
        self.attach(parent, name, ino, kind, attrs);
        Ok(ino)
    }

    pub(crate) fn rmdir(&mut self, parent: u64, name: &str) -> Result<(), Errno> {
        let ino = self.child(parent, name).ok_or(Errno::ENOENT)?;
        match &self.nodes.get(&ino).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir { children, .. } if children.is_empty() => {}
            Kind::Dir { .. } => return Err(Errno::ENOTEMPTY),
            Kind::Trigger { .. } => return Err(Errno::ENOTDIR),
        }
        self.detach(ino);
        self.nodes.remove(&ino);
        Ok(())
    }

    fn detach(&mut self, ino: u64) {
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(Node {
            kind: Kind::Dir { children, .. },
            mtime,
            ..
        }) = self.nodes.get_mut(&parent)
        {
            children.remove(&name);
            *mtime = SystemTime::now();
        }
    }

    /// Moves a trigger file or a directory. Never replaces an existing entry.
    pub(crate) fn rename(
        &mut self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Result<(), Errno> {
        let ino = self.child(parent, name).ok_or(Errno::ENOENT)?;
        if !self.is_dir(new_parent) {
            return Err(Errno::ENOTDIR);
        }
        if let Some(existing) = self.child(new_parent, new_name) {
            return if existing == ino {
                Ok(())
            } else {
                Err(Errno::EEXIST)
            };
        }
        // A directory cannot move below itself.
        let mut up = new_parent;
        while up != ROOT {
            if up == ino {
                return Err(Errno::EINVAL);
            }
            up = self.nodes.get(&up).map_or(ROOT, |n| n.parent);
        }
        self.detach(ino);
        let Some(node) = self.nodes.remove(&ino) else {
            return Err(Errno::ENOENT);
        };
        let mut kind = node.kind;
        if let Kind::Dir { kept, .. } = &mut kind {
            *kept = true;
        }
        self.attach(new_parent, new_name, ino, kind, node.attrs);
        Ok(())
    }

    /// Applies chmod/chown; returns whether anything changed.
    pub(crate) fn set_attrs(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<bool, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let before = node.attrs;
        if let Some(mode) = mode {
            node.attrs.mode = mode & 0o7777;
        }
        if let Some(uid) = uid {
            node.attrs.uid = uid;
        }
        if let Some(gid) = gid {
            node.attrs.gid = gid;
        }
        let changed = before != node.attrs;
        if changed {
            node.ctime = SystemTime::now();
            if let Kind::Dir { kept, .. } = &mut node.kind {
                *kept = true;
            }
        }
        Ok(changed)
    }

    pub(crate) fn touch(&mut self, ino: u64, mtime: Option<SystemTime>) {
        if let (Some(node), Some(mtime)) = (self.nodes.get_mut(&ino), mtime) {
            node.mtime = mtime;
        }
    }

    /// The runtime changes to persist: kept directories, moved or re-moded trigger files.
    pub(crate) fn to_state(&self) -> State {
        let mut state = State::default();
        for (&ino, node) in &self.nodes {
            match &node.kind {
                Kind::Dir { kept: true, .. } if ino != ROOT => {
                    state.dirs.insert(self.path_of(ino), node.attrs);
                }
                Kind::Dir { .. } => {}
                Kind::Trigger { key } => {
                    let Some(spec) = self.specs.get(key) else {
                        continue;
                    };
                    let path = self.path_of(ino);
                    let config = Attrs::of_spec(spec);
                    let entry = TriggerState {
                        path: (path != **key).then_some(path),
                        attrs: (node.attrs != config).then_some(AttrOverride {
                            mode: node.attrs.mode,
                            uid: node.attrs.uid,
                            gid: node.attrs.gid,
                            config,
                        }),
                    };
                    if entry.path.is_some() || entry.attrs.is_some() {
                        state.triggers.insert(key.to_string(), entry);
                    }
                }
            }
        }
        state
    }

    /// Entries of `self` the kernel may have cached that `new` no longer has (same inode
    /// under the same parent and name), plus inodes whose attributes changed.
    pub(crate) fn stale_against(&self, new: &Tree) -> (Vec<StaleEntry>, Vec<u64>) {
        let mut entries = Vec::new();
        let mut inodes = Vec::new();
        for (&ino, node) in &self.nodes {
            if ino == ROOT {
                continue;
            }
            match new.nodes.get(&ino) {
                Some(now) if now.parent == node.parent && now.name == node.name => {
                    if now.attrs != node.attrs {
                        inodes.push(ino);
                    }
                }
                _ => entries.push(StaleEntry {
                    parent: node.parent,
                    name: node.name.clone(),
                }),
            }
        }
        (entries, inodes)
    }
}

/// A persisted chmod/chown applies while the config still says what it said when the change
/// was made; once the config's mode or owner is edited, the config wins.
fn state_attrs(state: &State, spec: &TriggerSpec) -> Attrs {
    let config = Attrs::of_spec(spec);
    match state
        .triggers
        .get(&spec.file)
        .and_then(|t| t.attrs.as_ref())
    {
        Some(o) if o.config == config => Attrs {
            mode: o.mode & 0o7777,
            uid: o.uid,
            gid: o.gid,
        },
        _ => config,
    }
}

/// The inode numbers of a tree by trigger key and directory path, handed out again by the next
/// build; kept in the session file for a successor on the same FUSE connection.
#[derive(Default, Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inodes {
    pub triggers: BTreeMap<String, u64>,
    pub dirs: BTreeMap<String, u64>,
    /// The next number never handed out on this connection.
    pub next: u64,
}

impl Tree {
    pub(crate) fn inodes(&self) -> Inodes {
        let mut inodes = Inodes {
            next: self.next_ino,
            ..Inodes::default()
        };
        for (&ino, node) in &self.nodes {
            match &node.kind {
                Kind::Trigger { key } => {
                    inodes.triggers.insert(key.to_string(), ino);
                }
                Kind::Dir { .. } if ino != ROOT => {
                    inodes.dirs.insert(self.path_of(ino), ino);
                }
                Kind::Dir { .. } => {}
            }
        }
        inodes
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
