//! Paths come back right: a filesystem mark covers directories created later at any depth,
//! names with any bytes are byte-exact, renamed directories are followed, tmpfs works.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use triggerd_watch::{EventMask as M, MarkScope, WatchEvent};

fn under<'a>(events: &'a [WatchEvent], dir: &'a Path) -> impl Iterator<Item = &'a WatchEvent> {
    events.iter().filter(move |e| e.path.starts_with(dir))
}

#[test]
fn filesystem_mark_sees_a_file_in_a_fresh_deep_tree() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    let mask = M::CREATE | M::CLOSE_WRITE;
    mark(&mut watcher, &[spec(&dir, MarkScope::Filesystem, mask)]);
    let status = Command::new("sh")
        .arg("-c")
        .arg("mkdir -p a/b/c/d && echo x > a/b/c/d/f")
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let file = dir.join("a/b/c/d/f");
    let mut events = Vec::new();
    expect(&mut watcher, &mut events, &file, M::CREATE | M::CLOSE_WRITE);
    for sub in ["a", "a/b", "a/b/c", "a/b/c/d"] {
        expect(
            &mut watcher,
            &mut events,
            &dir.join(sub),
            M::CREATE | M::ONDIR,
        );
    }
    let ours: Vec<_> = under(&events, &dir).collect();
    assert!(
        ours.iter().all(|e| mask.union(M::ONDIR).contains(e.mask)),
        "{ours:#?}"
    );
}

#[test]
fn odd_names_come_back_byte_exact() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Inode,
            M::CLOSE_WRITE | M::EVENT_ON_CHILD,
        )],
    );
    let names: [&[u8]; 6] = [
        b"with space",
        b"new\nline",
        b"quotes'\"`",
        b"$HOME $$ $@",
        b"bad\xff\xfeutf8",
        b"-dash;|&*?",
    ];
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| dir.join(OsStr::from_bytes(n)))
        .collect();
    for path in &paths {
        fs::write(path, b"x").unwrap();
    }
    let mut events = Vec::new();
    for path in &paths {
        expect(&mut watcher, &mut events, path, M::CLOSE_WRITE);
    }
    assert_eq!(events.len(), paths.len(), "{events:#?}");
}

#[test]
fn renamed_directory_yields_new_paths_after_being_cached() {
    let (_guard, dir) = tempdir();
    fs::create_dir_all(dir.join("x/z")).unwrap();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(&dir, MarkScope::Filesystem, M::CLOSE_WRITE)],
    );
    let mut events = Vec::new();
    // cache x and x/z
    fs::write(dir.join("x/f1"), b"1").unwrap();
    fs::write(dir.join("x/z/f1"), b"1").unwrap();
    expect(&mut watcher, &mut events, &dir.join("x/f1"), M::CLOSE_WRITE);
    expect(
        &mut watcher,
        &mut events,
        &dir.join("x/z/f1"),
        M::CLOSE_WRITE,
    );
    fs::rename(dir.join("x"), dir.join("y")).unwrap();
    fs::write(dir.join("y/f2"), b"2").unwrap();
    fs::write(dir.join("y/z/f2"), b"2").unwrap();
    expect(&mut watcher, &mut events, &dir.join("y/f2"), M::CLOSE_WRITE);
    expect(
        &mut watcher,
        &mut events,
        &dir.join("y/z/f2"),
        M::CLOSE_WRITE,
    );
    // the parent of the cached directories moves too
    let inner = dir.join("inner");
    fs::create_dir(&inner).unwrap();
    fs::rename(dir.join("y"), inner.join("y")).unwrap();
    fs::write(inner.join("y/z/f3"), b"3").unwrap();
    expect(
        &mut watcher,
        &mut events,
        &inner.join("y/z/f3"),
        M::CLOSE_WRITE,
    );
    assert!(
        !under(&events, &dir).any(|e| e.path.starts_with(dir.join("x")) && !e.path.ends_with("f1")),
        "{events:#?}"
    );
}

