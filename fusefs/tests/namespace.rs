//! The namespace through a real mount: mkdir, mv, chmod, chown persist across a reload and a
//! restart; forbidden operations fail with the documented errno; a reload removes files and
//! keeps open writers on their trigger.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::{errno_of, exists, spec, wait_until, Mounted};
use triggerd_fusefs::{Split, TriggerSpec, STATE_FILE};

const T: Duration = Duration::from_secs(10);

fn specs() -> Vec<TriggerSpec> {
    vec![
        spec("weather/rpi/station1", Split::Write),
        spec("nginx/access", Split::Line),
    ]
}

fn write_to(path: &std::path::Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(data).expect("write");
}

#[test]
fn runtime_changes_persist_across_reload_and_restart() {
    let mut m = Mounted::new(specs());
    std::fs::create_dir(m.path("stations")).expect("mkdir");
    std::fs::create_dir(m.path("stations/north")).expect("mkdir nested");
    std::fs::rename(m.path("weather/rpi/station1"), m.path("stations/north/s1"))
        .expect("mv trigger");
    std::fs::set_permissions(
        m.path("stations/north/s1"),
        PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    nix::unistd::chown(
        &m.path("nginx/access"),
        Some(nix::unistd::Uid::from_raw(33)),
        Some(nix::unistd::Gid::from_raw(33)),
    )
    .expect("chown");
    assert!(m.state.join(STATE_FILE).is_file());

    let check = |m: &Mounted, when: &str| {
        assert!(
            !exists(&m.path("weather/rpi/station1")),
            "{when}: old path gone"
        );
        let meta = std::fs::metadata(m.path("stations/north/s1")).expect("moved file");
        assert_eq!(meta.mode() & 0o7777, 0o600, "{when}: chmod kept");
        let meta = std::fs::metadata(m.path("nginx/access")).expect("access");
        assert_eq!((meta.uid(), meta.gid()), (33, 33), "{when}: chown kept");
        // The moved file is still the same trigger (its key does not change with mv).
        write_to(&m.path("stations/north/s1"), b"moved\n");
        let msg = m.sink.recv(T).expect("message");
        assert_eq!(
            (&*msg.trigger, &msg.payload[..]),
            ("weather/rpi/station1", &b"moved\n"[..])
        );
    };
    check(&m, "live");

    let mut more = specs();
    more.push(spec("extra", Split::Write));
    m.fs().update(more.clone()).expect("reload");
    check(&m, "after reload");
    assert!(exists(&m.path("extra")));

    m.remount(more);
    check(&m, "after restart");
    assert!(m.path("stations").is_dir(), "mkdir kept");

    // An edit of the config's own mode wins over an older runtime chmod.
    let mut edited = specs();
    edited[0].mode = 0o604;
    m.fs().update(edited).expect("reload with a new mode");
    assert!(wait_until(T, || {
        std::fs::metadata(m.path("stations/north/s1"))
            .is_ok_and(|meta| meta.mode() & 0o7777 == 0o604)
    }));
}

#[test]
fn a_reload_that_removes_a_trigger_removes_its_file_and_keeps_open_writers() {
    let m = Mounted::new(specs());
    let mut held = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("nginx/access"))
        .expect("open");
    held.write_all(b"before\n").expect("write before");
    assert_eq!(m.sink.recv(T).expect("before").payload, b"before");

    // Reload that keeps nginx/access (order changed, other trigger removed).
    m.fs()
        .update(vec![spec("nginx/access", Split::Line)])
        .expect("reload");
    assert!(
        !exists(&m.path("weather/rpi/station1")),
        "removed file gone at once"
    );
    assert!(!exists(&m.path("weather")), "its implicit directories too");
    held.write_all(b"across reload\n")
        .expect("write across reload");
    let msg = m.sink.recv(T).expect("across");
    assert_eq!(
        (&*msg.trigger, &msg.payload[..]),
        ("nginx/access", &b"across reload"[..])
    );

    // Removed: the held handle fails with ESTALE; added back: it works again.
    m.fs().update(vec![]).expect("reload without it");
    assert!(!exists(&m.path("nginx/access")));
    assert_eq!(errno_of(held.write_all(b"gone\n")), Some(libc::ESTALE));
    m.fs().update(specs()).expect("reload with it");
    held.write_all(b"back\n").expect("write after re-add");
    assert_eq!(m.sink.recv(T).expect("back").payload, b"back");
}

