//! Shared test fixtures: a bounded queue sink (the test side of the daemon's queue), a mounted
//! filesystem in a temp dir that unmounts on drop, and polling with a deadline.
// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use triggerd_fusefs::{Message, MessageSink, MountOptions, Split, TriggerFs, TriggerSpec};

/// A bounded FIFO like the daemon's dispatcher queue: `offer` waits up to `wait` for room.
pub struct QueueSink {
    queue: Mutex<VecDeque<Message>>,
    capacity: usize,
    changed: Condvar,
}

impl QueueSink {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(QueueSink {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            changed: Condvar::new(),
        })
    }

    /// Takes the next message, waiting up to `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut q = self.queue.lock().expect("queue lock");
        loop {
            if let Some(m) = q.pop_front() {
                self.changed.notify_all();
                return Some(m);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            q = self.changed.wait_timeout(q, left).expect("queue lock").0;
        }
    }

    /// Takes exactly `n` messages, failing the test if they do not come within `timeout`.
    pub fn take(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(m) => out.push(m),
                None => panic!("got {} of {n} messages before the deadline", out.len()),
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.queue.lock().expect("queue lock").len()
    }
}

impl MessageSink for QueueSink {
    fn offer(&self, msg: Message, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut q = self.queue.lock().expect("queue lock");
        while q.len() >= self.capacity {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            q = self.changed.wait_timeout(q, left).expect("queue lock").0;
        }
        q.push_back(msg);
        self.changed.notify_all();
        true
    }
}

pub fn spec(file: &str, split: Split) -> TriggerSpec {
    TriggerSpec {
        file: file.to_string(),
        split,
        mode: 0o666,
        uid: 0,
        gid: 0,
        limits: Default::default(),
    }
}

/// A temp dir with `mnt/` and `state/`, and the filesystem mounted on `mnt/`. Field order
/// matters: the filesystem is unmounted before the directories are removed.
pub struct Mounted {
    pub fs: Option<TriggerFs>,
    pub sink: Arc<QueueSink>,
    pub mnt: PathBuf,
    pub state: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(specs: Vec<TriggerSpec>) -> Self {
        Self::with(specs, QueueSink::new(1 << 20), |_| {})
    }

    pub fn with(
        specs: Vec<TriggerSpec>,
        sink: Arc<QueueSink>,
        tune: impl FnOnce(&mut MountOptions),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        let state = dir.path().join("state");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let mut opts = MountOptions::new(&mnt, &state);
        tune(&mut opts);
        let fs = TriggerFs::mount(opts, specs, sink.clone()).expect("mount");
        Mounted {
            fs: Some(fs),
            sink,
            mnt,
            state,
            dir,
        }
    }

    /// Takes over a filesystem mounted by the test itself.
    pub fn adopt(
        fs: TriggerFs,
        sink: Arc<QueueSink>,
        mnt: PathBuf,
        state: PathBuf,
        dir: tempfile::TempDir,
    ) -> Self {
        Mounted {
            fs: Some(fs),
            sink,
            mnt,
            state,
            dir,
        }
    }

    pub fn fs(&self) -> &TriggerFs {
        self.fs.as_ref().expect("mounted")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Unmounts and mounts again on the same mountpoint and state dir (a restart).
    pub fn remount(&mut self, specs: Vec<TriggerSpec>) {
        if let Some(fs) = self.fs.take() {
            fs.unmount().expect("unmount");
        }
        let opts = MountOptions::new(&self.mnt, &self.state);
        self.fs = Some(TriggerFs::mount(opts, specs, self.sink.clone()).expect("remount"));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.fs.take());
    }
}

pub use triggerd_testkit::{wait_until, KillOnDrop};

/// Detaches whatever is mounted on `path` when dropped (for mounts made by child processes).
pub struct DetachOnDrop(pub PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// An example binary built next to the tests (`cargo test` builds examples).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let debug_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    debug_dir.join("examples").join(name)
}
