//! A config of 50,000 `[[watch]]` rules on 50,000 directories plus 50,000 `[[trigger]]` files,
//! run by the real daemon: the first and the last rule fire, a trigger write runs, `status`
//! answers; with the open-file limit lowered to 256 before start every watch is still held
//! (marks need no fd; what cannot be watched is refused and counted); a reload that changes one rule leaves every
//! other rule's counters and kernel marks as they were and loses or repeats no event.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{records, sh, wait_for, Daemon, SysctlLock};

const N: usize = 50_000;
/// Starting and reloading 100,000 entries in a debug build on a loaded machine is slow; this
/// bounds each wait, it times nothing.
const SCALE_DEADLINE: Duration = Duration::from_secs(600);

/// `n` watch rules `w{i}` on `{dir}/w/d{i}` and `n` trigger files `t/t{i}`; `changed` rule's
/// events include `moved_to`.
fn rules(n: usize, changed: Option<usize>) -> String {
    let mut text = String::with_capacity(n * 260);
    for i in 0..n {
        let events = if changed == Some(i) {
            "[\"close_write\", \"moved_to\"]"
        } else {
            "\"close_write\""
        };
        text += &format!(
            "[[watch]]\nname = \"w{i}\"\npath = \"{{dir}}/w/d{i}\"\nevents = {events}\nexec = [\"{{record}}\", \"{{out}}\", \"w{i}\", \"$#\"]\n\n"
        );
    }
    for i in 0..n {
        text += &format!(
            "[[trigger]]\nname = \"t{i}\"\nfile = \"t/t{i}\"\nmode = \"0666\"\nexec = [\"{{record}}\", \"{{out}}\", \"t{i}\"]\n\n"
        );
    }
    text
}

/// A daemon on the scale config, not started yet, with its watched directories made.
fn create(n: usize) -> Daemon {
    let daemon = Daemon::create(&rules(n, None));
    for i in 0..n {
        std::fs::create_dir_all(daemon.path(&format!("w/d{i}"))).expect("watched dir");
    }
    daemon
}

/// Starts `daemon`, with the open-file limit set to `nofile` (soft and hard) when given.
fn launch(daemon: &mut Daemon, nofile: Option<u64>) {
    let _lock = SysctlLock::shared();
    let log = File::options()
        .create(true)
        .append(true)
        .open(&daemon.log)
        .expect("log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_triggerd"));
    command
        .arg("--config")
        .arg(&daemon.config)
        .env("TRIGGERD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if let Some(limit) = nofile {
        // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
        unsafe {
            command.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    limit,
                    limit,
                )
                .map_err(std::io::Error::from)
            });
        }
    }
    daemon.child = Some(command.spawn().expect("spawn triggerd"));
    wait_for("the control socket", SCALE_DEADLINE, || {
        daemon.assert_alive();
        daemon.try_status()
    });
}

/// The argument lists recorded for `tag` (the rule name the action was given).
fn runs_of(out: &Path, tag: &str) -> Vec<Vec<OsString>> {
    records(out)
        .into_iter()
        .filter(|r| r.first().is_some_and(|a| a == tag))
        .collect()
}

fn wait_runs(daemon: &Daemon, tag: &str, n: usize) -> Vec<Vec<OsString>> {
    wait_for(&format!("{n} runs of {tag}"), SCALE_DEADLINE, || {
        let runs = runs_of(&daemon.out(), tag);
        (runs.len() >= n).then_some(runs)
    })
}

/// Writes a file into rule `i`'s directory and waits for its run.
fn fires(daemon: &Daemon, i: usize, file: &str) {
    let tag = format!("w{i}");
    let before = runs_of(&daemon.out(), &tag).len();
    std::fs::write(daemon.path(&format!("w/d{i}/{file}")), b"x").expect("write");
    let runs = wait_runs(daemon, &tag, before + 1);
    assert!(
        runs.iter().any(|r| r.get(1).is_some_and(|a| a == file)),
        "{tag} ran for {file}: {runs:?}"
    );
}

fn trigger_runs(daemon: &Daemon, i: usize) {
    let tag = format!("t{i}");
    sh(&format!(
        "printf 'hello' > '{}'",
        daemon.path(&format!("fs/t/t{i}")).display()
    ));
    wait_runs(daemon, &tag, 1);
}

/// Sends SIGUSR1 and waits (up to `SCALE_DEADLINE`) until the daemon has counted the reload.
fn reload(daemon: &mut Daemon) -> triggerd::control::Status {
    let before = daemon.status().reloads;
    daemon.signal(libc::SIGUSR1);
    wait_for("the reload", SCALE_DEADLINE, || {
        daemon.try_status().filter(|s| s.reloads > before)
    })
}

/// The marks of the daemon's fanotify groups, as the kernel lists them in fdinfo.
fn kernel_marks(pid: i32) -> BTreeSet<String> {
    let mut marks = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
    {
        let is_group = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().contains("[fanotify]"));
        if !is_group {
            continue;
        }
        let fd = entry.file_name();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
            .unwrap_or_default();
        marks.extend(
            info.lines()
                .filter(|l| l.starts_with("fanotify "))
                .map(|l| format!("{}: {l}", fd.to_string_lossy())),
        );
    }
    marks
}

