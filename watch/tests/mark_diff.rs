//! `set_marks` is a diff: adding or removing one spec leaves the others' events flowing,
//! re-applying the same set loses nothing, specs on one object OR their masks, and a spec
//! that cannot be marked is reported alone.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use triggerd_watch::{EventMask as M, MarkScope, MarkSpec};

fn child_writes(dir: &std::path::Path) -> MarkSpec {
    spec(dir, MarkScope::Inode, M::CLOSE_WRITE | M::EVENT_ON_CHILD)
}

#[test]
fn removing_a_spec_stops_only_its_events() {
    let (_g1, one) = tempdir();
    let (_g2, two) = tempdir();
    let mut watcher = new_watcher();
    let both = [child_writes(&one), child_writes(&two)];
    mark(&mut watcher, &both);
    let mut events = Vec::new();
    fs::write(one.join("a"), b"").unwrap();
    fs::write(two.join("a"), b"").unwrap();
    expect(&mut watcher, &mut events, &one.join("a"), M::CLOSE_WRITE);
    expect(&mut watcher, &mut events, &two.join("a"), M::CLOSE_WRITE);

    mark(&mut watcher, &both[..1]);
    events.clear();
    fs::write(two.join("b"), b"").unwrap();
    fs::write(one.join("b"), b"").unwrap(); // queued after two/b: when seen, two/b was read
    expect(&mut watcher, &mut events, &one.join("b"), M::CLOSE_WRITE);
    assert!(
        events.iter().all(|e| !e.path.starts_with(&two)),
        "{events:#?}"
    );

    mark(&mut watcher, &both);
    fs::write(two.join("c"), b"").unwrap();
    expect(&mut watcher, &mut events, &two.join("c"), M::CLOSE_WRITE);
}

#[test]
fn specs_on_one_object_or_their_masks_and_failures_stay_alone() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    let missing = dir.join("not-there");
    let errors = watcher
        .set_marks(&[
            spec(&dir, MarkScope::Inode, M::CREATE),
            spec(&missing, MarkScope::Inode, M::CREATE),
            child_writes(&dir),
        ])
        .unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, missing);
    assert_eq!(errors[0].error.errno(), Some(nix::errno::Errno::ENOENT));
    let file = dir.join("f");
    fs::write(&file, b"").unwrap();
    let mut events = Vec::new();
    expect(&mut watcher, &mut events, &file, M::CREATE | M::CLOSE_WRITE);
}

#[test]
fn reapplying_marks_while_writing_loses_no_event() {
    const FILES: usize = 2000;
    let (_g1, dir) = tempdir();
    let (_g2, other) = tempdir();
    let mut watcher = new_watcher();
    let base = child_writes(&dir);
    mark(&mut watcher, std::slice::from_ref(&base));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let dir = dir.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for i in 0..FILES {
                fs::write(dir.join(format!("f{i}")), b"x").unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut events = Vec::new();
    let mut round = 0usize;
    while !done.load(Ordering::SeqCst) {
        // the same set, then a set with one more and one changed spec, then back
        let specs = match round % 3 {
            0 => vec![base.clone()],
            1 => vec![
                base.clone(),
                child_writes(&other),
                spec(&dir, MarkScope::Inode, M::CREATE),
            ],
            _ => vec![base.clone(), child_writes(&other)],
        };
        mark(&mut watcher, &specs);
        watcher.read_events(&mut events).unwrap();
        round += 1;
    }
    writer.join().unwrap();
    let want: HashSet<PathBuf> = (0..FILES).map(|i| dir.join(format!("f{i}"))).collect();
    let seen = |events: &[triggerd_watch::WatchEvent]| {
        events
            .iter()
            .filter(|e| e.mask.contains(M::CLOSE_WRITE))
            .map(|e| e.path.clone())
            .collect::<HashSet<_>>()
    };
    let complete = read_until(&mut watcher, &mut events, |evs| {
        seen(evs).is_superset(&want)
    });
    assert!(
        complete,
        "missing {} of {FILES} after {round} re-marks",
        want.difference(&seen(&events)).count()
    );
    assert!(
        round > 3,
        "the writer finished before marks were re-applied"
    );
}

#[test]
fn a_replaced_file_asks_for_a_remark_and_is_watched_again() {
    let (_guard, dir) = tempdir();
    let file = dir.join("app.conf");
    fs::write(&file, b"v1").unwrap();
    let mut watcher = new_watcher();
    let specs = [spec(&file, MarkScope::Inode, M::CLOSE_WRITE)];
    mark(&mut watcher, &specs);
    assert!(!watcher.marks_stale());
    // an editor's atomic save: write a new file, rename it over the old one
    let tmp = dir.join(".app.conf.swp");
    fs::write(&tmp, b"v2").unwrap();
    fs::rename(&tmp, &file).unwrap();
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut stale = false;
    while !stale && std::time::Instant::now() < deadline {
        wait_readable(&watcher, std::time::Duration::from_millis(200));
        watcher.read_events(&mut events).unwrap();
        stale = watcher.marks_stale();
    }
    assert!(stale, "the replaced file was not noticed");
    mark(&mut watcher, &specs);
    fs::write(&file, b"v3").unwrap();
    expect(&mut watcher, &mut events, &file, M::CLOSE_WRITE);
}

#[test]
fn dropping_kinds_and_flags_of_a_spec_applies() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Inode,
            M::CREATE | M::CLOSE_WRITE | M::EVENT_ON_CHILD,
        )],
    );
    let mut events = Vec::new();
    fs::write(dir.join("one"), b"").unwrap();
    expect(
        &mut watcher,
        &mut events,
        &dir.join("one"),
        M::CREATE | M::CLOSE_WRITE,
    );

    mark(&mut watcher, &[spec(&dir, MarkScope::Inode, M::CREATE)]);
    events.clear();
    fs::write(dir.join("two"), b"").unwrap();
    fs::write(dir.join("three"), b"").unwrap();
    expect(&mut watcher, &mut events, &dir.join("three"), M::CREATE);
    assert_eq!(mask_of(&events, &dir.join("two")), M::CREATE, "{events:#?}");
    assert!(events.iter().all(|e| e.mask == M::CREATE), "{events:#?}");
}

#[test]
fn events_queued_before_a_mark_is_removed_are_still_delivered() {
    let (_guard, dir) = tempdir();
    let file = dir.join("moving");
    let written = dir.join("w");
    fs::write(&file, b"").unwrap();
    fs::create_dir(&written).unwrap();
    let mut watcher = new_watcher();
    let self_events = spec(&file, MarkScope::Inode, M::MOVE_SELF | M::DELETE_SELF);
    mark(&mut watcher, &[self_events.clone(), child_writes(&written)]);
    fs::rename(&file, dir.join("moved")).unwrap();
    fs::write(written.join("f"), b"x").unwrap();
    // Re-applied before the queue is read (a stale-marks pass after another event): the path
    // names nothing now, so that mark goes, and the write watch is dropped on purpose.
    let errors = watcher.set_marks(&[self_events]).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let mut events = Vec::new();
    expect(&mut watcher, &mut events, &file, M::MOVE_SELF);
    expect(
        &mut watcher,
        &mut events,
        &written.join("f"),
        M::CLOSE_WRITE,
    );

    // Once the queue has been drained, removed marks are gone for good.
    events.clear();
    fs::write(written.join("g"), b"x").unwrap();
    // (the kernel queues an event within the write itself, so one read is enough to tell)
    watcher.read_events(&mut events).unwrap();
    assert!(events.is_empty(), "{events:?}");
}
