//! Unit tests of the tree: spec validation, applying persisted state, inode stability.

use super::*;
use crate::Split;

fn spec(file: &str) -> TriggerSpec {
    TriggerSpec {
        file: file.into(),
        split: Split::Write,
        mode: 0o644,
        uid: 0,
        gid: 0,
        limits: Default::default(),
    }
}

fn ino_of(tree: &Tree, path: &str) -> Option<u64> {
    let mut ino = ROOT;
    for part in path.split('/') {
        ino = tree.child(ino, part)?;
    }
    Some(ino)
}

#[test]
fn bad_specs_are_refused() {
    for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/", &"x".repeat(256)] {
        let r = Tree::build(&[spec(bad)], &State::default(), None);
        assert!(r.is_err(), "{bad:?} accepted");
    }
    let dup = Tree::build(&[spec("a/b"), spec("a/b")], &State::default(), None);
    assert!(dup.is_err(), "duplicate accepted");
    let nested = Tree::build(&[spec("a/b"), spec("a/b/c")], &State::default(), None);
    assert!(nested.is_err(), "a trigger used as a directory accepted");
}

#[test]
fn state_moves_apply_and_yield_to_configured_paths() {
    let mut state = State::default();
    state.triggers.insert(
        "a/x".into(),
        TriggerState {
            path: Some("b/y".into()),
            attrs: None,
        },
    );
    state.triggers.insert(
        "a/z".into(),
        TriggerState {
            path: Some("c/w".into()),
            attrs: None,
        },
    );
    // c/w is now a configured path: the persisted move of a/z to it loses.
    let specs = [spec("a/x"), spec("a/z"), spec("c/w")];
    let (tree, warnings) = Tree::build(&specs, &state, None).expect("build");
    assert!(ino_of(&tree, "b/y").is_some());
    assert!(ino_of(&tree, "a/x").is_none());
    assert!(
        ino_of(&tree, "a/z").is_some(),
        "back at its configured path"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let saved = tree.to_state();
    assert_eq!(
        saved.triggers.len(),
        1,
        "only the move that applied is kept"
    );
}

#[test]
fn inodes_are_stable_across_rebuilds_and_renames_are_checked() {
    let specs = [spec("d/t"), spec("e")];
    let (mut tree, _) = Tree::build(&specs, &State::default(), None).expect("build");
    let t = ino_of(&tree, "d/t").expect("d/t");
    let d = ino_of(&tree, "d").expect("d");
    assert_eq!(tree.rename(d, "t", ROOT, "e"), Err(Errno::EEXIST));
    assert_eq!(tree.rename(ROOT, "d", d, "inside"), Err(Errno::EINVAL));
    let m = tree.mkdir(ROOT, "m", IMPLICIT_DIR).expect("mkdir");
    tree.rename(d, "t", m, "t2").expect("mv");
    let (again, _) = Tree::build(&specs, &tree.to_state(), Some(&tree)).expect("rebuild");
    assert_eq!(ino_of(&again, "m/t2"), Some(t), "same inode after a reload");
    let (stale, _) = tree.stale_against(&again);
    // d held only t: it vanishes on the rebuild and the kernel must forget it.
    assert!(stale.iter().any(|e| e.parent == ROOT && e.name == "d"));
}
