//! Mounts made by a test (bind, tmpfs, overlayfs, loop images of ext4/xfs/btrfs, FUSE
//! views), undone lazily and in reverse however the test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::detach;

/// Mount points made by a test, unmounted (lazily, in reverse) however the test ends.
#[derive(Default)]
pub struct Mounts(Vec<PathBuf>);

impl Mounts {
    pub fn mount(&mut self, args: &[&str], at: &Path) {
        fs::create_dir_all(at).unwrap();
        let status = Command::new("mount").args(args).arg(at).status().unwrap();
        assert!(status.success(), "mount {args:?} {at:?}");
        self.0.push(at.to_path_buf());
    }

    /// A fresh filesystem of `kind` in a sparse image of `mib` MiB, mounted at `at`.
    pub fn image(&mut self, kind: &str, mib: u64, at: &Path) {
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

impl Mounts {
    /// A fresh directory `root/source` bind-mounted at `root/bind`: (source, bind).
    pub fn bind_in(&mut self, root: &Path) -> (PathBuf, PathBuf) {
        let (source, bind) = (root.join("source"), root.join("bind"));
        fs::create_dir_all(&source).unwrap();
        self.mount(&["--bind", source.to_str().unwrap()], &bind);
        (source, bind)
    }

    /// An overlayfs of fresh `lower`, `upper` and `work` dirs in `root`, merged at `at`.
    pub fn overlay(&mut self, root: &Path, at: &Path) {
        for dir in ["lower", "upper", "work"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let options = format!(
            "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
            root.display()
        );
        self.mount(&["-t", "overlay", "overlay", "-o", &options], at);
    }
}

impl Mounts {
    /// A FUSE view (`bindfs`) of `source` at `at`: a change made in `source` directly reaches
    /// the view's readers but never its fsnotify watchers, as another NFS client's would not.
    pub fn fuse_view(&mut self, source: &Path, at: &Path) {
        fs::create_dir_all(at).unwrap();
        let status = Command::new("bindfs").arg(source).arg(at).status().unwrap();
        assert!(status.success(), "bindfs {source:?} {at:?}");
        self.0.push(at.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            detach(at);
        }
    }
}