/// Like an inotify watch, an inode mark stays on its directory when an ancestor is renamed;
/// its events keep the spec's spelling, and the watcher says the specs must be applied
/// again (the spec's path may now name nothing, or something else).
#[test]
fn inode_mark_follows_a_rename_of_an_ancestor() {
    let (_guard, dir) = tempdir();
    let watched = dir.join("p/q");
    fs::create_dir_all(&watched).unwrap();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &watched,
            MarkScope::Inode,
            M::CLOSE_WRITE | M::EVENT_ON_CHILD,
        )],
    );
    let mut events = Vec::new();
    fs::write(watched.join("f"), b"1").unwrap();
    expect(
        &mut watcher,
        &mut events,
        &watched.join("f"),
        M::CLOSE_WRITE,
    );
    fs::rename(dir.join("p"), dir.join("p2")).unwrap();
    fs::write(dir.join("p2/q/g"), b"2").unwrap();
    expect(
        &mut watcher,
        &mut events,
        &watched.join("g"),
        M::CLOSE_WRITE,
    );
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(watcher.marks_stale());
    let moved = dir.join("p2/q");
    let errors = watcher
        .set_marks(&[
            spec(
                &watched,
                MarkScope::Inode,
                M::CLOSE_WRITE | M::EVENT_ON_CHILD,
            ),
            spec(&moved, MarkScope::Inode, M::CLOSE_WRITE | M::EVENT_ON_CHILD),
        ])
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, watched);
    fs::write(moved.join("h"), b"3").unwrap();
    expect(&mut watcher, &mut events, &moved.join("h"), M::CLOSE_WRITE);
    assert!(
        mask_of(&events, &watched.join("h")).is_empty(),
        "{events:#?}"
    );
}

#[test]
fn tmpfs_supports_fid_marks() {
    let shm = Path::new("/dev/shm");
    let guard = tempfile::Builder::new()
        .prefix("triggerd-watch")
        .tempdir_in(shm)
        .unwrap();
    let dir = guard.path().canonicalize().unwrap();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[
            spec(
                &dir,
                MarkScope::Inode,
                M::CREATE | M::CLOSE_WRITE | M::EVENT_ON_CHILD,
            ),
            spec(&dir, MarkScope::Filesystem, M::DELETE),
        ],
    );
    let file = dir.join("t");
    fs::write(&file, b"x").unwrap();
    let mut events = Vec::new();
    expect(&mut watcher, &mut events, &file, M::CREATE | M::CLOSE_WRITE);
    fs::remove_file(&file).unwrap();
    expect(&mut watcher, &mut events, &file, M::DELETE);
}

#[test]
fn events_of_vanished_directories_are_not_fatal() {
    let (_guard, dir) = tempdir();
    let gone = dir.join("gone");
    fs::create_dir(&gone).unwrap();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Filesystem,
            M::CLOSE_WRITE | M::DELETE,
        )],
    );
    // queued while the directory exists, read after it (and its handle) is gone
    fs::write(gone.join("f"), b"x").unwrap();
    fs::remove_dir_all(&gone).unwrap();
    fs::write(dir.join("after"), b"x").unwrap();
    let mut events = Vec::new();
    expect(
        &mut watcher,
        &mut events,
        &dir.join("after"),
        M::CLOSE_WRITE,
    );
    // Events inside the vanished directory are reported by path or counted as unresolved
    // (which of the file's events still resolve depends on timing); the watcher goes on.
    let file_events = mask_of(&events, &gone.join("f"));
    assert!(
        !file_events.is_empty() || watcher.unresolved() > 0,
        "{events:#?}"
    );
    assert!(mask_of(&events, &gone).contains(M::DELETE | M::ONDIR) || watcher.unresolved() > 0);
    assert_eq!(watcher.malformed(), 0);
}
