//! Restarts that lose nothing, without systemd: `triggerctl reexec` replaces the daemon's
//! process image (same pid) and the new image takes the FUSE connection over. A writer that
//! holds a trigger file open keeps writing across it, never sees an error, and every line
//! (a partial line held across the exec included) reaches the rule once. Where the kernel
//! refuses FUSE_NOTIFY_RESEND (simulated), the connection is aborted: the writer gets an
//! error instead of hanging, and the daemon mounts afresh.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{wait_for, Daemon, KillOnDrop, DEADLINE};

const LOG: &str = "[[trigger]]\nname = \"log\"\nfile = \"log\"\nsplit = \"line\"\nmode = \"0666\"\nqueue_wait = \"30s\"\nmax_running = 1\nexec = [\"/bin/sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", \"{out}/lines\"]\n\n";

fn reexec(daemon: &Daemon) {
    let out = Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("reexec")
        .output()
        .expect("run triggerctl reexec");
    assert!(
        out.status.success(),
        "triggerctl reexec: {}\n{}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
}

/// Writes `line-N\n` through one open file until `stop`, then returns how many, or the
/// first error.
fn writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> mpsc::Receiver<std::io::Result<usize>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> std::io::Result<usize> {
            let mut file = fs::OpenOptions::new().write(true).open(&path)?;
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                file.write_all(format!("line-{n}\n").as_bytes())?;
                n += 1;
                count.store(n, Ordering::SeqCst);
                // Paced (not synchronised): a few hundred lines a second, so that the
                // rule's runs keep up and the exec happens while lines are being written.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(n)
        };
        let _ = tx.send(run());
    });
    rx
}

fn lines_of(daemon: &Daemon) -> BTreeMap<String, usize> {
    let text = fs::read_to_string(daemon.out().join("lines")).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_writer_keeps_writing_across_triggerctl_reexec_and_every_line_arrives_once() {
    let mut daemon = Daemon::start(LOG);
    let pid = daemon.status().pid;
    let file = daemon.path("fs/log");
    let (stop, count) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let done = writer(file.clone(), Arc::clone(&stop), Arc::clone(&count));
    // A second writer leaves a partial line in its handle across the exec. It is a shell of
    // its own, writing through its stdout: a close of any fd on the file emits the partial
    // line (FLUSH), and starting triggerctl from this process closes copies of this
    // process's fds in the child (a shell's `>&3` closes a dup, too).
    let mut partial = KillOnDrop(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("exec >>\"$0\"; printf partial-; read go; printf 'end\\n'; read done")
            .arg(&file)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
    );
    wait_for("the partial line held", DEADLINE, || {
        (daemon.status().triggers["log"].partial_bytes == 8).then_some(())
    });
    wait_for("lines before the exec", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= 20).then_some(())
    });

    reexec(&daemon);
    let status = daemon.status();
    assert_eq!(
        (status.pid, status.execs),
        (pid, 1),
        "same process, new image"
    );
    let at_exec = count.load(Ordering::SeqCst);
    wait_for("lines after the exec", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= at_exec + 20).then_some(())
    });
    let mut go = partial.0.stdin.take().expect("stdin");
    writeln!(go, "go").expect("the rest of the partial line");
    stop.store(true, Ordering::SeqCst);
    let written = done
        .recv_timeout(DEADLINE)
        .expect("writer done")
        .expect("the writer never saw an error");

    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = lines_of(&daemon);
    while seen.len() <= written && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = lines_of(&daemon);
    }
    let missing: Vec<usize> = (0..written)
        .filter(|n| !seen.contains_key(&format!("line-{n}")))
        .collect();
    assert!(
        missing.is_empty() && seen.contains_key("partial-end"),
        "{} of {} lines arrived, missing {missing:?}, others {:?}; log:\n{}",
        seen.len(),
        written + 1,
        seen.keys()
            .filter(|k| !k.starts_with("line-"))
            .collect::<Vec<_>>(),
        daemon.log_text()
    );
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(twice.is_empty(), "lines not seen exactly once: {twice:?}");
    for n in 0..written {
        assert!(seen.contains_key(&format!("line-{n}")), "line-{n} lost");
    }
    assert!(
        seen.contains_key("partial-end"),
        "the partial line was lost: {seen:?}"
    );
    assert_eq!(seen.len(), written + 1, "{seen:?}");
}

