//! The control socket identifies its peers: with `control_mode` widened to 0666 and a
//! `control_group`, a member (primary or supplementary group) runs `status`, `list` and
//! `show` but `fire`, `pause` and `disable` are refused with a clear message; a non-member is
//! refused even `status`; root can do everything; the refusals are counted.

mod common;

use std::process::{Command, Output};

use common::Daemon;

/// `triggerctl ARGS` as nobody with primary group `gid` and supplementary `groups`.
fn as_nobody(daemon: &Daemon, gid: &str, groups: &str, args: &[&str]) -> Output {
    let mut command = Command::new("setpriv");
    command.args(["--reuid", "nobody", "--regid", gid]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.args(["--groups", groups]);
    }
    command
        .arg(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .output()
        .expect("setpriv")
}

fn as_root(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triggerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(args)
        .output()
        .expect("triggerctl")
}

fn gid_of(name: &str) -> String {
    let group = nix::unistd::Group::from_name(name).expect("group db");
    group.expect("group exists").gid.to_string()
}

#[test]
fn a_control_group_member_may_read_but_only_root_may_change_or_fire() {
    let mut daemon = Daemon::start(
        "control_mode = \"0666\"\ncontrol_group = \"nogroup\"\n\
         [[watch]]\nname = \"r\"\npath = \"{dir}\"\nevents = \"close_write\"\nexec = [\"/bin/true\"]\n",
    );
    let (member, other) = (gid_of("nogroup"), gid_of("daemon"));
    for (gid, groups) in [(member.as_str(), ""), (other.as_str(), member.as_str())] {
        for read in [&["status"][..], &["list"], &["show", "r"]] {
            let out = as_nobody(&daemon, gid, groups, read);
            assert!(out.status.success(), "{read:?} as a member: {out:?}");
        }
        for write in [&["fire", "r"][..], &["pause", "r"], &["disable", "r"]] {
            let out = as_nobody(&daemon, gid, groups, write);
            assert!(!out.status.success(), "{write:?} as a member: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("only root"), "{write:?}: {stderr}");
        }
    }
    let stranger = as_nobody(&daemon, &other, "", &["status"]);
    assert!(!stranger.status.success(), "a non-member: {stranger:?}");
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("control_group"));

    let rule = daemon.rule("r");
    assert_eq!((rule.fired, rule.state.as_str()), (0, "active"));
    for args in [
        &["fire", "r"][..],
        &["pause", "r"],
        &["resume", "r"],
        &["status"],
    ] {
        let out = as_root(&daemon, args);
        assert!(out.status.success(), "{args:?} as root: {out:?}");
    }
    assert_eq!(daemon.status().control_refused, 7);
    daemon.assert_alive();
}
