//! Reload and robustness through a real daemon: no event lost while the config is reloaded
//! repeatedly, a bad config leaves the old rules firing, overflow is reported, the daemon idles
//! at ~0 CPU, and SIGTERM exits 0.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{wait_for, Daemon, QueueLimit, DEADLINE};

const INGEST: &str = "[[watch]]\nname = \"ingest\"\npath = \"{dir}/in\"\nevents = \"close_write\"\nmax_running = 64\nexec = [\"/bin/sh\", \"-c\", \"echo >> \\\"$0\\\"\", \"{out}/$#\"]\n\n";

#[test]
fn no_event_lost_across_twenty_reloads() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    fs::create_dir(daemon.path("other")).unwrap();
    daemon.write_config(INGEST);
    daemon.reload();
    daemon.wait_watching();

    const FILES: usize = 5_000;
    let dir = daemon.path("in");
    let writer = std::thread::spawn(move || {
        for i in 0..FILES {
            fs::write(dir.join(format!("f{i:05}")), b"x").unwrap();
        }
    });
    // Alternate between two configs that differ only in an unrelated rule.
    let other = "[[watch]]\nname = \"other\"\npath = \"{dir}/other\"\nevents = \"create\"\nexec = [\"/bin/true\"]\n";
    for i in 0..20 {
        let extra = if i % 2 == 0 { other } else { "" };
        daemon.write_config(&format!("{INGEST}{extra}"));
        let status = daemon.reload();
        assert_eq!(status.reload_error, None);
    }
    writer.join().unwrap();
    let fired = wait_for("5,000 runs", Duration::from_secs(120), || {
        let r = daemon.rule("ingest");
        (r.fired >= FILES as u64 && r.running == 0).then_some(r)
    });
    assert_eq!(fired.fired, FILES as u64, "each file fires once: {fired:?}");
    assert_eq!(fired.failed, 0, "{fired:?}");
    let mut count = 0;
    for entry in fs::read_dir(daemon.out()).unwrap() {
        let lines = fs::read_to_string(entry.unwrap().path()).unwrap();
        assert_eq!(lines, "\n", "a file fired more than once");
        count += 1;
    }
    assert_eq!(count, FILES);
}

#[test]
fn bad_config_on_reload_keeps_the_old_rules() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.write_config(INGEST);
    daemon.reload();
    daemon.wait_watching();

    daemon.write_config(
        "[[watch]]\npath = \"{dir}/in\"\nevents = [\"close_wirte\"]\nexec = [\"/bin/true\"]\n",
    );
    let status = daemon.reload();
    let error = status.reload_error.expect("the reload is refused");
    assert!(
        error.contains("triggerd.conf:9:"),
        "names file and line: {error}"
    );
    assert!(error.contains("events"), "names the key: {error}");
    assert!(daemon.log_text().contains("reload refused"), "logged");

    fs::write(daemon.path("in/still"), "x").unwrap();
    wait_for("the old rule to fire", DEADLINE, || {
        daemon.out().join("still").exists().then_some(())
    });
    assert_eq!(daemon.rule("ingest").fired, 1);
}

#[test]
fn queue_overflow_is_counted_and_delivered() {
    let rules = "[[watch]]\nname = \"lost\"\npath = \"{dir}/in\"\nevents = \"overflow\"\nexec = [\"{record}\", \"{out}\", \"$%\"]\n\n\
        [[watch]]\nname = \"busy\"\npath = \"{dir}/in\"\nevents = \"create\"\nmax_running = 1\non_busy = \"drop\"\nexec = [\"/bin/true\"]\n";
    let mut daemon;
    {
        // The group takes its queue size when it is created: lower it just for this daemon.
        let limit = QueueLimit::lower(64);
        daemon = Daemon::start_holding_lock(rules, limit);
    }
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.reload();
    daemon.wait_watching();
    daemon.signal(libc::SIGSTOP);
    for i in 0..1_000 {
        fs::write(daemon.path("in").join(i.to_string()), b"").unwrap();
    }
    daemon.signal(libc::SIGCONT);
    // The source counts the overflow as it reads it, each watch once it is dispatched.
    wait_for("the overflow counted for every watch", DEADLINE, || {
        daemon
            .try_status()
            .filter(|s| s.watch.overflows > 0 && s.rules.iter().all(|r| r.overflowed > 0))
    });
    wait_for("the overflow rule to run", DEADLINE, || {
        common::records(&daemon.out())
            .iter()
            .any(|r| r[0] == "overflow")
            .then_some(())
    });
    assert!(daemon.log_text().contains("overflow"));
}

#[test]
fn idle_daemon_uses_no_cpu_and_stops_cleanly() {
    let mut daemon = Daemon::start(INGEST);
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.wait_watching();
    let ticks = |pid: i32| -> u64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks(daemon.pid());
    // An observation window, not a synchronisation: idle CPU can only be seen over time.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let used = ticks(daemon.pid()) - before;
    assert!(used <= 2, "idle daemon used {used} ticks in 2 s");
    assert_eq!(daemon.stop(), Some(0));
    assert!(!daemon.socket.exists(), "control socket removed on exit");
}
