//! Access control is the region's owner, group and mode: a process running as `nobody` cannot
//! publish to a root:root 0660 channel (and gets a clear error), but can once the channel's
//! group is nobody's group. Needs root (to create root-owned channels and switch user).

mod common;

use common::{ChildProc, Consumer};
use std::os::unix::process::CommandExt;
use std::time::Duration;
use triggerd_ipc::ChannelSpec;

#[test]
fn child_entry() {
    common::child_entry()
}

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
const LONG: Duration = Duration::from_secs(30);

fn publish_as_nobody(channel: &str) -> String {
    let child = ChildProc::spawn_with("try-publish", &[channel.to_owned()], |cmd| {
        // setgid/setuid happen in the child before exec, hence before it connects.
        cmd.gid(NOGROUP).uid(NOBODY);
    });
    child.line("result:", LONG).expect("child reported nothing")
}

#[test]
fn nobody_cannot_publish_to_a_root_group_channel_but_can_when_in_its_group() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root"
    );
    let closed = common::unique("closed");
    let spec = ChannelSpec {
        uid: 0,
        gid: 0,
        mode: 0o660,
        ..ChannelSpec::new(closed.as_str())
    };
    let (_consumer, got) = Consumer::collecting(&spec);
    let outcome = publish_as_nobody(&closed);
    assert!(outcome.starts_with("PermissionDenied"), "{outcome}");
    assert!(got.lock().unwrap().is_empty());

    let open = common::unique("grouped");
    let spec = ChannelSpec {
        uid: 0,
        gid: NOGROUP,
        mode: 0o660,
        ..ChannelSpec::new(open.as_str())
    };
    let (_consumer, got) = Consumer::collecting(&spec);
    assert_eq!(publish_as_nobody(&open), "ok");
    assert!(common::wait_until(LONG, || got.lock().unwrap().as_slice()
        == [b"from child".to_vec()]));
}

#[test]
fn region_carries_the_channel_owner_group_and_mode() {
    use std::os::unix::fs::MetadataExt;
    let name = common::unique("meta");
    let spec = ChannelSpec {
        uid: 0,
        gid: NOGROUP,
        mode: 0o640,
        ..ChannelSpec::new(name.as_str())
    };
    let _channel = triggerd_ipc::Channel::create(&spec).unwrap();
    let meta = std::fs::metadata(format!("/dev/shm/triggerd.{name}")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, NOGROUP, 0o640)
    );
    drop(_channel);
    assert!(
        std::fs::metadata(format!("/dev/shm/triggerd.{name}")).is_err(),
        "drop must unlink"
    );
}
