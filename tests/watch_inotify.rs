//! The inotify backend and mount marks through a real daemon: a 20,000-file burst into a tree
//! whose directories are made during the burst fires every file once or reports an overflow;
//! an exhausted `fs.inotify.max_user_watches` is a clear, counted refusal that spares the
//! other rules; `mount_only = true` sees writes through its mount and not through the
//! bind mount's source.

mod common;

use std::fs::{self, File};
use std::path::Path;

use common::mounts::Mounts;
use common::{records, wait_for, Daemon, DEADLINE};

const BURST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(180);
use nix::fcntl::{Flock, FlockArg};

const MAX_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Tests that hold inotify watches take this shared; the one that lowers the global watch
/// limit takes it exclusively.
fn watch_limit_lock(kind: FlockArg) -> Flock<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/triggerd-inotify-sysctl.lock")
        .unwrap();
    Flock::lock(file, kind).map_err(|(_, e)| e).unwrap()
}

/// `max_user_watches` lowered while held; the old value is back on drop, however the test ends.
struct WatchLimit {
    old: String,
    _lock: Flock<File>,
}

impl WatchLimit {
    /// Leaves room for `room` more watches than the host holds now.
    fn room_for(room: u64) -> Self {
        let lock = watch_limit_lock(FlockArg::LockExclusive);
        let old = fs::read_to_string(MAX_WATCHES).unwrap();
        fs::write(MAX_WATCHES, (watches_in_use() + room).to_string()).unwrap();
        Self { old, _lock: lock }
    }
}

impl Drop for WatchLimit {
    fn drop(&mut self) {
        let _ = fs::write(MAX_WATCHES, self.old.trim());
    }
}

/// Every inotify watch held on the host now (the limit counts them all, per user).
fn watches_in_use() -> u64 {
    let mut count = 0;
    for process in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = fs::read_dir(process.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(info) = fs::read_to_string(fd.path()) {
                count += info
                    .lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count() as u64;
            }
        }
    }
    count
}

fn inotify_rule(name: &str, path: &Path, recursive: bool, extra: &str) -> String {
    format!(
        "[[watch]]\nname = \"{name}\"\npath = \"{}\"\nevents = [\"close_write\"]\nrecursive = {recursive}\nbackend = \"inotify\"\n{extra}exec = [\"{{record}}\", \"{{out}}\", \"{name}\", \"$$\"]\n\n",
        path.display()
    )
}

fn ran(daemon: &Daemon, rule: &str, path: &Path) -> bool {
    records(&daemon.out())
        .iter()
        .any(|r| r[0] == rule && Path::new(&r[1]) == path)
}

