//! Watches fire wherever an admin points them, as inotify does: on ext4, xfs and btrfs
//! images, a btrfs subvolume, tmpfs, a bind mount (written through either path), a path that
//! is a symbolic link, a path under a linked parent. Each place gets a plain and a recursive
//! rule; the recursive one sees a file in a subdirectory made after start. Runs carry the
//! path as the rule spells it. Where fanotify refuses the place (overlayfs, a btrfs subvolume's
//! tree) the rule is watched with inotify; a rule no backend can serve is never `active`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mounts::Mounts;
use common::{records, sh, wait_for, Daemon, DEADLINE};

fn rules(path: &str) -> String {
    let mut config = String::new();
    for (name, recursive) in [("plain", false), ("tree", true)] {
        config += &format!(
            "[[watch]]\nname = \"{name}\"\npath = \"{path}\"\nevents = [\"close_write\"]\nrecursive = {recursive}\nexec = [\"{{record}}\", \"{{out}}\", \"{name}\", \"$$\", \"$@\", \"$#\"]\n\n"
        );
    }
    config
}

/// Waits for a run of `rule` with `$$` = `path` and returns its `$@` and `$#`.
fn wait_run(daemon: &Daemon, rule: &str, path: &Path) -> (String, String) {
    wait_for(&format!("{rule} on {path:?}"), DEADLINE, || {
        records(&daemon.out()).into_iter().find_map(|r| {
            (r[0] == rule && Path::new(&r[1]) == path).then(|| {
                (
                    r[2].to_string_lossy().into_owned(),
                    r[3].to_string_lossy().into_owned(),
                )
            })
        })
    })
}

/// What fanotify gives a plain and a recursive rule on the usual filesystems.
const FANOTIFY: [&str; 2] = ["fanotify-inode", "fanotify-fs"];

/// Starts a daemon with both rules on `configured`, checks `triggerctl status --json` shows
/// them active on `backends` (plain, tree), and that both fire under the configured spelling.
fn fires_at(
    backends: [&str; 2],
    daemon_dir_rel: impl Fn(&Path) -> PathBuf,
    setup: impl FnOnce(&Path, &mut Mounts),
) {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let root = daemon.dir.path().to_path_buf();
    setup(&root, &mut mounts);
    let configured = daemon_dir_rel(&root);
    daemon.write_config(&rules(configured.to_str().unwrap()));
    daemon.launch();
    daemon.wait_watching();
    for (name, backend) in ["plain", "tree"].into_iter().zip(backends) {
        let shown = daemon.ctl_backend(name);
        assert_eq!(shown, (backend.to_string(), "active".to_string()), "{name}");
    }
    fs::write(configured.join("f"), b"x").unwrap();
    let (dir, base) = wait_run(&daemon, "plain", &configured.join("f"));
    assert_eq!(
        (Path::new(&dir), base.as_str()),
        (configured.as_path(), "f")
    );
    wait_run(&daemon, "tree", &configured.join("f"));
    sh(&format!(
        "mkdir -p '{0}/new/deep' && echo x > '{0}/new/deep/g'",
        configured.display()
    ));
    let (dir, base) = wait_run(&daemon, "tree", &configured.join("new/deep/g"));
    assert_eq!(
        (PathBuf::from(dir), base.as_str()),
        (configured.join("new/deep"), "g")
    );
    daemon.assert_alive();
    drop(mounts);
}

#[test]
fn a_symlinked_path_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("link"),
        |root, _| {
            fs::create_dir(root.join("real")).unwrap();
            std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        },
    );
}

#[test]
fn a_path_under_a_symlinked_parent_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("lib/watched"),
        |root, _| {
            fs::create_dir_all(root.join("usr/lib/watched")).unwrap();
            std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        },
    );
}

#[test]
fn a_bind_mount_fires_for_writes_through_either_path() {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let (source, bind) = mounts.bind_in(daemon.dir.path());
    daemon.write_config(&rules(bind.to_str().unwrap()));
    daemon.launch();
    daemon.wait_watching();
    fs::write(bind.join("via-bind"), b"x").unwrap();
    fs::write(source.join("via-source"), b"x").unwrap();
    for rule in ["plain", "tree"] {
        wait_run(&daemon, rule, &bind.join("via-bind"));
        wait_run(&daemon, rule, &bind.join("via-source"));
    }
    fs::create_dir(source.join("sub")).unwrap();
    fs::write(source.join("sub/g"), b"x").unwrap();
    wait_run(&daemon, "tree", &bind.join("sub/g"));
}

