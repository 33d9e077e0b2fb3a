//! Trigger files through a real daemon and a real FUSE mount: a shell's `echo` becomes exactly
//! one event with its bytes, lines split as configured, reading the file shows the action's
//! output, the tree follows a reload, `status` counts per trigger, and after `kill -9` the
//! daemon mounts again on start; a write still waiting for room when the daemon stops is
//! refused (EAGAIN), never answered as written.

mod common;

use std::fs;

use common::{sh, wait_for, Daemon, KillOnDrop, DEADLINE};

const WEATHER: &str = "[[trigger]]\nname = \"weather\"\nfile = \"weather/rpi/station1\"\nmode = \"0666\"\nexec = [\"/bin/sh\", \"-c\", \"cat > \\\"$0\\\"; echo stored\", \"{out}/weather\"]\n\n";
const LINES: &str = "[[trigger]]\nname = \"lines\"\nfile = \"logs/app\"\nsplit = \"line\"\nmax_running = 1\nexec = [\"/bin/sh\", \"-c\", \"cat >> \\\"$0\\\"; echo >> \\\"$0\\\"\", \"{out}/lines\"]\n\n";

#[test]
fn a_write_is_one_event_and_reading_shows_the_reply() {
    let mut daemon = Daemon::start(&format!("{WEATHER}{LINES}"));
    let mount = daemon.path("fs");
    sh(&format!(
        "echo 'station1 31F;10C;3.2' > {}/weather/rpi/station1",
        mount.display()
    ));
    let got = wait_for("the payload", DEADLINE, || {
        fs::read(daemon.out().join("weather"))
            .ok()
            .filter(|b| !b.is_empty())
    });
    assert_eq!(got, b"station1 31F;10C;3.2\n");
    let reply = wait_for("the reply", DEADLINE, || {
        fs::read_to_string(mount.join("weather/rpi/station1"))
            .ok()
            .filter(|r| !r.is_empty())
    });
    assert_eq!(reply, "stored\n");

    sh(&format!(
        "printf 'one\\ntwo\\nthr' > {0}/logs/app; printf 'ee\\n' >> {0}/logs/app",
        mount.display()
    ));
    wait_for("three lines", DEADLINE, || {
        let rule = daemon.rule("lines");
        (rule.fired == 4 && rule.running == 0).then_some(())
    });
    let lines = fs::read_to_string(daemon.out().join("lines")).unwrap();
    let mut got: Vec<&str> = lines.lines().collect();
    got.sort_unstable();
    // "thr" is flushed at close, "ee" with the next write: a partial line is never joined
    // across two opens.
    assert_eq!(got, ["ee", "one", "thr", "two"]);
    let status = daemon.status();
    let weather = &status.triggers["weather/rpi/station1"];
    assert_eq!(
        (weather.writes, weather.events, weather.drops),
        (1, 1, 0),
        "{status:?}"
    );
}

#[test]
fn the_tree_follows_a_reload_and_survives_kill_9() {
    let mut daemon = Daemon::start(&format!("{WEATHER}{LINES}"));
    let mount = daemon.path("fs");
    assert!(mount.join("logs/app").exists());
    daemon.write_config(WEATHER);
    daemon.reload();
    assert!(
        !mount.join("logs/app").exists(),
        "a removed trigger disappears"
    );
    assert!(mount.join("weather/rpi/station1").exists());
    let unknown = fs::write(mount.join("weather/new"), b"x");
    assert!(unknown.is_err(), "unknown files cannot be created");

    daemon.signal(libc::SIGKILL);
    let _ = daemon.child.take().map(|mut c| c.wait());
    // The dead mount stays behind (stale); starting again must clean it up and mount anew.
    daemon.launch();
    sh(&format!(
        "echo again > {}/weather/rpi/station1",
        mount.display()
    ));
    wait_for("the event after restart", DEADLINE, || {
        fs::read(daemon.out().join("weather"))
            .ok()
            .filter(|b| b == b"again\n")
    });
}

#[test]
fn a_second_instance_on_the_same_config_is_refused() {
    let mut daemon = Daemon::start(WEATHER);
    let stderr_path = daemon.path("second.err");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_triggerd"))
        .arg("--config")
        .arg(&daemon.config)
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("run a second triggerd");
    // Killed on every way out, so a second instance that wrongly runs cannot outlive the test.
    let mut second = KillOnDrop(child);
    let code = second
        .wait_exit("the second instance to exit", DEADLINE)
        .code();
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another triggerd is running"), "{stderr}");

    // The first keeps its socket and its mount, with nothing stacked on it: one write, one run.
    let mount = daemon.path("fs");
    sh(&format!(
        "echo once > {}/weather/rpi/station1",
        mount.display()
    ));
    wait_for("the run", DEADLINE, || {
        let rule = daemon.rule("weather");
        (rule.fired == 1 && rule.running == 0).then_some(())
    });
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let stacked = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(mount.to_str().unwrap()))
        .count();
    assert_eq!(stacked, 1, "{mounts}");
    assert_eq!(fs::read(daemon.out().join("weather")).unwrap(), b"once\n");
}

#[test]
fn a_write_waiting_for_room_when_the_daemon_stops_is_refused_not_lost() {
    // One run holds the rule, one event waits in its queue, the third write waits for room.
    let mut daemon = Daemon::start(
        "[[trigger]]\nname = \"busy\"\nfile = \"busy\"\nqueue = 1\nmax_running = 1\n\
         queue_wait = \"60s\"\nexec = [\"/bin/sleep\", \"3600\"]\n",
    );
    let file = daemon.path("fs/busy");
    for n in ["one", "two"] {
        sh(&format!("printf {n} > {}", file.display()));
    }
    let mut third = KillOnDrop(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf three > {}", file.display()))
            .spawn()
            .expect("sh"),
    );
    wait_for("the third write to wait for room", DEADLINE, || {
        let status = daemon.status();
        (status.triggers["busy"].writes == 3).then_some(())
    });
    daemon.stop();
    let status = third.wait_exit("the waiting writer", DEADLINE);
    assert!(
        !status.success(),
        "the write was answered as written although no rule took it"
    );
}
