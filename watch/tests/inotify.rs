//! The inotify backend on real directories: plain and recursive specs, directories made
//! before their watch could land (their entries are reported once, a file still being
//! written only when it is closed), renames inside a tree, specs it must refuse.

mod common;

use std::path::Path;

use common::{read_until, spec, tempdir};
use triggerd_watch::{EventMask, InotifyWatcher, MarkScope, WatchError, WatchEvent};

fn count(events: &[WatchEvent], path: &Path, kind: EventMask) -> usize {
    events
        .iter()
        .filter(|e| e.path == path && e.mask.contains(kind))
        .count()
}

#[test]
fn plain_and_recursive_specs_report_under_their_own_spelling() {
    let (_keep, dir) = tempdir();
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let link = dir.join("link");
    let plain = spec(
        &link,
        MarkScope::Inode,
        EventMask::CLOSE_WRITE | EventMask::CREATE,
    );
    let mut tree = spec(
        &dir.join("real"),
        MarkScope::Filesystem,
        EventMask::CLOSE_WRITE,
    );
    tree.id = plain.id + 1;
    let mut watcher = InotifyWatcher::new().unwrap();
    assert!(watcher.set_specs(&[plain.clone(), tree.clone()]).is_empty());
    std::fs::write(link.join("f"), b"x").unwrap();
    let mut events = Vec::new();
    assert!(read_until(&mut watcher, &mut events, |e| {
        count(e, &dir.join("real/f"), EventMask::CLOSE_WRITE) == 1
    }));
    // the plain spec asked for entries only (no event_on_child): its create, not the write
    assert_eq!(count(&events, &link.join("f"), EventMask::CREATE), 1);
    assert_eq!(count(&events, &link.join("f"), EventMask::CLOSE_WRITE), 0);
    events.clear();
    // made, filled and closed before the watcher read a thing: found by listing, once
    std::fs::create_dir_all(dir.join("real/a/b")).unwrap();
    std::fs::write(dir.join("real/a/b/early"), b"x").unwrap();
    let busy = std::fs::File::create(dir.join("real/a/busy")).unwrap();
    let deep = dir.join("real/a/b/early");
    assert!(read_until(&mut watcher, &mut events, |e| {
        count(e, &deep, EventMask::CLOSE_WRITE) == 1
    }));
    // still open for writing: reported when it is closed, not before
    assert_eq!(
        count(&events, &dir.join("real/a/busy"), EventMask::CLOSE_WRITE),
        0
    );
    drop(busy);
    std::fs::rename(dir.join("real/a"), dir.join("real/moved")).unwrap();
    std::fs::write(dir.join("real/moved/b/late"), b"x").unwrap();
    assert!(read_until(&mut watcher, &mut events, |e| {
        count(e, &dir.join("real/moved/b/late"), EventMask::CLOSE_WRITE) == 1
    }));
    assert_eq!(
        count(&events, &dir.join("real/a/busy"), EventMask::CLOSE_WRITE),
        1
    );
    assert_eq!(
        count(&events, &deep, EventMask::CLOSE_WRITE),
        1,
        "{events:#?}"
    );
    assert!(events
        .iter()
        .all(|e| e.spec == Some(tree.id) || e.path.starts_with(&link)));
}

#[test]
fn kinds_inotify_cannot_report_and_missing_paths_are_refused_per_spec() {
    let (_keep, dir) = tempdir();
    let exec = spec(&dir, MarkScope::Inode, EventMask::OPEN_EXEC);
    let missing = spec(&dir.join("nope"), MarkScope::Inode, EventMask::CLOSE_WRITE);
    let mut watcher = InotifyWatcher::new().unwrap();
    let errors = watcher.set_specs(&[exec.clone(), missing.clone()]);
    assert_eq!(errors.len(), 2, "{errors:?}");
    let exec_error = errors.iter().find(|e| e.spec == exec.id).unwrap();
    assert!(exec_error.is_permanent());
    assert!(exec_error.to_string().contains("open_exec"), "{exec_error}");
    let missing_error = errors.iter().find(|e| e.spec == missing.id).unwrap();
    assert!(!missing_error.is_permanent());
    assert_eq!(missing_error.error.errno(), Some(nix::errno::Errno::ENOENT));
    // once it exists, the same set places it
    std::fs::create_dir(dir.join("nope")).unwrap();
    let errors = watcher.set_specs(&[exec, missing]);
    assert_eq!(errors.len(), 1);
    assert!(matches!(
        errors[0].error,
        WatchError::NoInotifyEquivalent { .. }
    ));
}

#[test]
fn a_tree_made_while_the_watcher_reads_is_followed() {
    let (_keep, dir) = tempdir();
    let plain = spec(
        &dir,
        MarkScope::Inode,
        EventMask::CLOSE_WRITE | EventMask::EVENT_ON_CHILD,
    );
    let mut tree = spec(&dir, MarkScope::Filesystem, EventMask::CLOSE_WRITE);
    tree.id = plain.id + 1;
    let mut watcher = InotifyWatcher::new().unwrap();
    assert!(watcher.set_specs(&[plain, tree]).is_empty());
    let top = dir.clone();
    let writer = std::thread::spawn(move || {
        std::fs::create_dir_all(top.join("new/deep")).unwrap();
        std::fs::write(top.join("new/deep/g"), b"x").unwrap();
    });
    let mut events = Vec::new();
    let seen = read_until(&mut watcher, &mut events, |e| {
        count(e, &dir.join("new/deep/g"), EventMask::CLOSE_WRITE) == 1
    });
    writer.join().unwrap();
    assert!(seen, "{events:#?}");
}
