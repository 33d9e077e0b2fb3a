//! A full queue is never silent: an OVERFLOW event is returned and counted.

mod common;

use std::fs;

use common::*;
use triggerd_watch::{EventMask as M, MarkScope};

#[test]
fn overflow_is_reported_and_counted() {
    let (_guard, dir) = tempdir();
    let mut watcher = {
        let _limit = QueueLimit::set(32);
        triggerd_watch::Watcher::new().unwrap()
    }; // the limit is restored here; the group keeps its 32-event queue
    mark(
        &mut watcher,
        &[spec(
            &dir,
            MarkScope::Inode,
            M::CLOSE_WRITE | M::OVERFLOW | M::EVENT_ON_CHILD,
        )],
    );
    for i in 0..200 {
        fs::write(dir.join(format!("f{i}")), b"x").unwrap();
    }
    let mut events = Vec::new();
    let seen = read_until(&mut watcher, &mut events, |evs| {
        evs.iter().any(|e| e.is_overflow())
    });
    assert!(seen, "{events:#?}");
    assert!(watcher.overflows() > 0);
    let overflow = events.iter().find(|e| e.mask == M::OVERFLOW).unwrap();
    assert!(overflow.path.as_os_str().is_empty());
    let writes = events
        .iter()
        .filter(|e| e.mask.contains(M::CLOSE_WRITE))
        .count();
    assert!((16..200).contains(&writes), "{writes} writes");
    // the group keeps working after an overflow
    fs::write(dir.join("after"), b"x").unwrap();
    expect(
        &mut watcher,
        &mut events,
        &dir.join("after"),
        M::CLOSE_WRITE,
    );
}
