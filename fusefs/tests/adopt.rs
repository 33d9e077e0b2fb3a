//! A successor takes over the FUSE connection of a process killed with SIGKILL, as systemd's
//! fd store lets it: the test takes the child's /dev/fuse descriptor (pidfd_getfd, what the
//! store would hold), kills the child, and adopts the connection. A writer that kept the file
//! open goes on writing without an error; the write the dead process had read but not
//! answered comes back through FUSE_NOTIFY_RESEND. Where the resend is refused (simulated),
//! the connection is aborted: that writer gets an error instead of hanging.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{example, spec, DetachOnDrop, KillOnDrop, Mounted, QueueSink};
use triggerd_fusefs::{FsError, MountOptions, Split, TriggerFs};

/// A duplicate of descriptor `fd` of process `pid` (pidfd_getfd(2); root may take any).
fn take_fd(pid: u32, fd: i32) -> OwnedFd {
    // SAFETY: a syscall with integer arguments; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a valid pidfd_open result is a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&pidfd);
    // SAFETY: as above.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, raw, fd, 0) };
    assert!(got >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: as above: a new descriptor of this process.
    unsafe { OwnedFd::from_raw_fd(got as i32) }
}

/// A child serving a mount in a temp dir (trigger `log` split by line, `stall` whose messages
/// its sink holds forever), and the connection's device taken from it.
struct Served {
    child: KillOnDrop,
    _stdin: ChildStdin,
    device: OwnedFd,
    mnt: PathBuf,
    state: PathBuf,
    detach: DetachOnDrop,
    dir: tempfile::TempDir,
}

fn serve_in_child() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    std::fs::create_dir(&mnt).expect("mkdir");
    let detach = DetachOnDrop(mnt.clone());
    let mut child = KillOnDrop(
        Command::new(example("triggerfs_mount"))
            .arg(&mnt)
            .arg(&state)
            .args(["log:line", "stall:line"])
            .env("TRIGGERFS_STALL", "stall")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn examples/triggerfs_mount"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    writeln!(stdin, "device").expect("ask device");
    line.clear();
    out.read_line(&mut line).expect("device");
    let fd: i32 = line
        .trim()
        .strip_prefix("device ")
        .and_then(|n| n.parse().ok())
        .expect("device FD");
    let device = take_fd(child.0.id(), fd);
    Served {
        child,
        _stdin: stdin,
        device,
        mnt,
        state,
        detach,
        dir,
    }
}

/// On a failed assertion, aborts the connection mounted at its path: a write the kernel
/// holds for this very process would otherwise keep the test process from ever exiting.
struct AbortOnPanic(PathBuf);

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let want = self.0.to_string_lossy();
        for line in info.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.get(4) == Some(&&*want) {
                if let Some((_, minor)) = f[2].split_once(':') {
                    let path = format!("/sys/fs/fuse/connections/{minor}/abort");
                    let _ = std::fs::write(path, b"1");
                }
            }
        }
    }
}

/// Writes `data` in a thread; the result comes on the returned channel.
fn write_in_thread(path: PathBuf, data: &'static [u8]) -> mpsc::Receiver<std::io::Result<()>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(data));
        let _ = tx.send(r);
    });
    rx
}

/// Waits until the child's sink holds the stalled write (its counters say it arrived).
fn wait_stalled(mnt: &Path) -> mpsc::Receiver<std::io::Result<()>> {
    let stuck = write_in_thread(mnt.join("stall"), b"stuck\n");
    // The write cannot finish while the child holds it; give it a moment to be read.
    assert!(
        stuck.recv_timeout(Duration::from_millis(300)).is_err(),
        "the stalled write returned"
    );
    stuck
}

#[test]
fn a_successor_takes_over_the_connection_of_a_killed_process() {
    let Served {
        mut child,
        device,
        mnt,
        state,
        detach: _detach,
        dir,
        // Kept open: the child unmounts at the end of its stdin.
        _stdin,
    } = serve_in_child();

    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("log"))
        .expect("open log");
    writer
        .write_all(b"before\n")
        .expect("write before the kill");
    let stuck = wait_stalled(&mnt);
    child.0.kill().expect("kill -9");
    child.0.wait().expect("wait");

    // Nobody serves the connection now: the next write waits in the kernel, no ENOTCONN.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = writer
            .write_all(b"during\n")
            .and_then(|()| writer.write_all(b"after\n"));
        let _ = tx.send(r);
    });
    let sink = QueueSink::new(64);
    let fs = TriggerFs::adopt(
        MountOptions::new(&mnt, &state),
        vec![spec("log", Split::Line), spec("stall", Split::Line)],
        sink.clone(),
        device,
    )
    .expect("adopt the connection");
    let guard = Mounted::adopt(fs, sink, mnt.clone(), state, dir);
    let _abort = AbortOnPanic(mnt.clone());

    let written = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("writer done");
    written.expect("the writer never saw an error");
    let resent = stuck
        .recv_timeout(Duration::from_secs(20))
        .expect("stalled write answered");
    resent.expect("the write the dead process held was resent and taken");
    let mut got: Vec<Vec<u8>> = guard
        .sink
        .take(3, Duration::from_secs(20))
        .into_iter()
        .map(|m| m.payload)
        .collect();
    got.sort();
    assert_eq!(
        got,
        [b"after".to_vec(), b"during".to_vec(), b"stuck".to_vec()]
    );
    // New opens work on the adopted connection.
    std::fs::OpenOptions::new()
        .write(true)
        .open(guard.path("log"))
        .and_then(|mut f| f.write_all(b"new open\n"))
        .expect("write through a new open");
    assert_eq!(
        guard.sink.take(1, Duration::from_secs(20))[0].payload,
        b"new open"
    );
}

#[test]
fn without_the_resend_the_connection_is_aborted_and_the_writer_gets_an_error() {
    let Served {
        mut child,
        device,
        mnt,
        state,
        detach: _detach,
        dir,
        // Kept open: the child unmounts at the end of its stdin.
        _stdin,
    } = serve_in_child();
    let stuck = wait_stalled(&mnt);
    let _abort = AbortOnPanic(mnt.clone());
    child.0.kill().expect("kill -9");
    child.0.wait().expect("wait");

    let mut opts = MountOptions::new(&mnt, &state);
    opts.simulate_no_resend = true;
    let sink = QueueSink::new(64);
    let specs = vec![spec("log", Split::Line), spec("stall", Split::Line)];
    match TriggerFs::adopt(opts, specs.clone(), sink.clone(), device) {
        Err(FsError::Adopt { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("adopted although the resend was refused"),
    }
    let answered = stuck
        .recv_timeout(Duration::from_secs(20))
        .expect("the stalled writer must not hang");
    assert!(answered.is_err(), "the stalled write failed");
    // The aborted mount is cleaned up by the next mount, as after any crash.
    let fs = TriggerFs::mount(MountOptions::new(&mnt, &state), specs, sink.clone())
        .expect("mount again");
    let guard = Mounted::adopt(fs, sink, mnt.clone(), state, dir);
    std::fs::write(guard.path("log"), b"fresh\n").expect("write to the new mount");
    assert_eq!(
        guard.sink.take(1, Duration::from_secs(20))[0].payload,
        b"fresh"
    );
}