#[test]
fn without_the_resend_a_reexec_fails_the_writer_instead_of_leaving_it_hanging() {
    let mut daemon = Daemon::create(LOG);
    daemon
        .env
        .push(("TRIGGERD_TEST_REFUSE_RESEND".into(), "1".into()));
    daemon.launch();
    let file = daemon.path("fs/log");
    let (stop, count) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
    let done = writer(file.clone(), Arc::clone(&stop), Arc::clone(&count));
    wait_for("lines before the exec", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= 20).then_some(())
    });
    reexec(&daemon);
    let ended = done
        .recv_timeout(DEADLINE)
        .expect("the writer must not hang");
    assert!(ended.is_err(), "the aborted connection fails the writer");
    stop.store(true, Ordering::SeqCst);
    // The daemon mounted afresh: a new open works.
    wait_for("a fresh mount", DEADLINE, || {
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|mut f| f.write_all(b"fresh\n"))
            .ok()
    });
    wait_for("the fresh line", DEADLINE, || {
        lines_of(&daemon).contains_key("fresh").then_some(())
    });
    assert!(
        daemon.log_text().contains("FUSE_NOTIFY_RESEND"),
        "the log says why"
    );
}

/// The inode numbers the fanotify groups of process `pid` hold inode marks on, from
/// /proc/PID/fdinfo (the kernel lists each mark there as `fanotify ino:HEX ...`).
fn marked_inodes(pid: u32) -> Vec<u64> {
    let mut inodes = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("fanotify ino:")) {
            let hex = line["fanotify ino:".len()..]
                .split(' ')
                .next()
                .unwrap_or("");
            if let Ok(ino) = u64::from_str_radix(hex, 16) {
                inodes.push(ino);
            }
        }
    }
    inodes
}

const TREE: &str = "[[watch]]\nname = \"tree\"\npath = \"{dir}/tree\"\nevents = \"close_write\"\nrecursive = true\nexec = [\"{record}\", \"{out}\", \"tree\", \"$#\"]\n\n";

#[test]
fn files_written_in_a_watched_tree_during_a_reexec_all_fire_once() {
    let mut daemon = Daemon::create(TREE);
    fs::create_dir_all(daemon.path("tree/sub")).expect("tree");
    daemon.launch();
    daemon.wait_watching();
    let pid = daemon.status().pid;
    // Files written one after another, before, during and after the exec.
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let dir = daemon.path("tree/sub");
    let files = {
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                fs::write(dir.join(format!("f-{n}")), b"x").expect("write");
                n += 1;
                count.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
            n
        })
    };
    wait_for("files before the exec", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= 20).then_some(())
    });
    reexec(&daemon);
    assert_eq!(daemon.status().pid, pid, "same process");
    let at_exec = count.load(Ordering::SeqCst);
    wait_for("files after the exec", DEADLINE, || {
        (count.load(Ordering::SeqCst) >= at_exec + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let written = files.join().expect("writer");
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut runs = common::runs_of(&daemon, "tree");
    while runs.len() < written && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        runs = common::runs_of(&daemon, "tree");
    }
    let mut seen = BTreeMap::new();
    for name in &runs {
        *seen.entry(name.clone()).or_insert(0usize) += 1;
    }
    let missing: Vec<usize> = (0..written)
        .filter(|n| !seen.contains_key(&format!("f-{n}")))
        .collect();
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && seen.len() == written,
        "{written} files written: missing {missing:?}, not once {twice:?}; log:\n{}",
        daemon.log_text()
    );
    assert!(
        daemon
            .log_text()
            .contains("fanotify group taken over from the previous process"),
        "the group was adopted"
    );
}

#[test]
fn a_reexec_keeps_the_marks_the_config_still_has_and_removes_the_others() {
    use std::os::unix::fs::MetadataExt;
    let watch = |name: &str| {
        format!("[[watch]]\nname = \"{name}\"\npath = \"{{dir}}/{name}\"\nevents = \"close_write\"\nexec = [\"{{record}}\", \"{{out}}\", \"{name}\", \"$#\"]\n\n")
    };
    let mut daemon = Daemon::create(&(watch("kept") + &watch("gone")));
    for name in ["kept", "gone"] {
        fs::create_dir(daemon.path(name)).expect("dir");
    }
    daemon.launch();
    daemon.wait_watching();
    let pid = daemon.status().pid;
    let ino = |name: &str| fs::metadata(daemon.path(name)).expect("stat").ino();
    let (kept, gone) = (ino("kept"), ino("gone"));
    let before = marked_inodes(pid);
    assert!(
        before.contains(&kept) && before.contains(&gone),
        "{before:?}"
    );

    daemon.write_config(&watch("kept"));
    reexec(&daemon);
    let after = marked_inodes(pid);
    assert!(
        after.contains(&kept),
        "the kept rule's mark is gone: {after:?}"
    );
    assert!(
        !after.contains(&gone),
        "the removed rule's mark stayed: {after:?}"
    );
    fs::write(daemon.path("kept/a"), b"x").expect("write");
    wait_for("the kept rule fires", DEADLINE, || {
        common::runs_of(&daemon, "kept")
            .contains(&"a".to_string())
            .then_some(())
    });
}