#[test]
fn an_inotify_burst_fires_every_file_once_or_reports_the_overflow() {
    const DIRS: usize = 200;
    const PER_DIR: usize = 100;
    let _shared = watch_limit_lock(FlockArg::LockShared);
    let mut daemon = Daemon::create("");
    let tree = daemon.path("tree");
    fs::create_dir(&tree).unwrap();
    // The burst is counted, not run: one run at a time, the rest dropped (and counted).
    let burst = "max_running = 1\non_busy = \"drop\"\n";
    let config = format!(
        "{}{}",
        inotify_rule("burst", &tree, true, burst),
        inotify_rule("marker", &tree, false, "")
    )
    .replace(
        "[\"{record}\", \"{out}\", \"burst\", \"$$\"]",
        "[\"/bin/true\"]",
    );
    daemon.write_config(&config);
    daemon.launch();
    daemon.wait_watching();
    // Every directory is made during the burst and filled at once, racing its watch.
    for d in 0..DIRS {
        let dir = tree.join(format!("d{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..PER_DIR {
            fs::write(dir.join(format!("f{f:03}")), b"x").unwrap();
        }
    }
    let files = (DIRS * PER_DIR) as u64;
    // Entries found in a new directory are reported when the queue is next found empty, so
    // they may come after a later write: wait for all of them (each marker is in the tree
    // too), or for an overflow.
    fs::write(tree.join("marker"), b"x").unwrap();
    // 20,000 runs of a debug build on a shared machine: a liveness bound, not a speed target.
    wait_for("every burst file, or an overflow", BURST_DEADLINE, || {
        let rule = daemon.rule("burst");
        (rule.matched > files || rule.overflowed > 0).then_some(())
    });
    // A second marker, read after everything the first one could have raced.
    fs::write(tree.join("marker2"), b"x").unwrap();
    wait_for("the second marker", DEADLINE, || {
        ran(&daemon, "marker", &tree.join("marker2")).then_some(())
    });
    let rule = daemon.rule("burst");
    let status = daemon.status();
    let burst_events = rule.matched.saturating_sub(2);
    assert!(burst_events <= files, "a file fired twice: {rule:?}");
    if burst_events < files {
        assert!(
            rule.overflowed > 0 && status.watch.inotify_overflows > 0,
            "{burst_events} of {files} files fired and no overflow was reported: {rule:?} {:?}",
            status.watch
        );
    }
    assert_eq!(daemon.ctl_backend("burst").0, "inotify");
}

#[test]
fn an_exhausted_watch_limit_is_a_counted_refusal_and_spares_other_rules() {
    let mut daemon = Daemon::create("");
    let small = daemon.path("small");
    let big = daemon.path("big");
    fs::create_dir(&small).unwrap();
    for d in 0..40 {
        fs::create_dir_all(big.join(format!("d{d}"))).unwrap();
    }
    daemon.write_config(&format!(
        "{}{}",
        inotify_rule("small", &small, false, ""),
        inotify_rule("big", &big, true, "")
    ));
    let limit = WatchLimit::room_for(8);
    daemon.launch();
    let refused = wait_for("the refusal", DEADLINE, || {
        Some(daemon.rule("big")).filter(|r| r.state != "active")
    });
    assert!(
        refused.state.starts_with("waiting: ")
            && refused.state.contains("max_user_watches")
            && refused.state.contains("not watched"),
        "{refused:?}"
    );
    let status = daemon.status();
    assert!(status.watch.inotify_refused > 0, "{:?}", status.watch);
    assert_eq!(daemon.rule("small").state, "active");
    fs::write(small.join("f"), b"x").unwrap();
    wait_for("small fires", DEADLINE, || {
        ran(&daemon, "small", &small.join("f")).then_some(())
    });
    // watches to spare again: the next retry watches the whole tree
    drop(limit);
    wait_for("big watched", DEADLINE, || {
        Some(daemon.rule("big")).filter(|r| r.state == "active")
    });
    fs::write(big.join("d39/g"), b"x").unwrap();
    wait_for("big fires", DEADLINE, || {
        ran(&daemon, "big", &big.join("d39/g")).then_some(())
    });
}

#[test]
fn a_mount_only_rule_sees_writes_through_its_mount_and_not_the_source() {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let (source, bind) = mounts.bind_in(daemon.dir.path());
    daemon.write_config(&format!(
        "[[watch]]\nname = \"mount\"\npath = \"{}\"\nevents = [\"close_write\"]\nmount_only = true\nexec = [\"{{record}}\", \"{{out}}\", \"mount\", \"$$\"]\n",
        bind.display()
    ));
    daemon.launch();
    daemon.wait_watching();
    assert_eq!(
        daemon.ctl_backend("mount"),
        ("fanotify-mount".to_string(), "active".to_string())
    );
    fs::write(source.join("via-source"), b"x").unwrap();
    fs::write(bind.join("via-bind"), b"x").unwrap();
    wait_for("the write through the bind mount", DEADLINE, || {
        ran(&daemon, "mount", &bind.join("via-bind")).then_some(())
    });
    // Events are offered in queue order: had the source write been seen, it would have
    // been matched before the bind one.
    let rule = daemon.rule("mount");
    assert_eq!(rule.matched, 1, "{rule:?}");
    assert!(!ran(&daemon, "mount", &bind.join("via-source")));
    drop(mounts);
}
