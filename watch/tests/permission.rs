//! Permission requests: a child's `cat` of a gated file fails with EPERM when denied,
//! succeeds when allowed, succeeds when the request is dropped unanswered, and our own
//! accesses are allowed without being returned.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use common::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use triggerd_watch::{EventMask as M, MarkScope, PermissionGate, PermissionRequest};

fn spawn_cat(path: &Path) -> Child {
    Command::new("cat")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the request of process `pid`.
fn request_of(gate: &mut PermissionGate, pid: u32) -> PermissionRequest {
    let deadline = Instant::now() + DEADLINE;
    let mut requests = Vec::new();
    while Instant::now() < deadline {
        gate.read_requests(&mut requests).unwrap();
        if let Some(at) = requests.iter().position(|r| r.pid == pid as i32) {
            return requests.swap_remove(at);
        }
        let mut fds = [PollFd::new(gate.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(200u16));
    }
    panic!("no request from pid {pid}");
}

/// Keeps reading requests (which allows our own) until `thread` is done: its open may reach
/// the gate after the request the test was waiting for.
fn serve_until_done<T>(gate: &mut PermissionGate, thread: std::thread::JoinHandle<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    let mut requests = Vec::new();
    while !thread.is_finished() {
        gate.read_requests(&mut requests).unwrap();
        assert!(requests.is_empty(), "{requests:?}");
        assert!(Instant::now() < deadline, "our own open stayed blocked");
        let mut fds = [PollFd::new(gate.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
    }
    thread.join().unwrap()
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

#[test]
fn deny_allow_and_drop() {
    let (_guard, dir) = tempdir();
    let file = dir.join("gated");
    fs::write(&file, b"secret\n").unwrap();
    let mut gate = {
        let _lock = shared_sysctl_lock();
        PermissionGate::new().unwrap()
    };
    let errors = gate
        .set_marks(&[spec(&file, MarkScope::Inode, M::OPEN_PERM | M::CLOSE_WRITE)])
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    // our own open is allowed inside read_requests and never returned
    let ours = std::thread::spawn({
        let file = file.clone();
        move || fs::read(file).unwrap()
    });
    let child = spawn_cat(&file);
    let request = request_of(&mut gate, child.id());
    assert_eq!(request.path, file);
    assert_eq!(request.mask, M::OPEN_PERM);
    // the request's own fd reads the content without waiting on the gate
    let mut content = [0u8; 16];
    let n = nix::sys::uio::pread(request.file().unwrap(), &mut content, 0).unwrap();
    assert_eq!(&content[..n], b"secret\n");
    request.deny();
    let out = finish(child);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    // our thread gets through without an answer by hand, whenever its open comes
    assert_eq!(serve_until_done(&mut gate, ours), b"secret\n");

    let child = spawn_cat(&file);
    request_of(&mut gate, child.id()).allow();
    let out = finish(child);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"secret\n");

    let child = spawn_cat(&file);
    drop(request_of(&mut gate, child.id()));
    let out = finish(child);
    assert!(
        out.status.success(),
        "a dropped request must allow: {out:?}"
    );

    // removing the spec ungates the file: cat runs without anyone answering
    assert!(gate.set_marks(&[]).unwrap().is_empty());
    let out = finish(spawn_cat(&file));
    assert!(out.status.success());
}

#[test]
fn requests_can_be_answered_from_another_thread() {
    let (_guard, dir) = tempdir();
    let file = dir.join("gated");
    fs::write(&file, b"x").unwrap();
    let mut gate = {
        let _lock = shared_sysctl_lock();
        PermissionGate::new().unwrap()
    };
    assert!(gate
        .set_marks(&[spec(&file, MarkScope::Inode, M::OPEN_PERM)])
        .unwrap()
        .is_empty());
    let child = spawn_cat(&file);
    let request = request_of(&mut gate, child.id());
    std::thread::spawn(move || request.deny()).join().unwrap();
    assert!(!finish(child).status.success());
}

#[test]
fn descendants_can_be_exempted() {
    let (_guard, dir) = tempdir();
    let file = dir.join("gated");
    fs::write(&file, b"x").unwrap();
    let mut gate = {
        let _lock = shared_sysctl_lock();
        PermissionGate::new().unwrap()
    };
    gate.set_exempt_descendants(true);
    assert!(gate
        .set_marks(&[spec(&file, MarkScope::Inode, M::OPEN_PERM)])
        .unwrap()
        .is_empty());
    let child = spawn_cat(&file);
    // nobody answers by hand: read_requests allows the child itself and returns nothing
    let deadline = Instant::now() + DEADLINE;
    let mut requests = Vec::new();
    let mut child = child;
    let status = loop {
        gate.read_requests(&mut requests).unwrap();
        assert!(requests.is_empty(), "{requests:?}");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the exempt child stayed blocked");
        let mut fds = [PollFd::new(gate.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(50u16));
    };
    assert!(status.success());
}