#[test]
fn forbidden_operations_fail_with_eperm() {
    let m = Mounted::new(specs());
    let file = m.path("nginx/access");
    let create = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("nginx/new"));
    assert_eq!(errno_of(create), Some(libc::EPERM), "create (O_EXCL)");
    let create = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("new"));
    assert_eq!(
        errno_of(create),
        Some(libc::EPERM),
        "create (what `echo > new` does)"
    );
    assert!(!exists(&m.path("new")) && !exists(&m.path("nginx/new")));
    assert_eq!(
        errno_of(std::fs::remove_file(&file)),
        Some(libc::EPERM),
        "unlink"
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("/etc/passwd", m.path("link"))),
        Some(libc::EPERM),
        "symlink"
    );
    assert_eq!(
        errno_of(std::fs::hard_link(&file, m.path("hard"))),
        Some(libc::EPERM),
        "link"
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    assert_eq!(errno_of(f.set_len(10)), Some(libc::EPERM), "truncate to 10");
    f.set_len(0).expect("truncate to 0 is allowed");
    let mknod = nix::sys::stat::mknod(
        &m.path("fifo"),
        nix::sys::stat::SFlag::S_IFIFO,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        0,
    );
    assert_eq!(mknod.err(), Some(nix::errno::Errno::EPERM), "mknod");

    // Renames never replace, and a directory cannot move into itself.
    std::fs::create_dir(m.path("d")).expect("mkdir");
    let onto = std::fs::rename(m.path("weather/rpi/station1"), &file);
    assert_eq!(errno_of(onto), Some(libc::EEXIST), "mv onto a trigger");
    let into_self = std::fs::rename(m.path("d"), m.path("d/e"));
    assert_eq!(errno_of(into_self), Some(libc::EINVAL), "mv into itself");
    // rmdir: only empty directories.
    assert_eq!(
        errno_of(std::fs::remove_dir(m.path("nginx"))),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_dir(m.path("d")).expect("rmdir empty");
    assert!(exists(&file), "nothing above touched the trigger");
}

#[test]
fn unprivileged_users_are_held_to_the_mode_bits() {
    let mut private = spec("private", Split::Write);
    private.mode = 0o600;
    let m = Mounted::new(vec![private, spec("public", Split::Write)]);
    let mnt = m.mnt.clone();
    // The temp dir is root-only; let www-data reach the mount.
    std::fs::set_permissions(m.dir.path(), PermissionsExt::from_mode(0o755)).expect("chmod");
    let run_as_www_data = |file: &str| {
        std::process::Command::new("/usr/sbin/runuser")
            .args(["-u", "www-data", "--", "/bin/sh", "-c"])
            .arg(format!("echo hi > {}", mnt.join(file).display()))
            .status()
            .expect("runuser")
            .success()
    };
    assert!(run_as_www_data("public"), "allow_other lets www-data write");
    let msg = m.sink.recv(T).expect("public message");
    assert_eq!(msg.uid, 33);
    assert!(
        !run_as_www_data("private"),
        "default_permissions refuses mode 0600"
    );
    assert!(m.sink.recv(Duration::from_millis(100)).is_none());
}

#[test]
fn a_large_directory_lists_every_file_once_across_readdir_pages() {
    // Past several readdir pages and the kernel's own buffers, with an uneven last page.
    let n = 5_003;
    let specs: Vec<TriggerSpec> = (0..n)
        .map(|i| spec(&format!("many/t{i}"), Split::Write))
        .collect();
    let m = Mounted::new(specs);
    let mut names: Vec<String> = std::fs::read_dir(m.path("many"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), n);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "no file listed twice");
    let out = std::process::Command::new("ls")
        .arg("-a")
        .arg(m.path("many"))
        .output()
        .expect("ls");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listed.lines().filter(|l| *l == "." || *l == "..").count(),
        2
    );
    assert_eq!(listed.lines().count(), n + 2);
}
