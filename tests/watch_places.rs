//! Watches fire wherever an admin points them, as inotify does: on ext4, xfs and btrfs
//! images, a btrfs subvolume, tmpfs, a bind mount (written through either path), a path that
//! is a symbolic link, a path under a linked parent. Each place gets a plain and a recursive
//! rule; the recursive one sees a file in a subdirectory made after start. Runs carry the
//! path as the rule spells it. A place fanotify cannot mark (overlayfs) is never `active`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{detach, records, sh, wait_for, Daemon, DEADLINE};

/// Mount points made by a test, unmounted (lazily, in reverse) however the test ends.
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(&mut self, args: &[&str], at: &Path) {
        fs::create_dir_all(at).unwrap();
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?} {at:?}");
        self.0.push(at.to_path_buf());
    }

    /// A fresh filesystem of `kind` in a sparse image of `mib` MiB, mounted at `at`.
    fn image(&mut self, kind: &str, mib: u64, at: &Path) {
        let image = at.with_extension("img");
        fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mkfs = format!("mkfs.{kind}");
        let quiet = if kind == "ext4" { "-q" } else { "-f" };
        let status = Command::new(&mkfs)
            .arg(quiet)
            .arg(&image)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{mkfs}: {e}"));
        assert!(status.success(), "{mkfs}");
        self.mount(&["-o", "loop", image.to_str().unwrap()], at);
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            detach(at);
        }
    }
}

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

/// Starts a daemon with both rules on `configured`, writes through each of `write_via` (paths
/// to the same directory), and checks both rules fire under the configured spelling.
fn fires_at(daemon_dir_rel: impl Fn(&Path) -> PathBuf, setup: impl FnOnce(&Path, &mut Mounts)) {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let root = daemon.dir.path().to_path_buf();
    setup(&root, &mut mounts);
    let configured = daemon_dir_rel(&root);
    daemon.write_config(&rules(configured.to_str().unwrap()));
    daemon.launch();
    daemon.wait_watching();
    for name in ["plain", "tree"] {
        let rule = daemon.rule(name);
        assert_eq!(rule.state, "active", "{rule:?}");
        assert!(rule.backend.is_some(), "{rule:?}");
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
    let source = daemon.path("source");
    let bind = daemon.path("bind");
    fs::create_dir_all(&source).unwrap();
    mounts.mount(&["--bind", source.to_str().unwrap()], &bind);
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
        |root| root.join("tmp"),
        |root, mounts| mounts.mount(&["-t", "tmpfs", "tmpfs"], &root.join("tmp")),
    );
}

#[test]
fn an_ext4_image_fires() {
    fires_at(
        |root| root.join("ext4"),
        |root, mounts| mounts.image("ext4", 16, &root.join("ext4")),
    );
}

#[test]
fn an_xfs_image_fires() {
    fires_at(
        |root| root.join("xfs"),
        |root, mounts| mounts.image("xfs", 300, &root.join("xfs")),
    );
}

#[test]
fn a_btrfs_image_fires() {
    fires_at(
        |root| root.join("btrfs"),
        |root, mounts| mounts.image("btrfs", 128, &root.join("btrfs")),
    );
}

/// A subvolume has an fsid of its own: an inode mark works there (the spec's own object is
/// marked before any ancestor on another subvolume can claim the superblock), a filesystem
/// mark is refused by the kernel (EXDEV) and the recursive rule says so.
#[test]
fn a_btrfs_subvolume_fires_plain_and_says_why_not_recursive() {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let fs_root = daemon.path("btrfs");
    mounts.image("btrfs", 128, &fs_root);
    let sub = fs_root.join("sub");
    let status = Command::new("btrfs")
        .args(["-q", "subvolume", "create"])
        .arg(&sub)
        .status()
        .unwrap();
    assert!(status.success(), "btrfs subvolume create");
    daemon.write_config(&rules(sub.to_str().unwrap()));
    daemon.launch();
    let tree = wait_for("tree refused", DEADLINE, || {
        Some(daemon.rule("tree")).filter(|r| r.state != "active")
    });
    assert!(
        tree.state.starts_with("failed: ") && tree.state.contains("EXDEV"),
        "{tree:?}"
    );
    assert_eq!(daemon.rule("plain").state, "active");
    fs::write(sub.join("f"), b"x").unwrap();
    let (dir, base) = wait_run(&daemon, "plain", &sub.join("f"));
    assert_eq!((PathBuf::from(dir), base.as_str()), (sub.clone(), "f"));
}

/// An overlayfs directory, which fanotify refuses (no file handles for filesystem marks; its
/// fsid is its upper layer's, so inode marks clash with it), is `failed` with the reason,
/// never `active`, and is not retried in a loop; a missing path is `waiting` until it exists.
#[test]
fn an_unwatchable_place_is_never_active() {
    let mut daemon = Daemon::create("");
    let mut mounts = Mounts::default();
    let root = daemon.dir.path().to_path_buf();
    for dir in ["lower", "upper", "work"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    let options = format!(
        "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
        root.display()
    );
    mounts.mount(
        &["-t", "overlay", "overlay", "-o", &options],
        &root.join("merged"),
    );
    let missing = root.join("not-yet");
    daemon.write_config(&format!(
        "{}[[watch]]\nname = \"missing\"\npath = \"{}\"\nevents = [\"close_write\"]\nexec = [\"/bin/true\"]\n",
        rules(root.join("merged").to_str().unwrap()),
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
        ("plain", "cannot be watched"),
        ("tree", "cannot be watched"),
        ("missing", "not watchable yet"),
    ] {
        assert!(
            warnings.contains(&format!("warning: rule `{rule}`: {what}")),
            "{warnings}"
        );
    }
    daemon.launch();
    for name in ["plain", "tree"] {
        let rule = wait_for("overlay rule failed", DEADLINE, || {
            Some(daemon.rule(name)).filter(|r| r.state != "active")
        });
        assert!(rule.state.starts_with("failed: "), "{rule:?}");
        assert!(
            rule.state.contains("EOPNOTSUPP") || rule.state.contains("EXDEV"),
            "{rule:?}"
        );
    }
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
