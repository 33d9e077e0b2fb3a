//! `poll` through a real daemon, on a FUSE view (`bindfs`) of a directory: a change made in
//! the directory itself reaches the view but not fsnotify, as another NFS client's change
//! would not (this machine's kernel has no NFS client or server, so NFS itself cannot be
//! mounted here). A polled watch fires for it with the same events and tokens; a marked watch
//! on the view does not, and the daemon warns at start that its path is on FUSE and names
//! `poll`.

mod common;

use std::fs;

use common::mounts::Mounts;
use common::{runs_of, Daemon};

#[test]
fn a_polled_watch_sees_changes_that_never_reach_fanotify() {
    let mut daemon = Daemon::start("");
    let d = daemon.dir.path().display().to_string();
    let mut mounts = Mounts::default();
    fs::create_dir(daemon.path("server")).unwrap();
    mounts.fuse_view(&daemon.path("server"), &daemon.path("view"));
    let config = "[[watch]]\nname = \"polled\"\npath = \"{dir}/view\"\n\
        events = [\"create\", \"delete\"]\npoll = \"200ms\"\n\
        exec = [\"{record}\", \"{out}\", \"polled\", \"$$\", \"$%\"]\n\n\
        [[watch]]\nname = \"marked\"\npath = \"{dir}/view\"\nevents = [\"close_write\"]\n\
        exec = [\"{record}\", \"{out}\", \"marked\", \"$$\"]\n";
    daemon.write_config(config);
    daemon.reload();
    daemon.wait_watching();
    assert_eq!(daemon.ctl_backend("polled").0, "poll");

    // Behind the view's back, as another client of the same export would.
    fs::write(daemon.path("server/remote"), "x").unwrap();
    let created = common::wait_for("the polled create", common::DEADLINE, || {
        common::records(&daemon.out())
            .into_iter()
            .find(|r| r[0] == "polled")
    });
    assert_eq!(created[1], format!("{d}/view/remote").as_str());
    assert_eq!(created[2], "create");
    fs::remove_file(daemon.path("server/remote")).unwrap();
    common::wait_for("the polled delete", common::DEADLINE, || {
        common::records(&daemon.out())
            .iter()
            .any(|r| r[0] == "polled" && r[2] == "delete")
            .then_some(())
    });

    // A write through the view is seen by the marked watch; the remote one never was.
    fs::write(daemon.path("view/local"), "x").unwrap();
    common::wait_for("the marked run", common::DEADLINE, || {
        (!runs_of(&daemon, "marked").is_empty()).then_some(())
    });
    assert_eq!(runs_of(&daemon, "marked"), [format!("{d}/view/local")]);
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("is on FUSE") && l.contains("poll")),
        "no warning naming poll"
    );
    drop(daemon);
    drop(mounts);
}
