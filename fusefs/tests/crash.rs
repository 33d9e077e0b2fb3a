//! kill -9 of the process that serves the mount leaves a dead mount (ENOTCONN); mounting again
//! on the same mountpoint cleans it up and works.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{example, spec, DetachOnDrop, KillOnDrop, Mounted, QueueSink};
use triggerd_fusefs::{MountOptions, Split, TriggerFs};

#[test]
fn kill_9_then_mount_again_on_the_same_mountpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    std::fs::create_dir(&mnt).expect("mkdir");
    let _detach = DetachOnDrop(mnt.clone());

    let mut child = KillOnDrop(
        Command::new(example("triggerfs_mount"))
            .arg(&mnt)
            .arg(&state)
            .arg("weather/rpi/station1:write")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "spawn examples/triggerfs_mount (built by a plain `cargo test -p triggerd-fusefs`)",
            ),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut ready = String::new();
    BufReader::new(stdout)
        .read_line(&mut ready)
        .expect("read ready");
    assert_eq!(ready.trim(), "ready");
    std::fs::create_dir(mnt.join("made-before-crash")).expect("mkdir in child's mount");
    std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("weather/rpi/station1"))
        .and_then(|mut f| f.write_all(b"before crash\n"))
        .expect("write into the child's mount");

    child.0.kill().expect("kill -9");
    child.0.wait().expect("wait");
    let dead = std::fs::metadata(&mnt).map_err(|e| e.raw_os_error());
    assert_eq!(
        dead.err(),
        Some(Some(libc::ENOTCONN)),
        "a stale mount is left"
    );

    let sink = QueueSink::new(16);
    let fs = TriggerFs::mount(
        MountOptions::new(&mnt, &state),
        vec![spec("weather/rpi/station1", Split::Write)],
        sink.clone(),
    )
    .expect("mount over the stale mount");
    let guard = Mounted::adopt(fs, sink, mnt.clone(), state, dir);
    assert!(
        guard.path("made-before-crash").is_dir(),
        "state survived the crash"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(guard.path("weather/rpi/station1"))
        .and_then(|mut f| f.write_all(b"after crash\n"))
        .expect("write after remount");
    let msg = guard.sink.recv(Duration::from_secs(10)).expect("message");
    assert_eq!(msg.payload, b"after crash\n");
}
