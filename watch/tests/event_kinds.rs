//! Every notification kind on a real temp dir comes back with the right path and bits.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use common::*;
use triggerd_watch::{EventMask as M, MarkScope};

#[test]
fn each_kind_on_children_of_a_marked_directory() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    let mask = M::ACCESS
        | M::MODIFY
        | M::ATTRIB
        | M::OPEN
        | M::CLOSE_WRITE
        | M::CLOSE_NOWRITE
        | M::CREATE
        | M::DELETE
        | M::MOVED_FROM
        | M::MOVED_TO
        | M::EVENT_ON_CHILD;
    mark(&mut watcher, &[spec(&dir, MarkScope::Inode, mask)]);
    let mut events = Vec::new();
    let file = dir.join("f");

    let mut f = fs::File::create(&file).unwrap();
    expect(&mut watcher, &mut events, &file, M::CREATE | M::OPEN);
    f.write_all(b"hello").unwrap();
    drop(f);
    expect(&mut watcher, &mut events, &file, M::MODIFY | M::CLOSE_WRITE);

    events.clear();
    let mut text = String::new();
    fs::File::open(&file)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    expect(
        &mut watcher,
        &mut events,
        &file,
        M::OPEN | M::ACCESS | M::CLOSE_NOWRITE,
    );

    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    expect(&mut watcher, &mut events, &file, M::ATTRIB);

    let moved = dir.join("g");
    fs::rename(&file, &moved).unwrap();
    expect(&mut watcher, &mut events, &file, M::MOVED_FROM);
    expect(&mut watcher, &mut events, &moved, M::MOVED_TO);

    fs::remove_file(&moved).unwrap();
    expect(&mut watcher, &mut events, &moved, M::DELETE);

    // nothing is reported that was not asked for, and no event is about a directory
    assert!(events.iter().all(|e| mask.contains(e.mask)), "{events:#?}");
    assert!(events.iter().all(|e| e.pid == std::process::id() as i32));
}

#[test]
fn self_events_of_a_marked_file() {
    let (_guard, dir) = tempdir();
    let file = dir.join("self");
    fs::write(&file, b"x").unwrap();
    let mut watcher = new_watcher();
    // facron lines often carry FAN_EVENT_ON_CHILD on files too: accepted, meaningless
    let mask = M::MOVE_SELF | M::DELETE_SELF | M::EVENT_ON_CHILD;
    mark(&mut watcher, &[spec(&file, MarkScope::Inode, mask)]);
    let mut events = Vec::new();
    let moved = dir.join("self-moved");
    fs::rename(&file, &moved).unwrap();
    // reported by the path it was marked by: that is what a rule names
    expect(&mut watcher, &mut events, &file, M::MOVE_SELF);
    fs::remove_file(&moved).unwrap();
    // a marked object's own events always carry the spec's path, wherever it went
    expect(&mut watcher, &mut events, &file, M::DELETE_SELF);
    assert!(events.iter().all(|e| !e.mask.contains(M::ONDIR)));
}

#[test]
fn directory_events_need_ondir_except_entry_changes() {
    let (_guard, dir) = tempdir();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Inode,
            M::CREATE | M::ATTRIB | M::EVENT_ON_CHILD,
        )],
    );
    let mut events = Vec::new();
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    expect(&mut watcher, &mut events, &sub, M::CREATE | M::ONDIR);
    // attrib on a directory is not returned without ondir; on a file it is
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.join("file");
    fs::write(&file, b"").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    expect(&mut watcher, &mut events, &file, M::ATTRIB);
    assert!(!mask_of(&events, &sub).contains(M::ATTRIB), "{events:#?}");

    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Inode,
            M::ATTRIB | M::ONDIR | M::EVENT_ON_CHILD,
        )],
    );
    events.clear();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    expect(&mut watcher, &mut events, &dir, M::ATTRIB | M::ONDIR);
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    expect(&mut watcher, &mut events, &sub, M::ATTRIB | M::ONDIR);
}

#[test]
fn self_events_of_a_marked_directory() {
    let (_guard, dir) = tempdir();
    let sub = dir.join("d");
    fs::create_dir(&sub).unwrap();
    let mut watcher = new_watcher();
    mark(
        &mut watcher,
        &[spec(
            &sub,
            MarkScope::Inode,
            // no ondir: the spec names this directory for its own self events
            M::MOVE_SELF | M::DELETE_SELF,
        )],
    );
    let mut events = Vec::new();
    let moved = dir.join("d2");
    fs::rename(&sub, &moved).unwrap();
    expect(&mut watcher, &mut events, &sub, M::MOVE_SELF | M::ONDIR);
    fs::remove_dir(&moved).unwrap();
    expect(&mut watcher, &mut events, &sub, M::DELETE_SELF | M::ONDIR);
}

#[test]
fn public_types_cross_threads() {
    fn send<T: Send>() {}
    send::<triggerd_watch::Watcher>();
    send::<triggerd_watch::PermissionGate>();
    send::<triggerd_watch::PermissionRequest>();
    send::<triggerd_watch::WatchEvent>();
    send::<triggerd_watch::WatchError>();
}
