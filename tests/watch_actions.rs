//! Actions through a real daemon: permission gates decided by a command (and its timeout, and
//! never stalled behind a blocked notification rule), SIGTERM with a source blocked on a full queue,
//! loop prevention, timeouts killing the process group, `on_busy`, debounce, environment and
//! stdin, exit statuses counted, and gates bounded by `max_running` under a crowd of openers.

mod common;

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{records, wait_for, wait_records, Daemon, KillOnDrop, DEADLINE};

fn cat(path: &std::path::Path) -> std::io::Result<String> {
    let out = Command::new("/bin/cat").arg(path).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

#[test]
fn permission_rule_decides_by_exit_status() {
    let mut daemon = Daemon::start("");
    fs::write(daemon.path("secret"), "top").unwrap();
    fs::write(daemon.path("public"), "open").unwrap();
    fs::write(daemon.path("slow-deny"), "x").unwrap();
    fs::write(daemon.path("slow-allow"), "x").unwrap();
    daemon.write_config(
        "[[watch]]\nname = \"deny\"\npath = \"{dir}/secret\"\nevents = \"open_perm\"\nexec = [\"/bin/false\"]\n\n\
         [[watch]]\nname = \"allow\"\npath = \"{dir}/public\"\nevents = \"FAN_OPEN_PERM\"\nexec = [\"/bin/true\"]\n\n\
         [[watch]]\nname = \"slow-deny\"\npath = \"{dir}/slow-deny\"\nevents = \"open_perm\"\nexec = [\"/bin/sleep\", \"60\"]\ntimeout = \"300ms\"\non_timeout = \"deny\"\n\n\
         [[watch]]\nname = \"slow-allow\"\npath = \"{dir}/slow-allow\"\nevents = \"open_perm\"\nexec = [\"/bin/sleep\", \"60\"]\ntimeout = \"300ms\"\n",
    );
    daemon.reload();
    daemon.wait_watching();

    let denied = cat(&daemon.path("secret")).expect_err("denied");
    assert!(
        denied.to_string().contains("Operation not permitted"),
        "{denied}"
    );
    assert_eq!(cat(&daemon.path("public")).unwrap(), "open");

    let started = Instant::now();
    assert!(cat(&daemon.path("slow-deny")).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeout cut the action off"
    );
    assert_eq!(cat(&daemon.path("slow-allow")).unwrap(), "x");

    let deny = daemon.rule("deny");
    assert_eq!((deny.fired, deny.failed), (1, 1));
    assert_eq!(daemon.rule("allow").failed, 0);
}

#[test]
fn a_blocked_notify_rule_never_stalls_the_permission_gate() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    fs::write(daemon.path("gated"), "g").unwrap();
    // "busy" blocks the fanotify source while its one slot and one queue place are taken; its
    // action opens the gated file, which only a read of the permission group lets through.
    daemon.write_config(
        "[[watch]]\nname = \"busy\"\npath = \"{dir}/in\"\nevents = \"close_write\"\nmax_running = 1\nqueue = 1\nwhen_full = \"block\"\nexec = [\"/bin/cat\", \"{dir}/gated\"]\n\n\
         [[watch]]\nname = \"gate\"\npath = \"{dir}/gated\"\nevents = \"open_perm\"\nexec = [\"/bin/true\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    for i in 0..20 {
        fs::write(daemon.path(&format!("in/{i}")), "x").unwrap();
    }
    // Another process's open is decided meanwhile, not left waiting behind the backlog.
    let outside = Command::new("/bin/cat")
        .arg(daemon.path("gated"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = KillOnDrop(outside).wait_exit("an outside open of the gated file", DEADLINE);
    assert!(status.success());
    let busy = wait_for("every file to be handled", DEADLINE, || {
        let r = daemon.rule("busy");
        (r.fired == 20 && r.running == 0).then_some(r)
    });
    assert_eq!((busy.failed, busy.dropped), (0, 0), "{busy:?}");
    assert!(daemon.rule("gate").fired >= 1);
}

#[test]
fn sigterm_stops_a_source_blocked_on_a_full_queue() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.write_config(
        "[[watch]]\nname = \"slow\"\npath = \"{dir}/in\"\nevents = \"close_write\"\nmax_running = 1\nqueue = 1\nwhen_full = \"block\"\nexec = [\"/bin/sleep\", \"120\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    for i in 0..5 {
        fs::write(daemon.path(&format!("in/{i}")), "x").unwrap();
    }
    // One running, one queued, the third event waits in the source for room.
    wait_for("the queue to fill", DEADLINE, || {
        let r = daemon.rule("slow");
        (r.running == 1 && r.queued == 1).then_some(())
    });
    assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
}

#[test]
fn own_action_does_not_fire_its_rule_again() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    // The action writes into the directory it watches: without loop prevention this never ends.
    daemon.write_config(
        "[[watch]]\nname = \"touchy\"\npath = \"{dir}/in\"\nevents = \"close_write\"\nexec = [\"/bin/sh\", \"-c\", \"echo again >> \\\"$0.log\\\"\", \"$$\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    fs::write(daemon.path("in/start"), "x").unwrap();
    let rule = wait_for("the loop to be suppressed", DEADLINE, || {
        let r = daemon.rule("touchy");
        (r.loops_suppressed >= 1 && r.running == 0).then_some(r)
    });
    assert_eq!(rule.fired, 1, "{rule:?}");
    assert_eq!(
        fs::read_to_string(daemon.path("in/start.log")).unwrap(),
        "again\n"
    );
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    // The grandchild would outlive a kill of the direct child alone.
    daemon.write_config(
        "[[watch]]\nname = \"slow\"\npath = \"{dir}/in\"\nevents = \"close_write\"\ntimeout = \"200ms\"\nexec = [\"/bin/sh\", \"-c\", \"/bin/sleep 300 & echo $! > \\\"$0\\\"; wait\", \"{dir}/grandchild.pid\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    fs::write(daemon.path("in/go"), "x").unwrap();
    let rule = wait_for("the timeout", DEADLINE, || {
        let r = daemon.rule("slow");
        (r.failed == 1 && r.running == 0).then_some(r)
    });
    assert_eq!(rule.fired, 1);
    let pid: i32 = fs::read_to_string(daemon.path("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the grandchild to be gone", DEADLINE, || {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (state.is_empty() || state.contains(") Z ")).then_some(())
    });
    assert!(daemon.log_text().contains("timed out"));
}

#[test]
fn busy_rules_queue_or_drop() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("q")).unwrap();
    fs::create_dir(daemon.path("d")).unwrap();
    fs::create_dir(daemon.path("gate")).unwrap();
    // Both actions block until the test removes the gate file, so the rules are busy.
    let hold = "\"/bin/sh\", \"-c\", \"while [ -e \\\"$0\\\" ]; do sleep 0.01; done; echo >> \\\"$1\\\"\", \"{dir}/gate/open\"";
    daemon.write_config(&format!(
        "[[watch]]\nname = \"queue\"\npath = \"{{dir}}/q\"\nevents = \"close_write\"\nmax_running = 1\non_busy = \"queue\"\nexec = [{hold}, \"{{out}}/queue\"]\n\n\
         [[watch]]\nname = \"drop\"\npath = \"{{dir}}/d\"\nevents = \"close_write\"\nmax_running = 1\non_busy = \"drop\"\nexec = [{hold}, \"{{out}}/drop\"]\n"
    ));
    fs::write(daemon.path("gate/open"), "").unwrap();
    daemon.reload();
    daemon.wait_watching();
    for i in 0..5 {
        fs::write(daemon.path("q").join(i.to_string()), "x").unwrap();
        fs::write(daemon.path("d").join(i.to_string()), "x").unwrap();
    }
    wait_for("both rules busy", DEADLINE, || {
        let (q, d) = (daemon.rule("queue"), daemon.rule("drop"));
        (q.matched == 5 && d.matched == 5).then_some(())
    });
    let q = daemon.rule("queue");
    assert_eq!((q.running, q.queued), (1, 4), "{q:?}");
    let d = daemon.rule("drop");
    assert_eq!((d.running, d.dropped), (1, 4), "{d:?}");
    fs::remove_file(daemon.path("gate/open")).unwrap();
    wait_for("the queue to drain", DEADLINE, || {
        let q = daemon.rule("queue");
        (q.fired == 5 && q.running == 0).then_some(())
    });
    assert_eq!(
        fs::read_to_string(daemon.out().join("queue"))
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        fs::read_to_string(daemon.out().join("drop")).unwrap().len(),
        1
    );
}

#[test]
fn debounce_coalesces_a_burst_per_path() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.write_config(
        "[[watch]]\nname = \"calm\"\npath = \"{dir}/in\"\nevents = \"close_write\"\ndebounce = \"2s\"\nexec = [\"{record}\", \"{out}\", \"$#\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    // Each write is seen before the next (the kernel would merge unread identical events), so
    // the daemon matches all ten bursts' events and debounce alone makes them one run per path.
    for i in 1..=10 {
        fs::write(daemon.path("in/a"), "x").unwrap();
        fs::write(daemon.path("in/b"), "x").unwrap();
        wait_for("the writes to be matched", DEADLINE, || {
            (daemon.rule("calm").matched >= 2 * i).then_some(())
        });
    }
    let runs = wait_records(&daemon.out(), 2);
    let rule = wait_for("the debounce to settle", DEADLINE, || {
        let r = daemon.rule("calm");
        (r.queued == 0 && r.running == 0).then_some(r)
    });
    assert_eq!(rule.matched, 20, "{rule:?}");
    assert_eq!(rule.fired, 2, "one run per path: {rule:?} {runs:?}");
    assert_eq!(records(&daemon.out()).len(), 2);
}

#[test]
fn action_sees_environment_and_failures_are_counted() {
    let mut daemon = Daemon::start("");
    fs::create_dir(daemon.path("in")).unwrap();
    daemon.write_config(
        "[[watch]]\nname = \"env\"\npath = \"{dir}/in\"\nevents = \"close_write\"\nuser = \"nobody\"\nexec = [\"/bin/sh\", \"-c\", \"env | grep ^TRIGGERD_ | sort > \\\"$0\\\"; id -u >> \\\"$0\\\"; exit 3\", \"{out}/env\"]\n",
    );
    fs::set_permissions(
        daemon.out(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    daemon.reload();
    daemon.wait_watching();
    fs::write(daemon.path("in/file"), "x").unwrap();
    let rule = wait_for("the failure", DEADLINE, || {
        let r = daemon.rule("env");
        (r.failed == 1).then_some(r)
    });
    assert_eq!(rule.fired, 1);
    let env = fs::read_to_string(daemon.out().join("env")).unwrap();
    let d = daemon.dir.path().display().to_string();
    for line in [
        format!("TRIGGERD_PATH={d}/in/file"),
        format!("TRIGGERD_DIR={d}/in"),
        "TRIGGERD_NAME=file".to_string(),
        "TRIGGERD_EVENT=close_write".to_string(),
        "TRIGGERD_RULE=env".to_string(),
        "TRIGGERD_SOURCE=fanotify".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in:\n{env}");
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert_eq!(env.lines().last().unwrap(), nobody.to_string());
    assert!(daemon.log_text().contains("exited with status 3"));
}

#[test]
fn a_crowd_of_openers_runs_at_most_max_running_gate_commands_and_all_get_an_answer() {
    const OPENERS: usize = 50;
    let mut daemon = Daemon::start("");
    fs::write(daemon.path("gated"), "x").unwrap();
    let slots = daemon.out().join("slots");
    fs::create_dir(&slots).unwrap();
    // Each gate command takes a slot file, records how many are taken, and holds its slot
    // until the test releases every gate at once.
    daemon.write_config(
        "[[watch]]\nname = \"gate\"\npath = \"{dir}/gated\"\nevents = \"open_perm\"\n\
         max_running = 2\ntimeout = \"120s\"\non_timeout = \"deny\"\n\
         exec = [\"/bin/sh\", \"-c\", \"t=$(mktemp -p {out}/slots); ls {out}/slots | wc -l >> {out}/peak; \
         while [ ! -e {dir}/release ]; do sleep 0.02; done; rm -f $t\"]\n",
    );
    daemon.reload();
    daemon.wait_watching();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let openers: Vec<KillOnDrop> = (0..OPENERS)
        .map(|_| {
            KillOnDrop(
                std::os::unix::process::CommandExt::uid(
                    Command::new("/bin/cat")
                        .arg(daemon.path("gated"))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null()),
                    nobody.uid.as_raw(),
                )
                .spawn()
                .expect("spawn cat"),
            )
        })
        .collect();
    // All but two are answered at once (on_timeout = deny), while two gates hold the slots.
    wait_for("openers past max_running to be answered", DEADLINE, || {
        (daemon.rule("gate").dropped == (OPENERS - 2) as u64).then_some(())
    });
    fs::write(daemon.path("release"), "").unwrap();
    let mut allowed = 0;
    for mut opener in openers {
        allowed += usize::from(opener.wait_exit("an opener", DEADLINE).success());
    }
    assert_eq!(allowed, 2, "the two gated runs allow, the rest are denied");
    let peak = fs::read_to_string(daemon.out().join("peak")).unwrap();
    let peak = peak
        .lines()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max();
    assert_eq!(peak, Some(2), "gate commands at once");
    // An honest opener afterwards is served by a gate run as usual.
    assert_eq!(cat(&daemon.path("gated")).unwrap(), "x");
    assert_eq!(daemon.rule("gate").fired, 3);
}