#[test]
fn fifty_thousand_watches_and_triggers_all_work() {
    let mut daemon = create(N);
    launch(&mut daemon, None);
    daemon.wait_watching();
    fires(&daemon, 0, "first");
    fires(&daemon, N - 1, "last");
    trigger_runs(&daemon, N - 1);
    let status = daemon.status();
    assert_eq!(status.rules.len(), 2 * N);
    assert_eq!(status.watch.refused_marks, 0, "{:?}", status.watch);
}

/// Watches on paths that do not exist: refused (and retried), whatever the fd limit.
const MISSING: usize = 3;

#[test]
fn under_a_256_fd_limit_every_watch_is_held_and_what_cannot_be_is_counted() {
    let mut daemon = create(N);
    let mut text = rules(N, None);
    for k in 0..MISSING {
        text += &format!(
            "[[watch]]\nname = \"missing{k}\"\npath = \"{{dir}}/missing/{k}\"\nevents = \"close_write\"\nexec = [\"{{record}}\", \"{{out}}\", \"missing{k}\"]\n\n"
        );
    }
    daemon.write_config(&text);
    launch(&mut daemon, Some(256));
    let status = wait_for("the marks to settle", SCALE_DEADLINE, || {
        daemon
            .try_status()
            .filter(|s| s.watch.refused_marks == MISSING as u64)
    });
    // Watches hold no fd: 50,000 of them fit under 256, and only the missing paths are refused,
    // counted, and shown as waiting.
    let refused: Vec<&str> = status
        .rules
        .iter()
        .filter(|r| r.state.starts_with("failed") || r.state.starts_with("waiting"))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        refused,
        ["missing0", "missing1", "missing2"],
        "{:?}",
        status.watch
    );
    assert_eq!(status.watch.failing_marks.len(), MISSING);
    assert!(
        status.fds.open > 0 && status.fds.open < 256 && status.fds.limit == 256,
        "fds held are counted: {:?}",
        status.fds
    );
    // The control socket answers and actions are spawned, for the first and the last rule.
    fires(&daemon, 0, "first");
    fires(&daemon, N - 1, "last");
    trigger_runs(&daemon, 0);
    assert!(daemon.try_status().is_some());
}

#[test]
fn a_reload_that_changes_one_rule_leaves_the_others_as_they_were() {
    let mut daemon = create(N);
    launch(&mut daemon, None);
    daemon.wait_watching();
    for (i, file) in [(0, "a"), (1, "b"), (N / 2, "c"), (N - 1, "d")] {
        fires(&daemon, i, file);
    }
    let counters = |daemon: &mut Daemon| -> BTreeMap<String, (u64, u64, u64)> {
        daemon
            .status()
            .rules
            .into_iter()
            .map(|r| (r.name, (r.matched, r.fired, r.failed)))
            .collect()
    };
    let before = counters(&mut daemon);
    let marks_before = kernel_marks(daemon.pid());
    assert!(marks_before.len() >= N, "{} marks", marks_before.len());

    daemon.write_config(&rules(N, Some(N / 2)));
    // Events keep coming during the reload: each fires exactly once.
    let during: Vec<String> = (0..50).map(|k| format!("during{k}")).collect();
    let dir = daemon.path("w/d1");
    let writer = {
        let during = during.clone();
        std::thread::spawn(move || {
            for name in during {
                std::fs::write(dir.join(name), b"x").expect("write");
            }
        })
    };
    let status = reload(&mut daemon);
    writer.join().expect("writer");
    assert_eq!(status.reload_error, None);

    let runs = wait_runs(&daemon, "w1", 1 + during.len());
    for name in &during {
        let n = runs
            .iter()
            .filter(|r| r.get(1).is_some_and(|a| a == name.as_str()))
            .count();
        assert_eq!(n, 1, "{name} fired {n} times");
    }
    let after = counters(&mut daemon);
    let changed = format!("w{}", N / 2);
    for (name, was) in &before {
        if *name == changed || name == "w1" {
            continue;
        }
        assert_eq!(after.get(name), Some(was), "{name}'s counters");
    }
    assert_eq!(
        after.get(&changed).map(|c| c.0),
        Some(0),
        "the changed rule starts anew"
    );
    assert_eq!(after["w1"].0, before["w1"].0 + during.len() as u64);

    let marks_after = kernel_marks(daemon.pid());
    let gone: Vec<&String> = marks_before.difference(&marks_after).collect();
    let added: Vec<&String> = marks_after.difference(&marks_before).collect();
    assert!(
        gone.len() <= 1 && added.len() <= 1,
        "only the changed rule's mark changed: gone {gone:?}, added {added:?}"
    );
    assert_eq!(marks_before.len(), marks_after.len());
    fires(&daemon, N / 2, "changed");
    fires(&daemon, N - 1, "again");
}
