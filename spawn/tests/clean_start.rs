//! Real children started through `prepare` while the parent holds an inheritable fd and a
//! marker variable: the child sees fds 0-2 only, the base environment plus what was asked,
//! umask 022, `/` or the named directory, and (as `nobody`) that user's groups.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use triggerd_spawn::{prepare, Spec, Start, BASE_PATH};

fn run(spec: &Spec, script: &str) -> String {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script).stdin(Stdio::null());
    prepare(&mut command, spec).expect("prepare");
    let out = command.output().expect("run");
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// An fd without close-on-exec, as libzmq's epoll fds are.
fn inheritable_fd() -> std::os::fd::OwnedFd {
    let file = std::fs::File::open("/dev/null").expect("open");
    nix::unistd::dup(&file).expect("dup")
}

#[test]
fn a_child_sees_only_fds_0_to_2_and_no_inherited_environment() {
    let _leak = inheritable_fd();
    // SAFETY: set before any thread of this test binary reads the environment concurrently;
    // the marker is what the child must not see.
    unsafe { std::env::set_var("TRIGGERD_SPAWN_MARKER", "leaked") };
    let spec = Spec {
        env: vec![("EXTRA".into(), "yes".into())],
        ..Spec::default()
    };
    let out = run(
        &spec,
        "ls /proc/self/fd; echo ---; env; echo ---; umask; pwd",
    );
    let mut parts = out.split("---\n");
    let fds: Vec<&str> = parts.next().expect("fds").lines().collect();
    // `ls` itself holds one fd on the directory it lists.
    assert!(fds.len() <= 4, "fds: {fds:?}");
    assert!(
        ["0", "1", "2"].iter().all(|f| fds.contains(f)),
        "fds: {fds:?}"
    );
    let env = parts.next().expect("env");
    assert!(!env.contains("TRIGGERD_SPAWN_MARKER"), "env: {env}");
    assert!(env.contains(&format!("PATH={BASE_PATH}\n")), "env: {env}");
    assert!(
        env.contains("EXTRA=yes\n") && env.contains("HOME=/root\n"),
        "env: {env}"
    );
    assert_eq!(parts.next().expect("umask/pwd"), "0022\n/\n");
}

#[test]
fn as_nobody_the_child_has_nobodys_groups_home_and_its_own_directory() {
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let spec = Spec {
        user: Some((nobody.uid.as_raw(), nobody.gid.as_raw())),
        chdir: Some(dir.path().to_path_buf()),
        ..Spec::default()
    };
    let out = run(&spec, "id -u; id -G; pwd; echo \"$HOME $USER\"");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string());
    let want =
        nix::unistd::getgrouplist(&std::ffi::CString::new("nobody").expect("name"), nobody.gid)
            .expect("grouplist");
    let mut got: Vec<u32> = lines[1]
        .split(' ')
        .map(|g| g.parse().expect("gid"))
        .collect();
    let mut want: Vec<u32> = want.iter().map(|g| g.as_raw()).collect();
    got.sort_unstable();
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want, "root's groups must not leak");
    assert_eq!(lines[2], dir.path().display().to_string());
    assert_eq!(lines[3], format!("{} nobody", nobody.dir.display()));
}

#[test]
fn a_missing_program_is_still_a_spawn_error() {
    let mut command = Command::new("/nonexistent/program");
    prepare(&mut command, &Spec::default()).expect("prepare");
    assert!(command.status().is_err());
}

#[test]
fn only_a_child_that_needs_its_own_steps_is_forked() {
    // SAFETY: umask(2) on an integer; 022 is what every test here expects the child to see.
    unsafe { libc::umask(0o022) };
    let mut same_user = Command::new("/bin/true");
    // A parent with a large heap pays for a fork in page tables: the same user needs none.
    assert_eq!(
        prepare(&mut same_user, &Spec::default()).expect("prepare"),
        Start::Spawn
    );
    assert!(same_user.status().expect("run").success());
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody");
    let mut other_user = Command::new("/bin/true");
    let spec = Spec {
        user: Some((nobody.uid.as_raw(), nobody.gid.as_raw())),
        ..Spec::default()
    };
    assert_eq!(
        prepare(&mut other_user, &spec).expect("prepare"),
        Start::Fork
    );
    assert!(other_user.status().expect("run").success());
}
