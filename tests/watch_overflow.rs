//! `on_overflow = "rescan"` through a real daemon and real fanotify: with the kernel's queue
//! lowered to 1024 events and the daemon stopped during a burst of 50,000 new files, the
//! queue overflows and most events are lost; the rescan that follows reports every file of
//! the burst at least once (gathered by `batch`, listed on stdin with `paths0`), counted as
//! `rescanned`.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;

use common::{paths0, saved_runs, Daemon, QueueLimit, SAVE_STDIN};

const FILES: usize = 50_000;

#[test]
fn every_file_of_a_burst_is_reported_after_an_overflow() {
    let mut daemon;
    {
        // The group takes its queue size when it is created: lower it just for this daemon.
        let limit = QueueLimit::lower(1024);
        daemon = Daemon::start_holding_lock("", limit);
    }
    for dir in 0..10 {
        fs::create_dir_all(daemon.path(&format!("in/d{dir}"))).unwrap();
    }
    fs::write(daemon.path("in/before"), "x").unwrap();
    let config = format!(
        "[[watch]]\nname = \"rescan\"\npath = \"{{dir}}/in\"\nevents = [\"close_write\"]\n\
         recursive = true\non_overflow = \"rescan\"\nbatch = \"200ms\"\nstdin = \"paths0\"\n\
         exec = [\"/bin/sh\", \"-c\", {SAVE_STDIN:?}, \"{{out}}\", \"rescan\"]\n"
    );
    daemon.write_config(&config);
    daemon.reload();
    daemon.wait_watching();

    // Stopped, the daemon reads nothing: the kernel's queue fills and overflows.
    daemon.signal(libc::SIGSTOP);
    let mut expected = BTreeSet::new();
    for i in 0..FILES {
        let name = if i % 1000 == 0 {
            format!("f{i}\nnl")
        } else {
            format!("f{i}")
        };
        let path = daemon.path(&format!("in/d{}/{name}", i % 10));
        fs::write(&path, "x").unwrap();
        expected.insert(path.into_os_string());
    }
    daemon.signal(libc::SIGCONT);

    let out = daemon.out();
    let missing = || -> usize {
        let listed: BTreeSet<OsString> = saved_runs(&out, "rescan")
            .iter()
            .flat_map(|(input, _)| paths0(input))
            .collect();
        expected.difference(&listed).count()
    };
    common::wait_for("every file of the burst reported", common::DEADLINE, || {
        (missing() == 0).then_some(())
    });
    let status = daemon.status();
    assert!(status.watch.overflows > 0, "the queue must have overflowed");
    let rule = daemon.rule("rescan");
    assert!(rule.overflowed > 0);
    // At most 1024 events fit in the queue: the rescan reported the rest.
    assert!(
        rule.rescanned as usize >= FILES - 1024,
        "rescanned {} of {FILES}",
        rule.rescanned
    );
}
