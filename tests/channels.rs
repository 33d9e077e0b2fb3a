//! Shared-memory channels through a real daemon: `triggerctl publish` reaches the action as
//! the payload on stdin, the region's owner/group/mode decide who may publish, a burst of
//! messages all fire, a channel whose region is scribbled on is quarantined while another
//! channel keeps delivering, no publisher can resize a region under the daemon, and a slow rule
//! makes a flooding publisher wait once `handoff_bytes` and the ring are full.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{wait_for, Daemon, DEADLINE};

/// A unique channel name per test process (regions live in /dev/shm, shared by all tests).
fn channel(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

fn publish(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triggerctl"));
    command.arg("publish").args(args);
    run_with_stdin(command, stdin)
}

fn run_with_stdin(mut command: Command, stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    command.stdin(std::process::Stdio::piped());
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

#[test]
fn published_message_reaches_the_action_on_stdin() {
    let name = channel("stdin");
    let mut daemon = Daemon::start(&format!(
        "[[channel]]\nname = \"{name}\"\nmode = \"0600\"\nexec = [\"/bin/sh\", \"-c\", \"cat > \\\"$0\\\"\", \"{{out}}/got\"]\n"
    ));
    let out = publish(&[&name, "station1 31F;10C;3.2"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_for("the message", DEADLINE, || {
        fs::read(daemon.out().join("got"))
            .ok()
            .filter(|b| !b.is_empty())
    });
    assert_eq!(got, b"station1 31F;10C;3.2");
    let binary: Vec<u8> = (0..=255u8).collect();
    let out = publish(&[&name, "-"], Some(&binary));
    assert!(out.status.success());
    wait_for("the binary message", DEADLINE, || {
        (fs::read(daemon.out().join("got")).ok()? == binary).then_some(())
    });
    let status = daemon.status();
    assert_eq!(status.channels[&name].messages, 2, "{status:?}");
}

#[test]
fn region_mode_decides_who_may_publish() {
    let name = channel("perm");
    let _daemon = Daemon::start(&format!(
        "[[channel]]\nname = \"{name}\"\nowner = \"root\"\nmode = \"0600\"\nexec = [\"/bin/true\"]\n"
    ));
    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_triggerctl"))
        .args(["publish", &name, "x"]);
    let out = run_with_stdin(as_nobody, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    assert!(
        publish(&[&name, "x"], None).status.success(),
        "root may publish"
    );
}

#[test]
fn a_burst_of_lines_fires_once_per_line() {
    let name = channel("burst");
    let mut daemon = Daemon::start(&format!(
        "[[channel]]\nname = \"{name}\"\nmax_running = 32\nexec = [\"/bin/true\"]\n"
    ));
    let lines: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let out = publish(&["--lines", &name, "-"], Some(lines.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rule = wait_for("2,000 runs", DEADLINE, || {
        let r = daemon.rule(&name);
        (r.fired == 2000 && r.running == 0).then_some(r)
    });
    assert_eq!(
        (rule.matched, rule.dropped, rule.failed),
        (2000, 0, 0),
        "{rule:?}"
    );
}

#[test]
fn a_scribbled_region_is_quarantined_and_others_run_on() {
    let (bad, good) = (channel("bad"), channel("good"));
    let mut daemon = Daemon::start(&format!(
        "[[channel]]\nname = \"{bad}\"\nexec = [\"/bin/true\"]\n\n\
         [[channel]]\nname = \"{good}\"\nexec = [\"/bin/sh\", \"-c\", \"cat >> \\\"$0\\\"\", \"{{out}}/good\"]\n"
    ));
    // A hostile producer: garbage over the whole region, then a publish to ring the doorbell.
    let region = fs::File::from(triggerd_ipc::receive_memfd(&bad).expect("region memfd"));
    let size = region.metadata().unwrap().len() as usize;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..size)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::os::unix::fs::FileExt::write_all_at(&region, &garbage, 0).unwrap();
    let _ = publish(&[&bad, "x"], None);
    wait_for("the quarantine", DEADLINE, || {
        daemon
            .try_status()
            .filter(|s| s.channels.get(&bad).is_some_and(|c| c.quarantines > 0))
    });
    assert!(publish(&[&good, "still here\n"], None).status.success());
    wait_for("the good channel", DEADLINE, || {
        fs::read_to_string(daemon.out().join("good"))
            .ok()
            .filter(|s| s == "still here\n")
    });
    daemon.assert_alive();
}

/// `truncate -s 0 /dev/shm/triggerd.NAME` used to SIGBUS the daemon at its next look at the
/// region. The name is now the channel's socket (no file to truncate) and the region a memfd
/// sealed against resizing: every resize a publisher can try fails, and both channels deliver.
#[test]
fn a_publisher_cannot_resize_a_region_under_the_daemon() {
    let (victim, other) = (channel("resized"), channel("bystander"));
    let append = |name: &str| {
        format!(
            "[[channel]]\nname = \"{name}\"\nexec = [\"/bin/sh\", \"-c\", \"cat >> \\\"$0\\\"\", \"{{out}}/{name}\"]\n"
        )
    };
    let mut daemon = Daemon::start(&format!("{}\n{}", append(&victim), append(&other)));
    assert!(publish(&[&victim, "before\n"], None).status.success());
    wait_for("the first message", DEADLINE, || {
        fs::read_to_string(daemon.out().join(&victim))
            .ok()
            .filter(|s| s == "before\n")
    });
    let path = format!("/dev/shm/triggerd.{victim}");
    if let Ok(file) = fs::OpenOptions::new().write(true).open(&path) {
        let _ = file.set_len(0); // the probe's `truncate -s 0`
    }
    // The one fd a publisher can get: the memfd the channel's socket hands out.
    let memfd = fs::File::from(triggerd_ipc::receive_memfd(&victim).expect("region memfd"));
    let size = memfd.metadata().unwrap().len();
    for len in [0, 4096, size - 4096, size + 4096, 1 << 30] {
        assert!(memfd.set_len(len).is_err(), "resized to {len}");
    }
    assert_eq!(memfd.metadata().unwrap().len(), size);
    // Both channels still deliver: a publish wakes the consumer, which reads the region.
    for (name, text) in [(&victim, "after\n"), (&other, "bystander\n")] {
        let out = publish(&[name, text], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("both channels", DEADLINE, || {
        let read = |name: &str| fs::read_to_string(daemon.out().join(name)).unwrap_or_default();
        (read(&victim) == "before\nafter\n" && read(&other) == "bystander\n").then_some(())
    });
    daemon.assert_alive();
    let status = daemon.try_status().expect("status");
    assert_eq!(status.channels.get(&victim).map(|c| c.quarantines), Some(0));
}

#[test]
fn a_slow_rule_makes_a_flooding_publisher_wait_within_handoff_bytes() {
    let name = channel("handoff");
    // One run that never ends and a queue of one: the rule takes two messages, then the
    // hand-off (64 KiB) and the ring (256 KiB, the smallest lane) fill, and the publisher
    // must wait.
    let mut daemon = Daemon::start(&format!(
        "[[channel]]\nname = \"{name}\"\nmode = \"0600\"\ncapacity = 262144\nlanes = 1\n\
         handoff_bytes = 65536\nexec = [\"/bin/sleep\", \"600\"]\nmax_running = 1\nqueue = 1\n\
         when_full = \"block\"\n"
    ));
    let publisher = wait_for("the channel", DEADLINE, || {
        triggerd_ipc::Publisher::connect(&name)
            .map_err(|e| eprintln!("connect: {e}"))
            .ok()
    });
    let message = vec![b'm'; 1024];
    let mut accepted = 0;
    let blocked = loop {
        match publisher.publish_timeout(&message, std::time::Duration::from_millis(200)) {
            Ok(()) => accepted += 1,
            Err(triggerd_ipc::PublishError::WouldBlock) => break true,
            Err(e) => panic!("publish: {e}"),
        }
        if accepted == 5_000 {
            break false;
        }
    };
    // 2 taken by the rule + 64 in the hand-off + what 256 KiB of ring holds.
    assert!(blocked, "5,000 KiB accepted: the hand-off is not bounded");
    assert!(accepted <= 2 + 64 + 256, "{accepted} messages accepted");
    let status = daemon.status();
    assert!(status.channels[&name].full_ring_waits >= 1, "{status:?}");
    assert_eq!(daemon.rule(&name).dropped, 0, "back-pressure, not loss");
    daemon.stop();
}