#[test]
fn tmpfs_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("tmp"),
        |root, mounts| mounts.mount(&["-t", "tmpfs", "tmpfs"], &root.join("tmp")),
    );
}

#[test]
fn an_ext4_image_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("ext4"),
        |root, mounts| mounts.image("ext4", 16, &root.join("ext4")),
    );
}

#[test]
fn an_xfs_image_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("xfs"),
        |root, mounts| mounts.image("xfs", 300, &root.join("xfs")),
    );
}

#[test]
fn a_btrfs_image_fires() {
    fires_at(
        FANOTIFY,
        |root| root.join("btrfs"),
        |root, mounts| mounts.image("btrfs", 128, &root.join("btrfs")),
    );
}

/// A subvolume has an fsid of its own: an inode mark works there (the spec's own object is
/// marked before any ancestor on another subvolume can claim the superblock); a filesystem
/// mark is refused by the kernel (EXDEV), so the recursive rule is watched with inotify.
#[test]
fn a_btrfs_subvolume_fires_plain_and_recursive() {
    fires_at(
        ["fanotify-inode", "inotify"],
        |root| root.join("btrfs/sub"),
        |root, mounts| {
            mounts.image("btrfs", 128, &root.join("btrfs"));
            let status = Command::new("btrfs")
                .args(["-q", "subvolume", "create"])
                .arg(root.join("btrfs/sub"))
                .status()
                .unwrap();
            assert!(status.success(), "btrfs subvolume create");
        },
    );
}

/// An overlayfs merged directory (every container's root filesystem): fanotify refuses it
/// (no file handles), so both rules are watched with inotify, plain and recursive.
#[test]
fn an_overlayfs_merged_dir_fires_through_inotify() {
    fires_at(
        ["inotify", "inotify"],
        |root| root.join("merged"),
        |root, mounts| mounts.overlay(&root.join("layers"), &root.join("merged")),
    );
}

/// A rule no backend can serve (`open_exec` on overlayfs: fanotify refuses the place,
/// inotify has no such event) is `failed` with both reasons and never `active`;
/// `triggerd check` says which rules will use inotify and what that gives up, and which
/// cannot be watched; a missing path is `waiting` until it exists.
#[test]
fn an_unwatchable_place_is_never_active() {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let root = daemon.dir.path().to_path_buf();
    let merged = root.join("merged");
    mounts.overlay(&root.join("layers"), &merged);
    let missing = root.join("not-yet");
    daemon.write_config(&format!(
        "{}[[watch]]\nname = \"exec\"\npath = \"{}\"\nevents = [\"open_exec\"]\nexec = [\"/bin/true\"]\n\n[[watch]]\nname = \"missing\"\npath = \"{}\"\nevents = [\"close_write\"]\nexec = [\"/bin/true\"]\n",
        rules(merged.to_str().unwrap()),
        merged.display(),
        missing.display()
    ));
    let check = Command::new(env!("CARGO_BIN_EXE_triggerd"))
        .arg("check")
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let warnings = String::from_utf8_lossy(&check.stderr);
    for (rule, what) in [
        ("plain", "will use inotify"),
        ("tree", "will use inotify"),
        ("exec", "cannot be watched"),
        ("missing", "not watchable yet"),
    ] {
        assert!(
            warnings.contains(&format!("warning: rule `{rule}`: {what}")),
            "{warnings}"
        );
    }
    assert!(warnings.contains("lower layer"), "{warnings}");
    assert!(
        warnings.contains("no equivalent of open_exec"),
        "{warnings}"
    );
    daemon.launch();
    let exec = wait_for("exec rule failed", DEADLINE, || {
        Some(daemon.rule("exec")).filter(|r| r.state != "active")
    });
    assert!(exec.state.starts_with("failed: "), "{exec:?}");
    assert!(
        exec.state.contains("EOPNOTSUPP") && exec.state.contains("open_exec"),
        "{exec:?}"
    );
    let waiting = daemon.rule("missing");
    assert!(waiting.state.starts_with("waiting: "), "{waiting:?}");
    assert!(
        waiting.state.contains("ENOENT") && waiting.state.contains("next try"),
        "{waiting:?}"
    );
    fs::create_dir(&missing).unwrap();
    wait_for("missing watched", DEADLINE, || {
        Some(daemon.rule("missing")).filter(|r| r.state == "active")
    });
}
